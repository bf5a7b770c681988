//! The in-memory ledger of the processor's tests.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Ledger, LedgerError, SpendTotals};
use crate::aggregate::{BucketKey, BucketTotals, hour_of};
use crate::session::{self, SessionKey, minute_of};
use faregate_core::clickhouse::LedgerRow;

/// An in-memory ledger for tests; `set_available(false)` makes every call fail like an outage,
/// `set_refusing(true)` like a query the server will never accept. It keeps no rollups, and
/// remembers the events it was asked to repair them for.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    rows: Mutex<Vec<LedgerRow>>,
    down: AtomicBool,
    refusing: AtomicBool,
    repaired: Mutex<HashSet<Uuid>>,
}

impl MemoryLedger {
    pub fn rows(&self) -> Vec<LedgerRow> {
        self.rows.lock().unwrap().clone()
    }

    /// The event ids of every `repair_rollups` call so far.
    pub fn repaired(&self) -> HashSet<Uuid> {
        self.repaired.lock().unwrap().clone()
    }

    pub fn set_available(&self, available: bool) {
        self.down.store(!available, Ordering::SeqCst);
    }

    /// Make every call fail with an error no retry can cure (like a refused query).
    pub fn set_refusing(&self, refusing: bool) {
        self.refusing.store(refusing, Ordering::SeqCst);
    }

    fn check(&self) -> Result<(), LedgerError> {
        if self.refusing.load(Ordering::SeqCst) {
            return Err(LedgerError::Corrupt("memory ledger refuses every query".into()));
        }
        if self.down.load(Ordering::SeqCst) {
            return Err(LedgerError::Unavailable("memory ledger is switched off".into()));
        }
        Ok(())
    }

    fn totals_where(&self, keep: impl Fn(&BucketKey) -> bool) -> Vec<BucketTotals> {
        let mut totals: BTreeMap<BucketKey, BucketTotals> = BTreeMap::new();
        let rows = self.rows.lock().unwrap();
        let mut seen = HashSet::new();
        for row in rows.iter().filter(|r| seen.insert(r.event_id)) {
            let key = BucketKey::of(row);
            if !keep(&key) {
                continue;
            }
            totals.entry(key.clone()).or_insert_with(|| BucketTotals::empty(key)).add(row);
        }
        totals.into_values().collect()
    }
}

#[async_trait]
impl Ledger for MemoryLedger {
    async fn existing(&self, rows: &[LedgerRow]) -> Result<HashSet<Uuid>, LedgerError> {
        self.check()?;
        let wanted: HashSet<Uuid> = rows.iter().map(|r| r.event_id).collect();
        let stored = self.rows.lock().unwrap();
        Ok(stored.iter().map(|r| r.event_id).filter(|id| wanted.contains(id)).collect())
    }

    async fn insert(&self, rows: &[LedgerRow]) -> Result<(), LedgerError> {
        self.check()?;
        self.rows.lock().unwrap().extend_from_slice(rows);
        Ok(())
    }

    async fn repair_rollups(&self, rows: &[LedgerRow]) -> Result<(), LedgerError> {
        self.check()?;
        self.repaired.lock().unwrap().extend(rows.iter().map(|r| r.event_id));
        Ok(())
    }

    async fn spend_totals(
        &self,
        keys: &[BucketKey],
        sessions: &[SessionKey],
    ) -> Result<SpendTotals, LedgerError> {
        self.check()?;
        let wanted: HashSet<&BucketKey> = keys.iter().collect();
        let wanted_sessions: HashSet<&SessionKey> = sessions.iter().collect();
        Ok(SpendTotals {
            hourly: self.totals_where(|k| wanted.contains(k)),
            sessions: session::fold(&self.rows.lock().unwrap(), |k| wanted_sessions.contains(k)),
        })
    }

    async fn spend_totals_since(
        &self,
        hours_since: DateTime<Utc>,
        sessions_since: DateTime<Utc>,
    ) -> Result<SpendTotals, LedgerError> {
        self.check()?;
        let (hour, minute) = (hour_of(hours_since), minute_of(sessions_since));
        Ok(SpendTotals {
            hourly: self.totals_where(|k| k.hour >= hour),
            sessions: session::fold(&self.rows.lock().unwrap(), |k| k.minute >= minute),
        })
    }
}
