//! The Avro wire format of every Kafka value: Confluent framing (magic byte 0, a big-endian u32
//! schema id, then the Avro binary datum).
//!
//! Schema ids come from a Confluent Schema Registry when one is configured, and otherwise from
//! the schemas compiled in from `schemas/avro/` by a fixed rule (see [`schemas`]). Readers decode
//! any version they know or can fetch and resolve it to the newest version this build has, so a
//! producer may be upgraded before or after its consumers as long as each schema change is
//! backward compatible (which a test enforces).

pub mod codec;
pub mod datum;
pub mod registry;
pub mod schemas;
pub mod usage_decoder;

pub use codec::{AvroCodec, AvroError, HandDecoder};
pub use registry::{ConfluentRegistry, LocalRegistry, SchemaRegistry};
pub use schemas::{LocalSchema, SchemaFamily};
