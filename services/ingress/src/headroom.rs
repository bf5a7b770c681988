//! The headroom cache: the latest headroom record per budget from the compacted headroom topic
//! (limit, spent, remaining in the budget's current window, published by the budget service),
//! and the two questions asked of it.
//!
//! - Every request: which covering budget is tightest ([`HeadroomCache::tightest`]), for the
//!   `x-faregate-budget-remaining` and `x-faregate-budget-resets` headers. Indexed like the
//!   decisions (by the shape of the scope, then the pinned values), so it costs one read lock and
//!   one hash lookup per shape in use, from memory only; nothing held costs the lock alone.
//! - `GET /v1/me`: every budget covering an identity, whatever model or tool
//!   ([`HeadroomCache::covering`]); a scan, for a rare request.
//!
//! - Every request, when reservations are on: every covering budget's position and this
//!   replica's book for it ([`HeadroomCache::tightest_and_covering`], the same lookup). A book
//!   outlives the records of its key (a new record changes the position, not what the replica
//!   holds) and goes with the tombstone.
//!
//! Records with an older `revision` than the one held are ignored; a tombstone removes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};

use faregate_core::event::{Attribution, BudgetScope, Headroom};
use faregate_core::money::Usd;

use crate::decisions::{Shape, lookup_key, scope_dims, shape_of, who_dims};
use crate::reserve::{Book, Covering, Position};

#[derive(Debug, Default)]
pub struct HeadroomCache {
    inner: RwLock<Inner>,
}

/// One budget in the index.
#[derive(Debug, Clone)]
struct Entry {
    key: String,
    resets_at: Option<DateTime<Utc>>,
    position: Position,
    book: Arc<Book>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Record key -> (parsed scope, record).
    latest: HashMap<String, (BudgetScope, Headroom)>,
    /// shape -> lookup key of the pinned values -> the budgets there.
    index: BTreeMap<Shape, HashMap<String, Vec<Entry>>>,
}

/// The tightest covering budget's position, for the response headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tightest {
    pub remaining: Usd,
    pub resets_at: Option<DateTime<Utc>>,
}

impl Inner {
    fn slot(&mut self, scope: &BudgetScope) -> Option<(Shape, String)> {
        let dims = scope_dims(scope);
        let shape = shape_of(&dims);
        lookup_key(&scope.org, &dims, shape).map(|key| (shape, key))
    }

    fn unindex(&mut self, key: &str) {
        let Some((scope, _)) = self.latest.remove(key) else { return };
        let Some((shape, lookup)) = self.slot(&scope) else { return };
        if let Some(map) = self.index.get_mut(&shape) {
            if let Some(entries) = map.get_mut(&lookup) {
                entries.retain(|e| e.key != key);
                if entries.is_empty() {
                    map.remove(&lookup);
                }
            }
            if map.is_empty() {
                self.index.remove(&shape);
            }
        }
    }
}

impl HeadroomCache {
    /// Apply one headroom-topic record (`None` is a tombstone).
    pub fn apply(&self, key: &str, record: Option<Headroom>) {
        let Ok(mut inner) = self.inner.write() else { return };
        let Some(record) = record else {
            inner.unindex(key);
            return;
        };
        if inner.latest.get(key).is_some_and(|(_, held)| held.revision > record.revision) {
            return;
        }
        let scope = match BudgetScope::parse_key(&record.scope_key) {
            Ok(scope) => scope,
            Err(e) => {
                tracing::warn!(error = %e, "headroom for an unreadable scope ignored");
                return;
            }
        };
        let book = inner
            .slot(&scope)
            .and_then(|(shape, lookup)| inner.index.get(&shape)?.get(&lookup)?.iter().find(|e| e.key == key))
            .map(|e| e.book.clone())
            .unwrap_or_else(|| Arc::new(Book::new(record.budget_name.clone())));
        tracing::debug!(budget = %record.budget_id, revision = record.revision, remaining = %record.remaining_usd,
            shares = record.shares.as_ref().map_or(0, Vec::len), "headroom record");
        inner.unindex(key);
        // A new position may be the room a waiting request needs.
        book.wake();
        if let Some((shape, lookup)) = inner.slot(&scope) {
            inner.index.entry(shape).or_default().entry(lookup).or_default().push(Entry {
                key: key.to_string(),
                resets_at: record.resets_at,
                position: Position {
                    remaining: record.remaining_usd,
                    spend_revision: record.spend_revision,
                    window_start_us: record.window_start.timestamp_micros(),
                    revision: record.revision,
                    watermarks: record.usage_watermarks.as_ref().map(|marks| {
                        let mut marks = marks.clone();
                        marks.sort_by_key(|m| m.partition);
                        marks.into()
                    }),
                    shares: record.shares.as_ref().map(|shares| shares.clone().into()),
                },
                book,
            });
        }
        inner.latest.insert(key.to_string(), (scope, record));
    }

    /// The covering budget with the least remaining (the earliest reset on a tie).
    pub fn tightest(&self, who: &Attribution<'_>) -> Option<Tightest> {
        self.tightest_and_covering(who, false).0
    }

    /// [`tightest`](Self::tightest), and with `books` every covering budget's position and
    /// this replica's book for it.
    pub fn tightest_and_covering(
        &self,
        who: &Attribution<'_>,
        books: bool,
    ) -> (Option<Tightest>, Vec<Covering>) {
        let Ok(inner) = self.inner.read() else { return (None, Vec::new()) };
        if inner.index.is_empty() {
            return (None, Vec::new());
        }
        let dims = who_dims(who);
        let mut tightest: Option<Tightest> = None;
        let mut covering = Vec::new();
        let entries = inner
            .index
            .iter()
            .filter_map(|(shape, map)| map.get(&lookup_key(who.org, &dims, *shape)?))
            .flatten();
        for entry in entries {
            let candidate = Tightest { remaining: entry.position.remaining, resets_at: entry.resets_at };
            let order = |t: &Tightest| (t.remaining, t.resets_at.unwrap_or(DateTime::<Utc>::MAX_UTC));
            if tightest.as_ref().is_none_or(|t| order(&candidate) < order(t)) {
                tightest = Some(candidate);
            }
            if books {
                covering.push(Covering { position: entry.position.clone(), book: entry.book.clone() });
            }
        }
        (tightest, covering)
    }

    /// Every budget held: (record key, scope key, budget id, position, this replica's book).
    pub fn books(&self) -> Vec<(String, String, String, Position, Arc<Book>)> {
        let Ok(inner) = self.inner.read() else { return Vec::new() };
        inner
            .index
            .values()
            .flat_map(|map| map.values().flatten())
            .filter_map(|e| {
                let (_, record) = inner.latest.get(&e.key)?;
                Some((
                    e.key.clone(),
                    record.scope_key.clone(),
                    record.budget_id.clone(),
                    e.position.clone(),
                    e.book.clone(),
                ))
            })
            .collect()
    }

    /// What this replica holds against the budget of record key `key` (for `/v1/me`).
    pub fn book_of(&self, key: &str) -> Option<(Position, Arc<Book>)> {
        let inner = self.inner.read().ok()?;
        let (scope, _) = inner.latest.get(key)?;
        let dims = scope_dims(scope);
        let shape = shape_of(&dims);
        let lookup = lookup_key(&scope.org, &dims, shape)?;
        let entry = inner.index.get(&shape)?.get(&lookup)?.iter().find(|e| e.key == key)?;
        Some((entry.position.clone(), entry.book.clone()))
    }

    /// Every budget covering `who` for some request: org, team, user, key and project must
    /// match where the budget pins them (and `who` has them); model and tool may be anything.
    pub fn covering(&self, who: &Attribution<'_>) -> Vec<Headroom> {
        let Ok(inner) = self.inner.read() else { return Vec::new() };
        fn dim(want: &Option<String>, got: Option<&str>) -> bool {
            want.as_deref().is_none_or(|w| got == Some(w))
        }
        let mut out: Vec<Headroom> = inner
            .latest
            .values()
            .filter(|(s, _)| {
                s.org == who.org
                    && dim(&s.team, who.team)
                    && dim(&s.user, who.user)
                    && dim(&s.key_id, who.key_id)
                    && dim(&s.project, who.project)
            })
            .map(|(_, h)| h.clone())
            .collect();
        out.sort_by(|a, b| (a.remaining_usd, &a.budget_id).cmp(&(b.remaining_usd, &b.budget_id)));
        out
    }

    pub fn len(&self) -> usize {
        self.inner.read().map(|i| i.latest.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Dollars as the budget headers and the CLI show them: at least 2 and at most 6 decimal
/// places (rounded half away from zero), e.g. `3.2` -> `3.20`, `0.0012345` -> `0.001235`.
pub fn dollars(amount: Usd) -> String {
    let mut d =
        amount.0.round_dp_with_strategy(6, rust_decimal::RoundingStrategy::MidpointAwayFromZero).normalize();
    if d.scale() < 2 {
        d.rescale(2);
    }
    d.to_string()
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use rust_decimal::Decimal;

    use super::*;

    fn usd(s: &str) -> Usd {
        Usd(Decimal::from_str(s).unwrap())
    }

    fn record(scope_key: &str, id: &str, remaining: &str, revision: i64) -> Headroom {
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        Headroom {
            scope_key: scope_key.into(),
            budget_id: id.into(),
            budget_name: id.into(),
            period: "day".into(),
            days: None,
            rolling: false,
            time_zone: "UTC".into(),
            limit_usd: usd("10"),
            spent_usd: Usd(usd("10").0 - usd(remaining).0),
            remaining_usd: usd(remaining),
            window_start: t,
            window_end: t,
            resets_at: Some(t),
            spend_revision: 1,
            usage_watermarks: None,
            shares: None,
            published_at: t,
            revision,
        }
    }

    fn put(cache: &HeadroomCache, h: Headroom) {
        cache.apply(&h.key(), Some(h.clone()));
    }

    #[test]
    fn the_tightest_covering_budget_wins_and_old_revisions_and_tombstones_apply() {
        let cache = HeadroomCache::default();
        let who = Attribution {
            org: "acme",
            team: Some("infra"),
            user: Some("ana"),
            model: Some("m"),
            ..Attribution::default()
        };
        assert_eq!(cache.tightest(&who), None);
        put(&cache, record("org=acme", "org-month", "80", 1));
        put(&cache, record("org=acme/team=infra", "infra-day", "3.2", 1));
        put(&cache, record("org=acme/user=bob", "bob-day", "0.5", 1)); // not ana
        put(&cache, record("org=acme/model=x", "x-day", "0.1", 1)); // another model
        assert_eq!(cache.tightest(&who).unwrap().remaining, usd("3.2"));
        put(&cache, record("org=acme/team=infra", "infra-day", "-1", 3));
        put(&cache, record("org=acme/team=infra", "infra-day", "9", 2)); // older: ignored
        assert_eq!(cache.tightest(&who).unwrap().remaining, usd("-1"));
        cache.apply("org=acme/team=infra#budget=infra-day", None);
        assert_eq!(cache.tightest(&who).unwrap().remaining, usd("80"));
        // /v1/me sees budgets of any model, never another user's.
        let ids: Vec<String> =
            cache.covering(&Attribution { model: None, ..who }).into_iter().map(|h| h.budget_id).collect();
        assert_eq!(ids, vec!["x-day".to_string(), "org-month".to_string()]);
    }

    #[test]
    fn dollars_show_two_to_six_places() {
        for (amount, text) in [
            ("3.2", "3.20"),
            ("10", "10.00"),
            ("0.0012345", "0.001235"),
            ("-2.25", "-2.25"),
            ("1.123456789", "1.123457"),
            ("0", "0.00"),
        ] {
            assert_eq!(dollars(usd(amount)), text, "{amount}");
        }
    }
}
