//! `faregate prices` and `faregate reprice`.

use std::path::Path;

use anyhow::{Context as _, bail};

use crate::AppConfig;
use crate::cli::PricesCommand;
use faregate_core::avro::SchemaFamily;
use faregate_core::event::SpendAggregate;
use faregate_core::kafka::RecordProducer;
use faregate_pricing::{PriceCatalog, import_litellm};
use faregate_processor::{ClickHouseLedger, Ledger};

fn load(config: &AppConfig, dir: Option<&Path>) -> anyhow::Result<(String, PriceCatalog)> {
    let dir = dir.map(Path::to_path_buf).or_else(|| {
        (!config.processor.prices_dir.is_empty()).then(|| config.processor.prices_dir.clone().into())
    });
    match dir {
        Some(dir) => {
            let catalog = PriceCatalog::load_dir(&dir)?;
            Ok((dir.display().to_string(), catalog))
        }
        None => Ok(("the compiled-in catalog".into(), PriceCatalog::embedded()?)),
    }
}

pub fn prices(config: &AppConfig, command: PricesCommand) -> anyhow::Result<()> {
    match command {
        PricesCommand::Check { dir } => {
            let (source, catalog) = load(config, dir.as_deref())?;
            let providers: Vec<String> = catalog.providers().map(str::to_string).collect();
            for provider in &providers {
                let models: Vec<&str> = catalog.models(provider).collect();
                println!("{provider}: {} models: {}", models.len(), models.join(", "));
            }
            println!("{source} is valid");
        }
        PricesCommand::Import { litellm, effective_from, out, force } => {
            let json = std::fs::read_to_string(&litellm)
                .with_context(|| format!("reading {}", litellm.display()))?;
            let import = import_litellm(&json, effective_from)?;
            // The result must load as a catalog before anything is written.
            let sources = import.sources();
            PriceCatalog::from_sources(sources.iter().map(|(name, text)| (name.as_str(), *text)))
                .context("the imported catalog does not validate")?;
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            for (name, _) in &sources {
                let path = out.join(name);
                if path.exists() && !force {
                    bail!("{} exists; pass --force to overwrite it", path.display());
                }
            }
            for (name, text) in &sources {
                std::fs::write(out.join(name), text).with_context(|| format!("writing {name}"))?;
            }
            println!(
                "imported {} models into {} file(s) in {}",
                import.imported,
                sources.len(),
                out.display()
            );
            for (kind, count) in import.skipped_by_kind() {
                println!("skipped {count} entries: {kind}");
            }
            for (field, count) in &import.ignored_fields {
                println!("not imported: {field} (on {count} models)");
            }
        }
    }
    Ok(())
}

pub async fn reprice(
    config: &AppConfig,
    from: chrono::NaiveDate,
    to: chrono::NaiveDate,
    dry_run: bool,
) -> anyhow::Result<()> {
    let (source, catalog) = load(config, None)?;
    let client = config.clickhouse.client();
    let report = faregate_processor::reprice::reprice(&client, &catalog, from, to, dry_run)
        .await
        .with_context(|| format!("re-pricing {from}..{to} at {}", config.clickhouse.url))?;
    println!(
        "{} {} day(s) with {source}: {} rows, {} changed, {} newly priced, {} still unpriced; total ${} -> ${}",
        if dry_run { "would re-price" } else { "re-priced" },
        report.days,
        report.rows,
        report.changed,
        report.newly_priced,
        report.unpriced,
        report.cost_before.0.normalize(),
        report.cost_after.0.normalize(),
    );
    if dry_run || report.buckets.is_empty() {
        return Ok(());
    }
    let ledger = ClickHouseLedger::new(client);
    let totals = ledger.totals(&report.buckets).await?;
    let producer: RecordProducer<SpendAggregate> = RecordProducer::new(
        &config.kafka,
        "reprice",
        SchemaFamily::SpendAggregate,
        &config.kafka.topics.spend,
    )
    .await?;
    let now = faregate_core::time::now_micros();
    // On the org's partition, like the processor: one budget instance owns each org.
    let partitions = producer.partition_count().await?;
    for total in &totals {
        let partition = faregate_core::kafka::partition_for(&total.key.subject.org, partitions);
        producer.send_to(partition, &total.key.topic_key(), &total.to_aggregate(now)).await?;
    }
    println!("republished {} spend total(s) to {}", totals.len(), config.kafka.topics.spend);
    Ok(())
}
