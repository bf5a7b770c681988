//! The decision cache: the latest decision per subject from the compacted decisions topic,
//! and the question every request asks of it: which decisions cover me, and which is strictest?
//! Only non-allow decisions are kept for matching, indexed by the shape of their scope (which
//! dimensions it pins) and then by the pinned values: a request costs one read lock and one
//! hash lookup per shape in use (a handful), however many subjects are blocked; nothing blocked
//! costs the lock alone. Applying a record is O(1), so reading a topic of a million decisions
//! at start stays linear.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use faregate_core::event::{Attribution, BudgetScope, Decision, DecisionState};

#[derive(Debug)]
pub struct DecisionCache {
    inner: RwLock<Inner>,
    changes: tokio::sync::broadcast::Sender<Decision>,
}

impl Default for DecisionCache {
    fn default() -> Self {
        DecisionCache { inner: RwLock::default(), changes: tokio::sync::broadcast::channel(1024).0 }
    }
}

#[derive(Debug, Default)]
struct Inner {
    latest: HashMap<String, Decision>,
    /// Non-allow decisions: shape -> lookup key of the pinned values -> decision.
    active: BTreeMap<Shape, HashMap<String, Decision>>,
}

/// Which optional dimensions (team, user, key, project, model, tool: bits 0-5) a scope pins.
pub(crate) type Shape = u8;

/// The optional dimensions in scope-key order.
pub(crate) fn scope_dims(scope: &BudgetScope) -> [Option<&str>; 6] {
    [&scope.team, &scope.user, &scope.key_id, &scope.project, &scope.model, &scope.tool].map(|d| d.as_deref())
}

pub(crate) fn who_dims<'a>(who: &Attribution<'a>) -> [Option<&'a str>; 6] {
    [who.team, who.user, who.key_id, who.project, who.model, who.tool]
}

pub(crate) fn shape_of(dims: &[Option<&str>; 6]) -> Shape {
    dims.iter().enumerate().filter(|(_, d)| d.is_some()).fold(0, |shape, (i, _)| shape | 1 << i)
}

/// The org and the values of the dimensions `shape` pins, length-prefixed so no two value
/// lists share a key; `None` when `dims` lacks one of them.
pub(crate) fn lookup_key(org: &str, dims: &[Option<&str>; 6], shape: Shape) -> Option<String> {
    let mut key = String::with_capacity(64);
    for value in std::iter::once(Some(org))
        .chain(dims.iter().enumerate().filter(|(i, _)| shape & 1 << i != 0).map(|(_, d)| *d))
    {
        let value = value?;
        key.push_str(&value.len().to_string());
        key.push(':');
        key.push_str(value);
    }
    Some(key)
}

impl Inner {
    fn index(&mut self, decision: &Decision) {
        if decision.state == DecisionState::Allow {
            return;
        }
        match BudgetScope::parse_key(&decision.subject) {
            Ok(scope) => {
                let dims = scope_dims(&scope);
                let shape = shape_of(&dims);
                if let Some(key) = lookup_key(&scope.org, &dims, shape) {
                    self.active.entry(shape).or_default().insert(key, decision.clone());
                }
            }
            Err(e) => tracing::warn!(error = %e, "decision for an unreadable subject ignored"),
        }
    }

    fn unindex(&mut self, subject: &str) {
        let Ok(scope) = BudgetScope::parse_key(subject) else { return };
        let dims = scope_dims(&scope);
        let shape = shape_of(&dims);
        if let (Some(key), Some(map)) = (lookup_key(&scope.org, &dims, shape), self.active.get_mut(&shape)) {
            map.remove(&key);
            if map.is_empty() {
                self.active.remove(&shape);
            }
        }
    }
}

fn severity(state: DecisionState) -> u8 {
    match state {
        DecisionState::Allow => 0,
        DecisionState::Warn => 1,
        DecisionState::Downgrade => 2,
        DecisionState::Block => 3,
    }
}

impl DecisionCache {
    /// Apply one decisions-topic record (`None` is a tombstone). Older revisions are ignored;
    /// a decision whose subject is not a scope key is logged and ignored.
    pub fn apply(&self, key: &str, decision: Option<Decision>) {
        let Ok(mut inner) = self.inner.write() else { return };
        match decision {
            Some(decision) => {
                if inner.latest.get(&decision.subject).is_some_and(|d| d.revision > decision.revision) {
                    return;
                }
                inner.unindex(&decision.subject);
                inner.index(&decision);
                inner.latest.insert(decision.subject.clone(), decision.clone());
                let _ = self.changes.send(decision);
            }
            None => {
                inner.unindex(key);
                inner.latest.remove(key);
            }
        }
    }

    /// The strictest non-allow decision covering `who`, if any.
    pub fn check(&self, who: &Attribution<'_>) -> Option<Decision> {
        let inner = self.inner.read().ok()?;
        if inner.active.is_empty() {
            return None;
        }
        let dims = who_dims(who);
        inner
            .active
            .iter()
            .filter_map(|(shape, map)| map.get(&lookup_key(who.org, &dims, *shape)?))
            .max_by_key(|d| severity(d.state))
            .cloned()
    }

    /// Every decision applied from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Decision> {
        self.changes.subscribe()
    }

    /// The latest decision for one subject key.
    pub fn get(&self, subject: &str) -> Option<Decision> {
        self.inner.read().ok()?.latest.get(subject).cloned()
    }

    /// Every decision, for the decisions API.
    pub fn all(&self) -> Vec<Decision> {
        self.inner.read().map(|i| i.latest.values().cloned().collect()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use faregate_core::money::Usd;

    fn decision(subject: &str, state: DecisionState, revision: i64) -> Decision {
        Decision {
            subject: subject.into(),
            state,
            reason: "test".into(),
            budget_id: Some("b".into()),
            budget_name: None,
            spent_usd: Usd::ZERO,
            limit_usd: None,
            window_start: None,
            resets_at: None,
            downgrade_to: None,
            decided_at: Utc::now(),
            revision,
        }
    }

    #[test]
    fn strictest_matching_decision_wins_and_old_revisions_lose() {
        let cache = DecisionCache::default();
        let who = Attribution {
            org: "acme",
            team: Some("infra"),
            user: Some("ana"),
            model: Some("m"),
            ..Attribution::default()
        };
        assert!(cache.check(&who).is_none());
        cache.apply("org=acme/team=infra", Some(decision("org=acme/team=infra", DecisionState::Warn, 1)));
        cache.apply("org=acme/user=bob", Some(decision("org=acme/user=bob", DecisionState::Block, 1)));
        assert_eq!(cache.check(&who).unwrap().state, DecisionState::Warn);
        cache.apply("org=acme/model=m", Some(decision("org=acme/model=m", DecisionState::Block, 1)));
        assert_eq!(cache.check(&who).unwrap().subject, "org=acme/model=m");
        // A replayed older record does not undo a newer one.
        cache.apply("org=acme/model=m", Some(decision("org=acme/model=m", DecisionState::Allow, 2)));
        cache.apply("org=acme/model=m", Some(decision("org=acme/model=m", DecisionState::Block, 1)));
        assert_eq!(cache.check(&who).unwrap().state, DecisionState::Warn);
        cache.apply("org=acme/team=infra", None);
        assert!(cache.check(&who).is_none());
    }

    fn value() -> impl proptest::strategy::Strategy<Value = Option<String>> {
        proptest::option::of("[ab]{1,2}")
    }

    fn scope() -> impl proptest::strategy::Strategy<Value = BudgetScope> {
        use proptest::strategy::Strategy as _;
        ("[ab]", value(), value(), value(), value(), value(), value()).prop_map(
            |(org, team, user, key_id, project, model, tool)| BudgetScope {
                org,
                team,
                user,
                key_id,
                project,
                model,
                tool,
            },
        )
    }

    proptest::proptest! {
        /// The index answers exactly what a scan of every decision with `BudgetScope::matches`
        /// answers, through inserts, state changes and tombstones.
        #[test]
        fn the_index_agrees_with_a_scan(
            records in proptest::collection::vec((scope(), 0u8..5), 1..40),
            who in scope(),
        ) {
            let cache = DecisionCache::default();
            let mut latest: HashMap<String, (BudgetScope, DecisionState)> = HashMap::new();
            for (revision, (scope, state)) in records.into_iter().enumerate() {
                let subject = scope.key();
                let state = match state {
                    0 => None,
                    1 => Some(DecisionState::Allow),
                    2 => Some(DecisionState::Warn),
                    3 => Some(DecisionState::Downgrade),
                    _ => Some(DecisionState::Block),
                };
                match state {
                    None => {
                        cache.apply(&subject, None);
                        latest.remove(&subject);
                    }
                    Some(state) => {
                        cache.apply(&subject, Some(decision(&subject, state, revision as i64)));
                        latest.insert(subject, (scope, state));
                    }
                }
            }
            let attribution = Attribution {
                org: &who.org,
                team: who.team.as_deref(),
                user: who.user.as_deref(),
                key_id: who.key_id.as_deref(),
                project: who.project.as_deref(),
                model: who.model.as_deref(),
                tool: who.tool.as_deref(),
            };
            let expected = latest
                .values()
                .filter(|(scope, state)| *state != DecisionState::Allow && scope.matches(&attribution))
                .map(|(_, state)| severity(*state))
                .max();
            proptest::prop_assert_eq!(cache.check(&attribution).map(|d| severity(d.state)), expected);
        }
    }
}
