//! The records that flow between Faregate's services, one Rust type per Avro schema in
//! `schemas/avro/`. Field names and enum symbols match the schemas exactly; the Avro tests prove
//! every record round-trips through its schema.

pub mod alert;
#[cfg(any(test, feature = "testing"))]
pub mod arbitrary;
pub mod config_record;
pub mod decision;
pub mod demand;
pub mod headroom;
pub mod heartbeat;
pub mod scope;
pub mod spend;
pub mod usage;

pub use alert::{Alert, AlertKind, AlertSeverity};
pub use config_record::{
    Budget, BudgetAction, BudgetScope, BudgetWindow, ConfigEntity, ConfigRecord, DirectoryEntry,
    DirectoryKind, KeyStatus, VirtualKey, WindowPeriod,
};
pub use decision::{Decision, DecisionJson, DecisionState};
pub use demand::Demand;
pub use headroom::{Headroom, ReplicaShare, UsageWatermark};
pub use heartbeat::{Coverage, Heartbeat, PartitionPosition};
pub use scope::{Attribution, ScopeKeyError};
pub use spend::{BucketWidth, SpendAggregate, UsageGroup};
pub use usage::{
    Endpoint, Outcome, SourceKind, TAG_REQUEST_INPUT_TOKENS, TokenCounts, Tool, UsageEvent, UsageSource,
};
