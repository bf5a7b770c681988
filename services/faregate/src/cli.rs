//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    Up(UpArgs),
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
    /// Virtual keys: what clients present to the gateway instead of provider keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Budgets on the config topic: set, list, rm, or apply a YAML file kept in git.
    #[command(subcommand)]
    Budgets(BudgetsCommand),
    /// Run a fake LLM provider (Anthropic Messages, OpenAI Chat Completions, Responses,
    /// embeddings) with deterministic usage (`x-fake-usage` header); prints its URL.
    FakeUpstream {
        /// Address to listen on; port 0 picks a free one.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// Pause between streamed events, in milliseconds.
        #[arg(long, default_value_t = 0)]
        stream_delay_ms: u64,
    },
    /// Spend by team, user, tool, model or project over a window of UTC days, from the
    /// ClickHouse `spend_by` view: a table to read, or CSV / JSON for finance exports.
    Report(ReportArgs),
    /// Is metering and enforcement live? The consumer groups (members, owned partitions, lag),
    /// the budget service's heartbeat watermark, dead letters, the ledger's last write and the
    /// ingresses' spool backlog. Exits 0 when live, 2 when anything is blind.
    Status(StatusArgs),
    /// Your own budget: the key's attribution and every budget covering it (spent, limit,
    /// remaining, reset), from a gateway's `GET /v1/me`.
    Me(MeArgs),
    /// Import usage from a provider's admin reports into the usage topic (priced and
    /// deduplicated by the processor like any other usage; a re-import counts once).
    #[command(subcommand)]
    Import(ImportCommand),
}

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Anthropic's messages usage report (Admin API, `[import.anthropic]`): one event per
    /// hour (bucket), API key, workspace and model. Only buckets that ended at least
    /// `settle_lag_secs` ago are imported; the rest of the window is left for a later run.
    Anthropic(ImportWindow),
    /// OpenAI's organization usage for completions (Admin key, `[import.openai]`): one event
    /// per hour (bucket), project, user, API key, model, batch and service tier. Only buckets
    /// that ended at least `settle_lag_secs` ago are imported, as for Anthropic.
    Openai(ImportWindow),
}

#[derive(Debug, Args)]
pub struct ImportWindow {
    /// Start of the window, inclusive: a UTC day (2026-11-30) or an RFC 3339 time (default:
    /// where the ledger's imported buckets of this org end, else `lookback_hours` ago).
    #[arg(long, value_parser = parse_instant)]
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    /// End of the window, exclusive: a UTC day or an RFC 3339 time (default: now).
    #[arg(long, value_parser = parse_instant)]
    pub to: Option<chrono::DateTime<chrono::Utc>>,
    /// The Faregate org the usage is attributed to (default: the importer's `org`, e.g.
    /// `import.openai.org`).
    #[arg(long)]
    pub org: Option<String>,
}

/// A UTC day (its midnight) or an RFC 3339 time.
fn parse_instant(value: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(day) = chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        return Ok(day.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| format!("{value:?} is neither a day (YYYY-MM-DD) nor an RFC 3339 time"))
}

#[derive(Debug, Args)]
pub struct MeArgs {
    /// The gateway's base URL (default: ANTHROPIC_BASE_URL, else http://127.0.0.1:8787).
    #[arg(long, value_name = "URL")]
    pub gateway: Option<String>,
    /// Your virtual key (default: FAREGATE_KEY, else ANTHROPIC_API_KEY). Prefer the variables:
    /// a command line is visible to other users of the machine.
    #[arg(long)]
    pub key: Option<String>,
    /// `table` for people, `json` for scripts.
    #[arg(long, value_enum, default_value_t = MeFormat::Table)]
    pub format: MeFormat,
    /// Print one line for an editor's status line, e.g. `$3.20 of $10.00 today`.
    #[arg(long, conflicts_with = "format")]
    pub statusline: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MeFormat {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// An ingress's metrics address (`http://HOST:9464`, its `telemetry.metrics_listen`), to
    /// read its spool backlog and enforcement state; repeatable.
    #[arg(long = "ingress", value_name = "URL")]
    pub ingress: Vec<String>,
    /// The heartbeat watermark may be this old before enforcement counts as stale, and the
    /// ledger's last write this old while usage waits before metering counts as stalled
    /// (default: `ingress.enforcement_stale_after_secs`, or 10 when that is 0).
    #[arg(long)]
    pub stale_after_secs: Option<u64>,
    /// `table` for people, `json` for scripts.
    #[arg(long, value_enum, default_value_t = StatusFormat::Table)]
    pub format: StatusFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusFormat {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// A provider to forward to, as `anthropic=URL` or `openai=URL` (base URL without /v1);
    /// repeatable; replaces the configured upstreams. The credential comes from
    /// ANTHROPIC_UPSTREAM_KEY / OPENAI_UPSTREAM_KEY.
    #[arg(long = "upstream", value_name = "PROVIDER=URL")]
    pub upstreams: Vec<String>,
    /// Start the project's fake provider in-process and forward both providers to it (no real
    /// provider, no cost: for trying Faregate out).
    #[arg(long, conflicts_with = "upstreams")]
    pub fake_upstream: bool,
    /// A live demo: the fake provider, simulated developers (Claude Code, Codex, SDKs) in
    /// several orgs and teams with keys of their own, a small daily budget on one runaway agent
    /// loop that gets blocked, and a live view of spend and decisions. Implies --fake-upstream.
    #[arg(long, conflicts_with = "upstreams")]
    pub demo: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print its secret once.
    Create {
        #[arg(long)]
        org: String,
        #[arg(long)]
        team: Option<String>,
        #[arg(long)]
        user: Option<String>,
        /// Models the key may use (comma separated); all when omitted.
        #[arg(long, value_delimiter = ',')]
        models: Vec<String>,
        /// Requests per minute on each ingress replica.
        #[arg(long)]
        rpm: Option<i32>,
        /// Tokens per minute on each ingress replica.
        #[arg(long)]
        tpm: Option<i64>,
        /// Expire the key after this many days.
        #[arg(long)]
        expires_days: Option<u32>,
        /// The key id (default: a random `k-…`).
        #[arg(long)]
        id: Option<String>,
    },
    /// List keys (prefixes only; secrets are never stored).
    List,
    /// Revoke a key: it stops working on every gateway at once.
    Revoke { id: String },
    /// Replace a key's secret, keeping its id and attribution; prints the new secret once.
    Rotate { id: String },
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

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// What to group spend by.
    #[arg(long, value_enum)]
    pub by: ReportDimension,
    /// First day (YYYY-MM-DD, UTC), inclusive; needs --to.
    #[arg(long, requires = "to", conflicts_with = "window")]
    pub from: Option<chrono::NaiveDate>,
    /// Day after the last day (YYYY-MM-DD, UTC), exclusive; needs --from.
    #[arg(long, requires = "from")]
    pub to: Option<chrono::NaiveDate>,
    /// A window ending today (UTC), today included: today, the last 7 or 30 days, or the month
    /// so far. The default when no --from/--to is given: month.
    #[arg(long, value_enum)]
    pub window: Option<ReportWindow>,
    /// Output format. `table` rounds money to cents for reading; `csv` and `json` keep the
    /// exact amount (up to 18 decimal places) as a string, for finance exports.
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
    /// Only this organisation.
    #[arg(long)]
    pub org: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportDimension {
    Team,
    User,
    Tool,
    Model,
    Project,
}

impl ReportDimension {
    /// The column (and `spend_by` dimension) name.
    pub fn column(self) -> &'static str {
        match self {
            ReportDimension::Team => "team",
            ReportDimension::User => "user",
            ReportDimension::Tool => "tool",
            ReportDimension::Model => "model",
            ReportDimension::Project => "project",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportWindow {
    Today,
    #[value(name = "7d")]
    Days7,
    #[value(name = "30d")]
    Days30,
    Month,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Table,
    Csv,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum BudgetsCommand {
    /// Create or replace one budget.
    Set(Box<BudgetSetArgs>),
    /// List the budgets on the config topic (reads it to its end).
    List {
        /// Print the budgets as a YAML file that `budgets apply` accepts.
        #[arg(long)]
        yaml: bool,
    },
    /// Remove a budget.
    Rm {
        /// The budget id.
        id: String,
    },
    /// Validate a YAML file of budgets and write every one (none if any is invalid).
    Apply {
        /// The YAML file (`budgets: [...]`, see docs/budgets.md).
        file: PathBuf,
        /// Only validate.
        #[arg(long)]
        dry_run: bool,
    },
}

/// One budget on the command line (see docs/budgets.md for the fields).
#[derive(Debug, clap::Args)]
pub struct BudgetSetArgs {
    /// The budget id (letters, digits, `.`, `_`, `-`).
    pub id: String,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub org: String,
    #[arg(long)]
    pub team: Option<String>,
    #[arg(long)]
    pub user: Option<String>,
    #[arg(long)]
    pub key: Option<String>,
    #[arg(long)]
    pub project: Option<String>,
    #[arg(long)]
    pub model: Option<String>,
    #[arg(long)]
    pub tool: Option<String>,
    /// hour, day, week, month, quarter or days (with --days N).
    #[arg(long, default_value = "day")]
    pub period: String,
    #[arg(long)]
    pub days: Option<i32>,
    /// A rolling window instead of a calendar one.
    #[arg(long)]
    pub rolling: bool,
    /// IANA time zone calendar windows align to.
    #[arg(long, default_value = "UTC")]
    pub tz: String,
    /// Limit in US dollars, e.g. 500 or 12.50.
    #[arg(long)]
    pub limit: String,
    /// block, downgrade or alert_only.
    #[arg(long, default_value = "block")]
    pub action: String,
    #[arg(long)]
    pub downgrade_to: Option<String>,
    /// Alert thresholds in percent, comma-separated (default 50,80,100).
    #[arg(long, value_delimiter = ',')]
    pub thresholds: Vec<i32>,
    #[arg(long)]
    pub owner: Option<String>,
    /// Where to notify (a webhook URL or a name), repeatable.
    #[arg(long)]
    pub notify: Vec<String>,
}
