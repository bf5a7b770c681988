//! The spend store: the latest total of every (subject, UTC hour) the spend topic carried,
//! compact enough for millions of subjects. Dimension values are interned once, a subject is
//! seven small integers, and a bucket is 32 bytes.
//!
//! Contract: [`SpendStore::upsert`] keeps a record only if its revision is newer than the one
//! held for the same subject and hour, and reports the change of the total, so everything
//! derived from the store (per-budget hourly sums, anomaly statistics) is exact under replays
//! and out-of-order delivery.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use faregate_core::event::SpendAggregate;

/// An interned string; 0 is "unset".
pub type Sym = u32;

/// org, team, user, key, project, model, tool.
pub type Dims = [Sym; 7];

pub const ORG: usize = 0;
pub const USER: usize = 2;
pub const KEY: usize = 3;
pub const MODEL: usize = 5;

#[derive(Debug, Default)]
pub struct Interner {
    ids: HashMap<Arc<str>, Sym>,
    names: Vec<Arc<str>>,
}

impl Interner {
    pub fn intern(&mut self, value: Option<&str>) -> Sym {
        let Some(value) = value.filter(|v| !v.is_empty()) else {
            return 0;
        };
        if let Some(id) = self.ids.get(value) {
            return *id;
        }
        if self.names.is_empty() {
            self.names.push("".into());
        }
        let id = self.names.len() as Sym;
        let name: Arc<str> = value.into();
        self.names.push(name.clone());
        self.ids.insert(name, id);
        id
    }

    pub fn name(&self, sym: Sym) -> &str {
        self.names.get(sym as usize).map_or("", |n| n)
    }

    /// Approximate heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        let strings: usize = self.names.iter().map(|n| n.len() + 16).sum();
        strings + self.ids.capacity() * (16 + 4 + 1) + self.names.capacity() * 16
    }
}

/// Hours since the Unix epoch.
pub fn hour_index(at: DateTime<Utc>) -> i32 {
    at.timestamp().div_euclid(3600) as i32
}

pub fn hour_start(index: i32) -> DateTime<Utc> {
    DateTime::from_timestamp(i64::from(index) * 3600, 0).unwrap_or_default()
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    hour: i32,
    requests: u32,
    revision: i64,
    cost: Decimal,
}

#[derive(Debug)]
struct Entry {
    dims: Dims,
    /// Sorted by hour.
    buckets: Vec<Bucket>,
}

/// How one upsert changed a subject's hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub subject: u32,
    pub dims: Dims,
    pub hour: i32,
    pub cost_delta: Decimal,
    pub requests_delta: i64,
}

#[derive(Debug, Default)]
pub struct SpendStore {
    pub interner: Interner,
    subjects: HashMap<Dims, u32>,
    entries: Vec<Entry>,
    by_org: HashMap<Sym, Vec<u32>>,
}

impl SpendStore {
    pub fn dims_of(&mut self, a: &SpendAggregate) -> Dims {
        let i = &mut self.interner;
        [
            i.intern(Some(&a.org)),
            i.intern(a.team.as_deref()),
            i.intern(a.user.as_deref()),
            i.intern(a.key_id.as_deref()),
            i.intern(a.project.as_deref()),
            i.intern(a.model.as_deref()),
            i.intern(a.tool.as_deref()),
        ]
    }

    /// Take an hourly aggregate; `None` if it is not newer than what is held or changes nothing.
    pub fn upsert(&mut self, a: &SpendAggregate) -> Option<Change> {
        let dims = self.dims_of(a);
        let hour = hour_index(a.bucket_start);
        let subject = match self.subjects.get(&dims) {
            Some(s) => *s,
            None => {
                let s = self.entries.len() as u32;
                self.entries.push(Entry { dims, buckets: Vec::new() });
                self.subjects.insert(dims, s);
                self.by_org.entry(dims[ORG]).or_default().push(s);
                s
            }
        };
        let entry = &mut self.entries[subject as usize];
        let requests = u32::try_from(a.requests.max(0)).unwrap_or(u32::MAX);
        let fresh = Bucket { hour, requests, revision: a.revision, cost: a.cost_usd.0 };
        let (cost_delta, requests_delta) = match entry.buckets.binary_search_by_key(&hour, |b| b.hour) {
            Ok(i) => {
                let old = entry.buckets[i];
                if old.revision >= a.revision {
                    return None;
                }
                entry.buckets[i] = fresh;
                (fresh.cost - old.cost, i64::from(fresh.requests) - i64::from(old.requests))
            }
            Err(i) => {
                entry.buckets.insert(i, fresh);
                (fresh.cost, i64::from(fresh.requests))
            }
        };
        if cost_delta.is_zero() && requests_delta == 0 {
            return None;
        }
        Some(Change { subject, dims, hour, cost_delta, requests_delta })
    }

    /// Every (hour, cost) of the subjects of `org` whose dimensions satisfy `matches`.
    pub fn scan_org(
        &self,
        org: Sym,
        mut matches: impl FnMut(&Dims) -> bool,
        mut each: impl FnMut(i32, Decimal),
    ) {
        for s in self.by_org.get(&org).into_iter().flatten() {
            let entry = &self.entries[*s as usize];
            if matches(&entry.dims) {
                for b in &entry.buckets {
                    each(b.hour, b.cost);
                }
            }
        }
    }

    /// Drop buckets of hours before `cutoff`.
    pub fn prune(&mut self, cutoff: i32) {
        for entry in &mut self.entries {
            entry.buckets.retain(|b| b.hour >= cutoff);
        }
    }

    pub fn subjects(&self) -> usize {
        self.entries.len()
    }

    /// Approximate heap bytes held (for the memory benchmark and a gauge).
    pub fn heap_bytes(&self) -> usize {
        let buckets: usize = self.entries.iter().map(|e| e.buckets.capacity() * size_of::<Bucket>()).sum();
        let orgs: usize = self.by_org.values().map(|v| v.capacity() * 4 + 32).sum();
        buckets
            + self.entries.capacity() * size_of::<Entry>()
            + self.subjects.capacity() * (size_of::<Dims>() + 4 + 1)
            + orgs
            + self.interner.heap_bytes()
    }
}
