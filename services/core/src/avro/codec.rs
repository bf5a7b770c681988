//! Encoding and decoding one record type in the Confluent wire format.
//!
//! Writing always uses the newest compiled-in schema of the family. Reading accepts any schema
//! id: values written with the newest schema take a fast path straight into the Rust type (a
//! decoder written by hand for that schema when the codec was given one, see
//! [`AvroCodec::with_hand_decoder`], else apache_avro's serde reader); older (or newer,
//! registry-known) versions are resolved to the newest schema first, which fills defaults for
//! added fields.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, RwLock};

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::datum::DatumError;
use super::registry::SchemaRegistry;
use super::schemas::{LocalSchema, SchemaFamily};
use crate::error::{ErrorClass, FaregateError};

/// The Confluent magic byte.
pub const MAGIC: u8 = 0;
/// Magic byte plus the 4-byte schema id.
pub const HEADER_LEN: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum AvroError {
    #[error("value is {len} bytes; a Confluent-framed Avro value needs at least {HEADER_LEN}")]
    TooShort { len: usize },
    #[error("value starts with byte {0:#04x}, not the Confluent magic byte 0x00")]
    BadMagic(u8),
    #[error("schema id {id} is unknown: {detail}")]
    UnknownSchema { id: u32, detail: String },
    #[error("cannot decode a {family} value written with schema id {id}: {message}")]
    Decode { family: &'static str, id: u32, message: String },
    #[error("cannot encode a {family} value: {message}")]
    Encode { family: &'static str, message: String },
    #[error("schema registry at {url}: {message}")]
    Registry { url: String, message: String, retryable: bool },
}

impl FaregateError for AvroError {
    fn class(&self) -> ErrorClass {
        match self {
            AvroError::TooShort { .. }
            | AvroError::BadMagic(_)
            | AvroError::UnknownSchema { .. }
            | AvroError::Decode { .. } => ErrorClass::User,
            AvroError::Encode { .. } => ErrorClass::Internal,
            AvroError::Registry { .. } => ErrorClass::External,
        }
    }

    fn retryable(&self) -> bool {
        matches!(self, AvroError::Registry { retryable: true, .. })
    }
}

/// Split a framed value into its schema id and Avro datum.
pub fn split_frame(bytes: &[u8]) -> Result<(u32, &[u8]), AvroError> {
    if bytes.len() < HEADER_LEN {
        return Err(AvroError::TooShort { len: bytes.len() });
    }
    if bytes[0] != MAGIC {
        return Err(AvroError::BadMagic(bytes[0]));
    }
    let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    Ok((id, &bytes[HEADER_LEN..]))
}

/// Decode one datum from the front of the slice, advancing it past the datum.
pub type DecodeFn<T> = fn(&mut &[u8]) -> Result<T, DatumError>;

/// A decoder of `T` written by hand for one schema file, used on the fast path in place of
/// apache_avro's serde reader. It must return exactly what that reader returns for every datum.
#[derive(Debug)]
pub struct HandDecoder<T> {
    /// The file in `schemas/avro/` it reads, e.g. `usage_event.v1.avsc`.
    pub schema_file: &'static str,
    /// The record's field names in the order it reads them.
    pub fields: &'static [&'static str],
    pub decode: DecodeFn<T>,
}

/// Encoder and decoder of one record type `T` on one topic.
pub struct AvroCodec<T> {
    family: SchemaFamily,
    latest: &'static LocalSchema,
    writer_id: u32,
    writer: GenericDatumWriter<'static>,
    fast_reader: GenericDatumReader<'static>,
    hand_decoder: Option<DecodeFn<T>>,
    registry: Arc<dyn SchemaRegistry>,
    other_writers: RwLock<HashMap<u32, Arc<Schema>>>,
    _record: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for AvroCodec<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvroCodec")
            .field("family", &self.family)
            .field("writer_id", &self.writer_id)
            .finish_non_exhaustive()
    }
}

impl<T: Serialize + DeserializeOwned> AvroCodec<T> {
    /// A codec for `family` values on `topic`; resolves the writer id through `registry`.
    pub async fn new(
        family: SchemaFamily,
        topic: &str,
        registry: Arc<dyn SchemaRegistry>,
    ) -> Result<Self, AvroError> {
        let latest = family.latest();
        let writer_id = registry.writer_id(topic, latest).await?;
        let internal = |message: String| AvroError::Encode { family: family.file_stem(), message };
        let writer = GenericDatumWriter::builder(&latest.schema)
            .validate(false)
            .build()
            .map_err(|e| internal(e.to_string()))?;
        let fast_reader =
            GenericDatumReader::builder(&latest.schema).build().map_err(|e| internal(e.to_string()))?;
        Ok(AvroCodec {
            family,
            latest,
            writer_id,
            writer,
            fast_reader,
            hand_decoder: None,
            registry,
            other_writers: RwLock::default(),
            _record: PhantomData,
        })
    }

    /// Decode values written with the newest schema with `decoder` instead of apache_avro, if
    /// the decoder was written for that schema (same file, same fields); otherwise keep
    /// apache_avro (correct, only slower) and log why. Other schema ids always go through
    /// apache_avro's resolving reader.
    pub fn with_hand_decoder(mut self, decoder: HandDecoder<T>) -> Self {
        let fields: Vec<&str> = match &self.latest.schema {
            Schema::Record(record) => record.fields.iter().map(|f| f.name.as_str()).collect(),
            _ => Vec::new(),
        };
        if decoder.schema_file == self.latest.file_name && fields == decoder.fields {
            self.hand_decoder = Some(decoder.decode);
        } else {
            tracing::warn!(
                decoder = decoder.schema_file,
                newest = self.latest.file_name,
                "a hand-written Avro decoder is not for the newest schema; decoding with apache_avro"
            );
        }
        self
    }

    /// Whether values of the newest schema are decoded by a [`HandDecoder`].
    pub fn uses_hand_decoder(&self) -> bool {
        self.hand_decoder.is_some()
    }

    /// The schema id values are written with.
    pub fn writer_id(&self) -> u32 {
        self.writer_id
    }

    /// Encode `value` as a framed Avro value.
    pub fn encode(&self, value: &T) -> Result<Vec<u8>, AvroError> {
        let mut out = Vec::with_capacity(256);
        out.push(MAGIC);
        out.extend_from_slice(&self.writer_id.to_be_bytes());
        self.writer
            .write_ser(&mut out, value)
            .map_err(|e| AvroError::Encode { family: self.family.file_stem(), message: e.to_string() })?;
        Ok(out)
    }

    /// Decode a framed value written with any schema id the registry knows.
    pub async fn decode(&self, bytes: &[u8]) -> Result<T, AvroError> {
        let (id, mut datum) = split_frame(bytes)?;
        let decode_error =
            |message: String| AvroError::Decode { family: self.family.file_stem(), id, message };
        if id == self.writer_id {
            let value: T = match self.hand_decoder {
                Some(decode) => decode(&mut datum).map_err(|e| decode_error(e.to_string()))?,
                None => self.fast_reader.read_deser(&mut datum).map_err(|e| decode_error(e.to_string()))?,
            };
            return self.check_fully_read(id, datum).map(|()| value);
        }
        let writer_schema = self.writer_schema(id).await?;
        let reader =
            GenericDatumReader::builder(&writer_schema)
                .reader_schema(&self.latest.schema)
                .build()
                .map_err(|e| decode_error(format!("schema {id} cannot be resolved to the newest: {e}")))?;
        let value = reader.read_value(&mut datum).map_err(|e| decode_error(e.to_string()))?;
        self.check_fully_read(id, datum)?;
        apache_avro::from_value(&value).map_err(|e| decode_error(e.to_string()))
    }

    /// A datum must be consumed entirely; trailing bytes mean the wrong schema was used.
    fn check_fully_read(&self, id: u32, rest: &[u8]) -> Result<(), AvroError> {
        if rest.is_empty() {
            return Ok(());
        }
        Err(AvroError::Decode {
            family: self.family.file_stem(),
            id,
            message: format!("{} bytes left over after the record", rest.len()),
        })
    }

    async fn writer_schema(&self, id: u32) -> Result<Arc<Schema>, AvroError> {
        if let Some(schema) = self.other_writers.read().unwrap().get(&id) {
            return Ok(schema.clone());
        }
        let schema = self.registry.schema_by_id(id).await?;
        self.other_writers.write().unwrap().insert(id, schema.clone());
        Ok(schema)
    }
}
