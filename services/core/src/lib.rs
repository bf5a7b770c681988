//! Faregate's shared core: the event model, exact money, the Avro wire format, Kafka and ClickHouse
//! plumbing, layered configuration, telemetry and the shutdown tree.
//!
//! Contract: this crate holds only what two or more services need. Domain logic (pricing, budget
//! windows, enforcement) belongs to the service that owns it. Nothing here stores or logs a prompt,
//! a completion or a secret.

pub mod avro;
pub mod clickhouse;
pub mod config;
pub mod error;
pub mod event;
pub mod kafka;
pub mod money;
pub mod retry;
pub mod shutdown;
pub mod telemetry;
pub mod time;

pub use error::{ErrorClass, FaregateError};
pub use money::Usd;
