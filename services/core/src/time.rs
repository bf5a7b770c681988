//! Timestamps: `chrono::DateTime<Utc>` in Rust, microseconds since the Unix epoch on the wire
//! (Avro `timestamp-micros`). Sub-microsecond precision is truncated when encoding.

use chrono::{DateTime, Utc};

/// The current time, truncated to whole microseconds so that it survives a wire round trip.
pub fn now_micros() -> DateTime<Utc> {
    from_micros(Utc::now().timestamp_micros())
}

/// A timestamp from microseconds since the epoch; out-of-range values clamp to the range ends.
pub fn from_micros(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or(if micros < 0 {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    })
}

/// Serde adapter: `DateTime<Utc>` as an `i64` of microseconds.
pub mod micros {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i64(value.timestamp_micros())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
        Ok(super::from_micros(i64::deserialize(deserializer)?))
    }

    /// `Option<DateTime<Utc>>` as a nullable `i64` of microseconds.
    pub mod option {
        use chrono::{DateTime, Utc};
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(
            value: &Option<DateTime<Utc>>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match value {
                Some(v) => serializer.serialize_some(&v.timestamp_micros()),
                None => serializer.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            Ok(Option::<i64>::deserialize(deserializer)?.map(super::super::from_micros))
        }
    }
}

/// Serde adapter: `uuid::Uuid` as its hyphenated string (Avro `string` with `logicalType: uuid`),
/// whatever the serializer's human-readable setting.
pub mod uuid_string {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};
    use uuid::Uuid;

    pub fn serialize<S: Serializer>(value: &Uuid, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(value.hyphenated().encode_lower(&mut Uuid::encode_buffer()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Uuid, D::Error> {
        let text = String::deserialize(deserializer)?;
        Uuid::parse_str(&text).map_err(|e| D::Error::custom(format!("invalid uuid {text:?}: {e}")))
    }
}
