//! Event types: the name a sender gives a webhook's kind (`push`, `payment_intent.succeeded`,
//! `orders/create`), the patterns an agent subscribes with (`--events`, `--route`), and the
//! filter a history query takes (`?type=`). One matching rule for all three: an exact name, or
//! a prefix when the pattern ends in `*`.
//!
//! The server derives a webhook's type once, when it arrives; the agent learns it from the
//! [`EVENT_TYPE_HEADER`] of the delivery's head.

use std::fmt;

/// The event type of a delivery, on the request head the agent gets (and so on the request the
/// target gets, like `x-hookrelay-delivery`). Absent when the webhook has no type.
pub const EVENT_TYPE_HEADER: &str = "x-hookrelay-event-type";

/// Longest event type, in bytes. A longer value where a type is looked for is not one.
pub const MAX_EVENT_TYPE_LEN: usize = 200;

/// Most patterns one subscription may have.
pub const MAX_PATTERNS: usize = 64;

/// Whether `text` may be an event type: 1 to [`MAX_EVENT_TYPE_LEN`] bytes, no control
/// characters, no leading or trailing space. Spaces inside are allowed (GitLab's `Push Hook`).
pub fn is_event_type(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= MAX_EVENT_TYPE_LEN
        && text.trim() == text
        && !text.chars().any(char::is_control)
}

/// One pattern: an exact event type, or every type that starts with a prefix (written with a
/// trailing `*`: `payment_intent.*`, `pull_request*`; `*` alone is every typed webhook).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TypePattern {
    Exact(String),
    Prefix(String),
}

/// Why a pattern is not one, as the messages for `--events`, `--route` and `?type=` say it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("an event type cannot be empty")]
    Empty,
    #[error("an event type has at most {MAX_EVENT_TYPE_LEN} bytes")]
    TooLong,
    #[error("`*` may only end a pattern (as in payment_intent.*)")]
    InnerStar,
    #[error("an event type cannot contain control characters")]
    Control,
    #[error("at most {MAX_PATTERNS} event types")]
    TooMany,
}

impl TypePattern {
    /// Reads a pattern as typed, spaces around it ignored.
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        let text = text.trim();
        let (name, prefix) = match text.strip_suffix('*') {
            Some(name) => (name, true),
            None => (text, false),
        };
        if name.contains('*') {
            return Err(PatternError::InnerStar);
        }
        if name.chars().any(char::is_control) {
            return Err(PatternError::Control);
        }
        if name.len() > MAX_EVENT_TYPE_LEN {
            return Err(PatternError::TooLong);
        }
        match prefix {
            true => Ok(TypePattern::Prefix(name.to_owned())),
            false if name.is_empty() => Err(PatternError::Empty),
            false => Ok(TypePattern::Exact(name.to_owned())),
        }
    }

    /// Whether webhooks of type `event_type` match.
    pub fn matches(&self, event_type: &str) -> bool {
        match self {
            TypePattern::Exact(name) => event_type == name,
            TypePattern::Prefix(prefix) => event_type.starts_with(prefix.as_str()),
        }
    }
}

impl fmt::Display for TypePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TypePattern::Exact(name) => f.write_str(name),
            TypePattern::Prefix(prefix) => write!(f, "{prefix}*"),
        }
    }
}

/// What an agent takes: every webhook (no `--events`), or only those whose type matches one of
/// its patterns. A webhook without a type goes only to agents that take every webhook.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum Subscription {
    #[default]
    All,
    Only(Vec<TypePattern>),
}

impl Subscription {
    /// Reads a list of patterns as typed (each item one pattern); empty items are skipped, so
    /// `push,,issues` and a trailing comma are fine. A list with no pattern at all is
    /// [`PatternError::Empty`].
    pub fn parse<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Self, PatternError> {
        let mut patterns = Vec::new();
        for item in items.into_iter().filter(|item| !item.trim().is_empty()) {
            let pattern = TypePattern::parse(item)?;
            if !patterns.contains(&pattern) {
                patterns.push(pattern);
            }
        }
        Self::only(patterns)
    }

    /// The subscription to `patterns`, which must be 1 to [`MAX_PATTERNS`].
    pub fn only(patterns: Vec<TypePattern>) -> Result<Self, PatternError> {
        match patterns.len() {
            0 => Err(PatternError::Empty),
            n if n > MAX_PATTERNS => Err(PatternError::TooMany),
            _ => Ok(Subscription::Only(patterns)),
        }
    }

    /// Whether a webhook of type `event_type` (`None`: it has none) goes to this subscriber.
    pub fn takes(&self, event_type: Option<&str>) -> bool {
        match (self, event_type) {
            (Subscription::All, _) => true,
            (Subscription::Only(_), None) => false,
            (Subscription::Only(patterns), Some(t)) => patterns.iter().any(|p| p.matches(t)),
        }
    }

    /// The patterns, or `None` for every webhook: as the API shows an agent's subscription
    /// and as the [`crate::Subscribe`] frame carries it.
    pub fn patterns(&self) -> Option<Vec<String>> {
        match self {
            Subscription::All => None,
            Subscription::Only(patterns) => {
                Some(patterns.iter().map(ToString::to_string).collect())
            }
        }
    }

    /// What several subscribers take together: every webhook if one of them does, else the
    /// patterns of all of them.
    pub fn union<'a>(subscriptions: impl IntoIterator<Item = &'a Subscription>) -> Subscription {
        let mut patterns: Vec<TypePattern> = Vec::new();
        for subscription in subscriptions {
            match subscription {
                Subscription::All => return Subscription::All,
                Subscription::Only(some) => {
                    for pattern in some {
                        if !patterns.contains(pattern) {
                            patterns.push(pattern.clone());
                        }
                    }
                }
            }
        }
        Subscription::Only(patterns)
    }
}

impl fmt::Display for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subscription::All => f.write_str("every event type"),
            Subscription::Only(patterns) => {
                for (i, pattern) in patterns.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    pattern.fmt(f)?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_exactly_or_by_prefix() {
        let exact = TypePattern::parse("push").expect("valid");
        assert!(exact.matches("push"));
        assert!(!exact.matches("push2"));
        let prefix = TypePattern::parse(" payment_intent.* ").expect("valid");
        assert_eq!(prefix, TypePattern::Prefix("payment_intent.".into()));
        assert!(prefix.matches("payment_intent.succeeded"));
        assert!(!prefix.matches("payment_intent"));
        assert!(
            TypePattern::parse("pull_request*")
                .expect("valid")
                .matches("pull_request")
        );
        assert!(TypePattern::parse("*").expect("valid").matches("anything"));
        assert_eq!(TypePattern::parse(""), Err(PatternError::Empty));
        assert_eq!(TypePattern::parse("a*b"), Err(PatternError::InnerStar));
        assert_eq!(TypePattern::parse("a**"), Err(PatternError::InnerStar));
        assert_eq!(TypePattern::parse("a\u{1b}b"), Err(PatternError::Control));
        let long = "x".repeat(MAX_EVENT_TYPE_LEN + 1);
        assert_eq!(TypePattern::parse(&long), Err(PatternError::TooLong));
        assert_eq!(prefix.to_string(), "payment_intent.*");
    }

    #[test]
    fn subscriptions_take_their_types_and_untyped_webhooks_only_when_all() {
        let some = Subscription::parse("push, pull_request*,,".split(',')).expect("valid");
        assert_eq!(some.to_string(), "push,pull_request*");
        assert!(some.takes(Some("push")));
        assert!(some.takes(Some("pull_request_review")));
        assert!(!some.takes(Some("issues")));
        assert!(!some.takes(None));
        assert!(Subscription::All.takes(None));
        assert_eq!(Subscription::parse([" ", ""]), Err(PatternError::Empty));
        let many: Vec<String> = (0..=MAX_PATTERNS).map(|n| format!("t{n}")).collect();
        assert_eq!(
            Subscription::parse(many.iter().map(String::as_str)),
            Err(PatternError::TooMany)
        );
        let issues = Subscription::parse(["issues"]).expect("valid");
        let both = Subscription::union([&some, &issues]);
        assert!(both.takes(Some("issues")) && both.takes(Some("push")) && !both.takes(None));
        assert_eq!(
            Subscription::union([&some, &Subscription::All]),
            Subscription::All
        );
        assert_eq!(Subscription::All.patterns(), None);
    }

    #[test]
    fn event_types_are_short_printable_and_trimmed() {
        assert!(is_event_type("Push Hook"));
        assert!(is_event_type("orders/create"));
        assert!(!is_event_type(""));
        assert!(!is_event_type(" push"));
        assert!(!is_event_type("a\nb"));
        assert!(!is_event_type(&"x".repeat(MAX_EVENT_TYPE_LEN + 1)));
    }
}
