//! `faregate up --demo`: Faregate with simulated traffic, for trying it out.
//!
//! Owns: virtual keys for a cast of simulated developers and agents ([`cast`]), written to the
//! config topic before the services start, with fresh secrets that never leave this process; a
//! small daily budget on one runaway agent loop (and an alert-only team budget); the traffic
//! generators, one task per simulated person, sending to this process's own ingress, which
//! forwards to the in-process fake provider (no real provider, no cost); and the live view
//! ([`view`]), which reads spend from ClickHouse through `faregate report`'s query, decisions
//! from the ingress's decisions API, and the gateway's refusals from the cast.
//!
//! Everything stops when the shutdown tree is cancelled (Ctrl-C): generators stop sending, the
//! view prints a last frame, and the services drain as usual. Demo traffic is ordinary traffic:
//! it is metered, priced (compiled-in catalog) and budgeted like any other.

mod cast;
mod view;

use anyhow::Context as _;
use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::AppConfig;
use faregate_core::avro::SchemaFamily;
use faregate_core::config::Secret;
use faregate_core::event::{ConfigEntity, ConfigRecord};
use faregate_core::kafka::RecordProducer;

/// The demo, set up and ready to run beside the services.
pub struct Demo {
    gateway: String,
    collector_token: String,
    clickhouse: faregate_core::clickhouse::ClickHouseConfig,
    people: Vec<cast::Person>,
}

/// Adjust the configuration for the demo before anything starts: logs down to warnings (the
/// live view owns stdout) and a collector token for the decisions API. (The ingress's port is
/// bound before the demo is set up, so `ingress.listen` names the real port even for port 0.)
pub fn prepare(config: &mut AppConfig) -> anyhow::Result<()> {
    if std::env::var_os("RUST_LOG").is_none() {
        config.telemetry.log_filter = "warn".into();
    }
    if config.ingress.collector_token.expose().is_empty() {
        config.ingress.collector_token = Secret::new(format!("demo-{}", uuid::Uuid::now_v7().simple()));
    }
    Ok(())
}

impl Demo {
    /// Write the cast's keys and the demo budgets to the config topic.
    pub async fn setup(config: &AppConfig) -> anyhow::Result<Demo> {
        let kafka = &config.kafka;
        let producer: RecordProducer<ConfigRecord> =
            RecordProducer::new(kafka, "demo", SchemaFamily::ConfigRecord, &kafka.topics.config).await?;
        let people = cast::people();
        let record =
            |entity| ConfigRecord { updated_at: Utc::now(), updated_by: Some("demo".into()), entity };
        for person in &people {
            let record = record(ConfigEntity::VirtualKey(person.key.clone()));
            producer.send(&record.topic_key(), &record).await.context("writing a demo key")?;
        }
        // What the runaway already spent today (an earlier demo run on this stack), so its
        // budget leaves it $5 and the block happens in this run too.
        let today = Utc::now().date_naive();
        let tomorrow = today.succ_opt().unwrap_or(today);
        let spent_today = super::report::fetch(
            &config.clickhouse,
            crate::cli::ReportDimension::User,
            today,
            tomorrow,
            Some("acme"),
        )
        .await
        .context("reading today's spend")?
        .into_iter()
        .filter(|row| row.value == cast::RUNAWAY_USER)
        .map(|row| row.cost_usd.0)
        .sum();
        for budget in cast::budgets(spent_today) {
            let record = record(ConfigEntity::Budget(budget));
            producer.send(&record.topic_key(), &record).await.context("writing a demo budget")?;
        }
        Ok(Demo {
            gateway: format!("http://{}", config.ingress.listen),
            collector_token: config.ingress.collector_token.expose().to_string(),
            clickhouse: config.clickhouse.clone(),
            people,
        })
    }

    /// Send the cast's traffic and show the live view until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let refusals = cast::Refusals::default();
        let mut generators = tokio::task::JoinSet::new();
        for person in self.people {
            let (client, gateway, stop) = (client.clone(), self.gateway.clone(), shutdown.clone());
            let refusals = refusals.clone();
            generators.spawn(async move { person.run(&client, &gateway, &refusals, stop).await });
        }
        let view = view::View::new(self.clickhouse, self.gateway, self.collector_token, client, refusals);
        view.run(shutdown).await;
        while generators.join_next().await.is_some() {}
        Ok(())
    }
}
