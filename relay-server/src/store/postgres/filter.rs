//! The SQL that reads the queue and the history, and how a subscription's event types
//! become its parameters: static statement texts (so each connection prepares them once),
//! whatever the patterns.

use protocol::{Subscription, TypePattern};

use super::rows::{bigint, event_columns, summary_columns};

/// The condition that an event's type is one a subscription takes: `$N` every type (no
/// filter), `$N+1` exact types, `$N+2` prefixes; an untyped event matches only the first.
macro_rules! takes {
    ($all:literal, $exact:literal, $prefixes:literal) => {
        concat!(
            "(",
            $all,
            "::BOOLEAN OR event_type = ANY(",
            $exact,
            "::TEXT[]) OR EXISTS (SELECT 1 FROM unnest(",
            $prefixes,
            "::TEXT[]) AS p WHERE starts_with(event_type, p)))"
        )
    };
}
pub(super) const DUE: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events WHERE channel = $1 AND status = 'queued' AND instance IS NULL
      AND next_attempt_at <= $2 AND ",
    takes!("$3", "$4", "$5"),
    " ORDER BY seq LIMIT $6"
);
pub(super) const NEXT_DUE: &str = concat!(
    "SELECT min(next_attempt_at) FROM events WHERE channel = $1 AND status = 'queued'
      AND instance IS NULL AND ",
    takes!("$2", "$3", "$4")
);
pub(super) const LIST: &str = concat!(
    "SELECT ",
    summary_columns!(),
    " FROM events WHERE channel = $1 AND seq < $2 AND ($3::TEXT IS NULL OR status = $3) AND ",
    takes!("$4", "$5", "$6"),
    " ORDER BY seq DESC LIMIT $7"
);

/// A subscription as the three parameters of [`takes!`]: every type, exact types, prefixes.
pub(super) fn takes_params(patterns: Option<&[TypePattern]>) -> (bool, Vec<&str>, Vec<&str>) {
    let Some(patterns) = patterns else {
        return (true, Vec::new(), Vec::new());
    };
    let (mut exact, mut prefixes) = (Vec::new(), Vec::new());
    for pattern in patterns {
        match pattern {
            TypePattern::Exact(name) => exact.push(name.as_str()),
            TypePattern::Prefix(prefix) => prefixes.push(prefix.as_str()),
        }
    }
    (false, exact, prefixes)
}

pub(super) fn subscription_patterns(takes: &Subscription) -> Option<&[TypePattern]> {
    match takes {
        Subscription::All => None,
        Subscription::Only(patterns) => Some(patterns),
    }
}

/// A SQL `LIMIT` for `limit`.
pub(super) fn sql_limit(limit: usize) -> i64 {
    bigint(limit)
}
