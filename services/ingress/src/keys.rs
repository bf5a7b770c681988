//! Virtual keys as the gateway sees them: materialised from the config topic (`key/<id>`
//! records), looked up by the sha256 of the presented secret, so secrets are never stored and
//! a lookup does not compare secrets byte by byte. Rotation is a new record for the same key id
//! with a new hash (the old hash stops working at once); revocation is a record with status
//! REVOKED or a tombstone.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use rand::Rng as _;
use sha2::{Digest, Sha256};

use faregate_core::event::{ConfigEntity, ConfigRecord, KeyStatus, VirtualKey};

/// Secrets start with this, so they are recognisable in a leak scan.
pub const SECRET_PREFIX: &str = "fgk_";

/// A new random secret: `fgk_` and 40 base62 characters (238 bits).
pub fn new_secret() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let body: String = (0..40).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
    format!("{SECRET_PREFIX}{body}")
}

/// The stored form of a secret: sha256, lowercase hex.
pub fn hash_secret(secret: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(secret.as_bytes());
    let mut hex = String::with_capacity(64);
    for b in digest {
        hex.push(HEX[usize::from(b >> 4)] as char);
        hex.push(HEX[usize::from(b & 15)] as char);
    }
    hex
}

/// The part of a secret that may be shown (to tell keys apart in listings).
pub fn display_prefix(secret: &str) -> String {
    secret.chars().take(SECRET_PREFIX.len() + 4).collect()
}

/// Why a presented key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyRefusal {
    #[error("no API key was presented (send x-api-key or Authorization: Bearer)")]
    Missing,
    #[error("the API key is not known to this gateway")]
    Unknown,
    #[error("the API key was revoked")]
    Revoked,
    #[error("the API key expired")]
    Expired,
}

#[derive(Debug, Default)]
pub struct KeyStore {
    inner: RwLock<Keys>,
}

#[derive(Debug, Default)]
struct Keys {
    by_hash: HashMap<String, Arc<VirtualKey>>,
    hash_of: HashMap<String, String>,
}

impl KeyStore {
    /// Apply one config-topic record (`None` is a tombstone for `topic_key`).
    pub fn apply(&self, topic_key: &str, record: Option<&ConfigRecord>) {
        let Ok(mut keys) = self.inner.write() else { return };
        match record.map(|r| &r.entity) {
            Some(ConfigEntity::VirtualKey(key)) => {
                if let Some(old) = keys.hash_of.insert(key.key_id.clone(), key.secret_hash.clone()) {
                    keys.by_hash.remove(&old);
                }
                keys.by_hash.insert(key.secret_hash.clone(), Arc::new(key.clone()));
            }
            Some(_) => {}
            None => {
                if let Some(id) = topic_key.strip_prefix("key/")
                    && let Some(old) = keys.hash_of.remove(id)
                {
                    keys.by_hash.remove(&old);
                }
            }
        }
    }

    /// The key a client presented, if it may be used at `now`.
    pub fn authenticate(&self, secret: &str, now: DateTime<Utc>) -> Result<Arc<VirtualKey>, KeyRefusal> {
        if secret.is_empty() {
            return Err(KeyRefusal::Missing);
        }
        let hash = hash_secret(secret);
        let keys = self.inner.read().map_err(|_| KeyRefusal::Unknown)?;
        let key = keys.by_hash.get(&hash).ok_or(KeyRefusal::Unknown)?;
        if key.status == KeyStatus::Revoked {
            return Err(KeyRefusal::Revoked);
        }
        if key.expires_at.is_some_and(|at| at <= now) {
            return Err(KeyRefusal::Expired);
        }
        Ok(key.clone())
    }

    pub fn len(&self) -> usize {
        self.inner.read().map(|k| k.by_hash.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, secret: &str, status: KeyStatus) -> ConfigRecord {
        ConfigRecord {
            updated_at: Utc::now(),
            updated_by: None,
            entity: ConfigEntity::VirtualKey(VirtualKey {
                key_id: id.into(),
                secret_hash: hash_secret(secret),
                secret_prefix: display_prefix(secret),
                org: "acme".into(),
                team: Some("infra".into()),
                user: Some("ana".into()),
                allowed_models: vec![],
                rpm_limit: None,
                tpm_limit: None,
                status,
                created_at: Utc::now(),
                expires_at: None,
            }),
        }
    }

    #[test]
    fn secrets_are_random_and_only_hashes_are_kept() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert!(a.starts_with(SECRET_PREFIX) && a.len() == 44);
        assert_eq!(hash_secret("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn rotate_revoke_and_delete() {
        let store = KeyStore::default();
        let now = Utc::now();
        store.apply("key/k1", Some(&record("k1", "old", KeyStatus::Active)));
        assert_eq!(store.authenticate("old", now).unwrap().user.as_deref(), Some("ana"));
        assert_eq!(store.authenticate("nope", now).unwrap_err(), KeyRefusal::Unknown);
        assert_eq!(store.authenticate("", now).unwrap_err(), KeyRefusal::Missing);
        store.apply("key/k1", Some(&record("k1", "new", KeyStatus::Active)));
        assert_eq!(store.authenticate("old", now).unwrap_err(), KeyRefusal::Unknown);
        assert!(store.authenticate("new", now).is_ok());
        store.apply("key/k1", Some(&record("k1", "new", KeyStatus::Revoked)));
        assert_eq!(store.authenticate("new", now).unwrap_err(), KeyRefusal::Revoked);
        store.apply("key/k1", None);
        assert_eq!(store.authenticate("new", now).unwrap_err(), KeyRefusal::Unknown);
        assert!(store.is_empty());
    }
}
