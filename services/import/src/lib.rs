//! Importers of provider admin reports: usage that never passed a Faregate gateway (traffic sent
//! to a provider directly, seat tools), brought into the same usage topic as every other usage
//! event, so the processor prices it, deduplicates it and writes it to the ledger.
//!
//! Contract, for every importer:
//! - events carry `source_kind` `IMPORT` and ids derived from the source's own identifiers
//!   (UUID v5), so importing the same report again counts once;
//! - only data the provider will not change any more is imported (each importer says how it
//!   knows, e.g. the Anthropic importer's settle lag), because a re-import of grown numbers
//!   under the same id would be skipped by the processor's dedup;
//! - provider identities (API key, workspace, member) are kept on the event, mapped or not;
//! - provider requests go through [`http::AdminClient`]: pagination is the importer's, rate
//!   limits, retries, the request budget and the deadline are the client's, credentials are
//!   secrets, and every error names the source, the request and the status ([`error`]);
//! - a malformed page imports nothing of that page and names every bad field.
//!
//! Importers: [`anthropic`] (the messages usage report) and [`openai`] (the organization usage
//! API for completions); what they share (bucket widths, settled windows, summaries, ids) is in
//! [`window`], and the run itself, paging and checks included, is [`run`]'s: an importer is
//! its config section and a [`run::Report`]. Runs are one-shot (`faregate import`)
//! or scheduled ([`schedule`]), resuming from a cursor derived from the ledger ([`cursor`]).

pub mod anthropic;
pub mod check;
pub mod cursor;
pub mod error;
pub mod event;
pub mod http;
pub mod openai;
pub mod run;
pub mod schedule;
pub mod sink;
mod telemetry;
pub mod window;

use serde::{Deserialize, Serialize};

use faregate_core::config::{ConfigError, Validate};

pub use error::ImportError;
pub use sink::{EventSink, KafkaSink, MemorySink};

/// `[import]`: one section per importer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImportConfig {
    /// The Anthropic Admin API usage report.
    pub anthropic: anthropic::AnthropicImportConfig,
    /// The OpenAI organization usage API (completions).
    pub openai: openai::OpenAiImportConfig,
}

impl Validate for ImportConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.anthropic.validate()?;
        self.openai.validate()
    }
}
