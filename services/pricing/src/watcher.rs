//! Reloading a catalog directory while running.
//!
//! Contract: [`CatalogWatcher::current`] always returns a valid catalog. The caller drives
//! [`CatalogWatcher::reload_if_changed`] (e.g. every few seconds from its own task): it reads the
//! directory's `*.toml` files and, if their names or contents differ from the last attempt,
//! loads them; a valid catalog replaces the current one atomically (events being priced keep the
//! `Arc` they hold), an invalid one is logged and refused, and the current catalog stays. Files
//! are compared by content, not modification time, so an edit within the file system's time
//! granularity is not missed; the files are a few kilobytes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use crate::catalog::{PriceCatalog, read_dir};
use crate::error::CatalogError;

/// What [`CatalogWatcher::reload_if_changed`] did.
#[derive(Debug)]
pub enum Reload {
    /// The files are as they were at the last attempt.
    Unchanged,
    /// The files changed and the new catalog is now current.
    Reloaded,
    /// The files changed but are invalid (or unreadable); the current catalog stays.
    Rejected(CatalogError),
}

/// A catalog loaded from a directory, swapped for a new one when the files change.
#[derive(Debug)]
pub struct CatalogWatcher {
    dir: PathBuf,
    current: RwLock<Arc<PriceCatalog>>,
    /// The files of the last load attempt, successful or not.
    last_seen: Mutex<Vec<(String, String)>>,
}

impl CatalogWatcher {
    /// Loads `dir`; fails if its catalog is invalid (there is no previous catalog to keep).
    pub fn new(dir: impl Into<PathBuf>) -> Result<CatalogWatcher, CatalogError> {
        let dir = dir.into();
        let files = read_dir(&dir)?;
        let catalog = load(&dir, &files)?;
        Ok(CatalogWatcher { dir, current: RwLock::new(Arc::new(catalog)), last_seen: Mutex::new(files) })
    }

    /// The directory watched.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current catalog.
    pub fn current(&self) -> Arc<PriceCatalog> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Reloads the catalog if the directory's files changed since the last attempt.
    pub fn reload_if_changed(&self) -> Reload {
        let mut last_seen = self.last_seen.lock().unwrap_or_else(PoisonError::into_inner);
        let files = match read_dir(&self.dir) {
            Ok(files) => files,
            Err(error) => {
                tracing::error!(dir = %self.dir.display(), %error, "price catalog unreadable; keeping the current one");
                return Reload::Rejected(error);
            }
        };
        if files == *last_seen {
            return Reload::Unchanged;
        }
        let loaded = load(&self.dir, &files);
        *last_seen = files;
        match loaded {
            Ok(catalog) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(catalog);
                tracing::info!(dir = %self.dir.display(), "price catalog reloaded");
                Reload::Reloaded
            }
            Err(error) => {
                tracing::error!(dir = %self.dir.display(), %error, "price catalog invalid; keeping the current one");
                Reload::Rejected(error)
            }
        }
    }
}

fn load(dir: &Path, files: &[(String, String)]) -> Result<PriceCatalog, CatalogError> {
    if files.is_empty() {
        return Err(CatalogError::NoFiles(dir.display().to_string()));
    }
    PriceCatalog::from_sources(files.iter().map(|(path, text)| (path.as_str(), text.as_str())))
}
