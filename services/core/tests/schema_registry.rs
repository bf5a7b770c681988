//! The Confluent Schema Registry client against a test double of the registry's REST API (the
//! real registry is a JVM service from Confluent's own repositories, which cannot be installed
//! here). The double implements the two calls Faregate makes, and counts them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use apache_avro::Schema;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use faregate_core::avro::{AvroCodec, AvroError, ConfluentRegistry, SchemaFamily, SchemaRegistry};
use faregate_core::error::FaregateError;
use faregate_core::event::{Decision, DecisionState};
use faregate_core::money::Usd;
use faregate_core::time::from_micros;
use serde_json::{Value, json};

#[derive(Default)]
struct Registry {
    schemas: Mutex<HashMap<u32, String>>,
    calls: AtomicUsize,
    fail: std::sync::atomic::AtomicBool,
}

async fn register(
    State(registry): State<Arc<Registry>>,
    Path(subject): Path<String>,
    Json(body): Json<Value>,
) -> Result<Json<Value>, StatusCode> {
    registry.calls.fetch_add(1, Ordering::SeqCst);
    if registry.fail.load(Ordering::SeqCst) {
        return Err(StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert!(subject.ends_with("-value"), "TopicNameStrategy subject: {subject}");
    let schema = body["schema"].as_str().unwrap().to_string();
    let mut schemas = registry.schemas.lock().unwrap();
    let id = match schemas.iter().find(|(_, s)| **s == schema) {
        Some((id, _)) => *id,
        None => 1000 + schemas.len() as u32,
    };
    schemas.insert(id, schema);
    Ok(Json(json!({ "id": id })))
}

async fn by_id(
    State(registry): State<Arc<Registry>>,
    Path(id): Path<u32>,
) -> Result<Json<Value>, (StatusCode, String)> {
    registry.calls.fetch_add(1, Ordering::SeqCst);
    match registry.schemas.lock().unwrap().get(&id) {
        Some(schema) => Ok(Json(json!({ "schema": schema }))),
        None => Err((StatusCode::NOT_FOUND, r#"{"error_code":40403,"message":"Schema not found"}"#.into())),
    }
}

async fn serve() -> (String, Arc<Registry>) {
    let registry = Arc::new(Registry::default());
    let app = Router::new()
        .route("/subjects/{subject}/versions", post(register))
        .route("/schemas/ids/{id}", get(by_id))
        .with_state(registry.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, registry)
}

fn decision() -> Decision {
    Decision {
        subject: "org=acme/team=infra".into(),
        state: DecisionState::Block,
        reason: "daily budget reached".into(),
        budget_id: Some("b1".into()),
        budget_name: Some("infra daily".into()),
        spent_usd: "100.000000000000000001".parse::<Usd>().unwrap(),
        limit_usd: Some("100".parse::<Usd>().unwrap()),
        window_start: Some(from_micros(1_700_000_000_000_000)),
        resets_at: Some(from_micros(1_700_086_400_000_000)),
        downgrade_to: None,
        decided_at: from_micros(1_700_050_000_000_000),
        revision: 7,
    }
}

#[tokio::test]
async fn ids_come_from_the_registry_and_are_cached() {
    let (url, registry) = serve().await;
    let client: Arc<dyn SchemaRegistry> = Arc::new(ConfluentRegistry::new(&url, None));
    let writer: AvroCodec<Decision> =
        AvroCodec::new(SchemaFamily::Decision, "decisions", client.clone()).await.unwrap();
    assert_eq!(writer.writer_id(), 1000);
    let again: AvroCodec<Decision> =
        AvroCodec::new(SchemaFamily::Decision, "decisions", client).await.unwrap();
    assert_eq!(again.writer_id(), 1000);
    assert_eq!(registry.calls.load(Ordering::SeqCst), 1, "the second lookup is served from the cache");

    // A reader with its own client learns the id from the registry.
    let reader_client: Arc<dyn SchemaRegistry> = Arc::new(ConfluentRegistry::new(&url, None));
    let reader: AvroCodec<Decision> =
        AvroCodec::new(SchemaFamily::Decision, "decisions", reader_client).await.unwrap();
    let bytes = writer.encode(&decision()).unwrap();
    assert_eq!(reader.decode(&bytes).await.unwrap(), decision());
}

#[tokio::test]
async fn values_written_with_an_older_schema_are_resolved_to_the_newest() {
    let (url, registry) = serve().await;
    // An "older" decision schema without the optional fields that have defaults.
    let mut old: Value = serde_json::from_str(SchemaFamily::Decision.latest().json).unwrap();
    old["fields"].as_array_mut().unwrap().retain(|f| f.get("default").is_none());
    let old_json = old.to_string();
    registry.schemas.lock().unwrap().insert(42, old_json.clone());
    let old_schema = Schema::parse_str(&old_json).unwrap();
    let full = decision();
    let mut record = apache_avro::types::Record::new(&old_schema).unwrap();
    record.put("subject", full.subject.clone());
    record.put("state", apache_avro::types::Value::Enum(2, "BLOCK".into()));
    record.put("reason", full.reason.clone());
    record
        .put("spent_usd", apache_avro::types::Value::Decimal(full.spent_usd.to_avro_bytes().unwrap().into()));
    record.put("decided_at", apache_avro::types::Value::TimestampMicros(full.decided_at.timestamp_micros()));
    record.put("revision", 7i64);
    let mut bytes = vec![0, 0, 0, 0, 42];
    let writer = apache_avro::writer::datum::GenericDatumWriter::builder(&old_schema).build().unwrap();
    bytes.extend(writer.write_value_to_vec(record).unwrap());

    let client: Arc<dyn SchemaRegistry> = Arc::new(ConfluentRegistry::new(&url, None));
    let codec: AvroCodec<Decision> =
        AvroCodec::new(SchemaFamily::Decision, "decisions", client).await.unwrap();
    let decoded = codec.decode(&bytes).await.unwrap();
    assert_eq!(decoded.spent_usd, full.spent_usd);
    assert_eq!(decoded.state, DecisionState::Block);
    assert_eq!(decoded.budget_id, None, "missing fields take their defaults");
    assert_eq!(decoded.limit_usd, None);
}

#[tokio::test]
async fn registry_failures_say_what_and_whether_to_retry() {
    let (url, registry) = serve().await;
    let client: Arc<dyn SchemaRegistry> = Arc::new(ConfluentRegistry::new(&url, None));
    let unknown = client.schema_by_id(77).await.unwrap_err();
    assert!(matches!(unknown, AvroError::UnknownSchema { id: 77, .. }), "{unknown}");
    assert!(!unknown.retryable());

    registry.fail.store(true, Ordering::SeqCst);
    let error = AvroCodec::<Decision>::new(SchemaFamily::Decision, "d", client).await.unwrap_err();
    assert!(error.retryable(), "a 500 from the registry is worth retrying: {error}");
    assert!(error.to_string().contains(&url), "{error}");

    let unreachable: Arc<dyn SchemaRegistry> = Arc::new(ConfluentRegistry::new("http://127.0.0.1:1", None));
    let error = AvroCodec::<Decision>::new(SchemaFamily::Decision, "d", unreachable).await.unwrap_err();
    assert!(error.retryable(), "{error}");
}
