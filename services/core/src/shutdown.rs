//! One shutdown tree per process. Every long-running task is spawned through [`Tasks`] with a
//! name; the first task to fail cancels the whole tree with its reason, Ctrl-C or SIGTERM cancel
//! it too, and [`Tasks::drain`] waits for every task with a deadline. A second signal exits at once.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The error a task may end with.
pub type TaskError = Box<dyn std::error::Error + Send + Sync>;

/// Named tasks sharing one cancellation token.
#[derive(Clone, Debug)]
pub struct Tasks {
    token: CancellationToken,
    tracker: TaskTracker,
    first_failure: Arc<Mutex<Option<String>>>,
}

impl Default for Tasks {
    fn default() -> Self {
        Tasks::new(CancellationToken::new())
    }
}

impl Tasks {
    /// A tree below `token`: cancelling `token` stops every task here.
    pub fn new(token: CancellationToken) -> Self {
        Tasks { token, tracker: TaskTracker::new(), first_failure: Arc::default() }
    }

    /// The token tasks watch; cancel it to begin shutting down.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Spawn a named task. If it returns an error (or panics) the whole tree is cancelled.
    pub fn spawn<F>(&self, name: &'static str, task: F)
    where
        F: Future<Output = Result<(), TaskError>> + Send + 'static,
    {
        let token = self.token.clone();
        let failure = self.first_failure.clone();
        let inner = tokio::spawn(task);
        self.tracker.spawn(async move {
            let reason = match inner.await {
                Ok(Ok(())) => {
                    tracing::debug!(task = name, "task finished");
                    return;
                }
                Ok(Err(error)) => format!("task {name} failed: {error}"),
                Err(join) if join.is_panic() => format!("task {name} panicked"),
                Err(_) => format!("task {name} was aborted"),
            };
            tracing::error!(task = name, reason = %reason, "stopping everything");
            failure.lock().unwrap().get_or_insert(reason);
            token.cancel();
        });
    }

    /// Cancel the tree on the first Ctrl-C or SIGTERM; exit the process on the second.
    pub fn cancel_on_signals(&self) {
        let token = self.token.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown requested, draining (signal again to exit at once)");
            token.cancel();
            wait_for_signal().await;
            tracing::warn!("second signal, exiting without draining");
            std::process::exit(130);
        });
    }

    /// Wait for every task to end, at most `deadline` after cancellation. Returns the first
    /// failure's reason, if a task failed, or an error if the deadline passed.
    pub async fn drain(&self, deadline: Duration) -> Result<(), String> {
        self.tracker.close();
        self.token.cancelled().await;
        if tokio::time::timeout(deadline, self.tracker.wait()).await.is_err() {
            return Err(format!("tasks still running {} s after shutdown began", deadline.as_secs()));
        }
        match self.first_failure.lock().unwrap().take() {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failing_task_cancels_the_others_and_is_reported() {
        let tasks = Tasks::default();
        let token = tasks.token().clone();
        tasks.spawn("waiter", async move {
            token.cancelled().await;
            Ok(())
        });
        tasks.spawn("failer", async { Err("broken pipe".into()) });
        let result = tasks.drain(Duration::from_secs(5)).await;
        assert_eq!(result, Err("task failer failed: broken pipe".to_string()));
    }

    #[tokio::test]
    async fn a_clean_cancel_drains_ok() {
        let tasks = Tasks::default();
        let token = tasks.token().clone();
        tasks.spawn("waiter", async move {
            token.cancelled().await;
            Ok(())
        });
        tasks.token().cancel();
        assert_eq!(tasks.drain(Duration::from_secs(5)).await, Ok(()));
    }
}
