//! The retry authority: whether an operation that failed may be tried again, and after how long.
//!
//! Contract: one [`Retry`] follows one operation (a request, a batch write) across its attempts.
//! After each failure the caller asks [`Retry::next_delay`], giving the delay the other side asked
//! for when it named one (HTTP `Retry-After`); the answer is the wait before the next attempt, or
//! `None` when the policy's attempts or its deadline are spent, and the caller gives up with its
//! last error. A delay asked for by the other side is honoured in full, never shortened (only
//! capped by [`RetryPolicy::max_hint`]); otherwise the wait grows exponentially from
//! [`RetryPolicy::initial`] to [`RetryPolicy::max`], with jitter in its upper half so that many
//! clients that failed together do not come back together. No attempt is scheduled past the
//! deadline. Whether an error is worth retrying at all is the error's to say
//! ([`crate::FaregateError::retryable`]); this module only paces.

use std::time::Duration;

use tokio::time::Instant;

/// How an operation is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The wait after the first failure.
    pub initial: Duration,
    /// The longest wait the backoff grows to.
    pub max: Duration,
    /// Attempts in all, the first included (1: never retry).
    pub max_attempts: u32,
    /// The longest wait the other side may ask for; a longer request ends the retries (the
    /// operation fails naming the delay asked for) rather than stalling the caller.
    pub max_hint: Duration,
    /// No attempt starts later than this after the first one.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            max_attempts: 8,
            max_hint: Duration::from_secs(300),
            deadline: Duration::from_secs(600),
        }
    }
}

/// Why no further attempt is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// Every attempt of the policy was made.
    Attempts(u32),
    /// The next attempt would start after the deadline.
    Deadline(Duration),
    /// The other side asked for a longer wait than the policy allows.
    HintTooLong(Duration),
}

impl std::fmt::Display for GiveUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GiveUp::Attempts(n) => write!(f, "gave up after {n} attempts"),
            GiveUp::Deadline(d) => write!(f, "gave up: the next attempt would pass the {d:?} deadline"),
            GiveUp::HintTooLong(d) => write!(f, "gave up: asked to wait {d:?}, longer than allowed"),
        }
    }
}

/// The retries of one operation.
#[derive(Debug, Clone)]
pub struct Retry {
    policy: RetryPolicy,
    started: Instant,
    attempts: u32,
}

impl Retry {
    /// Start following an operation whose first attempt begins now.
    pub fn new(policy: RetryPolicy) -> Self {
        Retry { policy, started: Instant::now(), attempts: 1 }
    }

    /// Attempts made so far (the one that just failed included).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// After a failed attempt: the wait before the next one, honouring `asked` (the other
    /// side's own delay, e.g. `Retry-After`), or why there is none.
    pub fn next_delay(&mut self, asked: Option<Duration>) -> Result<Duration, GiveUp> {
        if self.attempts >= self.policy.max_attempts {
            return Err(GiveUp::Attempts(self.attempts));
        }
        let delay = match asked {
            Some(asked) if asked > self.policy.max_hint => return Err(GiveUp::HintTooLong(asked)),
            Some(asked) => asked,
            None => self.backoff(),
        };
        if self.started.elapsed() + delay > self.policy.deadline {
            return Err(GiveUp::Deadline(self.policy.deadline));
        }
        self.attempts += 1;
        Ok(delay)
    }

    /// `initial * 2^(attempts - 1)` capped at `max`, the upper half jittered.
    fn backoff(&self) -> Duration {
        let exponent = self.attempts.saturating_sub(1).min(20);
        let full = self.policy.initial.saturating_mul(1 << exponent).min(self.policy.max);
        let half = full / 2;
        let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(if jitter_ms == 0 { 0 } else { rand::random_range(0..=jitter_ms) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(400),
            max_attempts: 5,
            max_hint: Duration::from_secs(10),
            deadline: Duration::from_secs(60),
        }
    }

    #[test]
    fn backoff_grows_within_its_bounds_and_stops_after_the_attempts() {
        let mut retry = Retry::new(policy());
        let bounds = [(50, 100), (100, 200), (200, 400), (200, 400)];
        for (low, high) in bounds {
            let delay = retry.next_delay(None).unwrap();
            assert!(
                delay >= Duration::from_millis(low) && delay <= Duration::from_millis(high),
                "{delay:?} outside {low}..={high} ms"
            );
        }
        assert_eq!(retry.attempts(), 5);
        assert_eq!(retry.next_delay(None), Err(GiveUp::Attempts(5)));
    }

    #[test]
    fn a_delay_asked_for_is_honoured_in_full_and_a_too_long_one_ends_the_retries() {
        let mut retry = Retry::new(policy());
        assert_eq!(retry.next_delay(Some(Duration::from_secs(7))), Ok(Duration::from_secs(7)));
        assert_eq!(
            retry.next_delay(Some(Duration::from_secs(11))),
            Err(GiveUp::HintTooLong(Duration::from_secs(11)))
        );
    }

    #[test]
    fn no_attempt_is_scheduled_past_the_deadline() {
        let mut retry = Retry::new(RetryPolicy { deadline: Duration::from_secs(5), ..policy() });
        assert_eq!(
            retry.next_delay(Some(Duration::from_secs(6))),
            Err(GiveUp::Deadline(Duration::from_secs(5)))
        );
        assert_eq!(retry.next_delay(Some(Duration::from_millis(500))), Ok(Duration::from_millis(500)));
    }
}
