//! How the server keeps time: milliseconds since the Unix epoch, as the store records them.
//! A leaf, so the channel model can carry a time without depending on the store.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// Now, in [`Millis`].
pub fn now_ms() -> Millis {
    to_ms(SystemTime::now())
}

pub fn to_ms(t: SystemTime) -> Millis {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub fn from_ms(ms: Millis) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}
