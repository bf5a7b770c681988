//! The decision cache: the latest decision per subject from the compacted decisions topic,
//! and the question every request asks of it: which decisions cover me, and which is strictest?
//! Only non-allow decisions are kept for matching, so the common case (nothing blocked) costs
//! one read lock and an empty scan.

use std::collections::HashMap;
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
    active: Vec<(BudgetScope, Decision)>,
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
                inner.latest.insert(decision.subject.clone(), decision.clone());
                let _ = self.changes.send(decision);
            }
            None => {
                inner.latest.remove(key);
            }
        }
        let mut active = Vec::new();
        for decision in inner.latest.values().filter(|d| d.state != DecisionState::Allow) {
            match BudgetScope::parse_key(&decision.subject) {
                Ok(scope) => active.push((scope, decision.clone())),
                Err(e) => tracing::warn!(error = %e, "decision for an unreadable subject ignored"),
            }
        }
        inner.active = active;
    }

    /// The strictest non-allow decision covering `who`, if any.
    pub fn check(&self, who: &Attribution<'_>) -> Option<Decision> {
        let inner = self.inner.read().ok()?;
        inner
            .active
            .iter()
            .filter(|(scope, _)| scope.matches(who))
            .max_by_key(|(_, d)| severity(d.state))
            .map(|(_, d)| d.clone())
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
}
