//! Versioned ClickHouse migrations from `schemas/clickhouse/NNNN_name.sql`, compiled into the
//! binary. One source renders for a single node or for a cluster:
//!
//! | placeholder | single node | cluster `c` |
//! |---|---|---|
//! | `${ON_CLUSTER}` | nothing | `ON CLUSTER c` |
//! | `${TABLE:t}` | `t` | `t_local` (the shard-local table) |
//! | `${ENGINE:XMergeTree(args)}` | `XMergeTree(args)` | `ReplicatedXMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}', args)` |
//! | `${DISTRIBUTED:t:key}` (a statement of its own) | nothing | `CREATE TABLE t ON CLUSTER c AS t_local ENGINE = Distributed(c, currentDatabase(), t_local, key)` |
//!
//! So queries name `t` on both. Every statement must be idempotent (`IF NOT EXISTS`), may not
//! contain `;` except as its terminator, nor `?` (the client would take it for a bind).
//!
//! `apply` records each applied migration with a checksum in `faregate_schema_migrations`,
//! applies only pending ones, in order, and refuses to continue when an applied file was edited.

use std::fmt::Write as _;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::avro::schemas::MIGRATION_FILES;
use crate::error::{ErrorClass, FaregateError};

/// Where the schema is rendered for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    SingleNode,
    Cluster { name: String },
}

/// One migration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    pub version: u32,
    pub name: String,
    pub source: String,
    /// sha256 of the source, hex.
    pub checksum: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("schemas/clickhouse/{file}: {message}")]
    Invalid { file: String, message: String },
    #[error(
        "migration {version} ({name}) was edited after it was applied (recorded checksum {recorded}, file has {current}); add a new migration instead"
    )]
    Edited { version: u32, name: String, recorded: String, current: String },
    #[error("ClickHouse refused migration {version} ({name}), statement {statement}: {source}")]
    Statement { version: u32, name: String, statement: usize, source: clickhouse::error::Error },
    #[error("ClickHouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
}

impl FaregateError for MigrationError {
    fn class(&self) -> ErrorClass {
        match self {
            MigrationError::Invalid { .. } => ErrorClass::Internal,
            MigrationError::Edited { .. } => ErrorClass::User,
            MigrationError::Statement { .. } | MigrationError::ClickHouse(_) => ErrorClass::External,
        }
    }
}

/// Every compiled-in migration, in version order.
pub fn all() -> Result<Vec<Migration>, MigrationError> {
    parse_files(MIGRATION_FILES.iter().map(|(name, source)| (*name, *source)))
}

/// Parse migration files given as (file name, source).
pub fn parse_files<'a>(
    files: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<Vec<Migration>, MigrationError> {
    let mut migrations = Vec::new();
    for (file, source) in files {
        let invalid = |message: String| MigrationError::Invalid { file: file.to_string(), message };
        let stem = file.strip_suffix(".sql").ok_or_else(|| invalid("not a .sql file".into()))?;
        let (number, name) =
            stem.split_once('_').ok_or_else(|| invalid("name must be NNNN_description.sql".into()))?;
        let version: u32 =
            number.parse().map_err(|_| invalid(format!("{number:?} is not a version number")))?;
        if source.contains('?') {
            return Err(invalid("contains '?', which the ClickHouse client would take for a bind".into()));
        }
        let migration = Migration {
            version,
            name: name.to_string(),
            source: source.to_string(),
            checksum: hex(&Sha256::digest(source.as_bytes())),
        };
        // Render both ways now, so a bad placeholder fails at load, not at deploy.
        migration.statements(&Topology::SingleNode).map_err(&invalid)?;
        migration.statements(&Topology::Cluster { name: "c".into() }).map_err(&invalid)?;
        migrations.push(migration);
    }
    migrations.sort_by_key(|m| m.version);
    for pair in migrations.windows(2) {
        if pair[0].version == pair[1].version {
            return Err(MigrationError::Invalid {
                file: format!("{:04}_{}.sql", pair[1].version, pair[1].name),
                message: format!("version {} is used twice", pair[1].version),
            });
        }
    }
    Ok(migrations)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

impl Migration {
    /// The statements of this migration rendered for `topology`, comments removed.
    pub fn statements(&self, topology: &Topology) -> Result<Vec<String>, String> {
        let without_comments: String = self
            .source
            .lines()
            .filter(|line| !line.trim_start().starts_with("--"))
            .map(|line| format!("{line}\n"))
            .collect();
        let mut statements = Vec::new();
        for raw in without_comments.split(';') {
            let raw = raw.trim();
            if raw.is_empty() {
                continue;
            }
            if let Some(rendered) = render(raw, topology)? {
                statements.push(rendered);
            }
        }
        Ok(statements)
    }
}

/// Render one statement; `None` when it renders to nothing (a Distributed table on one node).
fn render(statement: &str, topology: &Topology) -> Result<Option<String>, String> {
    if let Some(spec) = statement.strip_prefix("${DISTRIBUTED:").and_then(|s| s.strip_suffix('}')) {
        let (table, key) = spec
            .split_once(':')
            .ok_or_else(|| format!("${{DISTRIBUTED:{spec}}} must be ${{DISTRIBUTED:table:sharding_key}}"))?;
        return Ok(match topology {
            Topology::SingleNode => None,
            Topology::Cluster { name } => Some(format!(
                "CREATE TABLE IF NOT EXISTS {table} ON CLUSTER {name} AS {table}_local \
                 ENGINE = Distributed({name}, currentDatabase(), {table}_local, {key})"
            )),
        });
    }
    let mut out = String::with_capacity(statement.len());
    let mut rest = statement;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = matching_brace(after).ok_or_else(|| format!("unclosed placeholder in: {statement}"))?;
        let placeholder = &after[..end];
        out.push_str(&expand(placeholder, topology)?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(Some(out))
}

/// Index of the `}` closing a placeholder, skipping balanced parentheses and quotes.
fn matching_brace(text: &str) -> Option<usize> {
    let mut depth = 0i32;
    let mut in_quote = false;
    for (i, c) in text.char_indices() {
        match c {
            '\'' => in_quote = !in_quote,
            '(' if !in_quote => depth += 1,
            ')' if !in_quote => depth -= 1,
            '}' if !in_quote && depth == 0 => return Some(i),
            _ => {}
        }
    }
    None
}

fn expand(placeholder: &str, topology: &Topology) -> Result<String, String> {
    let cluster = match topology {
        Topology::SingleNode => None,
        Topology::Cluster { name } => Some(name.as_str()),
    };
    if placeholder == "ON_CLUSTER" {
        return Ok(cluster.map(|c| format!("ON CLUSTER {c}")).unwrap_or_default());
    }
    if let Some(table) = placeholder.strip_prefix("TABLE:") {
        if !super::is_identifier(table) {
            return Err(format!("${{TABLE:{table}}}: not an identifier"));
        }
        return Ok(match cluster {
            None => table.to_string(),
            Some(_) => format!("{table}_local"),
        });
    }
    if let Some(engine) = placeholder.strip_prefix("ENGINE:") {
        let (family, args) = match engine.split_once('(') {
            Some((family, args)) => {
                (family, args.strip_suffix(')').ok_or_else(|| format!("${{ENGINE:{engine}}}: unbalanced"))?)
            }
            None => (engine, ""),
        };
        if !family.ends_with("MergeTree") {
            return Err(format!("${{ENGINE:{engine}}}: only MergeTree engines can be replicated"));
        }
        return Ok(match cluster {
            None => format!("{family}({args})"),
            Some(_) => {
                let mut replicated = format!(
                    "Replicated{family}('/clickhouse/tables/{{shard}}/{{database}}/{{table}}', '{{replica}}'"
                );
                if !args.trim().is_empty() {
                    replicated.push_str(", ");
                    replicated.push_str(args);
                }
                replicated.push(')');
                replicated
            }
        });
    }
    Err(format!("unknown placeholder ${{{placeholder}}}"))
}

/// The table recording applied migrations.
pub const MIGRATIONS_TABLE: &str = "faregate_schema_migrations";

#[derive(Debug, Deserialize, clickhouse::Row)]
struct AppliedRow {
    version: u32,
    name: String,
    checksum: String,
}

/// What `apply` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    pub applied: Vec<u32>,
    pub already_applied: Vec<u32>,
}

/// Apply every pending migration to `config.database`, creating the database if needed.
pub async fn apply(config: &super::ClickHouseConfig) -> Result<ApplyReport, MigrationError> {
    apply_migrations(config, &all()?).await
}

/// Apply `migrations` (in version order) to `config.database`.
pub async fn apply_migrations(
    config: &super::ClickHouseConfig,
    migrations: &[Migration],
) -> Result<ApplyReport, MigrationError> {
    let topology = config.topology();
    let on_cluster = match &topology {
        Topology::SingleNode => String::new(),
        Topology::Cluster { name } => format!(" ON CLUSTER {name}"),
    };
    let server = config.server_client();
    server.query(&format!("CREATE DATABASE IF NOT EXISTS {}{on_cluster}", config.database)).execute().await?;
    let engine = match &topology {
        Topology::SingleNode => "MergeTree".to_string(),
        Topology::Cluster { .. } => {
            "ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')".to_string()
        }
    };
    let client = config.client();
    client
        .query(&format!(
            "CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE}{on_cluster} \
             (version UInt32, name String, checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) \
             ENGINE = {engine} ORDER BY version"
        ))
        .execute()
        .await?;
    let applied: Vec<AppliedRow> = client
        .query(&format!("SELECT version, name, checksum FROM {MIGRATIONS_TABLE} ORDER BY version"))
        .fetch_all()
        .await?;
    let mut report = ApplyReport::default();
    for migration in migrations {
        if let Some(row) = applied.iter().find(|r| r.version == migration.version) {
            if row.checksum != migration.checksum {
                return Err(MigrationError::Edited {
                    version: migration.version,
                    name: row.name.clone(),
                    recorded: row.checksum.clone(),
                    current: migration.checksum.clone(),
                });
            }
            report.already_applied.push(migration.version);
            continue;
        }
        let statements = migration.statements(&topology).map_err(|message| MigrationError::Invalid {
            file: format!("{:04}_{}.sql", migration.version, migration.name),
            message,
        })?;
        for (index, statement) in statements.iter().enumerate() {
            client.query(statement).execute().await.map_err(|source| MigrationError::Statement {
                version: migration.version,
                name: migration.name.clone(),
                statement: index + 1,
                source,
            })?;
        }
        client
            .query(&format!("INSERT INTO {MIGRATIONS_TABLE} (version, name, checksum) VALUES (?, ?, ?)"))
            .bind(migration.version)
            .bind(&migration.name)
            .bind(&migration.checksum)
            .execute()
            .await?;
        tracing::info!(version = migration.version, name = %migration.name, "applied migration");
        report.applied.push(migration.version);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn migration(source: &str) -> Migration {
        parse_files([("0007_test.sql", source)].into_iter()).unwrap().remove(0)
    }

    const SOURCE: &str = "-- a table\nCREATE TABLE IF NOT EXISTS ${TABLE:t} ${ON_CLUSTER} (a UInt8, b String)\n\
        ENGINE = ${ENGINE:ReplacingMergeTree(a)} ORDER BY b;\n${DISTRIBUTED:t:cityHash64(b)};\n";

    #[test]
    fn renders_single_node() {
        let statements = migration(SOURCE).statements(&Topology::SingleNode).unwrap();
        assert_eq!(
            statements,
            vec![
                "CREATE TABLE IF NOT EXISTS t  (a UInt8, b String)\nENGINE = ReplacingMergeTree(a) ORDER BY b"
            ]
        );
    }

    #[test]
    fn renders_cluster_with_distributed_table() {
        let statements = migration(SOURCE).statements(&Topology::Cluster { name: "prod".into() }).unwrap();
        assert_eq!(statements.len(), 2);
        assert_eq!(
            statements[0],
            "CREATE TABLE IF NOT EXISTS t_local ON CLUSTER prod (a UInt8, b String)\nENGINE = \
             ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}', a) ORDER BY b"
        );
        assert_eq!(
            statements[1],
            "CREATE TABLE IF NOT EXISTS t ON CLUSTER prod AS t_local ENGINE = Distributed(prod, currentDatabase(), t_local, cityHash64(b))"
        );
    }

    #[test]
    fn bad_files_are_refused_with_the_file_name() {
        let error = parse_files([("0001_x.sql", "SELECT ${NOPE}")].into_iter()).unwrap_err().to_string();
        assert!(error.contains("0001_x.sql") && error.contains("unknown placeholder"), "{error}");
        let error = parse_files([("x.sql", "SELECT 1")].into_iter()).unwrap_err().to_string();
        assert!(error.contains("x.sql"), "{error}");
        let error = parse_files([("0001_a.sql", "SELECT 1"), ("0001_b.sql", "SELECT 2")].into_iter())
            .unwrap_err()
            .to_string();
        assert!(error.contains("used twice"), "{error}");
        let error = parse_files([("0001_a.sql", "SELECT ?")].into_iter()).unwrap_err().to_string();
        assert!(error.contains("bind"), "{error}");
    }

    #[test]
    fn the_shipped_migrations_render_both_ways() {
        let migrations = all().unwrap();
        assert!(!migrations.is_empty());
        for m in &migrations {
            let single = m.statements(&Topology::SingleNode).unwrap();
            let cluster = m.statements(&Topology::Cluster { name: "c".into() }).unwrap();
            assert!(!single.is_empty());
            assert!(cluster.len() >= single.len());
            for statement in &single {
                assert!(!statement.contains("${"), "{statement}");
                assert!(!statement.contains("Replicated"), "{statement}");
            }
            for statement in &cluster {
                assert!(
                    statement.contains("ON CLUSTER c"),
                    "every cluster statement runs ON CLUSTER: {statement}"
                );
            }
        }
    }
}
