//! The live inspector page's assets, served by the relay server at `/c/{channel}` and by the
//! agent on `--inspect ADDR`. The page is static: the channel comes from its URL, and every
//! byte of webhook data reaches it through the channel's API (`/api/channels/{channel}/...`).
//! The one thing the server tells it is whether that API needs a token ([`page`]), so the page
//! asks for one without first provoking a 401.

use std::sync::LazyLock;

/// The page as written, saying a token is needed (the safe default).
const PAGE: &str = include_str!("index.html");
pub const SCRIPT: &str = include_str!("inspector.js");
pub const STYLE: &str = include_str!("inspector.css");
/// The page's icon, so the browser does not ask for a `/favicon.ico` nobody serves.
pub const FAVICON: &str = include_str!("favicon.svg");

/// Where the page's assets are served.
pub const SCRIPT_PATH: &str = "/c/assets/inspector.js";
pub const STYLE_PATH: &str = "/c/assets/inspector.css";
pub const FAVICON_PATH: &str = "/c/assets/favicon.svg";

/// The `<meta>` of [`PAGE`] that the script reads: the channel's API needs a token...
const TOKEN_REQUIRED: &str = r#"<meta name="hookrelay-token" content="required">"#;
/// ...or anyone may read it (an open channel), or the server the page came from adds the
/// token itself (the agent's `--inspect`).
const TOKEN_NONE: &str = r#"<meta name="hookrelay-token" content="none">"#;

/// The inspector page, saying whether its API calls need a token: when they do and the tab
/// holds none, the page shows its login form at once instead of calling the API to find out
/// (a 401 in the browser's console for every visit).
///
/// The answer must be what a call without a token would get, and nothing more: a server where
/// every channel needs a token gives the same page for every name.
pub fn page(token_required: bool) -> &'static str {
    static WITHOUT_TOKEN: LazyLock<String> =
        LazyLock::new(|| PAGE.replacen(TOKEN_REQUIRED, TOKEN_NONE, 1));
    match token_required {
        true => PAGE,
        false => WITHOUT_TOKEN.as_str(),
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_says_whether_a_token_is_needed_once() {
        assert_eq!(page(true).matches(TOKEN_REQUIRED).count(), 1);
        assert!(!page(true).contains(TOKEN_NONE));
        assert_eq!(page(false).matches(TOKEN_NONE).count(), 1);
        assert!(!page(false).contains(TOKEN_REQUIRED));
        assert_eq!(page(true).len(), page(false).len() + 4);
    }

    #[test]
    fn the_page_links_its_icon() {
        assert!(PAGE.contains(&format!(r#"<link rel="icon" href="{FAVICON_PATH}""#)));
        assert!(FAVICON.starts_with("<svg "));
    }
}
