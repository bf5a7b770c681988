//! Fencing ledger writes against partition revocations: the rows of a partition are written
//! only while this processor still owns the assignment it read them under.
//!
//! Each assignment of a partition gets a new [`Fence`] (one per assignment generation). A batch
//! remembers the fence of every partition it holds rows of; every write attempt (the first and
//! each retry) takes a [`Permit`], which writes only the partitions whose fence is alive and
//! keeps them alive until the permit is dropped (after the ledger answered, or when the write
//! is abandoned). A revocation kills the partition's fence: it waits for permits in use to be
//! dropped, then no permit is granted for that generation again. So no row of a revoked
//! partition is written after the revocation returned to librdkafka, which is what lets the
//! next owner read the partition again from the last commit without racing this processor.
//! (The pattern of Quickwit's publish lock.)
//!
//! Today the only writer is the consuming task and librdkafka reports revocations from inside
//! its `recv`, so the wait is empty; it keeps the guarantee if writes ever leave that task.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Condvar, Mutex};

#[derive(Debug, Default)]
struct State {
    alive: bool,
    writers: usize,
}

/// The right to write one partition's rows for one assignment generation.
#[derive(Debug, Clone)]
pub struct Fence {
    state: Arc<(Mutex<State>, Condvar)>,
}

impl Fence {
    fn new() -> Self {
        Fence { state: Arc::new((Mutex::new(State { alive: true, writers: 0 }), Condvar::new())) }
    }

    pub fn is_alive(&self) -> bool {
        self.state.0.lock().unwrap().alive
    }

    /// Whether `other` is this fence (the same partition's same assignment generation).
    pub fn same(&self, other: &Fence) -> bool {
        Arc::ptr_eq(&self.state, &other.state)
    }

    /// Enter a write, unless the fence was killed.
    fn enter(&self) -> Option<Writer> {
        let mut state = self.state.0.lock().unwrap();
        if !state.alive {
            return None;
        }
        state.writers += 1;
        Some(Writer { fence: self.clone() })
    }

    /// Refuse every later write and wait until the writes in progress are done or abandoned.
    fn kill(&self) {
        let (lock, done) = &*self.state;
        let mut state = lock.lock().unwrap();
        state.alive = false;
        while state.writers > 0 {
            state = done.wait(state).unwrap();
        }
    }
}

/// One write in progress under a fence; dropping it ends the write.
#[derive(Debug)]
struct Writer {
    fence: Fence,
}

impl Drop for Writer {
    fn drop(&mut self) {
        let (lock, done) = &*self.fence.state;
        lock.lock().unwrap().writers -= 1;
        done.notify_all();
    }
}

/// The current fence of every assigned partition (kept by the consumer's rebalance context).
#[derive(Debug, Default)]
pub struct Fences {
    current: Mutex<HashMap<i32, Fence>>,
}

impl Fences {
    /// A new generation for each of `partitions`.
    pub fn assign(&self, partitions: impl IntoIterator<Item = i32>) {
        let mut current = self.current.lock().unwrap();
        for partition in partitions {
            if let Some(old) = current.insert(partition, Fence::new()) {
                old.kill();
            }
        }
    }

    /// Kill the fences of `partitions`, waiting for their writes in progress.
    pub fn revoke(&self, partitions: impl IntoIterator<Item = i32>) {
        let killed: Vec<Fence> = {
            let mut current = self.current.lock().unwrap();
            partitions.into_iter().filter_map(|p| current.remove(&p)).collect()
        };
        for fence in killed {
            fence.kill();
        }
    }

    /// The fence `partition` is read under now (a dead one if it is not assigned).
    pub fn current(&self, partition: i32) -> Fence {
        self.current.lock().unwrap().get(&partition).cloned().unwrap_or_else(|| {
            let fence = Fence::new();
            fence.kill();
            fence
        })
    }
}

/// The fences of the partitions a batch holds rows of.
#[derive(Debug, Default)]
pub struct BatchFences {
    fences: BTreeMap<i32, Fence>,
}

impl BatchFences {
    /// Remember the fence of `partition` the first time the batch takes one of its messages.
    pub fn note(&mut self, partition: i32, fences: &Fences) {
        self.fences.entry(partition).or_insert_with(|| fences.current(partition));
    }

    /// Enter a write for every partition whose fence is still alive.
    pub fn hold(&self) -> Permit {
        Permit { writers: self.fences.iter().filter_map(|(p, f)| Some((*p, f.enter()?))).collect() }
    }

    /// Whether `partition`'s fence is still alive (its offset may be committed).
    pub fn is_alive(&self, partition: i32) -> bool {
        self.fences.get(&partition).is_some_and(Fence::is_alive)
    }

    /// The fence `partition`'s rows were read under, if the batch holds any.
    pub fn fence(&self, partition: i32) -> Option<&Fence> {
        self.fences.get(&partition)
    }
}

/// Writes in progress for the partitions it allows; revocations of those wait for its drop.
#[derive(Debug)]
pub struct Permit {
    writers: BTreeMap<i32, Writer>,
}

impl Permit {
    pub fn allows(&self, partition: i32) -> bool {
        self.writers.contains_key(&partition)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_revocation_waits_for_the_write_in_progress_and_refuses_later_ones() {
        let fences = Arc::new(Fences::default());
        fences.assign([0, 1]);
        let mut batch = BatchFences::default();
        batch.note(0, &fences);
        batch.note(1, &fences);
        let permit = batch.hold();
        assert!(permit.allows(0) && permit.allows(1));

        let revoking = {
            let fences = fences.clone();
            std::thread::spawn(move || fences.revoke([0]))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!revoking.is_finished(), "the revocation waits for the write");
        drop(permit);
        revoking.join().unwrap();

        let permit = batch.hold();
        assert!(!permit.allows(0), "no write of a revoked partition");
        assert!(permit.allows(1));
        assert!(!batch.is_alive(0) && batch.is_alive(1));

        // A new assignment of partition 0 is a new generation: the old batch stays fenced out.
        fences.assign([0]);
        assert!(!batch.hold().allows(0));
        let mut next = BatchFences::default();
        next.note(0, &fences);
        assert!(next.hold().allows(0));
    }
}
