//! Reloading a catalog directory: changes are picked up when the caller asks, invalid files are
//! refused and the current catalog kept, and prices in use are never torn.

mod common;

use std::fs;

use common::*;
use faregate_core::event::TokenCounts;
use faregate_pricing::{CatalogWatcher, Reload};

fn file(input: &str) -> String {
    format!(
        "[models.m]\n[[models.m.prices]]\neffective_from = 2025-01-01\nunit = \"per_million\"\ninput = \"{input}\"\noutput = \"1\"\n"
    )
}

fn cost_of_a_million_inputs(watcher: &CatalogWatcher) -> String {
    let e = event("acme", "m", TokenCounts { input: 1_000_000, ..TokenCounts::default() });
    priced(&watcher.current().price(&e)).1.total().to_string()
}

#[test]
fn reloads_changes_and_keeps_the_last_valid_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("acme.toml");
    fs::write(&path, file("3")).unwrap();
    let watcher = CatalogWatcher::new(dir.path()).unwrap();
    assert_eq!(cost_of_a_million_inputs(&watcher), "$3");
    assert!(matches!(watcher.reload_if_changed(), Reload::Unchanged));

    // Same length, same second: compared by content, so still seen.
    fs::write(&path, file("4")).unwrap();
    let held = watcher.current();
    assert!(matches!(watcher.reload_if_changed(), Reload::Reloaded));
    assert_eq!(cost_of_a_million_inputs(&watcher), "$4");
    // A catalog taken before the reload stays whole.
    let e = event("acme", "m", TokenCounts { input: 1_000_000, ..TokenCounts::default() });
    assert_eq!(priced(&held.price(&e)).1.total().to_string(), "$3");

    // An invalid edit is refused, once, and the current catalog stays.
    fs::write(&path, file("-4")).unwrap();
    match watcher.reload_if_changed() {
        Reload::Rejected(err) => {
            assert!(err.to_string().contains("field \"input\": negative price -4"), "{err}")
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(cost_of_a_million_inputs(&watcher), "$4");
    assert!(matches!(watcher.reload_if_changed(), Reload::Unchanged));

    // A new file (provider) is picked up with the fix.
    fs::write(&path, file("5")).unwrap();
    fs::write(dir.path().join("globex.toml"), file("7")).unwrap();
    assert!(matches!(watcher.reload_if_changed(), Reload::Reloaded));
    assert_eq!(cost_of_a_million_inputs(&watcher), "$5");
    assert_eq!(watcher.current().providers().collect::<Vec<_>>(), ["acme", "globex"]);

    // Removing every file is refused too.
    fs::remove_file(&path).unwrap();
    fs::remove_file(dir.path().join("globex.toml")).unwrap();
    assert!(matches!(watcher.reload_if_changed(), Reload::Rejected(_)));
    assert_eq!(cost_of_a_million_inputs(&watcher), "$5");
}

#[test]
fn an_invalid_directory_cannot_start_a_watcher() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("acme.toml"), file("abc")).unwrap();
    let err = CatalogWatcher::new(dir.path()).unwrap_err().to_string();
    assert!(err.contains("acme.toml: model \"m\": field \"prices[0].input\""), "{err}");
    let empty = tempfile::tempdir().unwrap();
    assert!(CatalogWatcher::new(empty.path()).unwrap_err().to_string().contains("has no *.toml files"));
}
