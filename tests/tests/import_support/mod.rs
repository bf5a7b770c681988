//! What the importers' real-chain tests (`import_anthropic`, `import_openai`) share: the stack
//! (topics, schema, and a processor pricing with a test catalog), the fixtures' day, a fake
//! admin API holding the fixtures, and a sink to the usage topic.
//!
//! Contract: every stack uses its own consumer group and price directory, so the tests share
//! the broker and ClickHouse safely; dropping a [`Stack`] stops its processor.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use faregate_core::avro::SchemaFamily;
use faregate_core::clickhouse::{ClickHouseConfig, migrations};
use faregate_core::kafka::{KafkaConfig, RecordProducer, ensure_topics};
use faregate_fake_upstream::admin::{AdminDialect, FakeAdmin, FakeAdminConfig};
use faregate_import::KafkaSink;
use faregate_processor::ProcessorConfig;
use faregate_tests::{clickhouse_config, kafka_config, test_catalog, unique};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// The day the fixtures' buckets are in.
pub fn day() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 30, 0, 0, 0).unwrap()
}

/// Long after the fixtures: every bucket has settled.
pub fn later() -> DateTime<Utc> {
    day() + TimeDelta::days(2)
}

pub struct Stack {
    pub kafka: KafkaConfig,
    pub clickhouse: ClickHouseConfig,
    stop: CancellationToken,
    processor: tokio::task::JoinHandle<()>,
    _prices: tempfile::TempDir,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop.cancel();
        self.processor.abort();
    }
}

/// Topics, schema and a processor pricing with the catalog file `file`: `tiers` (its service
/// tiers and regions) and the test catalog's entry of each of `models`.
pub async fn stack(file: &str, tiers: &str, models: &[&str]) -> Stack {
    let (kafka, clickhouse) = (kafka_config(), clickhouse_config());
    ensure_topics(&kafka, &kafka.topic_specs()).await.expect("topics are created");
    migrations::apply(&clickhouse).await.expect("the schema applies");
    let prices = tempfile::tempdir().unwrap();
    let models: Vec<String> = models.iter().map(|m| test_catalog(m)).collect();
    std::fs::write(prices.path().join(file), format!("{tiers}\n\n{}", models.join("\n"))).unwrap();
    let config = ProcessorConfig {
        group_id: unique("processor"),
        batch_max_rows: 500,
        batch_max_wait_ms: 50,
        retry_max_ms: 500,
        prices_dir: prices.path().display().to_string(),
        ..ProcessorConfig::default()
    };
    let stop = CancellationToken::new();
    let tasks = faregate_core::shutdown::Tasks::new(stop.clone());
    let pricer = faregate_processor::catalog_pricer(&config, &tasks).expect("the test catalog loads");
    let (k, c, token) = (kafka.clone(), clickhouse.clone(), stop.clone());
    let processor = tokio::spawn(async move {
        let (ok, partitions_ok) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        faregate_processor::run(config, k, c, pricer, ok, partitions_ok, token)
            .await
            .expect("the processor runs");
    });
    Stack { kafka, clickhouse, stop, processor, _prices: prices }
}

/// A fake admin API of hourly `buckets`, three a page, on a port of its own.
pub async fn fake<D: AdminDialect>(admin_key: &str, buckets: Vec<Value>) -> FakeAdmin<D> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config =
        FakeAdminConfig { admin_key: admin_key.into(), bucket_width: "1h".into(), page_size: 3, buckets };
    FakeAdmin::start(listener, config).unwrap()
}

/// A sink of `source`'s events to the usage topic.
pub async fn sink(kafka: &KafkaConfig, source: &'static str) -> KafkaSink {
    let producer =
        RecordProducer::new(kafka, "import", SchemaFamily::UsageEvent, &kafka.topics.usage).await.unwrap();
    KafkaSink { producer, source_name: source }
}
