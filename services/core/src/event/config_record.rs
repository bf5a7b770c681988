//! Config records: budgets, virtual keys and directory entries on the compacted config topic,
//! keyed `<kind>/<id>` (see [`ConfigRecord::topic_key`]); a tombstone deletes. Virtual keys carry
//! only a hash and a short prefix of the secret, never the secret.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::money::Usd;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigRecord {
    #[serde(with = "crate::time::micros")]
    pub updated_at: DateTime<Utc>,
    pub updated_by: Option<String>,
    pub entity: ConfigEntity,
}

impl ConfigRecord {
    /// The compaction key of this record on the config topic.
    pub fn topic_key(&self) -> String {
        match &self.entity {
            ConfigEntity::Budget(b) => format!("budget/{}", b.id),
            ConfigEntity::VirtualKey(k) => format!("key/{}", k.key_id),
            ConfigEntity::DirectoryEntry(d) => match d.kind {
                DirectoryKind::Org => format!("org/{}", d.id),
                DirectoryKind::Team => format!("team/{}", d.id),
                DirectoryKind::User => format!("user/{}", d.id),
            },
        }
    }
}

/// The Avro union of config entities; the variant order matches the schema's union order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigEntity {
    Budget(Budget),
    VirtualKey(VirtualKey),
    DirectoryEntry(DirectoryEntry),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    pub id: String,
    pub name: String,
    pub scope: BudgetScope,
    pub window: BudgetWindow,
    #[serde(with = "crate::money::avro_decimal")]
    pub limit_usd: Usd,
    pub action: BudgetAction,
    pub downgrade_to: Option<String>,
    pub thresholds_pct: Vec<i32>,
    pub owner: Option<String>,
    pub notify: Vec<String>,
}

/// Every set field must match a request for the budget to apply; unset fields match anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetScope {
    pub org: String,
    pub team: Option<String>,
    pub user: Option<String>,
    pub key_id: Option<String>,
    pub project: Option<String>,
    pub model: Option<String>,
    pub tool: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WindowPeriod {
    Hour,
    Day,
    Week,
    Month,
    Quarter,
    Days,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetWindow {
    pub period: WindowPeriod,
    /// The N of an N-day window (`period == Days`).
    pub days: Option<i32>,
    /// Rolling instead of calendar-aligned.
    pub rolling: bool,
    /// IANA time zone that calendar windows align to.
    pub time_zone: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BudgetAction {
    Block,
    Downgrade,
    AlertOnly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KeyStatus {
    Active,
    Revoked,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualKey {
    pub key_id: String,
    /// sha256 of the secret, lowercase hex.
    pub secret_hash: String,
    pub secret_prefix: String,
    pub org: String,
    pub team: Option<String>,
    pub user: Option<String>,
    /// Empty means every model.
    pub allowed_models: Vec<String>,
    pub rpm_limit: Option<i32>,
    pub tpm_limit: Option<i64>,
    pub status: KeyStatus,
    #[serde(with = "crate::time::micros")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "crate::time::micros::option")]
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DirectoryKind {
    Org,
    Team,
    User,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryEntry {
    pub kind: DirectoryKind,
    pub id: String,
    pub display_name: String,
    pub org: String,
    pub team: Option<String>,
    pub email: Option<String>,
}
