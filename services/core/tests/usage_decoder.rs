//! The hand-written `UsageEvent` decoder gives exactly what apache_avro's reader gives: the same
//! event for every valid datum, an error for every datum apache_avro refuses (truncated, mutated,
//! garbage), the same number of bytes consumed, and never a panic.

use std::sync::{Arc, LazyLock};

use apache_avro::reader::datum::GenericDatumReader;
use faregate_core::avro::{AvroCodec, AvroError, LocalRegistry, SchemaFamily, usage_decoder};
use faregate_core::event::{UsageEvent, arbitrary};
use proptest::collection::vec;
use proptest::prelude::*;

static CODEC: LazyLock<AvroCodec<UsageEvent>> = LazyLock::new(|| {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(AvroCodec::new(SchemaFamily::UsageEvent, "t", Arc::new(LocalRegistry))).unwrap()
});

/// The datum (no Confluent header) of `event`, written by the real codec.
fn datum(event: &UsageEvent) -> Vec<u8> {
    CODEC.encode(event).unwrap()[5..].to_vec()
}

/// Both decoders on `bytes`: the value (or `None` for an error) and the bytes left after it.
fn both(bytes: &[u8]) -> ((Option<UsageEvent>, usize), (Option<UsageEvent>, usize)) {
    let reader = GenericDatumReader::builder(&SchemaFamily::UsageEvent.latest().schema).build().unwrap();
    let mut rest = bytes;
    let avro = reader.read_deser::<UsageEvent>(&mut rest).ok();
    let avro = (avro.clone(), if avro.is_some() { rest.len() } else { 0 });
    let mut rest = bytes;
    let hand = (usage_decoder::decode)(&mut rest).ok();
    let hand = (hand.clone(), if hand.is_some() { rest.len() } else { 0 });
    (hand, avro)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn valid_events_decode_to_what_apache_avro_gives(event in arbitrary::usage_event()) {
        let bytes = datum(&event);
        let (hand, avro) = both(&bytes);
        prop_assert_eq!(&hand, &avro);
        prop_assert_eq!(hand, (Some(event), 0));
    }

    /// Every strict prefix is refused by both.
    #[test]
    fn truncated_events_are_refused(event in arbitrary::usage_event()) {
        let bytes = datum(&event);
        for len in 0..bytes.len() {
            let (hand, avro) = both(&bytes[..len]);
            prop_assert_eq!(&hand, &avro, "prefix of {} bytes", len);
            prop_assert!(hand.0.is_none());
        }
    }

    /// Bytes overwritten anywhere: both agree on the outcome (and the value when valid).
    #[test]
    fn mutated_events_agree(
        event in arbitrary::usage_event(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = datum(&event);
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        let (hand, avro) = both(&bytes);
        prop_assert_eq!(hand, avro);
    }

    #[test]
    fn garbage_agrees(bytes in vec(any::<u8>(), 0..300)) {
        let (hand, avro) = both(&bytes);
        prop_assert_eq!(hand, avro);
    }

    /// A valid datum followed by more bytes: the decoder stops at the datum's end.
    #[test]
    fn trailing_bytes_are_left(event in arbitrary::usage_event(), extra in vec(any::<u8>(), 1..8)) {
        let mut bytes = datum(&event);
        bytes.extend_from_slice(&extra);
        let (hand, avro) = both(&bytes);
        prop_assert_eq!(&hand, &avro);
        prop_assert_eq!(hand, (Some(event), extra.len()));
    }
}

#[test]
fn the_codec_uses_it_and_refuses_trailing_bytes_with_a_reason() {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let codec: AvroCodec<UsageEvent> = rt
        .block_on(AvroCodec::new(SchemaFamily::UsageEvent, "t", Arc::new(LocalRegistry)))
        .unwrap()
        .with_hand_decoder(usage_decoder::HAND_DECODER);
    assert!(codec.uses_hand_decoder(), "the hand decoder is not for the newest usage_event schema");
    let event = proptest::strategy::ValueTree::current(
        &arbitrary::usage_event().new_tree(&mut proptest::test_runner::TestRunner::deterministic()).unwrap(),
    );
    let mut bytes = codec.encode(&event).unwrap();
    assert_eq!(rt.block_on(codec.decode(&bytes)).unwrap(), event);

    bytes.push(0);
    let error = rt.block_on(codec.decode(&bytes)).unwrap_err();
    assert!(matches!(error, AvroError::Decode { id: 102, .. }), "{error}");
    assert!(error.to_string().contains("1 bytes left over"), "{error}");

    let error = rt.block_on(codec.decode(&bytes[..bytes.len() - 3])).unwrap_err();
    assert!(matches!(error, AvroError::Decode { id: 102, .. }), "{error}");
    assert!(error.to_string().contains("the datum ends early"), "{error}");

    let mut garbage = bytes[..5].to_vec();
    garbage.extend_from_slice(&[0x48, 0xff, 0xfe]);
    let error = rt.block_on(codec.decode(&garbage)).unwrap_err();
    assert!(error.to_string().contains("field event_id"), "{error}");
}
