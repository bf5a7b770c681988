//! Local rate limits per virtual key: requests and tokens per minute, counted in fixed
//! one-minute windows on this replica (a cluster-wide cap comes from budgets instead). Tokens
//! are charged when a request's usage is known, so a request is admitted while the minute's
//! tokens are under the limit and may overshoot it by its own size.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct RateLimiter {
    windows: Mutex<HashMap<String, Window>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Window {
    minute: i64,
    requests: i64,
    tokens: i64,
}

/// A refusal: which limit, and seconds until the window turns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    pub what: &'static str,
    pub limit: i64,
    pub retry_after_secs: i64,
}

impl RateLimiter {
    /// Admit one request of `key` at `now_secs` (unix seconds) under the given limits.
    pub fn admit(&self, key: &str, rpm: Option<i32>, tpm: Option<i64>, now_secs: i64) -> Result<(), Limited> {
        if rpm.is_none() && tpm.is_none() {
            return Ok(());
        }
        let minute = now_secs.div_euclid(60);
        let retry_after_secs = 60 - now_secs.rem_euclid(60);
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() > 100_000 {
            windows.retain(|_, w| w.minute >= minute);
        }
        let window = windows.entry(key.to_string()).or_default();
        if window.minute != minute {
            *window = Window { minute, ..Window::default() };
        }
        if let Some(tpm) = tpm
            && window.tokens >= tpm
        {
            return Err(Limited { what: "tokens per minute", limit: tpm, retry_after_secs });
        }
        if let Some(rpm) = rpm
            && window.requests >= i64::from(rpm)
        {
            return Err(Limited { what: "requests per minute", limit: i64::from(rpm), retry_after_secs });
        }
        window.requests += 1;
        Ok(())
    }

    /// Charge `tokens` used by a request of `key` that started at `now_secs`.
    pub fn charge(&self, key: &str, tokens: i64, now_secs: i64) {
        let minute = now_secs.div_euclid(60);
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(window) = windows.get_mut(key)
            && window.minute == minute
        {
            window.tokens = window.tokens.saturating_add(tokens);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_per_minute_reset_with_the_minute() {
        let limiter = RateLimiter::default();
        let t = 30_000_000 * 60;
        assert!(limiter.admit("k", Some(2), None, t).is_ok());
        assert!(limiter.admit("k", Some(2), None, t + 1).is_ok());
        let refused = limiter.admit("k", Some(2), None, t + 50).unwrap_err();
        assert_eq!((refused.what, refused.retry_after_secs), ("requests per minute", 10));
        assert!(limiter.admit("other", Some(2), None, t + 50).is_ok());
        assert!(limiter.admit("k", Some(2), None, t + 60).is_ok());
    }

    #[test]
    fn tokens_per_minute_count_after_the_fact() {
        let limiter = RateLimiter::default();
        let t = 30_000_000 * 60;
        assert!(limiter.admit("k", None, Some(1000), t).is_ok());
        limiter.charge("k", 1500, t);
        assert_eq!(limiter.admit("k", None, Some(1000), t + 1).unwrap_err().what, "tokens per minute");
        assert!(limiter.admit("k", None, Some(1000), t + 61).is_ok());
    }
}
