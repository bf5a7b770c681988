//! Embeds `schemas/prices/*.toml` into the crate, so the shipped catalog needs no files at run
//! time. Files are listed in name order; each is named by its path from the repository root.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::{env, fs};

fn main() {
    let dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("../../schemas/prices");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();

    let mut out = String::new();
    out.push_str(
        "/// (path from the repository root, contents) of every file in schemas/prices, in name order.\n",
    );
    out.push_str("pub static EMBEDDED_FILES: &[(&str, &str)] = &[\n");
    for path in files {
        println!("cargo:rerun-if-changed={}", path.display());
        let name = format!("schemas/prices/{}", path.file_name().unwrap().to_str().unwrap());
        writeln!(out, "    ({name:?}, include_str!({:?})),", path.canonicalize().unwrap()).unwrap();
    }
    out.push_str("];\n");
    fs::write(PathBuf::from(env::var("OUT_DIR").unwrap()).join("embedded.rs"), out).unwrap();
}
