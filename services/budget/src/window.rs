//! Window arithmetic: which span of time a budget's window covers at an instant, calendar-aligned
//! in the budget's own IANA time zone or rolling.
//!
//! Contract:
//! - A calendar window is `[start, end)` where `start` is the local start of the hour, day,
//!   ISO week (Monday), month, quarter or N-day block containing the instant, and `end` is the next
//!   one's start. Local starts that fall in a DST gap move to the first valid instant after it;
//!   ambiguous ones (a repeated hour) take the earlier instant. So a day is 23, 24 or 25 hours
//!   long (23.5 or 24.5 on Lord Howe Island) and consecutive windows always tile the time line.
//!   Hour windows are local clock hours: the repeated hour when DST ends is one two-hour window.
//! - N-day calendar blocks are counted from 1970-01-01 in the window's time zone.
//! - A rolling window ends at the end of the current UTC hour and reaches back its length: 1 hour,
//!   24 hours, 7 days, 30 days (month), 91 days (quarter) or N days.
//! - Spend arrives per UTC hour, so a window counts every hour bucket that starts at or after
//!   the hour containing its start and before its end. Where a window boundary is not on a UTC
//!   hour (half-hour and 45-minute zones) the bucket containing it counts in both windows: the
//!   window is stricter by up to that bucket, never blind to it.

use chrono::{
    DateTime, Datelike, Days, DurationRound, LocalResult, NaiveDate, NaiveDateTime, TimeDelta, TimeZone, Utc,
};
use chrono_tz::Tz;

use faregate_core::event::{BudgetWindow, WindowPeriod};

/// Days in a rolling month and a rolling quarter.
pub const ROLLING_MONTH_DAYS: i64 = 30;
pub const ROLLING_QUARTER_DAYS: i64 = 91;
/// The longest N of an N-day window.
pub const MAX_DAYS: i32 = 366;

/// A validated window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub period: WindowPeriod,
    /// N of an N-day window; 0 otherwise.
    pub days: u32,
    pub rolling: bool,
    pub tz: Tz,
}

/// The span a window covers at some instant: `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Span {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Span {
    /// The first hour bucket that counts in this span.
    pub fn first_bucket(&self) -> DateTime<Utc> {
        hour_of(self.start)
    }

    /// Whether the hour bucket starting at `hour` counts in this span.
    pub fn counts(&self, hour: DateTime<Utc>) -> bool {
        hour >= self.first_bucket() && hour < self.end
    }
}

/// Why a window is invalid: the field (below `window.`) and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowError {
    pub field: &'static str,
    pub message: String,
}

/// The start of the UTC hour containing `at`.
pub fn hour_of(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::hours(1)).unwrap_or(at)
}

impl Window {
    pub fn compile(window: &BudgetWindow) -> Result<Window, WindowError> {
        let tz: Tz = window.time_zone.parse().map_err(|_| WindowError {
            field: "time_zone",
            message: format!(
                "unknown IANA time zone {:?} (e.g. \"UTC\", \"Europe/Berlin\")",
                window.time_zone
            ),
        })?;
        let days = match (window.period, window.days) {
            (WindowPeriod::Days, Some(n)) if (1..=MAX_DAYS).contains(&n) => n as u32,
            (WindowPeriod::Days, Some(n)) => {
                return Err(WindowError {
                    field: "days",
                    message: format!("{n} is not within 1..={MAX_DAYS}"),
                });
            }
            (WindowPeriod::Days, None) => {
                return Err(WindowError {
                    field: "days",
                    message: "period `days` needs the number of days".into(),
                });
            }
            (_, Some(_)) => {
                return Err(WindowError {
                    field: "days",
                    message: "only period `days` takes a number of days".into(),
                });
            }
            (_, None) => 0,
        };
        Ok(Window { period: window.period, days, rolling: window.rolling, tz })
    }

    /// The length of a rolling window.
    pub fn rolling_length(&self) -> TimeDelta {
        match self.period {
            WindowPeriod::Hour => TimeDelta::hours(1),
            WindowPeriod::Day => TimeDelta::days(1),
            WindowPeriod::Week => TimeDelta::days(7),
            WindowPeriod::Month => TimeDelta::days(ROLLING_MONTH_DAYS),
            WindowPeriod::Quarter => TimeDelta::days(ROLLING_QUARTER_DAYS),
            WindowPeriod::Days => TimeDelta::days(i64::from(self.days)),
        }
    }

    /// The span this window covers at `now`.
    pub fn span_at(&self, now: DateTime<Utc>) -> Span {
        if self.rolling {
            let end = hour_of(now) + TimeDelta::hours(1);
            return Span { start: end - self.rolling_length(), end };
        }
        if self.period == WindowPeriod::Hour {
            // Local clock hours: a repeated hour (DST ends) is one window of two hours, and a
            // skipped one does not exist.
            let local = now.with_timezone(&self.tz).naive_local();
            let hour = local.date().and_hms_opt(chrono::Timelike::hour(&local), 0, 0).unwrap_or(local);
            let start = resolve_local(&self.tz, hour);
            let end = resolve_local(&self.tz, hour + TimeDelta::hours(1));
            return Span { start: start.min(now), end };
        }
        let today = now.with_timezone(&self.tz).date_naive();
        let first = self.first_day(today);
        let next = self.next_first_day(first);
        let start = self.local_midnight(first);
        let mut end = self.local_midnight(next);
        // A gap can never make a window empty, but keep the contract `start <= now < end` even
        // for pathological zone data.
        if end <= now {
            end = now + TimeDelta::seconds(1);
        }
        Span { start, end }
    }

    fn first_day(&self, day: NaiveDate) -> NaiveDate {
        match self.period {
            WindowPeriod::Hour | WindowPeriod::Day => day,
            WindowPeriod::Week => day - Days::new(u64::from(day.weekday().num_days_from_monday())),
            WindowPeriod::Month => day.with_day(1).unwrap_or(day),
            WindowPeriod::Quarter => {
                let month = (day.month0() / 3) * 3 + 1;
                NaiveDate::from_ymd_opt(day.year(), month, 1).unwrap_or(day)
            }
            WindowPeriod::Days => {
                let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or(day);
                let since = (day - epoch).num_days();
                let offset = since.rem_euclid(i64::from(self.days.max(1)));
                day - Days::new(offset as u64)
            }
        }
    }

    fn next_first_day(&self, first: NaiveDate) -> NaiveDate {
        match self.period {
            WindowPeriod::Hour | WindowPeriod::Day => first + Days::new(1),
            WindowPeriod::Week => first + Days::new(7),
            WindowPeriod::Month => first.checked_add_months(chrono::Months::new(1)).unwrap_or(first),
            WindowPeriod::Quarter => first.checked_add_months(chrono::Months::new(3)).unwrap_or(first),
            WindowPeriod::Days => first + Days::new(u64::from(self.days.max(1))),
        }
    }

    /// The first instant of local day `day`: midnight, or the end of a DST gap covering it.
    fn local_midnight(&self, day: NaiveDate) -> DateTime<Utc> {
        resolve_local(&self.tz, day.and_hms_opt(0, 0, 0).unwrap_or_default())
    }
}

/// The instant of local time `local` in `tz`: the earlier of two in a repeated hour, the end of
/// the gap for a time that does not exist.
pub fn resolve_local(tz: &Tz, local: NaiveDateTime) -> DateTime<Utc> {
    let mut candidate = local;
    // Gaps are at most a few hours; step in 15 minutes, the finest offset granularity in use.
    for _ in 0..(4 * 24) {
        match tz.from_local_datetime(&candidate) {
            LocalResult::Single(t) => return t.with_timezone(&Utc),
            LocalResult::Ambiguous(earlier, _) => return earlier.with_timezone(&Utc),
            LocalResult::None => candidate += TimeDelta::minutes(15),
        }
    }
    Utc.from_utc_datetime(&local)
}

#[cfg(test)]
mod tests;
