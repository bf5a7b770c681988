//! A decoder written by hand for `UsageEvent` values in `schemas/avro/usage_event.v2.avsc`: the
//! processor's fast path, about 3 times cheaper than apache_avro's serde reader (which looks
//! every field name up and allocates every string twice).
//!
//! Contract: for every datum, it returns exactly what apache_avro's reader with that schema
//! returns (the same value, or an error where apache_avro gives one), and never panics. It is
//! only used for values whose schema id is the newest schema's, and only when the newest schema
//! is the file it was written for ([`HAND_DECODER`]`.schema_file`): a new schema version makes
//! the codec fall back to apache_avro and makes this module's tests fail until the decoder is
//! brought up to date. The property tests (`services/core/tests/usage_decoder.rs`) compare it
//! with apache_avro on arbitrary events, their truncations, mutations and trailing bytes.

use std::collections::BTreeMap;

use super::codec::HandDecoder;
use super::datum::{Datum, DatumError};
use crate::event::{Endpoint, Outcome, SourceKind, TokenCounts, Tool, UsageEvent, UsageSource};
use crate::time::from_micros;

/// The decoder, for [`super::AvroCodec::with_hand_decoder`].
pub const HAND_DECODER: HandDecoder<UsageEvent> =
    HandDecoder { schema_file: "usage_event.v2.avsc", fields: &FIELDS, decode };

/// The record's fields in the order they are read (a test compares them with the schema's).
pub const FIELDS: [&str; 28] = [
    "event_id",
    "occurred_at",
    "received_at",
    "source_kind",
    "source_name",
    "org",
    "team",
    "user",
    "key_id",
    "provider",
    "requested_model",
    "served_model",
    "endpoint",
    "tool",
    "session_id",
    "request_id",
    "upstream_request_id",
    "project",
    "tags",
    "tokens",
    "usage_source",
    "service_tier",
    "inference_region",
    "streaming",
    "outcome",
    "http_status",
    "latency_us",
    "ttfb_us",
];

// Enum symbols in the schema's order.
const SOURCE_KINDS: [SourceKind; 3] = [SourceKind::Ingress, SourceKind::Collector, SourceKind::Import];
const ENDPOINTS: [Endpoint; 6] = [
    Endpoint::Messages,
    Endpoint::CountTokens,
    Endpoint::ChatCompletions,
    Endpoint::Responses,
    Endpoint::Embeddings,
    Endpoint::Other,
];
const TOOLS: [Tool; 5] = [Tool::ClaudeCode, Tool::Codex, Tool::Cursor, Tool::Sdk, Tool::Other];
const USAGE_SOURCES: [UsageSource; 3] = [UsageSource::Reported, UsageSource::Estimated, UsageSource::None];
const OUTCOMES: [Outcome; 4] =
    [Outcome::Ok, Outcome::UpstreamError, Outcome::ClientAborted, Outcome::Blocked];

/// Decode one `UsageEvent` datum from the front of `bytes`, advancing it past the datum.
pub fn decode(bytes: &mut &[u8]) -> Result<UsageEvent, DatumError> {
    let mut d = Datum::new(bytes);
    let event = UsageEvent {
        event_id: d.uuid("event_id")?,
        occurred_at: from_micros(d.long("occurred_at")?),
        received_at: from_micros(d.long("received_at")?),
        source_kind: d.symbol("source_kind", &SOURCE_KINDS)?,
        source_name: d.string("source_name")?,
        org: d.string("org")?,
        team: d.opt_string("team")?,
        user: d.opt_string("user")?,
        key_id: d.opt_string("key_id")?,
        provider: d.string("provider")?,
        requested_model: d.string("requested_model")?,
        served_model: d.opt_string("served_model")?,
        endpoint: d.symbol("endpoint", &ENDPOINTS)?,
        tool: d.symbol("tool", &TOOLS)?,
        session_id: d.opt_string("session_id")?,
        request_id: d.string("request_id")?,
        upstream_request_id: d.opt_string("upstream_request_id")?,
        project: d.opt_string("project")?,
        tags: tags(&mut d)?,
        tokens: TokenCounts {
            input: d.long("tokens.input")?,
            output: d.long("tokens.output")?,
            cache_read: d.long("tokens.cache_read")?,
            cache_write_5m: d.long("tokens.cache_write_5m")?,
            cache_write_1h: d.long("tokens.cache_write_1h")?,
            reasoning: d.long("tokens.reasoning")?,
        },
        usage_source: d.symbol("usage_source", &USAGE_SOURCES)?,
        service_tier: d.opt_string("service_tier")?,
        inference_region: d.opt_string("inference_region")?,
        streaming: d.boolean("streaming")?,
        outcome: d.symbol("outcome", &OUTCOMES)?,
        http_status: d.int("http_status")?,
        latency_us: d.long("latency_us")?,
        ttfb_us: d.opt_long("ttfb_us")?,
    };
    *bytes = d.rest();
    Ok(event)
}

/// A `map` of strings; a key seen twice keeps its last value, as apache_avro's does.
fn tags(d: &mut Datum<'_>) -> Result<BTreeMap<String, String>, DatumError> {
    let mut tags = BTreeMap::new();
    loop {
        let count = d.block("tags")?;
        if count == 0 {
            return Ok(tags);
        }
        for _ in 0..count {
            let key = d.string("tags")?;
            tags.insert(key, d.string("tags")?);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::avro::SchemaFamily;
    use apache_avro::Schema;

    /// Fails when a new usage_event schema version is added: write the new fields into
    /// `decode` (and `FIELDS`), then point `schema_file` at the new file.
    #[test]
    fn the_decoder_is_for_the_newest_usage_event_schema() {
        let latest = SchemaFamily::UsageEvent.latest();
        assert_eq!(
            HAND_DECODER.schema_file, latest.file_name,
            "usage_decoder.rs was written for an older schema; update it for {}",
            latest.file_name
        );
        let Schema::Record(record) = &latest.schema else { panic!("{} is not a record", latest.file_name) };
        let names: Vec<&str> = record.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, FIELDS);
        let Schema::Record(tokens) = &record.fields[19].schema else { panic!("tokens is not a record") };
        let names: Vec<&str> = tokens.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["input", "output", "cache_read", "cache_write_5m", "cache_write_1h", "reasoning"]);
    }

    #[test]
    fn enum_symbols_are_in_the_schema_order() {
        let Schema::Record(record) = &SchemaFamily::UsageEvent.latest().schema else { panic!() };
        let symbols = |field: &str| -> Vec<String> {
            let f = record.fields.iter().find(|f| f.name == field).unwrap();
            let Schema::Enum(e) = &f.schema else { panic!("{field} is not an enum") };
            e.symbols.clone()
        };
        assert_eq!(names(&SOURCE_KINDS), symbols("source_kind"));
        assert_eq!(names(&ENDPOINTS), symbols("endpoint"));
        assert_eq!(names(&TOOLS), symbols("tool"));
        assert_eq!(names(&USAGE_SOURCES), symbols("usage_source"));
        assert_eq!(names(&OUTCOMES), symbols("outcome"));
    }

    /// `usage_event.v2` only added the symbol `IMPORT` to `SourceKind`, whose default is
    /// `COLLECTOR`: a reader still on v1 reads an imported event (as a collector's) instead of
    /// failing, and every other field unchanged.
    #[test]
    fn a_v1_reader_reads_an_imported_event_as_a_collected_one() {
        use apache_avro::reader::datum::GenericDatumReader;
        use apache_avro::writer::datum::GenericDatumWriter;
        use proptest::strategy::{Strategy, ValueTree};
        let mut event = crate::event::arbitrary::usage_event()
            .new_tree(&mut proptest::test_runner::TestRunner::deterministic())
            .unwrap()
            .current();
        event.source_kind = SourceKind::Import;
        let v1 = SchemaFamily::UsageEvent.versions().find(|s| s.version == 1).unwrap();
        let v2 = SchemaFamily::UsageEvent.versions().find(|s| s.version == 2).unwrap();
        let mut bytes = Vec::new();
        GenericDatumWriter::builder(&v2.schema).build().unwrap().write_ser(&mut bytes, &event).unwrap();
        assert_eq!(decode(&mut bytes.as_slice()).unwrap(), event, "the v2 decoder reads IMPORT");
        let reader = GenericDatumReader::builder(&v2.schema).reader_schema(&v1.schema).build().unwrap();
        let value = reader.read_value(&mut bytes.as_slice()).unwrap();
        let read: UsageEvent = apache_avro::from_value(&value).unwrap();
        assert_eq!(read.source_kind, SourceKind::Collector);
        assert_eq!(UsageEvent { source_kind: SourceKind::Import, ..read }, event);
    }

    /// The serde names of `values` (what apache_avro matches the schema's symbols against).
    fn names<T: serde::Serialize>(values: &[T]) -> Vec<String> {
        values.iter().map(|v| serde_json::to_value(v).unwrap().as_str().unwrap().to_string()).collect()
    }
}
