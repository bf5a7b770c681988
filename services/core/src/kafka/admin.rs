//! Topics as code: the layout of every Faregate topic (partitions, replication, cleanup policy,
//! retention) and their creation through the Kafka admin API. Creating a topic that exists is
//! not an error, so `ensure_topics` can run at every start.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use super::config::KafkaConfig;

/// How one topic is laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub replication: i32,
    /// Compacted (latest value per key) instead of time-retained.
    pub compacted: bool,
    /// Retention in hours for time-retained topics.
    pub retention_hours: i64,
}

impl TopicSpec {
    /// Topic-level configs passed at creation.
    pub fn configs(&self) -> Vec<(&'static str, String)> {
        if self.compacted {
            vec![("cleanup.policy", "compact".into()), ("min.compaction.lag.ms", "60000".into())]
        } else {
            vec![
                ("cleanup.policy", "delete".into()),
                ("retention.ms", (self.retention_hours * 3_600_000).to_string()),
            ]
        }
    }
}

impl KafkaConfig {
    /// The layout of every Faregate topic.
    pub fn topic_specs(&self) -> Vec<TopicSpec> {
        let t = &self.topics;
        let spec = |name: &str, compacted: bool| TopicSpec {
            name: name.to_string(),
            partitions: t.partitions,
            replication: t.replication,
            compacted,
            retention_hours: t.retention_hours,
        };
        vec![
            spec(&t.usage, false),
            spec(&t.spend, true),
            spec(&t.decisions, true),
            spec(&t.config, true),
            spec(&t.dlq, false),
            spec(&t.alerts, true),
            spec(&t.heartbeats, true),
            spec(&t.headroom, true),
            spec(&t.demand, true),
        ]
    }
}

/// Errors from topic administration.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot create an admin client for {brokers}: {source}")]
    Client { brokers: String, source: KafkaError },
    #[error("creating topics failed: {0}")]
    Request(KafkaError),
    #[error("creating topic {topic} failed: {code}")]
    Topic { topic: String, code: RDKafkaErrorCode },
}

impl crate::error::FaregateError for AdminError {
    fn class(&self) -> crate::error::ErrorClass {
        crate::error::ErrorClass::External
    }
}

/// Create every topic in `specs` that does not exist yet; returns the names it created.
pub async fn ensure_topics(config: &KafkaConfig, specs: &[TopicSpec]) -> Result<Vec<String>, AdminError> {
    let admin: AdminClient<DefaultClientContext> = config
        .admin_config()
        .create()
        .map_err(|source| AdminError::Client { brokers: config.brokers.clone(), source })?;
    let configs: Vec<Vec<(&'static str, String)>> = specs.iter().map(TopicSpec::configs).collect();
    let new_topics: Vec<NewTopic<'_>> = specs
        .iter()
        .zip(&configs)
        .map(|(spec, configs)| {
            configs.iter().fold(
                NewTopic::new(&spec.name, spec.partitions, TopicReplication::Fixed(spec.replication)),
                |topic, (key, value)| topic.set(key, value),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin.create_topics(&new_topics, &options).await.map_err(AdminError::Request)?;
    let mut created = Vec::new();
    for result in results {
        match result {
            Ok(topic) => created.push(topic),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(AdminError::Topic { topic, code }),
        }
    }
    if !created.is_empty() {
        tracing::info!(topics = ?created, "created topics");
    }
    Ok(created)
}
