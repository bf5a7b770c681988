//! Rebuilding rollup buckets from the ledger after a write whose outcome was uncertain.
//!
//! The rollups are fed by materialized views on the ledger's insert, and an insert into a table
//! and its views is not atomic: ClickHouse killed in the middle of one can keep the ledger's rows
//! and not a view's (or a view's and not the ledger's). The retry then finds the rows in the
//! ledger and writes nothing, and the buckets stay wrong for ever. So after any write that was
//! uncertain (an attempt failed, or the duplicate check found rows already stored: a write whose
//! offsets were never committed), the pipeline rebuilds the rollup buckets of the batch's
//! subjects from the ledger (`FINAL`): for each rollup table, a lightweight `DELETE` of the
//! buckets of those (org, user, key_id) in the batch's bucket ranges, then one
//! `INSERT ... SELECT` of the same buckets from the ledger, grouped as the views group.
//!
//! Why nothing else writes those buckets meanwhile: a rollup row's (org, user, key_id) comes from
//! one Kafka partition (the usage topic is keyed by org and user, or org and key when there is
//! no user, or the org alone), the processor that owns the partition is its only writer, and the
//! repair runs inside the write's fence permit, so the partition cannot move to another owner
//! before it ends. `faregate reprice` is the exception, run over days no processor writes.
//!
//! Readers see the repaired buckets missing between the `DELETE` and the `INSERT` (a few
//! milliseconds after a fault); the ledger itself is never touched. Lightweight `DELETE` needs
//! ClickHouse 23.3 or later.

use chrono::{DurationRound, TimeDelta};

use super::{datetime_literal, quote, quoted_list, second_literal as second};
use faregate_core::clickhouse::LedgerRow;
use faregate_core::clickhouse::migrations::Topology;

/// A rollup table: its name and the width of its buckets (the view's `toStartOf…`).
#[derive(Debug, Clone, Copy)]
pub struct Rollup {
    pub table: &'static str,
    bucket_fn: &'static str,
    width: TimeDelta,
}

/// The three rollups the ledger's views keep (schemas/clickhouse/0003-0005).
pub const ROLLUPS: [Rollup; 3] = [
    Rollup { table: "usage_rollup_minute", bucket_fn: "toStartOfMinute", width: TimeDelta::minutes(1) },
    Rollup { table: "usage_rollup_hour", bucket_fn: "toStartOfHour", width: TimeDelta::hours(1) },
    Rollup { table: "usage_rollup_day", bucket_fn: "toStartOfDay", width: TimeDelta::days(1) },
];

/// The rollups' columns, in the views' order, and each one's aggregate over ledger rows.
const COLUMNS: &str = "bucket, org, team, user, key_id, project, model, tool, provider, \
    requests, unpriced_requests, input_tokens, output_tokens, cache_read_tokens, \
    cache_write_5m_tokens, cache_write_1h_tokens, reasoning_tokens, cost_input, cost_output, \
    cost_cache_read, cost_cache_write_5m, cost_cache_write_1h, cost_reasoning, cost_total";
const SUMS: &str = "count(), countIf(pricing_status = 'unpriced'), sum(input_tokens), \
    sum(output_tokens), sum(cache_read_tokens), sum(cache_write_5m_tokens), \
    sum(cache_write_1h_tokens), sum(reasoning_tokens), \
    sum(ifNull(cost_input, toDecimal128(0, 18))), sum(ifNull(cost_output, toDecimal128(0, 18))), \
    sum(ifNull(cost_cache_read, toDecimal128(0, 18))), \
    sum(ifNull(cost_cache_write_5m, toDecimal128(0, 18))), \
    sum(ifNull(cost_cache_write_1h, toDecimal128(0, 18))), \
    sum(ifNull(cost_reasoning, toDecimal128(0, 18))), sum(ifNull(cost_total, toDecimal128(0, 18)))";
const DIMENSIONS: &str = "org, team, user, key_id, project, model, tool, provider";

/// Subjects (org, user, key_id) named in one pair of statements: about 100 bytes of SQL each,
/// far under ClickHouse's max_query_size (256 KiB by default).
pub const SUBJECTS_PER_STATEMENT: usize = 500;

/// At most this many bucket ranges narrow one statement (cut at the widest gaps).
const MAX_RANGES: usize = 16;

impl Rollup {
    /// The statements that rebuild this rollup's buckets of `rows`' subjects: the `DELETE`, then
    /// the `INSERT ... SELECT` from the ledger. `rows` must be one chunk of subjects (see
    /// [`SUBJECTS_PER_STATEMENT`]).
    pub fn rebuild(&self, rows: &[&LedgerRow], topology: &Topology) -> Option<(String, String)> {
        let starts = rows.iter().map(|r| r.occurred_at.duration_trunc(self.width).unwrap_or(r.occurred_at));
        let ranges = super::clickhouse::time_ranges(starts, MAX_RANGES);
        if ranges.is_empty() {
            return None;
        }
        let orgs = quoted_list(rows.iter().map(|r| r.org.as_str()));
        let mut subjects: Vec<String> = rows
            .iter()
            .map(|r| format!("({}, {}, {})", quote(&r.org), quote(&r.user), quote(&r.key_id)))
            .collect();
        subjects.sort_unstable();
        subjects.dedup();
        let subjects = format!("org IN ({orgs}) AND (org, user, key_id) IN ({})", subjects.join(", "));
        let buckets: Vec<String> = ranges
            .iter()
            .map(|(first, last)| format!("(bucket >= {} AND bucket <= {})", second(*first), second(*last)))
            .collect();
        let times: Vec<String> = ranges
            .iter()
            .map(|(first, last)| {
                format!(
                    "(occurred_at >= {} AND occurred_at < {})",
                    datetime_literal(*first),
                    datetime_literal(*last + self.width)
                )
            })
            .collect();
        let (local, on_cluster) = match topology {
            Topology::SingleNode => (self.table.to_string(), String::new()),
            Topology::Cluster { name } => (format!("{}_local", self.table), format!(" ON CLUSTER {name}")),
        };
        let delete =
            format!("DELETE FROM {local}{on_cluster} WHERE {subjects} AND ({})", buckets.join(" OR "));
        let insert = format!(
            "INSERT INTO {table} ({COLUMNS}) SELECT {bucket_fn}(occurred_at) AS bucket, {DIMENSIONS}, {SUMS} \
             FROM usage_ledger FINAL WHERE {subjects} AND ({}) GROUP BY bucket, {DIMENSIONS}",
            times.join(" OR "),
            table = self.table,
            bucket_fn = self.bucket_fn,
        );
        Some((delete, insert))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use faregate_core::clickhouse::ledger::{KafkaPosition, Pricing};
    use faregate_core::event::arbitrary;
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::TestRunner;

    fn row(org: &str, user: &str, at: DateTime<Utc>) -> LedgerRow {
        let mut event =
            arbitrary::usage_event().new_tree(&mut TestRunner::deterministic()).unwrap().current();
        event.org = org.into();
        event.user = Some(user.into());
        event.key_id = Some("k'1".into());
        event.occurred_at = at;
        let position = KafkaPosition { topic: "usage".into(), partition: 0, offset: 0 };
        LedgerRow::new(&event, &Pricing::Unpriced { reason: "test".into() }, &position, at)
    }

    #[test]
    fn rebuilds_name_each_subject_once_and_cover_whole_buckets() {
        let at = DateTime::from_timestamp(1_800_000_030, 500).unwrap();
        let rows =
            [row("acme", "ann", at), row("acme", "ann", at + TimeDelta::seconds(5)), row("beta", "bob", at)];
        let rows: Vec<&LedgerRow> = rows.iter().collect();
        let (delete, insert) = ROLLUPS[1].rebuild(&rows, &Topology::SingleNode).unwrap();
        assert!(
            delete.starts_with("DELETE FROM usage_rollup_hour WHERE org IN ('acme', 'beta')"),
            "{delete}"
        );
        assert_eq!(delete.matches("('acme', 'ann', 'k\\'1')").count(), 1, "{delete}");
        let hour = at.duration_trunc(TimeDelta::hours(1)).unwrap();
        assert!(
            delete.contains(&format!("bucket >= {} AND bucket <= {}", second(hour), second(hour))),
            "{delete}"
        );
        assert!(insert.starts_with("INSERT INTO usage_rollup_hour (bucket, org,"), "{insert}");
        assert!(insert.contains("SELECT toStartOfHour(occurred_at) AS bucket"), "{insert}");
        assert!(
            insert.contains(&format!(
                "occurred_at >= {} AND occurred_at < {}",
                datetime_literal(hour),
                datetime_literal(hour + TimeDelta::hours(1))
            )),
            "{insert}"
        );
        let cluster = Topology::Cluster { name: "prod".into() };
        let (delete, insert) = ROLLUPS[0].rebuild(&rows, &cluster).unwrap();
        assert!(
            delete.starts_with("DELETE FROM usage_rollup_minute_local ON CLUSTER prod WHERE"),
            "{delete}"
        );
        assert!(insert.starts_with("INSERT INTO usage_rollup_minute ("), "{insert}");
        assert!(ROLLUPS[2].rebuild(&[], &cluster).is_none());
    }
}
