//! `faregate keys`: virtual keys on the config topic. A new or rotated secret is printed once
//! and only its sha256 is stored; listing reads the config topic to its end.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::AppConfig;
use crate::cli::KeysCommand;
use faregate_core::avro::SchemaFamily;
use faregate_core::event::{ConfigEntity, ConfigRecord, KeyStatus, VirtualKey};
use faregate_core::kafka::RecordProducer;
use faregate_ingress::keys::{display_prefix, hash_secret, new_secret};
use faregate_ingress::table::{self, Freshness};

pub async fn keys(config: &AppConfig, command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create { org, team, user, models, rpm, tpm, expires_days, id } => {
            let secret = new_secret();
            let key = VirtualKey {
                key_id: id
                    .unwrap_or_else(|| format!("k-{}", &uuid::Uuid::now_v7().simple().to_string()[20..])),
                secret_hash: hash_secret(&secret),
                secret_prefix: display_prefix(&secret),
                org,
                team,
                user,
                allowed_models: models,
                rpm_limit: rpm,
                tpm_limit: tpm,
                status: KeyStatus::Active,
                created_at: Utc::now(),
                expires_at: expires_days.map(|d| Utc::now() + chrono::TimeDelta::days(i64::from(d))),
            };
            if key.org.trim().is_empty() {
                bail!("--org must not be empty");
            }
            let key_id = key.key_id.clone();
            write(config, key).await?;
            println!(
                "key id: {key_id}\nsecret: {secret}\n\nThe secret is shown once; Faregate keeps only its hash."
            );
            Ok(())
        }
        KeysCommand::List => {
            let keys = read_all(config).await?;
            let mut table = comfy_table::Table::new();
            table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
            table.set_header(["key id", "prefix", "status", "org", "team", "user", "models", "rpm", "tpm"]);
            let limit = |l: Option<i64>| l.map_or_else(|| "-".to_string(), |l| l.to_string());
            for key in keys.values() {
                table.add_row([
                    key.key_id.clone(),
                    key.secret_prefix.clone(),
                    format!("{:?}", key.status).to_lowercase(),
                    key.org.clone(),
                    key.team.clone().unwrap_or_else(|| "-".into()),
                    key.user.clone().unwrap_or_else(|| "-".into()),
                    if key.allowed_models.is_empty() { "all".into() } else { key.allowed_models.join(",") },
                    limit(key.rpm_limit.map(i64::from)),
                    limit(key.tpm_limit),
                ]);
            }
            println!("{table}");
            Ok(())
        }
        KeysCommand::Revoke { id } => {
            let mut key = existing(config, &id).await?;
            key.status = KeyStatus::Revoked;
            write(config, key).await?;
            println!("key {id} revoked");
            Ok(())
        }
        KeysCommand::Rotate { id } => {
            let mut key = existing(config, &id).await?;
            if key.status == KeyStatus::Revoked {
                bail!("key {id} is revoked; create a new key instead");
            }
            let secret = new_secret();
            key.secret_hash = hash_secret(&secret);
            key.secret_prefix = display_prefix(&secret);
            write(config, key).await?;
            println!(
                "key id: {id}\nsecret: {secret}\n\nThe old secret stopped working; the new one is shown once."
            );
            Ok(())
        }
    }
}

async fn write(config: &AppConfig, key: VirtualKey) -> anyhow::Result<()> {
    let producer: RecordProducer<ConfigRecord> = RecordProducer::new(
        &config.kafka,
        "faregate-keys",
        SchemaFamily::ConfigRecord,
        &config.kafka.topics.config,
    )
    .await
    .context("connecting to the config topic")?;
    let record = ConfigRecord {
        updated_at: Utc::now(),
        updated_by: std::env::var("USER").ok(),
        entity: ConfigEntity::VirtualKey(key),
    };
    producer
        .send(&record.topic_key(), &record)
        .await
        .with_context(|| format!("writing to {} at {}", config.kafka.topics.config, config.kafka.brokers))?;
    Ok(())
}

async fn existing(config: &AppConfig, id: &str) -> anyhow::Result<VirtualKey> {
    read_all(config)
        .await?
        .remove(id)
        .with_context(|| format!("no key with id {id:?} (see `faregate keys list`)"))
}

/// Every key on the config topic, read to its end.
pub async fn read_all(config: &AppConfig) -> anyhow::Result<BTreeMap<String, VirtualKey>> {
    let keys = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
    let freshness = Arc::new(Freshness::default());
    let stop = CancellationToken::new();
    let sink = keys.clone();
    let follower = tokio::spawn(table::follow::<ConfigRecord, _>(
        config.kafka.clone(),
        // Read to its end and stop: a person waits on it.
        table::Lane::DecisionPath,
        config.kafka.topics.config.clone(),
        SchemaFamily::ConfigRecord,
        freshness.clone(),
        move |topic_key, record| {
            let mut keys = sink.lock().unwrap_or_else(|e| e.into_inner());
            match record.map(|r| r.entity) {
                Some(ConfigEntity::VirtualKey(key)) => {
                    keys.insert(key.key_id.clone(), key);
                }
                Some(_) => {}
                None => {
                    if let Some(id) = topic_key.strip_prefix("key/") {
                        keys.remove(id);
                    }
                }
            }
        },
        stop.clone(),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !freshness.caught_up() {
        if follower.is_finished() || tokio::time::Instant::now() > deadline {
            stop.cancel();
            bail!(
                "could not read topic {} at {} to its end within 30 s",
                config.kafka.topics.config,
                config.kafka.brokers
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    let _ = follower.await;
    let keys = keys.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(keys)
}
