//! Errors of loading a catalog. A catalog is loaded whole or not at all: every problem found in
//! every file is reported at once, each naming the file, the entry (model, tier, region or org
//! override) and the field, so that whoever edits the catalog can fix all of them in one pass.

use std::fmt;
use std::path::PathBuf;

/// One problem in a catalog file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// The file, as given to the loader (e.g. `schemas/prices/anthropic.toml`).
    pub file: String,
    /// The entry, e.g. `model "claude-sonnet-4-5"` or `org_overrides[0] (org "acme")`.
    pub entry: Option<String>,
    /// The field within the entry, e.g. `unit` or `long_context[0].input`.
    pub field: Option<String>,
    pub problem: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(entry) = &self.entry {
            write!(f, ": {entry}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field \"{field}\"")?;
        }
        write!(f, ": {}", self.problem)
    }
}

/// Every issue of a catalog, one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issues(pub Vec<Issue>);

impl fmt::Display for Issues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

/// Why a catalog could not be loaded. Always the catalog editor's fault, except `Io`.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read price catalog {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("price catalog {0} has no *.toml files")]
    NoFiles(String),
    #[error("invalid price catalog ({count} problem(s)):\n{0}", count = .0.0.len())]
    Invalid(Issues),
}

impl CatalogError {
    /// The issues, when the catalog was read but is invalid.
    pub fn issues(&self) -> &[Issue] {
        match self {
            CatalogError::Invalid(issues) => &issues.0,
            _ => &[],
        }
    }
}
