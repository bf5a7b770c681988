//! Faregate's price catalog: exact list prices per provider and model over time, with
//! long-context tiers, service tiers, regional multipliers and per-org overrides, and the pricing
//! function the processor (to write the ledger) and the ingress (to estimate and reserve) share.
//!
//! Contract:
//! - Money is exact: prices are read from their decimal text (never through a float), rates are
//!   per token with at most 18 decimal places, and every cost fits the ledger's
//!   `Decimal(38, 18)` without rounding.
//! - An event that cannot be priced is [`Pricing::Unpriced`] with a reason naming what was
//!   missing; it is never priced at $0.
//! - The shipped catalog (`schemas/prices/*.toml`) is compiled in ([`PriceCatalog::embedded`]);
//!   a deployment may load its own directory instead and reload it while running
//!   ([`CatalogWatcher`]).
//!
//! The file format, matching rules and how to import LiteLLM's catalog are in `docs/prices.md`.
//!
//! [`Pricing::Unpriced`]: faregate_core::clickhouse::ledger::Pricing::Unpriced

mod catalog;
mod error;
mod litellm;
mod price;
mod watcher;

pub use catalog::{EMBEDDED_FILES, PriceCatalog, TokenClass, Unit};
pub use error::{CatalogError, Issue, Issues};
pub use litellm::{ImportError, LitellmImport, Skipped, import_litellm};
pub use price::{Quote, UnpricedReason};
pub use watcher::{CatalogWatcher, Reload};
