//! Budget service settings (`[budget]` in the TOML file, `FAREGATE__BUDGET__…` variables).

use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use faregate_core::config::{ConfigError, Secret, Validate};

use crate::engine::anomaly::AnomalySettings;

/// Budget service settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetConfig {
    /// Consumer group of the spend topic: the instances of one deployment share it and split
    /// the orgs between them (by spend partition). Nothing is ever committed: state is rebuilt
    /// from the compacted topics at every assignment. Also the label of the whole-topic readers.
    pub group_id: String,
    /// Static group membership id (`group.instance.id`), unique per instance of the group, e.g.
    /// the pod name of a StatefulSet. Empty uses `budget-<host name>`: a restart on the same
    /// host rejoins as the same member and takes its partitions back at once. Set it when two
    /// instances of one group share a host (two members with one id fence each other).
    pub instance_id: String,
    /// Address of the admin HTTP API (`/v1/budgets`); port 0 picks a free port.
    pub admin_listen: String,
    /// Bearer token of the admin API. Empty turns the admin API off.
    pub admin_token: Secret,
    /// How often windows are moved on (resets, rolling windows, forecasts), in milliseconds.
    pub tick_ms: u64,
    /// How often the instance publishes its heartbeat (the enforcement watermark gateways and
    /// `faregate status` read), in milliseconds, while it owns spend partitions and has caught
    /// up on them. Keep it well below the gateways' `ingress.enforcement_stale_after_secs`.
    pub heartbeat_ms: u64,
    /// How often budgets whose spend or window changed get their headroom (limit, spent,
    /// remaining) published to `kafka.topics.headroom`, in milliseconds: a busy budget publishes
    /// at most one record per interval, an idle one none; gateways show it within about this.
    pub headroom_interval_ms: u64,
    /// Webhooks (Slack-compatible) that receive every alert, besides each budget's own `notify`.
    pub webhooks: Vec<String>,
    /// Anomaly tripwires.
    pub anomaly: AnomalyConfig,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            group_id: "faregate-budget".into(),
            instance_id: String::new(),
            admin_listen: "127.0.0.1:9410".into(),
            admin_token: Secret::default(),
            tick_ms: 1000,
            heartbeat_ms: 2000,
            headroom_interval_ms: 250,
            webhooks: Vec::new(),
            anomaly: AnomalyConfig::default(),
        }
    }
}

/// Anomaly tripwires; amounts are decimal strings in US dollars, empty turns a tripwire off.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnomalyConfig {
    /// Alert when a key's spend today exceeds this many times its 7-day daily average.
    pub spike_factor: String,
    /// ... and is at least this many dollars.
    pub spike_min_usd: String,
    /// Alert when a key spends more than this many dollars in one UTC hour ("" = off).
    pub burn_rate_usd_per_hour: String,
    /// Alert when one session spends more than this many dollars ... ("" = off).
    pub session_usd: String,
    /// ... within this many minutes.
    pub session_minutes: u32,
    /// Alert when one model takes at least this share (percent) of a key's requests today ...
    pub mix_share_pct: u32,
    /// ... at this many times the key's 7-day average cost per request or more ...
    pub mix_price_ratio: String,
    /// ... once the key sent at least this many requests today.
    pub mix_min_requests: i64,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        AnomalyConfig {
            spike_factor: "3".into(),
            spike_min_usd: "10".into(),
            burn_rate_usd_per_hour: "100".into(),
            session_usd: "25".into(),
            session_minutes: 10,
            mix_share_pct: 60,
            mix_price_ratio: "3".into(),
            mix_min_requests: 20,
        }
    }
}

fn decimal(field: &str, value: &str) -> Result<Decimal, ConfigError> {
    Decimal::from_str_exact(value.trim()).ok().filter(|d| *d >= Decimal::ZERO).ok_or_else(|| {
        ConfigError::field(format!("budget.anomaly.{field}"), format!("{value:?} is not a decimal >= 0"))
    })
}

fn optional(field: &str, value: &str) -> Result<Option<Decimal>, ConfigError> {
    if value.trim().is_empty() { Ok(None) } else { decimal(field, value).map(Some) }
}

impl AnomalyConfig {
    /// The engine's settings.
    pub fn settings(&self) -> Result<AnomalySettings, ConfigError> {
        Ok(AnomalySettings {
            spike_factor: decimal("spike_factor", &self.spike_factor)?,
            spike_min_usd: decimal("spike_min_usd", &self.spike_min_usd)?,
            burn_rate_usd_per_hour: optional("burn_rate_usd_per_hour", &self.burn_rate_usd_per_hour)?,
            session_usd: optional("session_usd", &self.session_usd)?,
            session_minutes: self.session_minutes,
            mix_share_pct: self.mix_share_pct,
            mix_price_ratio: decimal("mix_price_ratio", &self.mix_price_ratio)?,
            mix_min_requests: self.mix_min_requests,
        })
    }
}

impl Validate for BudgetConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.group_id.trim().is_empty() {
            return Err(ConfigError::field("budget.group_id", "must not be empty"));
        }
        if !self.admin_token.is_empty() && std::net::SocketAddr::from_str(&self.admin_listen).is_err() {
            return Err(ConfigError::field(
                "budget.admin_listen",
                format!("{:?} is not host:port", self.admin_listen),
            ));
        }
        if self.tick_ms == 0 {
            return Err(ConfigError::field("budget.tick_ms", "must be at least 1"));
        }
        if !(50..=60_000).contains(&self.heartbeat_ms) {
            return Err(ConfigError::field("budget.heartbeat_ms", "must be within 50..=60000"));
        }
        if !(10..=60_000).contains(&self.headroom_interval_ms) {
            return Err(ConfigError::field("budget.headroom_interval_ms", "must be within 10..=60000"));
        }
        for (i, hook) in self.webhooks.iter().enumerate() {
            if !(hook.starts_with("https://") || hook.starts_with("http://")) {
                return Err(ConfigError::field(format!("budget.webhooks[{i}]"), "must be an http(s) URL"));
            }
        }
        if !(1..=1440).contains(&self.anomaly.session_minutes) {
            return Err(ConfigError::field("budget.anomaly.session_minutes", "must be within 1..=1440"));
        }
        if !(1..=100).contains(&self.anomaly.mix_share_pct) {
            return Err(ConfigError::field("budget.anomaly.mix_share_pct", "must be within 1..=100"));
        }
        self.anomaly.settings().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_errors_name_the_field() {
        BudgetConfig::default().validate().unwrap();
        let mut config = BudgetConfig::default();
        config.anomaly.spike_factor = "lots".into();
        assert!(config.validate().unwrap_err().to_string().contains("budget.anomaly.spike_factor"));
        let config = BudgetConfig {
            admin_token: Secret::new("t"),
            admin_listen: "nowhere".into(),
            ..BudgetConfig::default()
        };
        assert!(config.validate().unwrap_err().to_string().contains("budget.admin_listen"));
        assert!(
            !format!("{:?}", BudgetConfig { admin_token: Secret::new("hunter2"), ..BudgetConfig::default() })
                .contains("hunter2")
        );
    }
}
