//! Embeds `schemas/avro/*.avsc` and `schemas/clickhouse/*.sql` into the binary, so a deployed
//! `faregate` needs no files beside it. Files are listed in name order.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::{env, fs};

fn list(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    files
}

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("../../schemas");
    let avro = root.join("avro");
    let clickhouse = root.join("clickhouse");
    println!("cargo:rerun-if-changed={}", avro.display());
    println!("cargo:rerun-if-changed={}", clickhouse.display());

    let mut out = String::new();
    out.push_str("/// (file name, contents) of every Avro schema in schemas/avro, in name order.\n");
    out.push_str("pub static AVRO_FILES: &[(&str, &str)] = &[\n");
    for path in list(&avro, "avsc") {
        println!("cargo:rerun-if-changed={}", path.display());
        let name = path.file_name().unwrap().to_str().unwrap();
        writeln!(out, "    ({name:?}, include_str!({:?})),", path.canonicalize().unwrap()).unwrap();
    }
    out.push_str("];\n");
    out.push_str(
        "/// (file name, contents) of every ClickHouse migration in schemas/clickhouse, in name order.\n",
    );
    out.push_str("pub static MIGRATION_FILES: &[(&str, &str)] = &[\n");
    for path in list(&clickhouse, "sql") {
        println!("cargo:rerun-if-changed={}", path.display());
        let name = path.file_name().unwrap().to_str().unwrap();
        writeln!(out, "    ({name:?}, include_str!({:?})),", path.canonicalize().unwrap()).unwrap();
    }
    out.push_str("];\n");
    fs::write(PathBuf::from(env::var("OUT_DIR").unwrap()).join("embedded.rs"), out).unwrap();
}
