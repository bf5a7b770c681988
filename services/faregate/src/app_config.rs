//! The whole configuration of a `faregate` process: shared sections plus one per service.

use serde::{Deserialize, Serialize};

use faregate_budget::BudgetConfig;
use faregate_core::clickhouse::ClickHouseConfig;
use faregate_core::config::{ConfigError, Validate};
use faregate_core::kafka::KafkaConfig;
use faregate_core::telemetry::TelemetryConfig;
use faregate_import::ImportConfig;
use faregate_ingress::IngressConfig;
use faregate_processor::ProcessorConfig;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AppConfig {
    pub kafka: KafkaConfig,
    pub clickhouse: ClickHouseConfig,
    pub telemetry: TelemetryConfig,
    pub ingress: IngressConfig,
    pub processor: ProcessorConfig,
    pub budget: BudgetConfig,
    /// Importers of provider admin reports (`faregate import`).
    pub import: ImportConfig,
}

impl Validate for AppConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.kafka.validate()?;
        self.clickhouse.validate()?;
        self.telemetry.validate()?;
        self.ingress.validate()?;
        self.processor.validate()?;
        self.budget.validate()?;
        self.import.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use faregate_core::config::load;

    #[test]
    fn defaults_are_valid_and_env_reaches_every_section() {
        let env: Vec<(String, String)> = [
            ("FAREGATE__KAFKA__BROKERS", "10.0.0.1:9092"),
            ("FAREGATE__KAFKA__TOPICS__PARTITIONS", "12"),
            ("FAREGATE__CLICKHOUSE__PASSWORD", "s3cret"),
            ("FAREGATE__INGRESS__LISTEN", "0.0.0.0:9000"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let config: AppConfig = load(None, &env).unwrap();
        assert_eq!(config.kafka.brokers, "10.0.0.1:9092");
        assert_eq!(config.kafka.topics.partitions, 12);
        assert_eq!(config.clickhouse.password.expose(), "s3cret");
        assert_eq!(config.ingress.listen, "0.0.0.0:9000");
        let shown = toml::to_string(&config).unwrap();
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn a_bad_field_is_named() {
        let env = vec![("FAREGATE__CLICKHOUSE__DATABASE".to_string(), "drop table".to_string())];
        let error = load::<AppConfig>(None, &env).unwrap_err().to_string();
        assert!(error.contains("clickhouse.database"), "{error}");
    }
}
