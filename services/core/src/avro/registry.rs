//! Where schema ids come from: the compiled-in schemas by the local id rule, or a Confluent
//! Schema Registry over its REST API (register under `<topic>-value`, look ids up, cache both).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use apache_avro::Schema;
use async_trait::async_trait;
use serde::Deserialize;

use super::codec::AvroError;
use super::schemas::{self, LocalSchema};
use crate::config::Secret;

/// Maps schemas to ids for writers and ids to schemas for readers.
#[async_trait]
pub trait SchemaRegistry: Send + Sync + fmt::Debug {
    /// The id to frame values of `schema` written to `topic` with.
    async fn writer_id(&self, topic: &str, schema: &'static LocalSchema) -> Result<u32, AvroError>;
    /// The writer schema of a value framed with `id`.
    async fn schema_by_id(&self, id: u32) -> Result<Arc<Schema>, AvroError>;
}

/// Ids and schemas from `schemas/avro/` by the local rule; needs no network.
#[derive(Debug, Default, Clone)]
pub struct LocalRegistry;

#[async_trait]
impl SchemaRegistry for LocalRegistry {
    async fn writer_id(&self, _topic: &str, schema: &'static LocalSchema) -> Result<u32, AvroError> {
        Ok(schema.local_id)
    }

    async fn schema_by_id(&self, id: u32) -> Result<Arc<Schema>, AvroError> {
        schemas::by_local_id(id).map(|s| Arc::new(s.schema.clone())).ok_or(AvroError::UnknownSchema {
            id,
            detail: "not a schema of this build (no schema registry configured)".into(),
        })
    }
}

/// A Confluent-compatible Schema Registry (Confluent, Redpanda, Karapace, Apicurio's ccompat API).
pub struct ConfluentRegistry {
    base_url: String,
    basic_auth: Option<(String, Secret)>,
    http: reqwest::Client,
    ids: RwLock<HashMap<(String, u32), u32>>,
    by_id: RwLock<HashMap<u32, Arc<Schema>>>,
}

impl fmt::Debug for ConfluentRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfluentRegistry").field("base_url", &self.base_url).finish_non_exhaustive()
    }
}

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

#[derive(Deserialize)]
struct IdResponse {
    id: u32,
}

#[derive(Deserialize)]
struct SchemaResponse {
    schema: String,
}

impl ConfluentRegistry {
    /// A client of the registry at `base_url` (e.g. `http://registry:8081`), with optional basic auth.
    pub fn new(base_url: &str, basic_auth: Option<(String, Secret)>) -> Self {
        ConfluentRegistry {
            base_url: base_url.trim_end_matches('/').to_string(),
            basic_auth,
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .expect("http client"),
            ids: RwLock::default(),
            by_id: RwLock::default(),
        }
    }

    fn request(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let builder = builder.header(reqwest::header::ACCEPT, CONTENT_TYPE);
        match &self.basic_auth {
            Some((user, password)) => builder.basic_auth(user, Some(password.expose())),
            None => builder,
        }
    }

    fn error(&self, message: String, retryable: bool) -> AvroError {
        AvroError::Registry { url: self.base_url.clone(), message, retryable }
    }

    async fn send<T: for<'de> Deserialize<'de>>(
        &self,
        builder: reqwest::RequestBuilder,
    ) -> Result<T, AvroError> {
        let response = self
            .request(builder)
            .send()
            .await
            .map_err(|e| self.error(format!("request failed: {e}"), true))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.error(format!("reading the response failed: {e}"), true))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            return Err(self.error(format!("HTTP {status}: {}", text.trim()), status.is_server_error()));
        }
        serde_json::from_slice(&body).map_err(|e| self.error(format!("unexpected response: {e}"), false))
    }
}

#[async_trait]
impl SchemaRegistry for ConfluentRegistry {
    async fn writer_id(&self, topic: &str, schema: &'static LocalSchema) -> Result<u32, AvroError> {
        let cache_key = (topic.to_string(), schema.local_id);
        if let Some(id) = self.ids.read().unwrap().get(&cache_key) {
            return Ok(*id);
        }
        let url = format!("{}/subjects/{topic}-value/versions", self.base_url);
        let body = serde_json::json!({ "schema": schema.json });
        let IdResponse { id } = self
            .send(self.http.post(url).header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE).json(&body))
            .await?;
        self.ids.write().unwrap().insert(cache_key, id);
        self.by_id.write().unwrap().insert(id, Arc::new(schema.schema.clone()));
        Ok(id)
    }

    async fn schema_by_id(&self, id: u32) -> Result<Arc<Schema>, AvroError> {
        if let Some(schema) = self.by_id.read().unwrap().get(&id) {
            return Ok(schema.clone());
        }
        let url = format!("{}/schemas/ids/{id}", self.base_url);
        let SchemaResponse { schema } = self.send(self.http.get(url)).await.map_err(|e| match e {
            AvroError::Registry { message, .. } if message.starts_with("HTTP 404") => {
                AvroError::UnknownSchema { id, detail: format!("the registry has no such id ({message})") }
            }
            other => other,
        })?;
        let parsed = Arc::new(
            Schema::parse_str(&schema)
                .map_err(|e| self.error(format!("schema id {id} does not parse: {e}"), false))?,
        );
        self.by_id.write().unwrap().insert(id, parsed.clone());
        Ok(parsed)
    }
}
