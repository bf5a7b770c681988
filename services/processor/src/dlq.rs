//! The dead-letter topic, shared with the other services: see [`faregate_core::kafka::dlq`].
//! The pipeline waits for the broker's acknowledgement before it lets the source offset be
//! committed, so nothing is lost.

pub use faregate_core::kafka::dlq::{DeadLetters, Stage, header};
