//! Kafka plumbing shared by the services: typed client configuration, topic specifications and
//! creation through the admin API, which client errors are worth retrying (`error`), and W3C
//! trace context carried in message headers.
//!
//! Delivery contract used throughout Faregate: producers are idempotent with `acks=all`;
//! consumers never auto-commit, and a service commits an offset only after the effect of the
//! message is durable downstream (at-least-once transport, made effectively-once by idempotent
//! sinks). No Kafka transactions are used: tansu, the single-machine broker, has none.

pub mod acks;
pub mod admin;
pub mod config;
pub mod dlq;
pub mod error;
pub mod idle;
pub mod offsets;
pub mod ownership;
pub mod partition;
pub mod producer;
pub mod trace;

pub use acks::AckProducer;
pub use admin::{TopicSpec, ensure_topics};
pub use config::{KafkaConfig, SchemaRegistryConfig, TopicsConfig};
pub use dlq::DeadLetters;
pub use idle::{IdleConfig, IdlePacer};
pub use ownership::{OwnershipConfig, OwnershipWatch, Verdict};
pub use partition::partition_for;
pub use producer::{Delivered, ProduceError, RecordProducer};
