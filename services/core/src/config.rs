//! Layered configuration: built-in defaults, then an optional TOML file, then `FAREGATE__…`
//! environment variables (`FAREGATE__KAFKA__BROKERS=host:9092` sets `kafka.brokers`). Unknown
//! keys are errors that name the key; [`Secret`] values never print.

use std::fmt;
use std::path::Path;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{ErrorClass, FaregateError};

/// The environment variable prefix; nested keys are separated by `__`.
pub const ENV_PREFIX: &str = "FAREGATE__";

/// A secret string (password, token, API key). Debug, Display and Serialize print `*****`
/// (an empty secret serializes as empty, so defaults stay empty); [`Secret::expose`] is the only
/// way to read it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself. Call this only where the value leaves for its destination.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

const REDACTED: &str = "*****";

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(if self.0.is_empty() { "" } else { REDACTED })
    }
}

impl<'de> Deserialize<'de> for Secret {
    /// Also takes a number or a boolean as its text: an env value such as `12345` reaches
    /// here parsed as a number, and a numeric password must still load.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = String;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_i128<E: serde::de::Error>(self, v: i128) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<String, E> {
                Ok(v.to_string())
            }
        }
        deserializer.deserialize_any(Text).map(Secret)
    }
}

/// Why configuration could not be loaded or is invalid. Always the operator's to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {path}: {message}")]
    File { path: String, message: String },
    #[error("configuration: {0}")]
    Invalid(String),
    #[error("configuration field `{field}`: {message}")]
    Field { field: String, message: String },
}

impl ConfigError {
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Field { field: field.into(), message: message.into() }
    }
}

impl FaregateError for ConfigError {
    fn class(&self) -> ErrorClass {
        ErrorClass::User
    }
}

/// Configuration that can check itself once it is loaded.
pub trait Validate {
    /// Check the values; the error names the offending field by its full path.
    fn validate(&self) -> Result<(), ConfigError>;
}

/// Load `T` from its defaults, then `file` (if given), then `FAREGATE__…` variables of `env`.
pub fn load<T>(file: Option<&Path>, env: &[(String, String)]) -> Result<T, ConfigError>
where
    T: Default + Serialize + DeserializeOwned + Validate,
{
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(path) = file {
        if !path.exists() {
            return Err(ConfigError::File {
                path: path.display().to_string(),
                message: "no such file".into(),
            });
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    // Env values are read from the given list (the process environment in binaries), which
    // keeps tests independent of each other's variables.
    let mut from_env = Figment::new();
    for (key, value) in env {
        if let Some(stripped) = key.strip_prefix(ENV_PREFIX) {
            let path = stripped.to_ascii_lowercase().replace("__", ".");
            let parsed: figment::value::Value = value.parse().unwrap_or_else(|_| value.clone().into());
            // A number written with leading zeros (a password like 007) would lose them as a
            // number: such a value stays text.
            let digits = value.trim_start_matches(['-', '+']);
            let parsed = match parsed {
                figment::value::Value::Num(..)
                    if digits.len() > 1 && digits.starts_with('0') && !digits.starts_with("0.") =>
                {
                    value.clone().into()
                }
                other => other,
            };
            from_env = from_env.merge(Serialized::global(&path, parsed));
        }
    }
    figment = figment.merge(from_env);
    let config: T = figment.extract().map_err(|e| describe(e, file))?;
    config.validate()?;
    Ok(config)
}

/// Load from the process environment.
pub fn load_from_process_env<T>(file: Option<&Path>) -> Result<T, ConfigError>
where
    T: Default + Serialize + DeserializeOwned + Validate,
{
    let env: Vec<(String, String)> = std::env::vars().filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect();
    load(file, &env)
}

fn describe(error: figment::Error, file: Option<&Path>) -> ConfigError {
    let messages: Vec<String> = error
        .into_iter()
        .map(|e| {
            let field = e.path.join(".");
            let origin = e
                .metadata
                .as_ref()
                .map(|m| match &m.source {
                    Some(source) => format!(" (from {source})"),
                    None => format!(" (from {})", m.name),
                })
                .unwrap_or_default();
            if field.is_empty() {
                format!("{}{origin}", e.kind)
            } else {
                format!("`{field}`: {}{origin}", e.kind)
            }
        })
        .collect();
    let joined = messages.join("; ");
    match file {
        Some(path) if joined.contains(&path.display().to_string()) => {
            ConfigError::File { path: path.display().to_string(), message: joined }
        }
        _ => ConfigError::Invalid(joined),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Sample {
        name: String,
        inner: Inner,
    }

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Inner {
        port: u16,
        password: Secret,
    }

    impl Validate for Sample {
        fn validate(&self) -> Result<(), ConfigError> {
            if self.inner.port == 1 {
                return Err(ConfigError::field("inner.port", "must not be 1"));
            }
            Ok(())
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn env_overrides_file_overrides_defaults() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "name = \"from-file\"\n[inner]\nport = 7\npassword = \"hunter2\"").unwrap();
        let loaded: Sample = load(Some(file.path()), &env(&[("FAREGATE__INNER__PORT", "9")])).unwrap();
        assert_eq!(loaded.name, "from-file");
        assert_eq!(loaded.inner.port, 9);
        assert_eq!(loaded.inner.password.expose(), "hunter2");
    }

    #[test]
    fn a_numeric_secret_from_the_environment_loads_as_text() {
        let loaded: Sample = load(None, &env(&[("FAREGATE__INNER__PASSWORD", "0012345")])).unwrap();
        assert_eq!(loaded.inner.password.expose(), "0012345", "leading zeros kept");
        let loaded: Sample = load(None, &env(&[("FAREGATE__INNER__PASSWORD", "12345")])).unwrap();
        assert_eq!(loaded.inner.password.expose(), "12345");
        let loaded: Sample = load(None, &env(&[("FAREGATE__INNER__PASSWORD", "true")])).unwrap();
        assert_eq!(loaded.inner.password.expose(), "true");
    }

    #[test]
    fn unknown_keys_are_named() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "[inner]\nprot = 7").unwrap();
        let error = load::<Sample>(Some(file.path()), &[]).unwrap_err().to_string();
        assert!(error.contains("prot"), "{error}");
        let error = load::<Sample>(None, &env(&[("FAREGATE__INNER__PORT", "many")])).unwrap_err().to_string();
        assert!(error.contains("inner.port"), "{error}");
    }

    #[test]
    fn validation_names_the_field() {
        let error = load::<Sample>(None, &env(&[("FAREGATE__INNER__PORT", "1")])).unwrap_err().to_string();
        assert_eq!(error, "configuration field `inner.port`: must not be 1");
    }

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?} {secret}"), "***** *****");
        let shown = toml::to_string(&Inner { port: 1, password: secret }).unwrap();
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
