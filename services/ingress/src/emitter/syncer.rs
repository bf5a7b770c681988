//! Group commit off the emitter's thread: the collector's acknowledgements wait for a sync of
//! the spool, and the emitter must not.
//!
//! The emitter appends and flushes a tick's events (from then on they survive the process
//! being killed), then hands the tick's waiters to the syncer with the open segment's file. The
//! syncer takes every job that is waiting, syncs each file they name once (`fdatasync` covers
//! everything written to the file before it is called, so one sync serves every job queued
//! before it), and answers the waiters. A sync takes milliseconds to tens of milliseconds on a
//! busy disk; meanwhile the emitter goes on appending the gateway's events, so a slow disk
//! widens neither the window in which a killed ingress can lose a gateway event nor the
//! request path's queue. Dropping the [`Syncer`] finishes the jobs already given and joins the
//! thread, so no waiter is left unanswered.

use std::fs::File;
use std::sync::Arc;
use std::sync::mpsc;

use super::{NotDurable, Waiter};

/// Waiters whose events are flushed to `file` (or failed to be: `failure`).
pub(super) struct Job {
    pub(super) file: Arc<File>,
    pub(super) waiters: Vec<Waiter>,
    pub(super) failure: Option<String>,
}

pub(super) struct Syncer {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Syncer {
    pub(super) fn start() -> std::io::Result<Syncer> {
        let (jobs, inbox) = mpsc::channel();
        let thread = std::thread::Builder::new().name("faregate-syncer".into()).spawn(move || run(&inbox))?;
        Ok(Syncer { jobs: Some(jobs), thread: Some(thread) })
    }

    /// A syncer that refuses every job (what is left after the emitter's drain).
    pub(super) fn stopped() -> Syncer {
        Syncer { jobs: None, thread: None }
    }

    /// Answer `job`'s waiters once its file is synced.
    pub(super) fn submit(&self, job: Job) {
        let Some(jobs) = &self.jobs else { return answer(job.waiters, &Err(NotDurable::Stopped)) };
        if let Err(mpsc::SendError(job)) = jobs.send(job) {
            // The syncer thread is gone (it cannot panic short of a bug): say so, never hang.
            tracing::error!("spool syncer stopped; acknowledgement refused");
            answer(job.waiters, &Err(NotDurable::Stopped));
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn answer(waiters: Vec<Waiter>, result: &Result<(), NotDurable>) {
    for waiter in waiters {
        let _ = waiter.send(result.clone());
    }
}

fn run(inbox: &mpsc::Receiver<Job>) {
    while let Ok(first) = inbox.recv() {
        let mut jobs = vec![first];
        jobs.extend(inbox.try_iter());
        // Each file once, in order; a failure fails every job of that file.
        let mut synced: Vec<(Arc<File>, Result<(), String>)> = Vec::new();
        for job in &jobs {
            if !synced.iter().any(|(file, _)| Arc::ptr_eq(file, &job.file)) {
                let result = job.file.sync_data().map_err(|e| e.to_string());
                metrics::counter!("faregate_ingress_spool_syncs_total").increment(1);
                if let Err(e) = &result {
                    metrics::counter!("faregate_ingress_spool_errors_total").increment(1);
                    tracing::error!(error = %e, "spool: sync failed; the batches waiting for it get 503");
                }
                synced.push((job.file.clone(), result));
            }
        }
        for job in jobs {
            let synced = synced.iter().find(|(file, _)| Arc::ptr_eq(file, &job.file)).map(|(_, r)| r.clone());
            let result = match (job.failure, synced) {
                (Some(e), _) | (None, Some(Err(e))) => Err(NotDurable::Spool(e)),
                (None, _) => Ok(()),
            };
            answer(job.waiters, &result);
        }
    }
}
