//! Usage watermarks on spend totals: each hourly record published after a batch says which
//! usage partitions' events it carries, so the budget service can tell exactly how far its
//! spend holds each org's events, and a gateway exactly when a cost it settled is in a budget's
//! published spend (docs/ARCHITECTURE.md, "Admission by reservation").
//!
//! Contract: after a batch is in the ledger, its totals are read back and published together
//! (one revision). For each usage partition `p` the batch read (and still owns), and each org
//! with rows from `p` in it, the hourly records of that org whose buckets have rows from `p`
//! form one group: each carries `(p, next_offset of p, group size)`. The totals were read after
//! the ledger held every event of `p` before `next_offset` (earlier batches of `p` were written
//! first, and this one just was), and every subject's events come from one partition, so a
//! reader that has applied all `group size` records of one (org, revision, partition) holds
//! every event of that org on `p` before `next_offset`. Rows already in the ledger (a replay)
//! are in their groups like fresh ones: their totals may never have been published.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use foldhash::{HashMap, HashMapExt};

use crate::aggregate::{BucketTotals, hour_of};
use faregate_core::clickhouse::LedgerRow;
use faregate_core::event::UsageGroup;

type Borrowed<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str, &'a str, &'a str, DateTime<Utc>);

/// Per hourly total of `hourly` (in order), the groups it belongs to (see the module docs).
/// `rows` are the batch's rows the ledger now holds; `next_offsets` the batch's end on each
/// partition still owned (a partition not in it gets no group).
pub fn usage_groups(
    rows: &[&LedgerRow],
    next_offsets: &BTreeMap<i32, i64>,
    hourly: &[BucketTotals],
) -> Vec<Vec<UsageGroup>> {
    let mut partitions: HashMap<Borrowed<'_>, BTreeSet<i32>> = HashMap::with_capacity(hourly.len());
    for r in rows.iter().filter(|r| next_offsets.contains_key(&r.kafka_partition)) {
        let key = (
            &*r.org,
            &*r.team,
            &*r.user,
            &*r.key_id,
            &*r.project,
            &*r.model,
            &*r.tool,
            hour_of(r.occurred_at),
        );
        partitions.entry(key).or_default().insert(r.kafka_partition);
    }
    fn lookup<'m>(
        partitions: &'m HashMap<Borrowed<'m>, BTreeSet<i32>>,
        t: &'m BucketTotals,
    ) -> Option<&'m BTreeSet<i32>> {
        let s = &t.key.subject;
        partitions.get(&(
            &*s.org,
            &*s.team,
            &*s.user,
            &*s.key_id,
            &*s.project,
            &*s.model,
            &*s.tool,
            t.key.hour,
        ))
    }
    let of = |t| lookup(&partitions, t);
    let mut sizes: HashMap<(&str, i32), i32> = HashMap::new();
    for t in hourly {
        for p in of(t).into_iter().flatten() {
            *sizes.entry((&t.key.subject.org, *p)).or_default() += 1;
        }
    }
    hourly
        .iter()
        .map(|t| {
            of(t)
                .into_iter()
                .flatten()
                .map(|&partition| UsageGroup {
                    partition,
                    next_offset: next_offsets[&partition],
                    group_size: sizes[&(&*t.key.subject.org, partition)],
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{BucketKey, Subject};
    use faregate_core::clickhouse::ledger::{KafkaPosition, Pricing};
    use faregate_core::event::arbitrary;
    use faregate_core::money::Usd;
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::TestRunner;

    fn row(org: &str, user: &str, partition: i32) -> LedgerRow {
        let mut event =
            arbitrary::usage_event().new_tree(&mut TestRunner::deterministic()).unwrap().current();
        event.org = org.into();
        event.user = Some(user.into());
        event.occurred_at = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let position = KafkaPosition { topic: "usage".into(), partition, offset: 0 };
        LedgerRow::new(&event, &Pricing::Unpriced { reason: "test".into() }, &position, event.occurred_at)
    }

    fn totals(row: &LedgerRow) -> BucketTotals {
        BucketTotals {
            key: BucketKey { subject: Subject::of(row), hour: hour_of(row.occurred_at) },
            cost: Usd::ZERO,
            requests: 1,
            unpriced_requests: 0,
            tokens_total: 0,
        }
    }

    #[test]
    fn a_group_is_one_org_on_one_partition_and_counts_the_records_published() {
        let rows =
            [row("a", "u1", 0), row("a", "u2", 0), row("a", "u1", 0), row("b", "u1", 0), row("a", "u3", 1)];
        let refs: Vec<&LedgerRow> = rows.iter().collect();
        let next = BTreeMap::from([(0, 17), (1, 5)]);
        let hourly = [totals(&rows[0]), totals(&rows[1]), totals(&rows[3]), totals(&rows[4])];
        let groups = usage_groups(&refs, &next, &hourly);
        let g = |partition, next_offset, group_size| vec![UsageGroup { partition, next_offset, group_size }];
        assert_eq!(groups, vec![g(0, 17, 2), g(0, 17, 2), g(0, 17, 1), g(1, 5, 1)]);
    }

    #[test]
    fn a_revoked_partition_and_a_total_without_rows_get_no_group() {
        let rows = [row("a", "u1", 0), row("a", "u2", 1)];
        let refs: Vec<&LedgerRow> = rows.iter().collect();
        // Partition 1 was revoked during the write; its rows are not the batch's to vouch for.
        let next = BTreeMap::from([(0, 3)]);
        let stranger = totals(&row("a", "u9", 0));
        let groups = usage_groups(&refs, &next, &[totals(&rows[0]), totals(&rows[1]), stranger]);
        assert_eq!(
            groups,
            vec![vec![UsageGroup { partition: 0, next_offset: 3, group_size: 1 }], vec![], vec![]]
        );
    }
}
