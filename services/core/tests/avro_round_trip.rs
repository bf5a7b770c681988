//! Every record survives the Confluent-framed Avro round trip unchanged (property-based), and
//! malformed values are refused with a reason instead of being misread.

use std::sync::Arc;

use faregate_core::avro::codec::split_frame;
use faregate_core::avro::{AvroCodec, AvroError, LocalRegistry, SchemaFamily};
use faregate_core::event::arbitrary;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().build().unwrap()
}

fn codec<T: Serialize + DeserializeOwned>(family: SchemaFamily) -> AvroCodec<T> {
    runtime().block_on(AvroCodec::new(family, "any-topic", Arc::new(LocalRegistry))).unwrap()
}

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    codec: &AvroCodec<T>,
    value: &T,
) -> T {
    let bytes = codec.encode(value).unwrap();
    let (id, _) = split_frame(&bytes).unwrap();
    assert_eq!(id, codec.writer_id());
    runtime().block_on(codec.decode(&bytes)).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn usage_events_round_trip(event in arbitrary::usage_event()) {
        let codec = codec(SchemaFamily::UsageEvent);
        prop_assert_eq!(round_trip(&codec, &event), event);
    }

    #[test]
    fn spend_aggregates_round_trip(aggregate in arbitrary::spend_aggregate()) {
        let codec = codec(SchemaFamily::SpendAggregate);
        prop_assert_eq!(round_trip(&codec, &aggregate), aggregate);
    }

    #[test]
    fn decisions_round_trip(decision in arbitrary::decision()) {
        let codec = codec(SchemaFamily::Decision);
        prop_assert_eq!(round_trip(&codec, &decision), decision);
    }

    #[test]
    fn config_records_round_trip(record in arbitrary::config_record()) {
        let codec = codec(SchemaFamily::ConfigRecord);
        prop_assert_eq!(round_trip(&codec, &record), record);
    }

    #[test]
    fn alerts_round_trip(alert in arbitrary::alert()) {
        let codec = codec(SchemaFamily::Alert);
        prop_assert_eq!(round_trip(&codec, &alert), alert);
    }

    #[test]
    fn heartbeats_round_trip(heartbeat in arbitrary::heartbeat()) {
        let codec = codec(SchemaFamily::Heartbeat);
        prop_assert_eq!(round_trip(&codec, &heartbeat), heartbeat);
    }

    /// The resolving path (used for values written with another schema version) agrees with the
    /// fast path, for every record type.
    #[test]
    fn resolving_usage_events_agrees(event in arbitrary::usage_event()) {
        prop_assert_eq!(resolve(SchemaFamily::UsageEvent, &event), event);
    }

    #[test]
    fn resolving_spend_aggregates_agrees(aggregate in arbitrary::spend_aggregate()) {
        prop_assert_eq!(resolve(SchemaFamily::SpendAggregate, &aggregate), aggregate);
    }

    #[test]
    fn resolving_decisions_agrees(decision in arbitrary::decision()) {
        prop_assert_eq!(resolve(SchemaFamily::Decision, &decision), decision);
    }

    #[test]
    fn headroom_round_trips(headroom in arbitrary::headroom()) {
        let codec = codec(SchemaFamily::Headroom);
        prop_assert_eq!(round_trip(&codec, &headroom), headroom);
    }

    #[test]
    fn demand_round_trips(demand in arbitrary::demand()) {
        let codec = codec::<faregate_core::event::Demand>(SchemaFamily::Demand);
        prop_assert_eq!(round_trip(&codec, &demand), demand);
    }

    #[test]
    fn resolving_headroom_agrees(headroom in arbitrary::headroom()) {
        prop_assert_eq!(resolve(SchemaFamily::Headroom, &headroom), headroom);
    }

    #[test]
    fn resolving_heartbeats_agrees(heartbeat in arbitrary::heartbeat()) {
        prop_assert_eq!(resolve(SchemaFamily::Heartbeat, &heartbeat), heartbeat);
    }

    #[test]
    fn resolving_config_records_agrees(record in arbitrary::config_record()) {
        prop_assert_eq!(resolve(SchemaFamily::ConfigRecord, &record), record);
    }

    #[test]
    fn resolving_alerts_agrees(alert in arbitrary::alert()) {
        prop_assert_eq!(resolve(SchemaFamily::Alert, &alert), alert);
    }
}

/// Decode through schema resolution (writer schema -> newest schema -> serde), the path taken for
/// values written with any other schema version.
fn resolve<T: Serialize + DeserializeOwned>(family: SchemaFamily, value: &T) -> T {
    let bytes = codec::<T>(family).encode(value).unwrap();
    let schema = &family.latest().schema;
    let reader = apache_avro::reader::datum::GenericDatumReader::builder(schema)
        .reader_schema(schema)
        .build()
        .unwrap();
    let resolved = reader.read_value(&mut &bytes[5..]).unwrap();
    apache_avro::from_value(&resolved).unwrap()
}

#[test]
fn malformed_values_are_refused_with_a_reason() {
    let codec: AvroCodec<faregate_core::event::Decision> = codec(SchemaFamily::Decision);
    let rt = runtime();
    assert!(matches!(rt.block_on(codec.decode(&[0, 0])), Err(AvroError::TooShort { len: 2 })));
    assert!(matches!(rt.block_on(codec.decode(b"{\"json\": true}")), Err(AvroError::BadMagic(b'{'))));
    let unknown = rt.block_on(codec.decode(&[0, 0, 0, 0x03, 0xe7, 1, 2])).unwrap_err();
    assert!(matches!(unknown, AvroError::UnknownSchema { id: 999, .. }), "{unknown}");
    // A usage event framed as a decision: the writer id is not the decision's.
    let usage: AvroCodec<faregate_core::event::UsageEvent> =
        runtime().block_on(AvroCodec::new(SchemaFamily::UsageEvent, "t", Arc::new(LocalRegistry))).unwrap();
    let event = arbitrary::usage_event()
        .new_tree(&mut proptest::test_runner::TestRunner::default())
        .unwrap()
        .current();
    let bytes = usage.encode(&event).unwrap();
    let error = rt.block_on(codec.decode(&bytes)).unwrap_err();
    assert!(matches!(error, AvroError::Decode { id: 102, .. }), "{error}");
    // Truncated datum.
    let decision =
        arbitrary::decision().new_tree(&mut proptest::test_runner::TestRunner::default()).unwrap().current();
    let bytes = codec.encode(&decision).unwrap();
    let error = rt.block_on(codec.decode(&bytes[..bytes.len() - 1])).unwrap_err();
    assert!(matches!(error, AvroError::Decode { .. }), "{error}");
}
