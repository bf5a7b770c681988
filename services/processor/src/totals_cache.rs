//! Spend totals kept in memory: the ledger's totals of the buckets this processor wrote
//! recently, so that a flush publishes them without reading the ledger back.
//!
//! Contract:
//! - An entry holds the ledger's total of one bucket (a subject's hour, or a session's minute)
//!   as of this processor's last write to it, with the usage partition its rows come from, the
//!   fence that partition was read under ([`crate::fence`]) and when the total was last read
//!   from the ledger.
//! - After a clean write (the first attempt, and the duplicate check found none of the batch's
//!   rows stored), an entry is advanced by the batch's rows of its bucket when its fence is the
//!   batch's and still alive, every row of the bucket in the batch came from its partition, and
//!   it was read less than `ttl` ago. Its total is then the ledger's: those rows were not in the
//!   ledger, no other processor writes rows of a partition this one holds (writes are fenced),
//!   and every subject's events come from one partition (the usage topic's key; the assumption
//!   [`crate::watermark`] rests on too).
//! - Every other bucket of the batch is read from the ledger, all in one read, and the read
//!   replaces its entry. A write that was retried or found rows already stored reads all of its
//!   buckets (that is also when the rollups are repaired).
//! - What those assumptions do not cover is bounded by `ttl`: a bucket whose rows come from
//!   partitions held by two processors (the usage topic's partition count changed, or one session
//!   used by two users) or a ledger changed behind the processor (`faregate reprice` of an hour
//!   that processors still write) is read from the ledger again at least every `ttl`. A `ttl` of
//!   0 reads every bucket after every write.
//! - Entries expire after `ttl` and are swept once per `ttl`: the cache holds only the buckets
//!   read in the last `ttl`.

use std::hash::Hash;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use foldhash::{HashMap, HashMapExt};

use crate::aggregate::{BucketKey, BucketTotals, Subject, hour_of};
use crate::fence::{BatchFences, Fence};
use crate::ledger::SpendTotals;
use crate::session::{SessionKey, SessionTotals, minute_of};
use faregate_core::clickhouse::LedgerRow;

/// Counts buckets published from memory (`from="memory"`) and read back (`from="ledger"`), as
/// `faregate_processor_totals_total{from}`.
fn served(from: &'static str, buckets: usize) {
    if buckets > 0 {
        metrics::counter!("faregate_processor_totals_total", "from" => from).increment(buckets as u64);
    }
}

struct Entry<T> {
    totals: T,
    partition: i32,
    fence: Fence,
    read_at: Instant,
}

impl<T> Entry<T> {
    fn holds(&self, ttl: Duration, home: Option<i32>, fences: &BatchFences) -> bool {
        home == Some(self.partition)
            && self.read_at.elapsed() < ttl
            && fences.fence(self.partition).is_some_and(|f| f.same(&self.fence))
            && self.fence.is_alive()
    }
}

/// The recent totals of the buckets this processor writes (see the module docs).
pub struct TotalsCache {
    ttl: Duration,
    hourly: HashMap<BucketKey, Entry<BucketTotals>>,
    sessions: HashMap<SessionKey, Entry<SessionTotals>>,
    swept: Instant,
}

/// A written batch's buckets: the totals the cache holds, and those to read from the ledger.
pub struct Plan {
    /// Totals advanced in memory: the ledger's, as of the write.
    pub known: SpendTotals,
    pub read_hourly: Vec<BucketKey>,
    pub read_sessions: Vec<SessionKey>,
    /// The one partition each bucket's rows came from (absent when several), for [`TotalsCache::store`].
    homes: HashMap<BucketKey, i32>,
    session_homes: HashMap<SessionKey, i32>,
}

impl Plan {
    pub fn buckets(&self) -> usize {
        self.known.hourly.len() + self.read_hourly.len()
    }

    pub fn session_minutes(&self) -> usize {
        self.known.sessions.len() + self.read_sessions.len()
    }
}

/// A batch's rows of one bucket.
struct Group<'a> {
    rows: Vec<&'a LedgerRow>,
    home: Option<i32>,
}

impl<'a> Group<'a> {
    fn take(&mut self, row: &'a LedgerRow) {
        if self.home != Some(row.kafka_partition) {
            self.home = None;
        }
        self.rows.push(row);
    }
}

/// The rows of `rows` grouped by `key` (borrowed, so an owned key is built once per bucket).
fn group<'a, K: Hash + Eq>(
    rows: &[&'a LedgerRow],
    key: impl Fn(&'a LedgerRow) -> Option<K>,
) -> HashMap<K, Group<'a>> {
    let mut groups: HashMap<K, Group<'a>> = HashMap::new();
    for &row in rows {
        if let Some(k) = key(row) {
            groups
                .entry(k)
                .or_insert_with(|| Group { rows: Vec::new(), home: Some(row.kafka_partition) })
                .take(row);
        }
    }
    groups
}

type HourKey<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str, &'a str, &'a str, DateTime<Utc>);

fn hour_key(r: &LedgerRow) -> Option<HourKey<'_>> {
    Some((&r.org, &r.team, &r.user, &r.key_id, &r.project, &r.model, &r.tool, hour_of(r.occurred_at)))
}

fn minute_key(r: &LedgerRow) -> Option<(&str, &str, DateTime<Utc>)> {
    let session = r.session_id.as_deref().filter(|s| !s.is_empty())?;
    Some((&r.org, session, minute_of(r.occurred_at)))
}

impl TotalsCache {
    pub fn new(ttl: Duration) -> Self {
        TotalsCache { ttl, hourly: HashMap::new(), sessions: HashMap::new(), swept: Instant::now() }
    }

    /// Sort `written` (the batch's rows the ledger holds now) into totals known in memory and
    /// buckets to read. `clean`: the write was its first attempt and every row in `written` was
    /// fresh (not in the ledger before it).
    pub fn plan(&mut self, written: &[&LedgerRow], clean: bool, fences: &BatchFences) -> Plan {
        self.sweep();
        let hours = group(written, hour_key);
        let minutes = group(written, minute_key);
        let mut plan = Plan {
            known: SpendTotals::default(),
            read_hourly: Vec::new(),
            read_sessions: Vec::new(),
            homes: HashMap::new(),
            session_homes: HashMap::new(),
        };
        for (_, g) in hours {
            let key = BucketKey { subject: Subject::of(g.rows[0]), hour: hour_of(g.rows[0].occurred_at) };
            match self.hourly.get_mut(&key).filter(|e| clean && e.holds(self.ttl, g.home, fences)) {
                Some(entry) => {
                    g.rows.iter().for_each(|r| entry.totals.add(r));
                    plan.known.hourly.push(entry.totals.clone());
                }
                None => {
                    if let Some(home) = g.home {
                        plan.homes.insert(key.clone(), home);
                    }
                    plan.read_hourly.push(key);
                }
            }
        }
        for ((org, session, minute), g) in minutes {
            let key = SessionKey { org: org.to_string(), session_id: session.to_string(), minute };
            match self.sessions.get_mut(&key).filter(|e| clean && e.holds(self.ttl, g.home, fences)) {
                Some(entry) => {
                    g.rows.iter().for_each(|r| entry.totals.add(r));
                    plan.known.sessions.push(entry.totals.clone());
                }
                None => {
                    if let Some(home) = g.home {
                        plan.session_homes.insert(key.clone(), home);
                    }
                    plan.read_sessions.push(key);
                }
            }
        }
        served("memory", plan.known.hourly.len() + plan.known.sessions.len());
        served("ledger", plan.read_hourly.len() + plan.read_sessions.len());
        plan
    }

    /// Keep what the ledger answered for `plan`'s reads (begun at `read_at`), where the bucket's
    /// rows came from one partition whose fence is still alive.
    pub fn store(&mut self, plan: &Plan, read: &SpendTotals, fences: &BatchFences, read_at: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        let entry = |home: Option<&i32>| {
            let partition = *home?;
            let fence = fences.fence(partition).filter(|f| f.is_alive())?.clone();
            Some((partition, fence))
        };
        for t in &read.hourly {
            if let Some((partition, fence)) = entry(plan.homes.get(&t.key)) {
                self.hourly.insert(t.key.clone(), Entry { totals: t.clone(), partition, fence, read_at });
            }
        }
        for t in &read.sessions {
            if let Some((partition, fence)) = entry(plan.session_homes.get(&t.key)) {
                self.sessions.insert(t.key.clone(), Entry { totals: t.clone(), partition, fence, read_at });
            }
        }
    }

    /// Drop expired entries and those of revoked partitions, once per `ttl`.
    fn sweep(&mut self) {
        if self.swept.elapsed() < self.ttl {
            return;
        }
        self.swept = Instant::now();
        let ttl = self.ttl;
        self.hourly.retain(|_, e| e.read_at.elapsed() < ttl && e.fence.is_alive());
        self.sessions.retain(|_, e| e.read_at.elapsed() < ttl && e.fence.is_alive());
    }

    /// How many buckets the cache holds (hourly, session).
    pub fn len(&self) -> (usize, usize) {
        (self.hourly.len(), self.sessions.len())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::TestRunner;

    use super::*;
    use crate::fence::Fences;
    use crate::ledger::{Ledger, MemoryLedger};
    use faregate_core::clickhouse::ledger::{KafkaPosition, Pricing};
    use faregate_core::event::arbitrary;
    use faregate_core::money::Usd;

    const TTL: Duration = Duration::from_secs(3600);

    /// `n` rows of a few users (each user's on its own partition, as the usage topic's key
    /// puts them), sessions and hours.
    fn rows(runner: &mut TestRunner, n: usize, offset: i64) -> Vec<LedgerRow> {
        let strategy = arbitrary::usage_event();
        (0..n)
            .map(|i| {
                let mut e = strategy.new_tree(runner).unwrap().current();
                let user = (i + offset as usize) % 3;
                e.org = "acme".into();
                e.user = Some(format!("u{user}"));
                e.session_id = [None, Some(format!("s{user}"))][i % 2].clone();
                let pricing = Pricing::Unpriced { reason: "test".into() };
                let position =
                    KafkaPosition { topic: "t".into(), partition: user as i32, offset: offset + i as i64 };
                let mut row = LedgerRow::new(&e, &pricing, &position, e.received_at);
                row.cost_total = Some(Usd(rust_decimal::Decimal::new(i as i64 + 1, 3)));
                (row.input_tokens, row.output_tokens, row.cache_read_tokens) = (100 + i as u64, 7, 3);
                (row.cache_write_5m_tokens, row.cache_write_1h_tokens, row.reasoning_tokens) = (1, 0, 2);
                (row.team, row.key_id, row.project) = ("t".into(), format!("k{user}"), String::new());
                (row.model, row.tool) = ("m".into(), "claude-code".into());
                row
            })
            .collect()
    }

    fn assigned() -> (Arc<Fences>, BatchFences) {
        let fences = Arc::new(Fences::default());
        fences.assign([0, 1, 2]);
        let mut batch = BatchFences::default();
        (0..3).for_each(|p| batch.note(p, &fences));
        (fences, batch)
    }

    /// Write `rows` to `ledger` and publish as the pipeline does: what the cache knows plus one
    /// read of the rest.
    async fn flush(
        cache: &mut TotalsCache,
        ledger: &MemoryLedger,
        rows: &[LedgerRow],
        clean: bool,
        fences: &BatchFences,
    ) -> (SpendTotals, usize) {
        ledger.insert(rows).await.unwrap();
        let written: Vec<&LedgerRow> = rows.iter().collect();
        let plan = cache.plan(&written, clean, fences);
        let mut totals = ledger.spend_totals(&plan.read_hourly, &plan.read_sessions).await.unwrap();
        cache.store(&plan, &totals, fences, Instant::now());
        let read = plan.read_hourly.len() + plan.read_sessions.len();
        totals.hourly.extend(plan.known.hourly);
        totals.sessions.extend(plan.known.sessions);
        (totals, read)
    }

    /// The ledger's own totals of the buckets `published` names.
    async fn truth(ledger: &MemoryLedger, published: &SpendTotals) -> SpendTotals {
        let keys: Vec<BucketKey> = published.hourly.iter().map(|t| t.key.clone()).collect();
        let sessions: Vec<SessionKey> = published.sessions.iter().map(|t| t.key.clone()).collect();
        ledger.spend_totals(&keys, &sessions).await.unwrap()
    }

    fn sorted(mut t: SpendTotals) -> SpendTotals {
        t.hourly.sort_by(|a, b| a.key.cmp(&b.key));
        t.sessions.sort_by(|a, b| a.key.cmp(&b.key));
        t
    }

    #[tokio::test]
    async fn totals_advanced_in_memory_are_the_ledgers() {
        let mut runner = TestRunner::deterministic();
        let (ledger, mut cache, (_fences, batch)) =
            (MemoryLedger::default(), TotalsCache::new(TTL), assigned());
        let first = rows(&mut runner, 30, 0);
        let (published, read) = flush(&mut cache, &ledger, &first, true, &batch).await;
        assert!(read > 0, "the first batch reads every bucket");
        assert_eq!(sorted(published.clone()), sorted(truth(&ledger, &published).await));
        // The same buckets again (the generator keeps times close: many repeat).
        for round in 1..6 {
            let mut next = rows(&mut runner, 30, round * 30);
            for (r, f) in next.iter_mut().zip(&first) {
                r.occurred_at = f.occurred_at;
            }
            let (published, read) = flush(&mut cache, &ledger, &next, true, &batch).await;
            assert_eq!(read, 0, "round {round}: buckets written again are published from memory");
            assert_eq!(sorted(published.clone()), sorted(truth(&ledger, &published).await), "round {round}");
        }
    }

    #[tokio::test]
    async fn every_bucket_is_read_when_the_cache_cannot_vouch_for_it() {
        let mut runner = TestRunner::deterministic();
        let ledger = MemoryLedger::default();
        let first = rows(&mut runner, 12, 0);
        let again = |offset: i64, runner: &mut TestRunner| {
            let mut next = rows(runner, 12, offset);
            for (r, f) in next.iter_mut().zip(&first) {
                r.occurred_at = f.occurred_at;
            }
            next
        };
        let buckets = |t: &SpendTotals| t.hourly.len() + t.sessions.len();

        // A write that was retried or met stored rows.
        let (mut cache, (_f, batch)) = (TotalsCache::new(TTL), assigned());
        flush(&mut cache, &ledger, &first, true, &batch).await;
        let (published, read) = flush(&mut cache, &ledger, &again(12, &mut runner), false, &batch).await;
        assert_eq!(read, buckets(&published));

        // No cache at all.
        let (mut cache, (_f, batch)) = (TotalsCache::new(Duration::ZERO), assigned());
        flush(&mut cache, &ledger, &first, true, &batch).await;
        let (published, read) = flush(&mut cache, &ledger, &again(24, &mut runner), true, &batch).await;
        assert_eq!(read, buckets(&published));
        assert_eq!(cache.len(), (0, 0));

        // Entries older than the TTL.
        let mut cache = TotalsCache::new(Duration::from_secs(5));
        let (_f, batch) = assigned();
        let written: Vec<&LedgerRow> = first.iter().collect();
        let plan = cache.plan(&written, true, &batch);
        let read = ledger.spend_totals(&plan.read_hourly, &plan.read_sessions).await.unwrap();
        cache.store(&plan, &read, &batch, Instant::now() - Duration::from_secs(6));
        let (published, read) = flush(&mut cache, &ledger, &again(36, &mut runner), true, &batch).await;
        assert_eq!(read, buckets(&published), "expired entries are read again");

        // A new assignment of the partitions (a revocation in between).
        let (mut cache, (fences, batch)) = (TotalsCache::new(TTL), assigned());
        flush(&mut cache, &ledger, &first, true, &batch).await;
        fences.revoke([0, 1, 2]);
        fences.assign([0, 1, 2]);
        let mut next_batch = BatchFences::default();
        (0..3).for_each(|p| next_batch.note(p, &fences));
        let (published, read) = flush(&mut cache, &ledger, &again(48, &mut runner), true, &next_batch).await;
        assert_eq!(read, buckets(&published), "entries of an earlier assignment are read again");
        assert_eq!(sorted(published.clone()), sorted(truth(&ledger, &published).await));

        // A bucket whose rows came from another partition than its entry's.
        let (mut cache, (_f, batch)) = (TotalsCache::new(TTL), assigned());
        flush(&mut cache, &ledger, &first, true, &batch).await;
        let mut moved = again(60, &mut runner);
        moved.iter_mut().for_each(|r| r.kafka_partition = (r.kafka_partition + 1) % 3);
        let (published, read) = flush(&mut cache, &ledger, &moved, true, &batch).await;
        assert_eq!(read, buckets(&published), "rows from another partition are read again");
        assert_eq!(sorted(published.clone()), sorted(truth(&ledger, &published).await));
    }
}
