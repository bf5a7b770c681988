//! Scope keys: the one spelling of "who and what a budget (and so a decision) covers", shared by
//! the budget service, which publishes decisions keyed by it, and every gateway, which matches
//! requests against it.
//!
//! A key lists the set dimensions of a [`BudgetScope`] in a fixed order, `org` first:
//! `org=acme/team=infra/model=claude-opus-4-1`. Values are percent-encoded for `%`, `/` and `=`
//! so any value round-trips. A request matches a scope when every set dimension equals the
//! request's value; unset dimensions match anything. Tools use the ledger's names
//! (`claude-code`, `codex`, `cursor`, `sdk`, `other`).

use super::BudgetScope;

/// The dimension names, in key order.
pub const DIMENSIONS: [&str; 7] = ["org", "team", "user", "key", "project", "model", "tool"];

/// What a request is attributed to, as a gateway sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attribution<'a> {
    pub org: &'a str,
    pub team: Option<&'a str>,
    pub user: Option<&'a str>,
    pub key_id: Option<&'a str>,
    pub project: Option<&'a str>,
    pub model: Option<&'a str>,
    pub tool: Option<&'a str>,
}

/// A scope key that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scope key {key:?}: {problem}")]
pub struct ScopeKeyError {
    pub key: String,
    pub problem: String,
}

fn escape(value: &str) -> String {
    value.replace('%', "%25").replace('/', "%2F").replace('=', "%3D")
}

fn unescape(value: &str) -> String {
    value.replace("%2F", "/").replace("%3D", "=").replace("%25", "%")
}

impl BudgetScope {
    fn fields(&self) -> [Option<&str>; 7] {
        [
            Some(self.org.as_str()),
            self.team.as_deref(),
            self.user.as_deref(),
            self.key_id.as_deref(),
            self.project.as_deref(),
            self.model.as_deref(),
            self.tool.as_deref(),
        ]
    }

    /// The canonical key of this scope (see the module docs).
    pub fn key(&self) -> String {
        DIMENSIONS
            .iter()
            .zip(self.fields())
            .filter_map(|(name, value)| value.map(|v| format!("{name}={}", escape(v))))
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Read a key written by [`BudgetScope::key`].
    pub fn parse_key(key: &str) -> Result<BudgetScope, ScopeKeyError> {
        let err = |problem: String| ScopeKeyError { key: key.to_string(), problem };
        let mut scope = BudgetScope::default();
        let mut last = None;
        for part in key.split('/') {
            let (name, value) =
                part.split_once('=').ok_or_else(|| err(format!("part {part:?} is not name=value")))?;
            let position = DIMENSIONS
                .iter()
                .position(|d| *d == name)
                .ok_or_else(|| err(format!("unknown dimension {name:?}")))?;
            if last.is_some_and(|l| position <= l) {
                return Err(err(format!("dimension {name:?} out of order or repeated")));
            }
            last = Some(position);
            let value = unescape(value);
            if value.is_empty() {
                return Err(err(format!("dimension {name:?} is empty")));
            }
            match position {
                0 => scope.org = value,
                1 => scope.team = Some(value),
                2 => scope.user = Some(value),
                3 => scope.key_id = Some(value),
                4 => scope.project = Some(value),
                5 => scope.model = Some(value),
                _ => scope.tool = Some(value),
            }
        }
        if scope.org.is_empty() {
            return Err(err("the org dimension is required".into()));
        }
        Ok(scope)
    }

    /// Whether a request attributed to `who` falls under this scope.
    pub fn matches(&self, who: &Attribution<'_>) -> bool {
        fn dim(want: &Option<String>, got: Option<&str>) -> bool {
            want.as_deref().is_none_or(|w| got == Some(w))
        }
        self.org == who.org
            && dim(&self.team, who.team)
            && dim(&self.user, who.user)
            && dim(&self.key_id, who.key_id)
            && dim(&self.project, who.project)
            && dim(&self.model, who.model)
            && dim(&self.tool, who.tool)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = Option<String>> {
        proptest::option::of("[a-z%/=.-]{1,8}")
    }

    proptest! {
        #[test]
        fn keys_round_trip(
            org in "[a-z%/=]{1,8}", team in value(), user in value(), key_id in value(),
            project in value(), model in value(), tool in value(),
        ) {
            let scope = BudgetScope { org, team, user, key_id, project, model, tool };
            prop_assert_eq!(BudgetScope::parse_key(&scope.key()).unwrap(), scope);
        }
    }

    #[test]
    fn key_spelling() {
        let scope = BudgetScope {
            org: "acme".into(),
            team: Some("a/b".into()),
            model: Some("claude-opus-4-1".into()),
            ..BudgetScope::default()
        };
        assert_eq!(scope.key(), "org=acme/team=a%2Fb/model=claude-opus-4-1");
    }

    #[test]
    fn bad_keys_say_what_is_wrong() {
        for (key, problem) in [
            ("team=x", "the org dimension is required"),
            ("org=a/colour=red", "unknown dimension \"colour\""),
            ("org=a/model=m/team=t", "out of order"),
            ("org=a/team", "is not name=value"),
            ("org=a/team=", "is empty"),
        ] {
            let err = BudgetScope::parse_key(key).unwrap_err().to_string();
            assert!(err.contains(problem), "{key}: {err}");
        }
    }

    #[test]
    fn unset_dimensions_match_anything() {
        let scope = BudgetScope {
            org: "acme".into(),
            team: Some("infra".into()),
            model: Some("m".into()),
            ..BudgetScope::default()
        };
        let who = Attribution {
            org: "acme",
            team: Some("infra"),
            user: Some("ana"),
            model: Some("m"),
            ..Attribution::default()
        };
        assert!(scope.matches(&who));
        assert!(!scope.matches(&Attribution { model: Some("other"), ..who }));
        assert!(!scope.matches(&Attribution { team: None, ..who }));
        assert!(!scope.matches(&Attribution { org: "globex", ..who }));
    }
}
