//! Which event types the agent takes (`--events`) and where each goes (`--route TYPE=URL`,
//! else `--forward`): parsed once at start, consulted per delivery by the type the server
//! names on its head ([`protocol::EVENT_TYPE_HEADER`]).

use std::fmt;

use protocol::{PatternError, Subscription, TypePattern};

use crate::forward::Target;

/// One `--route TYPE=URL`: deliveries whose type matches go to `target`.
#[derive(Debug, Clone)]
pub struct Route {
    pub pattern: TypePattern,
    pub target: Target,
}

/// Why a `--route` or `--events` value is refused at start: the flag, the value and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error(
        "--route {0:?} has no URL: write TYPE=URL, e.g. --route push=http://localhost:3000/github"
    )]
    NoUrl(String),
    #[error(
        "--route {0:?} has no event type before `=`: write TYPE=URL, e.g. --route push=http://localhost:3000/github"
    )]
    NoType(String),
    #[error("--route {value:?}: {why}")]
    Type { value: String, why: PatternError },
    #[error("--route {value:?}: the URL must be http://host[:port][/path] or https://...")]
    Url { value: String },
    #[error("--events {value:?}: {why}")]
    Events { value: String, why: PatternError },
    #[error(
        "--events {0:?} names no event type: give a comma-separated list, e.g. --events push,pull_request*"
    )]
    NoEvents(String),
    #[error(
        "{0} --route flags without --forward: the relay takes at most {max} event types from one agent; add --forward for the rest, or use fewer routes",
        max = protocol::MAX_PATTERNS
    )]
    TooManyRoutes(usize),
}

impl Route {
    /// Reads `TYPE=URL` as typed after `--route`.
    pub fn parse(value: &str) -> Result<Self, RouteError> {
        let Some((pattern, url)) = value.split_once('=') else {
            return Err(RouteError::NoUrl(value.to_owned()));
        };
        if pattern.trim().is_empty() {
            return Err(RouteError::NoType(value.to_owned()));
        }
        if url.trim().is_empty() {
            return Err(RouteError::NoUrl(value.to_owned()));
        }
        let pattern = TypePattern::parse(pattern).map_err(|why| RouteError::Type {
            value: value.to_owned(),
            why,
        })?;
        let target = Target::parse(url.trim()).map_err(|_| RouteError::Url {
            value: value.to_owned(),
        })?;
        Ok(Route { pattern, target })
    }
}

/// Reads the `--events` list (each item as given, or split at commas).
pub fn parse_events(items: &[String]) -> Result<Subscription, RouteError> {
    let text = items.join(",");
    let patterns = text.split(',').filter(|item| !item.trim().is_empty());
    match Subscription::parse(patterns) {
        Ok(subscription) => Ok(subscription),
        Err(PatternError::Empty) => Err(RouteError::NoEvents(text)),
        Err(why) => Err(RouteError::Events {
            value: offending(&text, &why).unwrap_or(text),
            why,
        }),
    }
}

/// The item of `text` that `why` is about, to name it in the message.
fn offending(text: &str, why: &PatternError) -> Option<String> {
    text.split(',')
        .filter(|item| !item.trim().is_empty())
        .find(|item| TypePattern::parse(item).as_ref().err() == Some(why))
        .map(|item| item.trim().to_owned())
}

/// Where deliveries go: the first route whose pattern matches the delivery's type, else
/// `--forward`; and what the agent asks the server for.
#[derive(Debug, Clone)]
pub struct Routes {
    pub routes: Vec<Route>,
    /// `--forward`: deliveries no route takes (and all of them when there are no routes).
    pub forward: Option<Target>,
    /// `--events`: the types the agent takes; `None` for what its routes and `--forward`
    /// take.
    pub events: Option<Subscription>,
}

impl Routes {
    /// Every delivery to `forward`, as without `--route` and `--events`.
    pub fn forward(target: Target) -> Self {
        Routes {
            routes: Vec::new(),
            forward: Some(target),
            events: None,
        }
    }

    /// Every target, routes first then `--forward`: index `i` of [`Routes::pick`].
    pub fn targets(&self) -> impl Iterator<Item = &Target> {
        self.routes.iter().map(|r| &r.target).chain(&self.forward)
    }

    /// The index (in [`Routes::targets`]) of where a delivery of type `event_type` goes:
    /// the first route that matches, else `--forward`; `None` when neither takes it.
    pub fn pick(&self, event_type: Option<&str>) -> Option<usize> {
        let routed = event_type.and_then(|t| self.routes.iter().position(|r| r.pattern.matches(t)));
        routed.or_else(|| self.forward.as_ref().map(|_| self.routes.len()))
    }

    /// What the agent asks the server for: `--events`, else with `--forward` every type, else
    /// only its routes' types.
    pub fn subscription(&self) -> Subscription {
        if let Some(events) = &self.events {
            return events.clone();
        }
        match self.forward {
            Some(_) => Subscription::All,
            None => Subscription::Only(self.routes.iter().map(|r| r.pattern.clone()).collect()),
        }
    }
}

/// The `Forwarding` line's target: `--forward`'s URL, then one line per route.
impl fmt::Display for Routes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.forward {
            Some(target) => write!(f, "{target}")?,
            None => f.write_str("these routes only")?,
        }
        if let Some(events) = &self.events {
            write!(f, " (event types {events})")?;
        }
        for route in &self.routes {
            write!(f, "\n  {} -> {}", route.pattern, route.target)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(items: &[&str], forward: Option<&str>) -> Routes {
        Routes {
            routes: items
                .iter()
                .map(|r| Route::parse(r).expect("valid"))
                .collect(),
            forward: forward.map(|url| Target::parse(url).expect("valid")),
            events: None,
        }
    }

    #[test]
    fn the_first_matching_route_wins_and_forward_takes_the_rest() {
        let r = routes(
            &[
                "push=http://a:1",
                "pull_request*=http://b:2/x",
                "pull_request=http://c:3",
            ],
            Some("http://d:4"),
        );
        assert_eq!(r.pick(Some("push")), Some(0));
        assert_eq!(r.pick(Some("pull_request")), Some(1), "first match");
        assert_eq!(r.pick(Some("issues")), Some(3));
        assert_eq!(r.pick(None), Some(3));
        assert_eq!(r.subscription(), Subscription::All);
        let names: Vec<String> = r.targets().map(ToString::to_string).collect();
        assert_eq!(
            names,
            ["http://a:1", "http://b:2/x", "http://c:3", "http://d:4"]
        );

        let only = routes(&["push=http://a:1", "issue*=http://b:2"], None);
        assert_eq!(only.pick(Some("pull_request")), None);
        assert_eq!(only.pick(None), None);
        assert_eq!(only.subscription().to_string(), "push,issue*");
        assert_eq!(
            only.to_string(),
            "these routes only\n  push -> http://a:1\n  issue* -> http://b:2"
        );
    }

    #[test]
    fn bad_routes_say_which_value_and_why() {
        let err = |v: &str| Route::parse(v).expect_err("refused").to_string();
        assert!(
            err("push").starts_with("--route \"push\" has no URL"),
            "{}",
            err("push")
        );
        assert!(err("push=").starts_with("--route \"push=\" has no URL"));
        assert!(err("=http://x").starts_with("--route \"=http://x\" has no event type"));
        assert_eq!(
            err("a*b=http://x"),
            "--route \"a*b=http://x\": `*` may only end a pattern (as in payment_intent.*)"
        );
        assert!(err("push=ftp://x").contains("the URL must be http://"));
        let route = Route::parse("push=http://h:1/p?q=1").expect("the URL may hold `=`");
        assert_eq!(route.target.to_string(), "http://h:1/p?q=1");
    }

    #[test]
    fn events_lists_split_at_commas_and_name_a_bad_item() {
        let given = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let events = parse_events(&given(&["push,pull_request*", "issues"])).expect("valid");
        assert_eq!(events.to_string(), "push,pull_request*,issues");
        let err = parse_events(&given(&["push,a*b"])).expect_err("refused");
        assert_eq!(
            err.to_string(),
            "--events \"a*b\": `*` may only end a pattern (as in payment_intent.*)"
        );
        let err = parse_events(&given(&[" , "])).expect_err("refused");
        assert!(err.to_string().contains("names no event type"), "{err}");
    }
}
