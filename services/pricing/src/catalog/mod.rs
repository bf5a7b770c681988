//! The price catalog: every provider's models, their prices over time, tiers, regions and org
//! overrides, loaded from `schemas/prices/*.toml` (one file per provider, see docs/prices.md).
//!
//! Contract: a catalog is immutable once loaded and valid as a whole; loading refuses it with
//! every problem named (file, entry, field) rather than keep part of it. All prices are exact
//! decimals; every combination of tier, region, long-context band and org override is
//! precomputed at load time, so pricing is a few lookups and integer multiplications.

mod compile;
pub(crate) mod file;
mod overrides;
pub(crate) mod rates;
mod specs;

pub(crate) use specs::fmt_instant;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::catalog::rates::{Ladder, Modifiers, Table};
use crate::error::{CatalogError, Issue, Issues};

pub use file::Unit;
pub use rates::TokenClass;

include!(concat!(env!("OUT_DIR"), "/embedded.rs"));

/// A loaded, validated price catalog.
#[derive(Debug)]
pub struct PriceCatalog {
    pub(crate) providers: Vec<Provider>,
}

/// One provider's file, compiled.
#[derive(Debug)]
pub(crate) struct Provider {
    pub name: Box<str>,
    /// Model ids and aliases to `models` slots.
    pub index: HashMap<Box<str>, usize>,
    pub models: Vec<Model>,
    /// Org overrides by org.
    pub overrides: HashMap<Box<str>, Vec<Override>>,
}

#[derive(Debug)]
pub(crate) struct Model {
    pub id: Box<str>,
    /// Sorted by `from`; ranges do not overlap.
    pub entries: Vec<Entry>,
}

/// One price entry, in force over `[from, to)`.
#[derive(Debug)]
pub(crate) struct Entry {
    pub from: DateTime<Utc>,
    pub to: Option<DateTime<Utc>>,
    pub ladder: Ladder,
    pub modifiers: Modifiers,
    pub table: Table,
}

#[derive(Debug)]
pub(crate) struct Override {
    /// Model slots covered; `None` for every model of the provider.
    pub models: Option<Vec<usize>>,
    pub from: DateTime<Utc>,
    pub to: Option<DateTime<Utc>>,
    /// (model slot, entry slot, table with the override applied).
    pub tables: Vec<(usize, usize, Table)>,
}

impl PriceCatalog {
    /// The catalog shipped in this build: `schemas/prices/*.toml`, compiled in.
    pub fn embedded() -> Result<PriceCatalog, CatalogError> {
        Self::from_sources(EMBEDDED_FILES.iter().copied())
    }

    /// A catalog from `(file name, contents)` pairs; each file is `<provider>.toml` and errors name
    /// files as given here.
    pub fn from_sources<'a>(
        files: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<PriceCatalog, CatalogError> {
        let mut issues: Vec<Issue> = Vec::new();
        let mut providers: Vec<Provider> = Vec::new();
        let mut any = false;
        for (file, text) in files {
            any = true;
            let Some(provider) = compile::compile_file(file, text, &mut issues) else { continue };
            if providers.iter().any(|p| p.name == provider.name) {
                issues.push(Issue {
                    file: file.to_owned(),
                    entry: None,
                    field: None,
                    problem: format!("provider \"{}\" is described by another file too", provider.name),
                });
                continue;
            }
            providers.push(provider);
        }
        if !any {
            return Err(CatalogError::NoFiles("(given sources)".to_owned()));
        }
        if !issues.is_empty() {
            return Err(CatalogError::Invalid(Issues(issues)));
        }
        providers.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(PriceCatalog { providers })
    }

    /// The catalog in directory `dir`: every `*.toml` file in it (not in subdirectories).
    pub fn load_dir(dir: &Path) -> Result<PriceCatalog, CatalogError> {
        let files = read_dir(dir)?;
        if files.is_empty() {
            return Err(CatalogError::NoFiles(dir.display().to_string()));
        }
        Self::from_sources(files.iter().map(|(path, text)| (path.as_str(), text.as_str())))
    }

    /// The providers in the catalog, in name order.
    pub fn providers(&self) -> impl Iterator<Item = &str> {
        self.providers.iter().map(|p| &*p.name)
    }

    /// The canonical model ids of `provider`, in no particular order.
    pub fn models<'a>(&'a self, provider: &str) -> impl Iterator<Item = &'a str> + 'a {
        let provider = self.providers.iter().find(|p| &*p.name == provider);
        provider.into_iter().flat_map(|p| p.models.iter().map(|m| &*m.id))
    }
}

/// `(path, contents)` of every `*.toml` file in `dir`, in name order.
pub(crate) fn read_dir(dir: &Path) -> Result<Vec<(String, String)>, CatalogError> {
    let io = |path: &Path| {
        let path: PathBuf = path.to_owned();
        move |source| CatalogError::Io { path, source }
    };
    let mut paths: Vec<PathBuf> = Vec::new();
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = fs::read_to_string(&path).map_err(io(&path))?;
            Ok((path.display().to_string(), text))
        })
        .collect()
}
