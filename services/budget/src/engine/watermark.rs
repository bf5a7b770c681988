//! Usage watermarks: how far the spend this instance holds covers each org's usage events, per
//! usage-topic partition, from the groups the processor puts on its hourly records
//! ([`faregate_core::event::UsageGroup`]; the processor's side is its `watermark` module).
//!
//! Contract: a group is one org, one publication (the records' revision) and one usage
//! partition; once all `group_size` of its records (distinct subject and hour: a re-sent record
//! counts once) were applied, every event of the org on that partition before the group's
//! `next_offset` is in this instance's spend, and the org's watermark there moves up to it
//! (never down). Records may arrive in any order and a group may be split across polls, so a
//! headroom record taken meanwhile carries the watermark without it; the budgets the group's
//! records changed are therefore reported again when it completes ([`UsageMarks::applied`]
//! returns them). A group that never completes (its publisher died half-way) is dropped once
//! a later group of the same partition completes past it. State is per org and dropped with the
//! rest of the spend state on a new assignment; after a rebuild from a compacted topic the
//! watermark may be lower than the truth (a group's record replaced by a republished total),
//! never higher: a gateway then keeps a cost counted a little longer, never shorter.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};

use faregate_core::event::{SpendAggregate, UsageWatermark};

/// Every org's watermarks and groups in progress.
#[derive(Debug, Default)]
pub(crate) struct UsageMarks {
    orgs: HashMap<String, OrgMarks>,
}

#[derive(Debug, Default)]
struct OrgMarks {
    /// Partition -> every event of the org before this offset is applied.
    complete: BTreeMap<i32, i64>,
    /// (partition, revision) -> a group not yet complete.
    pending: HashMap<(i32, i64), Pending>,
    /// Counts completed groups: a headroom record taken at another version may be behind.
    version: u64,
}

#[derive(Debug)]
struct Pending {
    next_offset: i64,
    size: usize,
    seen: HashSet<(String, DateTime<Utc>)>,
    /// Budgets whose spend the group's records changed.
    budgets: BTreeSet<String>,
}

impl UsageMarks {
    /// `aggregate` was applied and changed the spend of `budgets`: count it toward its groups.
    /// Returns the budgets to report again because a group completed.
    pub(crate) fn applied(&mut self, aggregate: &SpendAggregate, budgets: &[String]) -> Vec<String> {
        if aggregate.usage_positions.is_empty() {
            return Vec::new();
        }
        let org = self.orgs.entry(aggregate.org.clone()).or_default();
        let mut again = Vec::new();
        for group in &aggregate.usage_positions {
            let size = usize::try_from(group.group_size).unwrap_or(0);
            if size == 0 || org.complete.get(&group.partition).is_some_and(|&c| c >= group.next_offset) {
                continue;
            }
            let pending =
                org.pending.entry((group.partition, aggregate.revision)).or_insert_with(|| Pending {
                    next_offset: group.next_offset,
                    size,
                    seen: HashSet::new(),
                    budgets: BTreeSet::new(),
                });
            pending.seen.insert((aggregate.subject.clone(), aggregate.bucket_start));
            pending.budgets.extend(budgets.iter().cloned());
            if pending.seen.len() < pending.size {
                continue;
            }
            let Some(done) = org.pending.remove(&(group.partition, aggregate.revision)) else { continue };
            let mark = org.complete.entry(group.partition).or_insert(done.next_offset);
            *mark = (*mark).max(done.next_offset);
            let mark = *mark;
            org.pending.retain(|&(p, _), g| p != group.partition || g.next_offset > mark);
            org.version += 1;
            again.extend(done.budgets);
        }
        again
    }

    /// The org's watermarks, and the version they are at.
    pub(crate) fn of(&self, org: &str) -> (Vec<UsageWatermark>, u64) {
        self.orgs.get(org).map_or((Vec::new(), 0), |o| {
            let marks =
                o.complete.iter().map(|(&partition, &next_offset)| UsageWatermark { partition, next_offset });
            (marks.collect(), o.version)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use faregate_core::event::{BucketWidth, UsageGroup};
    use faregate_core::money::Usd;

    fn record(user: &str, revision: i64, groups: &[(i32, i64, i32)]) -> SpendAggregate {
        SpendAggregate {
            subject: format!("org=acme/user={user}"),
            org: "acme".into(),
            team: None,
            user: Some(user.into()),
            key_id: None,
            project: None,
            model: None,
            tool: None,
            session_id: None,
            bucket_start: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            bucket_width: BucketWidth::Hour,
            cost_usd: Usd::ZERO,
            requests: 1,
            unpriced_requests: 0,
            tokens_total: 0,
            revision,
            computed_at: DateTime::from_timestamp_micros(revision).unwrap(),
            usage_positions: groups
                .iter()
                .map(|&(partition, next_offset, group_size)| UsageGroup {
                    partition,
                    next_offset,
                    group_size,
                })
                .collect(),
        }
    }

    fn marks(m: &UsageMarks) -> Vec<(i32, i64)> {
        m.of("acme").0.iter().map(|w| (w.partition, w.next_offset)).collect()
    }

    #[test]
    fn a_group_moves_the_watermark_once_all_its_records_are_applied_in_any_order() {
        let mut m = UsageMarks::default();
        let (b1, b2) = ("team-budget".to_string(), "ann-budget".to_string());
        assert!(m.applied(&record("bob", 10, &[(3, 40, 2)]), std::slice::from_ref(&b1)).is_empty());
        // Sent twice (a retried publication): still one of two.
        assert!(m.applied(&record("bob", 10, &[(3, 40, 2)]), std::slice::from_ref(&b1)).is_empty());
        assert_eq!(marks(&m), vec![], "half a group moves nothing");
        let again = m.applied(&record("ann", 10, &[(3, 40, 2)]), &[b1.clone(), b2.clone()]);
        assert_eq!(again, vec![b2.clone(), b1.clone()], "the budgets the group changed are reported again");
        assert_eq!(marks(&m), vec![(3, 40)]);
        assert_eq!(m.of("acme").1, 1);
        // An older group completing later never moves it down; other orgs are apart.
        m.applied(&record("cid", 5, &[(3, 20, 1)]), &[]);
        assert_eq!(marks(&m), vec![(3, 40)]);
        assert_eq!(m.of("other"), (vec![], 0));
    }

    #[test]
    fn a_group_left_half_done_goes_when_a_later_one_completes_and_unpositioned_records_count_nowhere() {
        let mut m = UsageMarks::default();
        m.applied(&record("bob", 10, &[(0, 7, 3)]), &[]);
        m.applied(&record("ann", 10, &[(0, 7, 3)]), &[]);
        m.applied(&record("bob", 11, &[]), &[]);
        assert_eq!(marks(&m), vec![]);
        m.applied(&record("bob", 12, &[(0, 9, 1)]), &[]);
        assert_eq!(marks(&m), vec![(0, 9)]);
        assert!(m.orgs["acme"].pending.is_empty(), "the half-done group was dropped");
        // A record in two groups (its subject's events on two partitions) counts in both.
        m.applied(&record("eve", 13, &[(0, 12, 1), (1, 4, 1)]), &[]);
        assert_eq!(marks(&m), vec![(0, 12), (1, 4)]);
    }
}
