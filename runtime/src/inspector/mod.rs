//! The live inspector page's assets, served by the relay server at `/c/{channel}` and by the
//! agent on `--inspect ADDR`. The page is static: the channel comes from its URL, and every
//! byte of webhook data reaches it through the channel's API (`/api/channels/{channel}/...`).

pub const PAGE: &str = include_str!("index.html");
pub const SCRIPT: &str = include_str!("inspector.js");
pub const STYLE: &str = include_str!("inspector.css");

/// Where the page's assets are served.
pub const SCRIPT_PATH: &str = "/c/assets/inspector.js";
pub const STYLE_PATH: &str = "/c/assets/inspector.css";

/// Only the page's own script and stylesheet, and API calls to its origin: the page shows
/// what strangers sent, so no inline script may run.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                       connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
                       frame-ancestors 'none'";

/// The headers every asset is served with, after its content type.
pub const HEADERS: [(&str, &str); 4] = [
    ("cache-control", "no-store"),
    ("content-security-policy", CSP),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
];
