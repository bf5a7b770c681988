//! Command-line arguments.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Faregate: meter and govern AI traffic.
#[derive(Debug, Parser)]
#[command(name = "faregate", version, about)]
pub struct Cli {
    /// TOML configuration file; `FAREGATE__SECTION__KEY` variables override it.
    #[arg(long, short, global = true, env = "FAREGATE_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the ingress, processor and budget service in one process (applies the schema and
    /// creates the topics first).
    Up,
    /// Run the ingress (LLM gateway and collector).
    Ingress,
    /// Run the processor (pricing and the ClickHouse ledger).
    Processor,
    /// Run the budget service (decisions and alerts).
    Budget,
    /// ClickHouse schema migrations.
    #[command(subcommand)]
    Schema(SchemaCommand),
    /// Kafka topics.
    #[command(subcommand)]
    Topics(TopicsCommand),
    /// Configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Avro schemas and their ids.
    #[command(subcommand)]
    Avro(AvroCommand),
    /// The price catalog.
    #[command(subcommand)]
    Prices(PricesCommand),
    /// Price a past time range again after the catalog was fixed, correcting the ledger, its
    /// rollups and the published spend totals. Whole UTC days; run it over days no processor
    /// is still writing to.
    Reprice {
        /// First day to re-price (YYYY-MM-DD, UTC), inclusive.
        #[arg(long)]
        from: chrono::NaiveDate,
        /// Day after the last day to re-price (YYYY-MM-DD, UTC), exclusive.
        #[arg(long)]
        to: chrono::NaiveDate,
        /// Only report what would change.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum PricesCommand {
    /// Load and validate a catalog (the compiled-in one, `processor.prices_dir`, or --dir) and
    /// list its models.
    Check {
        /// A directory of catalog files to check instead.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Convert LiteLLM's model_prices_and_context_window.json into catalog files.
    Import {
        /// The LiteLLM JSON file.
        #[arg(long)]
        litellm: PathBuf,
        /// The date the imported prices take effect (YYYY-MM-DD, UTC).
        #[arg(long)]
        effective_from: chrono::NaiveDate,
        /// Directory to write `<provider>.toml` files into.
        #[arg(long)]
        out: PathBuf,
        /// Overwrite files that exist.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SchemaCommand {
    /// Apply pending migrations (idempotent).
    Apply,
    /// Print the DDL of every migration, for one node or for a cluster.
    Render {
        /// Render for this cluster (Replicated + Distributed, ON CLUSTER) instead of one node.
        #[arg(long)]
        cluster: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create every Faregate topic that does not exist yet.
    Create,
    /// Print the topic layout Faregate uses.
    Show,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration as TOML, secrets redacted.
    Show,
    /// Validate the configuration and exit.
    Check,
}

#[derive(Debug, Subcommand)]
pub enum AvroCommand {
    /// List the compiled-in schemas with their local ids.
    Ids,
}
