//! Window arithmetic, property-based over time zones (with DST, half-hour and 45-minute
//! offsets, a zone that skips midnight) and instants from 1990 to 2100, plus the named edges:
//! DST days, month ends, leap years.

use super::*;
use chrono::Timelike;
use proptest::prelude::*;

const ZONES: [&str; 10] = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "America/Santiago",
    "Pacific/Apia",
    "America/St_Johns",
    "Asia/Tokyo",
];

fn window(period: WindowPeriod, days: Option<i32>, rolling: bool, tz: &str) -> Window {
    Window::compile(&BudgetWindow { period, days, rolling, time_zone: tz.into() }).unwrap()
}

fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
}

fn period() -> impl Strategy<Value = (WindowPeriod, Option<i32>)> {
    prop_oneof![
        Just((WindowPeriod::Hour, None)),
        Just((WindowPeriod::Day, None)),
        Just((WindowPeriod::Week, None)),
        Just((WindowPeriod::Month, None)),
        Just((WindowPeriod::Quarter, None)),
        (1i32..40).prop_map(|n| (WindowPeriod::Days, Some(n))),
    ]
}

fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    // 1990-01-01 .. 2100-01-01, to the second.
    (631_152_000i64..4_102_444_800).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// The span contains the instant, and the next span starts exactly where this one ends.
    #[test]
    fn calendar_windows_contain_now_and_tile(
        zone in proptest::sample::select(&ZONES[..]), (p, days) in period(), now in instant(),
    ) {
        let w = window(p, days, false, zone);
        let span = w.span_at(now);
        prop_assert!(span.start <= now && now < span.end, "{span:?} {now}");
        prop_assert_eq!(w.span_at(span.start), span);
        prop_assert_eq!(w.span_at(span.end).start, span.end);
        prop_assert_eq!(w.span_at(span.end - TimeDelta::microseconds(1)), span);
    }

    /// Calendar windows start at a local midnight (or the end of a gap over it) on the right
    /// weekday or day of month.
    #[test]
    fn calendar_windows_start_at_local_boundaries(
        zone in proptest::sample::select(&ZONES[..]), (p, days) in period(), now in instant(),
    ) {
        prop_assume!(p != WindowPeriod::Hour);
        let w = window(p, days, false, zone);
        let local = w.span_at(now).start.with_timezone(&w.tz);
        let midnight = local.date_naive().and_hms_opt(0, 0, 0).unwrap();
        let in_gap = !matches!(w.tz.from_local_datetime(&midnight), LocalResult::Single(_) | LocalResult::Ambiguous(..));
        prop_assert!(local.time() == chrono::NaiveTime::MIN || in_gap, "{local}");
        match p {
            WindowPeriod::Week => prop_assert_eq!(local.weekday(), chrono::Weekday::Mon),
            WindowPeriod::Month => prop_assert_eq!(local.day(), 1),
            WindowPeriod::Quarter => prop_assert!(local.day() == 1 && [1, 4, 7, 10].contains(&local.month())),
            _ => {}
        }
        let length = w.span_at(now).end - w.span_at(now).start;
        let expected = match p {
            WindowPeriod::Day => 24,
            WindowPeriod::Week => 7 * 24,
            WindowPeriod::Days => i64::from(days.unwrap()) * 24,
            _ => length.num_hours(),
        };
        // DST moves a boundary by at most an hour; Apia skipped a whole day in 2011.
        let slack = if zone == "Pacific/Apia" { 25 } else { 1 };
        prop_assert!((length.num_minutes() - expected * 60).abs() <= slack * 60, "{length}");
    }

    /// Hour windows are local clock hours: one hour, except around a DST change.
    #[test]
    fn hour_windows_are_one_hour(zone in proptest::sample::select(&ZONES[..]), now in instant()) {
        let span = window(WindowPeriod::Hour, None, false, zone).span_at(now);
        let length = span.end - span.start;
        if ["UTC", "Asia/Tokyo", "Asia/Kolkata", "Asia/Kathmandu"].contains(&zone) {
            prop_assert_eq!(length, TimeDelta::hours(1));
        } else {
            prop_assert!(length >= TimeDelta::minutes(30) && length <= TimeDelta::hours(2), "{length}");
        }
        prop_assert!(span.start <= now && now < span.end);
    }

    /// A rolling window ends at the end of the current UTC hour and is exactly its length.
    #[test]
    fn rolling_windows_end_this_hour(
        zone in proptest::sample::select(&ZONES[..]), (p, days) in period(), now in instant(),
    ) {
        let w = window(p, days, true, zone);
        let span = w.span_at(now);
        prop_assert_eq!(span.end, hour_of(now) + TimeDelta::hours(1));
        prop_assert_eq!(span.end - span.start, w.rolling_length());
        prop_assert!(span.counts(hour_of(now)));
        prop_assert!(!span.counts(span.start - TimeDelta::hours(1)));
    }

    /// Every hour bucket that overlaps a window counts in it.
    #[test]
    fn overlapping_buckets_count(
        zone in proptest::sample::select(&ZONES[..]), (p, days) in period(), now in instant(),
    ) {
        let span = window(p, days, false, zone).span_at(now);
        prop_assert!(span.counts(hour_of(span.start)));
        prop_assert!(span.counts(hour_of(span.end - TimeDelta::microseconds(1))));
        prop_assert!(!span.counts(span.end + TimeDelta::hours(1)));
    }
}

#[test]
fn berlin_days_across_dst() {
    let w = window(WindowPeriod::Day, None, false, "Europe/Berlin");
    // 2026-03-29: clocks go 02:00 -> 03:00; the day is 23 hours.
    let spring = w.span_at(utc(2026, 3, 29, 12, 0));
    assert_eq!(spring.start, utc(2026, 3, 28, 23, 0));
    assert_eq!(spring.end, utc(2026, 3, 29, 22, 0));
    // 2026-10-25: clocks go 03:00 -> 02:00; the day is 25 hours.
    let autumn = w.span_at(utc(2026, 10, 25, 12, 0));
    assert_eq!(autumn.end - autumn.start, TimeDelta::hours(25));
}

#[test]
fn a_day_that_starts_in_a_gap_starts_at_its_end() {
    // Santiago: 2026-09-06 00:00 does not exist (clocks jump from 00:00 to 01:00, UTC-4 -> UTC-3).
    let w = window(WindowPeriod::Day, None, false, "America/Santiago");
    let span = w.span_at(utc(2026, 9, 6, 12, 0));
    assert_eq!(span.start, utc(2026, 9, 6, 4, 0));
    assert_eq!(span.start.with_timezone(&w.tz).hour(), 1);
}

#[test]
fn months_and_leap_years() {
    let w = window(WindowPeriod::Month, None, false, "UTC");
    let feb_leap = w.span_at(utc(2028, 2, 29, 23, 59));
    assert_eq!((feb_leap.start, feb_leap.end), (utc(2028, 2, 1, 0, 0), utc(2028, 3, 1, 0, 0)));
    let feb = w.span_at(utc(2027, 2, 28, 0, 0));
    assert_eq!(feb.end - feb.start, TimeDelta::days(28));
    let dec = w.span_at(utc(2026, 12, 31, 23, 59));
    assert_eq!(dec.end, utc(2027, 1, 1, 0, 0));
    let q = window(WindowPeriod::Quarter, None, false, "UTC").span_at(utc(2026, 11, 15, 0, 0));
    assert_eq!((q.start, q.end), (utc(2026, 10, 1, 0, 0), utc(2027, 1, 1, 0, 0)));
    // Tokyo's month ends at 15:00 UTC on the last day.
    let tokyo = window(WindowPeriod::Month, None, false, "Asia/Tokyo").span_at(utc(2026, 1, 31, 14, 59));
    assert_eq!(tokyo.end, utc(2026, 1, 31, 15, 0));
}

#[test]
fn half_hour_zones_share_the_boundary_bucket() {
    // Kolkata midnight is 18:30 UTC: the 18:00 bucket counts in both days.
    let w = window(WindowPeriod::Day, None, false, "Asia/Kolkata");
    let today = w.span_at(utc(2026, 5, 10, 19, 0));
    assert_eq!(today.start, utc(2026, 5, 10, 18, 30));
    let yesterday = w.span_at(utc(2026, 5, 10, 18, 0));
    assert!(today.counts(utc(2026, 5, 10, 18, 0)));
    assert!(yesterday.counts(utc(2026, 5, 10, 18, 0)));
}

#[test]
fn weeks_start_on_monday_and_n_day_blocks_are_stable() {
    let w = window(WindowPeriod::Week, None, false, "UTC");
    // 2026-11-26 is a Thursday.
    assert_eq!(w.span_at(utc(2026, 11, 26, 10, 0)).start, utc(2026, 11, 23, 0, 0));
    let w = window(WindowPeriod::Days, Some(10), false, "UTC");
    let span = w.span_at(utc(2026, 11, 26, 10, 0));
    assert_eq!(span.end - span.start, TimeDelta::days(10));
    assert_eq!((span.start - utc(1970, 1, 1, 0, 0)).num_days() % 10, 0);
}

#[test]
fn invalid_windows_name_the_field() {
    let bad = |period, days, tz: &str| {
        Window::compile(&BudgetWindow { period, days, rolling: false, time_zone: tz.into() }).unwrap_err()
    };
    assert_eq!(bad(WindowPeriod::Day, None, "Europe/Berln").field, "time_zone");
    assert_eq!(bad(WindowPeriod::Days, None, "UTC").field, "days");
    assert_eq!(bad(WindowPeriod::Days, Some(0), "UTC").field, "days");
    assert_eq!(bad(WindowPeriod::Month, Some(3), "UTC").field, "days");
}
