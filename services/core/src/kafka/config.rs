//! Typed Kafka client configuration, turned into librdkafka `ClientConfig`s with Faregate's
//! delivery settings applied.

use std::collections::BTreeMap;
use std::sync::Arc;

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

use super::idle::IdleConfig;
use super::ownership::OwnershipConfig;
use crate::avro::{ConfluentRegistry, LocalRegistry, SchemaRegistry};
use crate::config::{ConfigError, Secret, Validate};

/// Connection and topic settings for Kafka.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma-separated `host:port`.
    pub brokers: String,
    /// Client id prefix; services append their own name.
    pub client_id: String,
    /// SASL user name (set together with `properties."sasl.mechanism"` and `security.protocol`).
    pub sasl_username: String,
    /// SASL password; never logged.
    pub sasl_password: Secret,
    /// Use the idempotent producer (on by default; every supported broker has it).
    pub idempotent_producer: bool,
    /// How long a consumer's fetch may wait at the broker for new data (librdkafka's
    /// `fetch.wait.max.ms`). Kafka answers a waiting fetch as soon as data arrives, so there this
    /// only bounds idle polling; tansu answers only when the wait expires, so there every
    /// consumer hop (usage -> processor, spend -> budget, decisions -> ingress) costs up to this
    /// much. The local stack sets 10.
    pub fetch_wait_max_ms: u32,
    /// The same wait for consumers off the decision path, whose latency no budget crossing
    /// waits on: the ingress's keys (config topic) and enforcement heartbeats tables, and the
    /// budget service's live budgets reader. On Kafka a longer wait only means fewer idle
    /// fetches; on tansu it also delays a new key, budget or heartbeat by up to this much (a
    /// heartbeat comes every 2 s and counts as stale after 10 s). At least `fetch_wait_max_ms`.
    pub background_fetch_wait_max_ms: u32,
    /// Extra librdkafka properties, e.g. `security.protocol = "SASL_SSL"`; they win over Faregate's.
    pub properties: BTreeMap<String, String>,
    /// Topic names and layout.
    pub topics: TopicsConfig,
    /// Where Avro schema ids come from.
    pub schema_registry: SchemaRegistryConfig,
    /// When a consumer group member counts as not ready and rejoins (see
    /// [`crate::kafka::ownership`]).
    pub ownership: OwnershipConfig,
    /// When the decision-path consumers stop fetching while nothing arrives (see
    /// [`crate::kafka::idle`]; off by default, on in the local stack).
    pub idle: IdleConfig,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            client_id: "faregate".into(),
            sasl_username: String::new(),
            sasl_password: Secret::default(),
            idempotent_producer: true,
            fetch_wait_max_ms: 100,
            background_fetch_wait_max_ms: 500,
            properties: BTreeMap::new(),
            topics: TopicsConfig::default(),
            schema_registry: SchemaRegistryConfig::default(),
            ownership: OwnershipConfig::default(),
            idle: IdleConfig::default(),
        }
    }
}

/// Topic names and their layout.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    /// One usage event per request, keyed by the subject that owns the spend.
    pub usage: String,
    /// Absolute spend totals per subject and bucket; compacted.
    pub spend: String,
    /// Enforcement decisions keyed by subject; compacted.
    pub decisions: String,
    /// Budgets, virtual keys and the directory; compacted.
    pub config: String,
    /// Values that could not be decoded or validated, with the reason in headers.
    pub dlq: String,
    /// Budget and anomaly alerts, keyed by what they are about; compacted (the latest alert per
    /// key tells which window was already alerted, so a restart does not alert twice).
    pub alerts: String,
    /// Budget service heartbeats (the enforcement watermark), keyed by instance; compacted.
    /// Gateways and `faregate status` read it to tell whether enforcement is live.
    pub heartbeats: String,
    /// Each budget's headroom (limit, spent, remaining as of a spend revision), keyed by
    /// `<scope key>#budget=<id>`; compacted. Gateways read it for the budget headers and `/v1/me`.
    pub headroom: String,
    /// Each gateway replica's demand on each budget (what it holds and was asked for), keyed by
    /// `<replica>#<scope key>#budget=<id>`; compacted. The budget service shares headroom
    /// among the replicas from it.
    pub demand: String,
    /// Partitions of topics Faregate creates.
    pub partitions: i32,
    /// Replication factor of topics Faregate creates (1 on a single broker, 3 in production).
    pub replication: i32,
    /// Retention of the usage and dead-letter topics, in hours.
    pub retention_hours: i64,
}

impl TopicsConfig {
    /// Every topic name with its field name, for code that renames or checks them all (a new
    /// topic is added here once, not in every harness).
    pub fn names_mut(&mut self) -> [(&'static str, &mut String); 9] {
        [
            ("usage", &mut self.usage),
            ("spend", &mut self.spend),
            ("decisions", &mut self.decisions),
            ("config", &mut self.config),
            ("dlq", &mut self.dlq),
            ("alerts", &mut self.alerts),
            ("heartbeats", &mut self.heartbeats),
            ("headroom", &mut self.headroom),
            ("demand", &mut self.demand),
        ]
    }
}

impl Default for TopicsConfig {
    fn default() -> Self {
        TopicsConfig {
            usage: "faregate.usage.v1".into(),
            spend: "faregate.spend.v1".into(),
            decisions: "faregate.decisions.v1".into(),
            config: "faregate.config.v1".into(),
            dlq: "faregate.dlq.v1".into(),
            alerts: "faregate.alerts.v1".into(),
            heartbeats: "faregate.heartbeats.v1".into(),
            headroom: "faregate.headroom.v1".into(),
            demand: "faregate.demand.v1".into(),
            partitions: 3,
            replication: 1,
            retention_hours: 7 * 24,
        }
    }
}

/// Optional Confluent-compatible Schema Registry.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchemaRegistryConfig {
    /// Base URL, e.g. `http://registry:8081`; empty uses the compiled-in schemas and their fixed ids.
    pub url: String,
    /// Basic-auth user name, if the registry needs one.
    pub username: String,
    /// Basic-auth password; never logged.
    pub password: Secret,
}

impl SchemaRegistryConfig {
    /// The registry these settings describe.
    pub fn registry(&self) -> Arc<dyn SchemaRegistry> {
        if self.url.is_empty() {
            return Arc::new(LocalRegistry);
        }
        let auth = (!self.username.is_empty()).then(|| (self.username.clone(), self.password.clone()));
        Arc::new(ConfluentRegistry::new(&self.url, auth))
    }
}

impl Validate for KafkaConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.brokers.trim().is_empty() {
            return Err(ConfigError::field("kafka.brokers", "must name at least one host:port"));
        }
        if self.fetch_wait_max_ms > 300_000 {
            return Err(ConfigError::field("kafka.fetch_wait_max_ms", "must be at most 300000 (5 minutes)"));
        }
        if self.background_fetch_wait_max_ms > 300_000 {
            return Err(ConfigError::field(
                "kafka.background_fetch_wait_max_ms",
                "must be at most 300000 (5 minutes)",
            ));
        }
        if self.background_fetch_wait_max_ms < self.fetch_wait_max_ms {
            return Err(ConfigError::field(
                "kafka.background_fetch_wait_max_ms",
                format!(
                    "must be at least kafka.fetch_wait_max_ms ({}): it is the wait of consumers whose latency matters less",
                    self.fetch_wait_max_ms
                ),
            ));
        }
        for broker in self.brokers.split(',') {
            let broker = broker.trim();
            let ok = broker
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
                return Err(ConfigError::field("kafka.brokers", format!("{broker:?} is not host:port")));
            }
        }
        let mut names = self.topics.clone();
        let t = &self.topics;
        for (field, name) in names.names_mut() {
            let valid = !name.is_empty()
                && name.len() <= 249
                && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !valid {
                return Err(ConfigError::field(
                    format!("kafka.topics.{field}"),
                    format!("{name:?} is not a valid topic name (letters, digits, . _ -; at most 249)"),
                ));
            }
        }
        if t.partitions < 1 {
            return Err(ConfigError::field("kafka.topics.partitions", "must be at least 1"));
        }
        if t.replication < 1 {
            return Err(ConfigError::field("kafka.topics.replication", "must be at least 1"));
        }
        if !self.schema_registry.url.is_empty() && !self.schema_registry.url.starts_with("http") {
            return Err(ConfigError::field("kafka.schema_registry.url", "must be an http(s) URL"));
        }
        self.idle.validate(self.ownership.check_interval_ms)?;
        self.ownership.validate()
    }
}

impl KafkaConfig {
    fn base(&self, role: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers).set("client.id", format!("{}-{role}", self.client_id));
        // No KIP-714 client metrics: Faregate exports its own, and a broker without them (tansu)
        // is asked for a subscription again and again (2 requests/s on an idle local stack).
        config.set("enable.metrics.push", "false");
        if !self.sasl_username.is_empty() {
            config
                .set("sasl.username", &self.sasl_username)
                .set("sasl.password", self.sasl_password.expose());
        }
        config
    }

    fn with_overrides(&self, mut config: ClientConfig) -> ClientConfig {
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }

    /// A producer: idempotent, `acks=all`, lz4-compressed, lightly batched.
    pub fn producer_config(&self, role: &str) -> ClientConfig {
        let mut config = self.base(role);
        config
            .set("enable.idempotence", self.idempotent_producer.to_string())
            .set("acks", "all")
            .set("compression.type", "lz4")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000");
        self.with_overrides(config)
    }

    /// A consumer in `group`: manual offset commits only, starting at the earliest offset.
    pub fn consumer_config(&self, role: &str, group: &str) -> ClientConfig {
        let mut config = self.base(role);
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("session.timeout.ms", "10000")
            .set("fetch.wait.max.ms", self.fetch_wait_max_ms.to_string());
        self.with_overrides(config)
    }

    /// A consumer off the decision path (see `background_fetch_wait_max_ms`): the same as
    /// [`KafkaConfig::consumer_config`] with the longer fetch wait (`kafka.properties` still win).
    pub fn background_consumer_config(&self, role: &str, group: &str) -> ClientConfig {
        let mut config = self.consumer_config(role, group);
        if !self.properties.contains_key("fetch.wait.max.ms") {
            config.set("fetch.wait.max.ms", self.background_fetch_wait_max_ms.to_string());
        }
        config
    }

    /// An admin client.
    pub fn admin_config(&self) -> ClientConfig {
        self.with_overrides(self.base("admin"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_override_and_secrets_stay_out_of_debug() {
        let mut config = KafkaConfig {
            sasl_username: "svc".into(),
            sasl_password: Secret::new("pw-123"),
            ..KafkaConfig::default()
        };
        config.properties.insert("linger.ms".into(), "50".into());
        let producer = config.producer_config("ingress");
        assert_eq!(producer.get("linger.ms"), Some("50"));
        assert_eq!(config.consumer_config("budget", "g").get("fetch.wait.max.ms"), Some("100"));
        assert_eq!(producer.get("enable.idempotence"), Some("true"));
        assert_eq!(producer.get("client.id"), Some("faregate-ingress"));
        assert!(!format!("{config:?}").contains("pw-123"));
        let consumer = config.consumer_config("processor", "g");
        assert_eq!(consumer.get("enable.auto.commit"), Some("false"));
    }

    #[test]
    fn invalid_settings_name_the_field() {
        let mut config = KafkaConfig::default();
        config.topics.dlq = "bad topic".into();
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("kafka.topics.dlq"), "{error}");
        let config = KafkaConfig { brokers: "localhost".into(), ..KafkaConfig::default() };
        assert!(config.validate().unwrap_err().to_string().contains("kafka.brokers"));
    }

    #[test]
    fn background_consumers_wait_longer_and_never_shorter_than_the_hot_path() {
        let config = KafkaConfig::default();
        config.validate().unwrap();
        assert_eq!(config.background_consumer_config("ingress", "g").get("fetch.wait.max.ms"), Some("500"));
        assert_eq!(config.consumer_config("ingress", "g").get("fetch.wait.max.ms"), Some("100"));
        // The local stack's values.
        let local =
            KafkaConfig { fetch_wait_max_ms: 10, background_fetch_wait_max_ms: 500, ..config.clone() };
        local.validate().unwrap();
        let shorter = KafkaConfig { fetch_wait_max_ms: 600, ..config.clone() };
        let error = shorter.validate().unwrap_err().to_string();
        assert!(error.contains("kafka.background_fetch_wait_max_ms") && error.contains("600"), "{error}");
        let huge = KafkaConfig { background_fetch_wait_max_ms: 300_001, ..config.clone() };
        assert!(huge.validate().unwrap_err().to_string().contains("kafka.background_fetch_wait_max_ms"));
        // An operator's librdkafka property wins over both.
        let mut overridden = config;
        overridden.properties.insert("fetch.wait.max.ms".into(), "50".into());
        assert_eq!(
            overridden.background_consumer_config("ingress", "g").get("fetch.wait.max.ms"),
            Some("50")
        );
    }
}
