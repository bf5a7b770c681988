//! `faregate budgets set | list | rm | apply`: budgets on the compacted config topic, where the
//! budget service (and its admin API) read them. Every budget is validated before it is written;
//! an invalid one is refused with the field at fault.

use std::time::Duration;

use anyhow::{Context as _, bail};
use chrono::Utc;

use crate::AppConfig;
use crate::cli::{BudgetSetArgs, BudgetsCommand};
use faregate_budget::spec::{ActionSpec, BudgetFile, BudgetSpec, Money, PeriodSpec, ScopeSpec, WindowSpec};
use faregate_core::avro::SchemaFamily;
use faregate_core::event::{Budget, ConfigEntity, ConfigRecord};
use faregate_core::kafka::RecordProducer;

pub async fn budgets(config: &AppConfig, command: BudgetsCommand) -> anyhow::Result<()> {
    match command {
        BudgetsCommand::Set(args) => {
            let budget = spec_of(*args)?.to_budget().map_err(|e| anyhow::anyhow!("invalid budget: {e}"))?;
            let id = budget.id.clone();
            let producer = producer(config).await?;
            write(config, &producer, budget).await?;
            println!("budget {id} set");
            Ok(())
        }
        BudgetsCommand::List { yaml } => {
            let budgets = faregate_budget::topic::read_budgets(&config.kafka, Duration::from_secs(30))
                .await
                .with_context(|| {
                    format!("reading {} at {}", config.kafka.topics.config, config.kafka.brokers)
                })?;
            if yaml {
                let file = BudgetFile { budgets: budgets.values().map(BudgetSpec::from_budget).collect() };
                print!("{}", file.to_yaml());
                return Ok(());
            }
            println!(
                "{:<20} {:<40} {:<22} {:>12} {:<10} owner",
                "ID", "SCOPE", "WINDOW", "LIMIT USD", "ACTION"
            );
            for b in budgets.values() {
                let w = &b.window;
                let period = match w.days {
                    Some(n) => format!("{n} days"),
                    None => format!("{:?}", w.period).to_lowercase(),
                };
                let window =
                    if w.rolling { format!("rolling {period}") } else { format!("{period} {}", w.time_zone) };
                println!(
                    "{:<20} {:<40} {:<22} {:>12} {:<10} {}",
                    b.id,
                    b.scope.key(),
                    window,
                    b.limit_usd.0.normalize(),
                    format!("{:?}", b.action).to_lowercase(),
                    b.owner.as_deref().unwrap_or("-")
                );
            }
            Ok(())
        }
        BudgetsCommand::Rm { id } => {
            let producer = producer(config).await?;
            producer
                .send_tombstone(&format!("budget/{id}"))
                .await
                .with_context(|| format!("writing to {}", config.kafka.topics.config))?;
            println!("budget {id} removed");
            Ok(())
        }
        BudgetsCommand::Apply { file, dry_run } => {
            let text =
                std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let budgets =
                BudgetFile::parse_yaml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            if dry_run {
                println!("{} budgets valid", budgets.len());
                return Ok(());
            }
            let producer = producer(config).await?;
            for budget in budgets {
                let id = budget.id.clone();
                write(config, &producer, budget).await?;
                println!("budget {id} set");
            }
            Ok(())
        }
    }
}

fn spec_of(a: BudgetSetArgs) -> anyhow::Result<BudgetSpec> {
    let period: PeriodSpec =
        serde_json::from_value(serde_json::Value::String(a.period.clone())).map_err(|_| {
            anyhow::anyhow!("--period {:?}: use hour, day, week, month, quarter or days", a.period)
        })?;
    let action: ActionSpec = serde_json::from_value(serde_json::Value::String(a.action.clone()))
        .map_err(|_| anyhow::anyhow!("--action {:?}: use block, downgrade or alert_only", a.action))?;
    let limit: Money = a.limit.parse().map_err(|e: String| anyhow::anyhow!("--limit: {e}"))?;
    if a.org.trim().is_empty() {
        bail!("--org must not be empty");
    }
    Ok(BudgetSpec {
        id: a.id,
        name: a.name,
        scope: ScopeSpec {
            org: a.org,
            team: a.team,
            user: a.user,
            key: a.key,
            project: a.project,
            model: a.model,
            tool: a.tool,
        },
        window: WindowSpec { period, days: a.days, rolling: a.rolling, time_zone: a.tz },
        limit_usd: limit,
        action,
        downgrade_to: a.downgrade_to,
        thresholds_pct: (!a.thresholds.is_empty()).then_some(a.thresholds),
        owner: a.owner,
        notify: a.notify,
    })
}

async fn producer(config: &AppConfig) -> anyhow::Result<RecordProducer<ConfigRecord>> {
    RecordProducer::new(
        &config.kafka,
        "faregate-budgets",
        SchemaFamily::ConfigRecord,
        &config.kafka.topics.config,
    )
    .await
    .context("connecting to the config topic")
}

async fn write(
    config: &AppConfig,
    producer: &RecordProducer<ConfigRecord>,
    budget: Budget,
) -> anyhow::Result<()> {
    let record = ConfigRecord {
        updated_at: Utc::now(),
        updated_by: std::env::var("USER").ok(),
        entity: ConfigEntity::Budget(budget),
    };
    producer
        .send(&record.topic_key(), &record)
        .await
        .with_context(|| format!("writing to {} at {}", config.kafka.topics.config, config.kafka.brokers))?;
    Ok(())
}
