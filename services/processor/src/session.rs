//! Session aggregates: absolute totals per (org, session, UTC minute), the ledger's as of each
//! write (read back in the same read as the hourly totals of [`crate::aggregate`], see
//! [`crate::ledger::Ledger::spend_totals`], or advanced in memory: [`crate::totals_cache`]),
//! published to the spend topic with `session_id` set and `bucket_width = MINUTE`. They feed the budget service's
//! runaway-session tripwire; budgets never count them (the hourly totals carry the same spend).
//!
//! A session is one client conversation (Claude Code's, Codex's session id) and may use several
//! models, so its total spans subjects: it is grouped by org and session only. The attribution
//! published with it (team, user, key, project, tool) is the greatest value among the session's
//! rows of that minute, which for the usual session (one key) is simply its key's; it names who
//! to look at, it is never counted. Each record is the ledger's total, so replaying or
//! republishing one can never double-count.
//!
//! Revisions: rows of one session can come from several processors (the usage topic is keyed by
//! org and user, else key, and a session id may be used by two users), so a total's revision is
//! the time taken *before* its ledger read: a later read sees at least every row an earlier one
//! saw, and so carries the higher revision (processor clocks are assumed synchronised to well
//! under the batch time). A total advanced in memory is only as good as its last read there:
//! [`crate::totals_cache`] re-reads such a session at least every `totals_cache_ms`.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

use faregate_core::clickhouse::LedgerRow;
use faregate_core::clickhouse::ledger::PricingStatus;
use faregate_core::event::{BucketWidth, SpendAggregate};
use faregate_core::money::Usd;

/// How far back the processor republishes session totals at start: the runaway-session
/// tripwire forgets sessions idle for two hours.
pub const SESSION_REBUILD: TimeDelta = TimeDelta::hours(2);

/// The start of the minute containing `at`.
pub fn minute_of(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::minutes(1)).unwrap_or(at)
}

fn escape(value: &str) -> String {
    value.replace('%', "%25").replace('/', "%2F").replace('=', "%3D")
}

/// One (org, session, minute) whose total must be republished.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey {
    pub org: String,
    pub session_id: String,
    pub minute: DateTime<Utc>,
}

impl SessionKey {
    /// The session bucket of `row`, if it belongs to a session.
    pub fn of(row: &LedgerRow) -> Option<SessionKey> {
        let session_id = row.session_id.as_deref().filter(|s| !s.is_empty())?;
        Some(SessionKey {
            org: row.org.clone(),
            session_id: session_id.to_string(),
            minute: minute_of(row.occurred_at),
        })
    }

    /// `org=acme/session=s-1`, values escaped like scope keys.
    pub fn subject(&self) -> String {
        format!("org={}/session={}", escape(&self.org), escape(&self.session_id))
    }

    /// The Kafka key on the compacted spend topic: one live record per session and minute.
    pub fn topic_key(&self) -> String {
        format!("{}@{}", self.subject(), self.minute.format("%Y-%m-%dT%H:%MZ"))
    }
}

/// Ledger totals of one (org, session, minute), with the session's attribution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionTotals {
    pub key: SessionKey,
    pub team: String,
    pub user: String,
    pub key_id: String,
    pub project: String,
    pub tool: String,
    pub cost: Usd,
    pub requests: i64,
    pub unpriced_requests: i64,
    pub tokens_total: i64,
}

impl SessionTotals {
    /// The spend-topic record of these totals; `read_at` is when the ledger read began.
    pub fn to_aggregate(&self, read_at: DateTime<Utc>) -> SpendAggregate {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        SpendAggregate {
            subject: self.key.subject(),
            org: self.key.org.clone(),
            team: opt(&self.team),
            user: opt(&self.user),
            key_id: opt(&self.key_id),
            project: opt(&self.project),
            model: None,
            tool: opt(&self.tool),
            session_id: Some(self.key.session_id.clone()),
            bucket_start: self.key.minute,
            bucket_width: BucketWidth::Minute,
            cost_usd: self.cost,
            requests: self.requests,
            unpriced_requests: self.unpriced_requests,
            tokens_total: self.tokens_total,
            revision: read_at.timestamp_micros(),
            computed_at: read_at,
            usage_positions: Vec::new(),
        }
    }
}

impl SessionTotals {
    /// The totals of no rows.
    pub fn empty(key: SessionKey) -> SessionTotals {
        SessionTotals {
            key,
            team: String::new(),
            user: String::new(),
            key_id: String::new(),
            project: String::new(),
            tool: String::new(),
            cost: Usd::ZERO,
            requests: 0,
            unpriced_requests: 0,
            tokens_total: 0,
        }
    }

    /// Count `row` (one of this session minute's events) in, the way the ledger's query counts
    /// it: the attribution is the greatest value seen.
    pub fn add(&mut self, row: &LedgerRow) {
        for (held, value) in [
            (&mut self.team, &row.team),
            (&mut self.user, &row.user),
            (&mut self.key_id, &row.key_id),
            (&mut self.project, &row.project),
            (&mut self.tool, &row.tool),
        ] {
            if value > held {
                held.clone_from(value);
            }
        }
        self.cost = Usd(self.cost.0 + row.cost_total.unwrap_or_default().0);
        self.requests += 1;
        self.unpriced_requests += i64::from(row.pricing_status == PricingStatus::Unpriced);
        self.tokens_total += row.tokens_total() as i64;
    }
}

/// Session totals of `rows` (each event id once) whose key `keep` accepts: the in-memory
/// ledger's answer, computed the way the ClickHouse query computes it.
pub(crate) fn fold(rows: &[LedgerRow], keep: impl Fn(&SessionKey) -> bool) -> Vec<SessionTotals> {
    let mut totals: BTreeMap<SessionKey, SessionTotals> = BTreeMap::new();
    let mut seen = HashSet::new();
    for row in rows.iter().filter(|r| seen.insert(r.event_id)) {
        let Some(key) = SessionKey::of(row).filter(|k| keep(k)) else { continue };
        totals.entry(key.clone()).or_insert_with(|| SessionTotals::empty(key)).add(row);
    }
    totals.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn keys_name_org_session_and_minute() {
        let key = SessionKey {
            org: "acme".into(),
            session_id: "s/1=a".into(),
            minute: minute_of(Utc.with_ymd_and_hms(2026, 3, 1, 13, 7, 59).unwrap()),
        };
        assert_eq!(key.topic_key(), "org=acme/session=s%2F1%3Da@2026-03-01T13:07Z");
        assert_eq!(key.minute, Utc.with_ymd_and_hms(2026, 3, 1, 13, 7, 0).unwrap());
    }
}
