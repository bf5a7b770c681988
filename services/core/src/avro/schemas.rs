//! The schemas compiled in from `schemas/avro/`, and the deterministic id rule used when no
//! Schema Registry is configured.
//!
//! A file is named `<family>.v<version>.avsc`. Its id is `100 × family number + version`, with the
//! family numbers fixed forever: usage_event = 1, spend_aggregate = 2, decision = 3,
//! config_record = 4, alert = 5, heartbeat = 6,
//! headroom = 7. So usage_event v1 is id 101 and decision v2 would be 302. Ids never change
//! meaning, because a version file, once released, is never edited (only new versions are added).

use std::sync::LazyLock;

use apache_avro::Schema;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded.rs"));
}
pub use embedded::MIGRATION_FILES;

/// A kind of record with its own schema history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SchemaFamily {
    UsageEvent,
    SpendAggregate,
    Decision,
    ConfigRecord,
    Alert,
    Heartbeat,
    Headroom,
    Demand,
}

impl SchemaFamily {
    pub const ALL: [SchemaFamily; 8] = [
        SchemaFamily::UsageEvent,
        SchemaFamily::SpendAggregate,
        SchemaFamily::Decision,
        SchemaFamily::ConfigRecord,
        SchemaFamily::Alert,
        SchemaFamily::Heartbeat,
        SchemaFamily::Headroom,
        SchemaFamily::Demand,
    ];

    /// The fixed family number of the id rule.
    pub fn number(self) -> u32 {
        match self {
            SchemaFamily::UsageEvent => 1,
            SchemaFamily::SpendAggregate => 2,
            SchemaFamily::Decision => 3,
            SchemaFamily::ConfigRecord => 4,
            SchemaFamily::Alert => 5,
            SchemaFamily::Heartbeat => 6,
            SchemaFamily::Headroom => 7,
            SchemaFamily::Demand => 8,
        }
    }

    /// The file name stem in `schemas/avro/`.
    pub fn file_stem(self) -> &'static str {
        match self {
            SchemaFamily::UsageEvent => "usage_event",
            SchemaFamily::SpendAggregate => "spend_aggregate",
            SchemaFamily::Decision => "decision",
            SchemaFamily::ConfigRecord => "config_record",
            SchemaFamily::Alert => "alert",
            SchemaFamily::Heartbeat => "heartbeat",
            SchemaFamily::Headroom => "headroom",
            SchemaFamily::Demand => "demand",
        }
    }

    fn from_stem(stem: &str) -> Option<SchemaFamily> {
        SchemaFamily::ALL.into_iter().find(|f| f.file_stem() == stem)
    }

    /// Every version of this family, oldest first.
    pub fn versions(self) -> impl Iterator<Item = &'static LocalSchema> {
        all().iter().filter(move |s| s.family == self)
    }

    /// The newest version this build knows: what it writes and what it reads into.
    pub fn latest(self) -> &'static LocalSchema {
        self.versions().last().unwrap_or_else(|| panic!("no schema file for {}", self.file_stem()))
    }
}

/// One schema version compiled into this build.
#[derive(Debug)]
pub struct LocalSchema {
    pub family: SchemaFamily,
    pub version: u32,
    /// The id by the local rule (`100 × family number + version`).
    pub local_id: u32,
    pub file_name: &'static str,
    pub json: &'static str,
    pub schema: Schema,
}

/// The id of a version by the local rule.
pub fn local_id(family: SchemaFamily, version: u32) -> u32 {
    family.number() * 100 + version
}

/// Every compiled-in schema, ordered by family and version. Panics at first use if a file in
/// `schemas/avro/` is misnamed or invalid; a unit test makes sure no build ships like that.
pub fn all() -> &'static [LocalSchema] {
    static ALL: LazyLock<Vec<LocalSchema>> = LazyLock::new(|| {
        let mut schemas: Vec<LocalSchema> = embedded::AVRO_FILES
            .iter()
            .map(|(file_name, json)| parse_file(file_name, json).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        schemas.sort_by_key(|s| (s.family, s.version));
        schemas
    });
    &ALL
}

/// Look a compiled-in schema up by its local id.
pub fn by_local_id(id: u32) -> Option<&'static LocalSchema> {
    all().iter().find(|s| s.local_id == id)
}

fn parse_file(file_name: &'static str, json: &'static str) -> Result<LocalSchema, String> {
    let stem = file_name
        .strip_suffix(".avsc")
        .ok_or_else(|| format!("schemas/avro/{file_name}: not an .avsc file"))?;
    let (family, version) = stem
        .rsplit_once(".v")
        .ok_or_else(|| format!("schemas/avro/{file_name}: name must be <family>.v<version>.avsc"))?;
    let family = SchemaFamily::from_stem(family)
        .ok_or_else(|| format!("schemas/avro/{file_name}: unknown schema family {family:?}"))?;
    let version: u32 = version
        .parse()
        .ok()
        .filter(|v| (1..100).contains(v))
        .ok_or_else(|| format!("schemas/avro/{file_name}: version must be 1..=99"))?;
    let schema =
        Schema::parse_str(json).map_err(|e| format!("schemas/avro/{file_name}: invalid Avro schema: {e}"))?;
    Ok(LocalSchema { family, version, local_id: local_id(family, version), file_name, json, schema })
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::schema_compatibility::SchemaCompatibility;

    #[test]
    fn every_file_parses_and_every_family_has_a_schema() {
        assert!(!all().is_empty());
        for family in SchemaFamily::ALL {
            let latest = family.latest();
            assert_eq!(latest.local_id, family.number() * 100 + latest.version);
        }
    }

    #[test]
    fn versions_are_contiguous_from_one() {
        for family in SchemaFamily::ALL {
            let versions: Vec<u32> = family.versions().map(|s| s.version).collect();
            let expected: Vec<u32> = (1..=versions.len() as u32).collect();
            assert_eq!(versions, expected, "{} versions must be 1..=N", family.file_stem());
        }
    }

    /// Every schema change must be backward compatible: a reader with version N reads data
    /// written with version N-1 (and so, transitively, every older version).
    #[test]
    fn every_version_reads_its_predecessor() {
        for family in SchemaFamily::ALL {
            let versions: Vec<&LocalSchema> = family.versions().collect();
            for pair in versions.windows(2) {
                let (old, new) = (pair[0], pair[1]);
                SchemaCompatibility::can_read(&old.schema, &new.schema).unwrap_or_else(|e| {
                    panic!("{} is not backward compatible with {}: {e}", new.file_name, old.file_name)
                });
            }
            // Also each version against the latest directly, not only transitively.
            let latest = family.latest();
            for old in &versions {
                SchemaCompatibility::can_read(&old.schema, &latest.schema)
                    .unwrap_or_else(|e| panic!("{} cannot read {}: {e}", latest.file_name, old.file_name));
            }
        }
    }

    /// The check above can fail: a new required field without a default is refused.
    #[test]
    fn compatibility_check_refuses_a_breaking_change() {
        let old = &SchemaFamily::Decision.latest().schema;
        let mut json: serde_json::Value = serde_json::from_str(SchemaFamily::Decision.latest().json).unwrap();
        json["fields"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"name": "must_have", "type": "string"}));
        let breaking = Schema::parse_str(&json.to_string()).unwrap();
        assert!(SchemaCompatibility::can_read(old, &breaking).is_err());
        // The same field with a default is fine.
        let mut json: serde_json::Value = serde_json::from_str(SchemaFamily::Decision.latest().json).unwrap();
        json["fields"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"name": "may_have", "type": "string", "default": ""}));
        let compatible = Schema::parse_str(&json.to_string()).unwrap();
        assert!(SchemaCompatibility::can_read(old, &compatible).is_ok());
    }
}
