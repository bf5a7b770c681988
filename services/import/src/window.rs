//! What every bucketed usage report shares: the bucket width, the window a run may ask for
//! (settled buckets only), the check that an answer's buckets are the ones asked for, the run's
//! [`Summary`], and the UUID v5 of event ids.
//!
//! Contract: [`settled_window`] aligns a `[from, to)` window to whole buckets and cuts it at the
//! last bucket that ended at least the settle lag before now (a bucket's numbers grow until the
//! provider has counted it, and a grown bucket would keep its event id, so only final buckets
//! are imported); the rest is returned as left for later. [`bucket_problems`] names every bucket
//! of an answer outside the window asked for or of another width.

use chrono::{DateTime, DurationRound, SecondsFormat, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};
use uuid::Uuid;

use crate::error::Problem;

/// The namespace of every import's event ids (a fixed random UUID; never change it). Each
/// report puts its own name first in the ids' names, so two reports never share an id.
pub const IMPORT_NAMESPACE: Uuid = Uuid::from_u128(0x6c1b_5a7e_0f3d_4c2a_9b8e_51d4_a2f7_c903);

/// UUID v5 (RFC 9562) of `name` in `namespace`.
pub fn uuid_v5(namespace: Uuid, name: &[u8]) -> Uuid {
    let mut hasher = Sha1::new();
    hasher.update(namespace.as_bytes());
    hasher.update(name);
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_sha1_bytes(bytes).into_uuid()
}

/// The time granularity of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BucketWidth {
    #[serde(rename = "1m")]
    Minute,
    #[serde(rename = "1h")]
    Hour,
    #[serde(rename = "1d")]
    Day,
}

impl BucketWidth {
    pub fn as_str(self) -> &'static str {
        match self {
            BucketWidth::Minute => "1m",
            BucketWidth::Hour => "1h",
            BucketWidth::Day => "1d",
        }
    }

    pub fn duration(self) -> TimeDelta {
        match self {
            BucketWidth::Minute => TimeDelta::minutes(1),
            BucketWidth::Hour => TimeDelta::hours(1),
            BucketWidth::Day => TimeDelta::days(1),
        }
    }
}

/// The buckets a run asks for and what it leaves for later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    /// Start of the first bucket asked for.
    pub start: DateTime<Utc>,
    /// End of the last settled bucket; nothing to ask when not after `start`.
    pub end: DateTime<Utc>,
    /// The part of `[from, to)` not settled yet.
    pub left_for_later: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

/// `[from, to)` aligned to whole buckets of `width`, cut at the buckets that ended at least
/// `settle_lag_secs` before `now`; an error message when the window is empty or unalignable.
pub fn settled_window(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
    width: BucketWidth,
    settle_lag_secs: u64,
) -> Result<Settled, String> {
    if to <= from {
        return Err(format!("--to {to} is not after --from {from}"));
    }
    let align =
        |t: DateTime<Utc>| t.duration_trunc(width.duration()).map_err(|e| format!("cannot align {t}: {e}"));
    let start = align(from)?;
    let settled = now - TimeDelta::seconds(i64::try_from(settle_lag_secs).unwrap_or(i64::MAX));
    let end = align(to.min(settled))?;
    let left_for_later = (to > end).then_some((end.max(start), to));
    Ok(Settled { start, end, left_for_later })
}

/// Every bucket (by `(start, end)`, in page order, at `data[i]`) outside `[start, end)` or not
/// `width` wide: such an answer is not the documented one, and its page is refused whole.
pub fn bucket_problems(
    buckets: impl IntoIterator<Item = (DateTime<Utc>, DateTime<Utc>)>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    width: BucketWidth,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (i, (bucket_start, bucket_end)) in buckets.into_iter().enumerate() {
        let span = format!("bucket {} to {}", rfc3339(bucket_start), rfc3339(bucket_end));
        if bucket_start < start || bucket_end > end {
            problems.push(Problem {
                path: format!("data[{i}]"),
                message: format!(
                    "{span} is outside the window asked for, {} to {}",
                    rfc3339(start),
                    rfc3339(end)
                ),
            });
        } else if bucket_end - bucket_start != width.duration() {
            problems.push(Problem {
                path: format!("data[{i}]"),
                message: format!("{span} is not {} wide, the bucket_width asked for", width.as_str()),
            });
        }
    }
    problems
}

/// A time as the summaries and tags show it: RFC 3339, seconds, `Z`.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// What a run imported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// The importer (`anthropic`, `openai`): its config section is `import.<source>`.
    pub source: &'static str,
    /// What the skip lists hold and their settings, e.g. `keys or workspaces (skip_api_key_ids,
    /// skip_workspace_ids)`.
    pub skipped_what: &'static str,
    /// Requests sent (retries included).
    pub requests: u32,
    pub pages: u32,
    pub buckets: usize,
    /// Events written: one per non-empty result.
    pub events: usize,
    /// Results without any usage, not written.
    pub empty_results: usize,
    /// Results of a skipped key, workspace or project (the gateway's own), not written.
    pub skipped_results: usize,
    /// The window asked of the API: every bucket in it is now imported.
    pub imported: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// The part of the asked window not imported because its buckets had not settled.
    pub left_for_later: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

impl Summary {
    /// A summary of nothing yet, for `source`.
    pub fn new(source: &'static str, skipped_what: &'static str) -> Summary {
        Summary { source, skipped_what, ..Summary::default() }
    }

    /// What the run did, for people: what was imported and what was left for later, and why.
    pub fn describe(&self, topic: &str, settle_lag_secs: u64) -> String {
        let mut lines = Vec::new();
        match self.imported {
            Some((from, to)) => lines.push(format!(
                "imported {} usage events ({} buckets, {} pages, {} requests) from {} to {} into {topic}",
                self.events,
                self.buckets,
                self.pages,
                self.requests,
                rfc3339(from),
                rfc3339(to)
            )),
            None => lines.push("imported nothing".to_string()),
        }
        if self.skipped_results > 0 {
            lines.push(format!(
                "skipped {} results of the gateway's own {}",
                self.skipped_results, self.skipped_what
            ));
        }
        if let Some((from, to)) = self.left_for_later {
            lines.push(format!(
                "left for later: buckets from {} to {} had not settled (they end less than {settle_lag_secs} s \
                 ago, import.{}.settle_lag_secs); import them with another run once they have",
                rfc3339(from),
                rfc3339(to),
                self.source
            ));
        }
        lines.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn a_window_is_aligned_and_cut_at_the_settled_buckets() {
        let day = Utc.with_ymd_and_hms(2026, 11, 30, 0, 0, 0).unwrap();
        let now = day + TimeDelta::minutes(7 * 60 + 20);
        let w = settled_window(
            day + TimeDelta::minutes(30),
            day + TimeDelta::hours(10),
            now,
            BucketWidth::Hour,
            3600,
        )
        .unwrap();
        assert_eq!((w.start, w.end), (day, day + TimeDelta::hours(6)));
        assert_eq!(w.left_for_later, Some((day + TimeDelta::hours(6), day + TimeDelta::hours(10))));
        assert!(settled_window(day, day, now, BucketWidth::Hour, 0).is_err());
        let all = settled_window(day, day + TimeDelta::hours(2), now, BucketWidth::Hour, 3600).unwrap();
        assert_eq!(all.left_for_later, None);
    }
}
