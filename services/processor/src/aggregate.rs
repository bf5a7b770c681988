//! Spend aggregates: absolute totals per subject and hour, the ledger's as of each write (read
//! back, or advanced in memory: [`crate::totals_cache`]) and published to the spend topic. A
//! subject here is the finest attribution of a request (org, team, user, key, project, model,
//! tool); the budget service rolls them up.
//! Because each record is the ledger's total for its (subject, hour), replaying or republishing
//! one can never double-count.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

use faregate_core::clickhouse::LedgerRow;
use faregate_core::clickhouse::ledger::PricingStatus;
use faregate_core::event::{BucketWidth, SpendAggregate};
use faregate_core::money::Usd;

/// The attribution of one aggregate, as stored in the ledger ("" for unset).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subject {
    pub org: String,
    pub team: String,
    pub user: String,
    pub key_id: String,
    pub project: String,
    pub model: String,
    pub tool: String,
}

impl Subject {
    pub fn of(row: &LedgerRow) -> Subject {
        Subject {
            org: row.org.clone(),
            team: row.team.clone(),
            user: row.user.clone(),
            key_id: row.key_id.clone(),
            project: row.project.clone(),
            model: row.model.clone(),
            tool: row.tool.clone(),
        }
    }

    /// The canonical subject key: `org=acme/team=infra/user=ana/key=k1/project=-/model=m/tool=codex`,
    /// with `-` for an unset dimension and `/`, `=` and `%` percent-encoded inside values.
    pub fn key(&self) -> String {
        fn part(name: &str, value: &str) -> String {
            if value.is_empty() {
                return format!("{name}=-");
            }
            let escaped = value.replace('%', "%25").replace('/', "%2F").replace('=', "%3D");
            format!("{name}={escaped}")
        }
        [
            part("org", &self.org),
            part("team", &self.team),
            part("user", &self.user),
            part("key", &self.key_id),
            part("project", &self.project),
            part("model", &self.model),
            part("tool", &self.tool),
        ]
        .join("/")
    }
}

/// One (subject, hour) whose total must be republished.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BucketKey {
    pub subject: Subject,
    pub hour: DateTime<Utc>,
}

impl BucketKey {
    pub fn of(row: &LedgerRow) -> BucketKey {
        BucketKey { subject: Subject::of(row), hour: hour_of(row.occurred_at) }
    }

    /// The Kafka key on the compacted spend topic: one live record per subject and hour.
    pub fn topic_key(&self) -> String {
        format!("{}@{}", self.subject.key(), self.hour.format("%Y-%m-%dT%H:00Z"))
    }
}

/// The start of the hour containing `at`.
pub fn hour_of(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::hours(1)).unwrap_or(at)
}

/// Ledger totals of one (subject, hour).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketTotals {
    pub key: BucketKey,
    pub cost: Usd,
    pub requests: i64,
    pub unpriced_requests: i64,
    pub tokens_total: i64,
}

impl BucketTotals {
    /// The totals of no rows.
    pub fn empty(key: BucketKey) -> BucketTotals {
        BucketTotals { key, cost: Usd::ZERO, requests: 0, unpriced_requests: 0, tokens_total: 0 }
    }

    /// Count `row` (one of this bucket's events) in, the way the ledger's query counts it.
    pub fn add(&mut self, row: &LedgerRow) {
        self.cost = Usd(self.cost.0 + row.cost_total.unwrap_or_default().0);
        self.requests += 1;
        self.unpriced_requests += i64::from(row.pricing_status == PricingStatus::Unpriced);
        self.tokens_total += row.tokens_total() as i64;
    }

    /// The spend-topic record of these totals.
    pub fn to_aggregate(&self, computed_at: DateTime<Utc>) -> SpendAggregate {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let s = &self.key.subject;
        SpendAggregate {
            subject: s.key(),
            org: s.org.clone(),
            team: opt(&s.team),
            user: opt(&s.user),
            key_id: opt(&s.key_id),
            project: opt(&s.project),
            model: opt(&s.model),
            tool: opt(&s.tool),
            session_id: None,
            bucket_start: self.key.hour,
            bucket_width: BucketWidth::Hour,
            cost_usd: self.cost,
            requests: self.requests,
            unpriced_requests: self.unpriced_requests,
            tokens_total: self.tokens_total,
            revision: computed_at.timestamp_micros(),
            computed_at,
            usage_positions: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn subject_keys_are_unambiguous() {
        let subject = Subject {
            org: "acme".into(),
            team: "a/b".into(),
            user: "x=y".into(),
            key_id: String::new(),
            project: "100%".into(),
            model: "claude-sonnet-4-5".into(),
            tool: "claude-code".into(),
        };
        assert_eq!(
            subject.key(),
            "org=acme/team=a%2Fb/user=x%3Dy/key=-/project=100%25/model=claude-sonnet-4-5/tool=claude-code"
        );
    }

    #[test]
    fn hours_truncate() {
        let at = Utc.with_ymd_and_hms(2026, 3, 1, 13, 59, 59).unwrap();
        assert_eq!(hour_of(at), Utc.with_ymd_and_hms(2026, 3, 1, 13, 0, 0).unwrap());
    }
}
