//! What the importers' tests against the fakes (`anthropic_fake`, `openai_fake`) share: the
//! fixtures' day, a fake admin API on a port of its own, and the events of a sink as compared
//! between two runs.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use faregate_core::event::TokenCounts;
use faregate_fake_upstream::admin::{AdminDialect, FakeAdmin, FakeAdminConfig};
use faregate_import::MemorySink;
use serde_json::Value;
use uuid::Uuid;

pub fn start_of_day() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 30, 0, 0, 0).unwrap()
}

/// Long after the window: every bucket has settled.
pub fn later() -> DateTime<Utc> {
    start_of_day() + TimeDelta::days(2)
}

/// A fake admin API holding hourly `buckets`, `page_size` a page, that wants `admin_key`.
pub async fn fake<D: AdminDialect>(admin_key: &str, page_size: usize, buckets: Vec<Value>) -> FakeAdmin<D> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config =
        FakeAdminConfig { admin_key: admin_key.into(), bucket_width: "1h".into(), page_size, buckets };
    FakeAdmin::start(listener, config).unwrap()
}

/// The ids and token counts of the events written to `sink`, by id.
pub fn ids_and_tokens(sink: &MemorySink) -> Vec<(Uuid, TokenCounts)> {
    let mut events: Vec<_> = sink.events.lock().unwrap().iter().map(|e| (e.event_id, e.tokens)).collect();
    events.sort_by_key(|(id, _)| *id);
    events
}
