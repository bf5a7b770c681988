//! Admin commands: schema, topics, config and Avro.

use anyhow::Context as _;

use crate::AppConfig;
use crate::cli::{AvroCommand, ConfigCommand, SchemaCommand, TopicsCommand};
use faregate_core::avro::schemas;
use faregate_core::clickhouse::migrations::{self, Topology};
use faregate_core::kafka::ensure_topics;

pub async fn schema(config: &AppConfig, command: SchemaCommand) -> anyhow::Result<()> {
    match command {
        SchemaCommand::Apply => {
            let report = migrations::apply(&config.clickhouse)
                .await
                .with_context(|| format!("applying migrations at {}", config.clickhouse.url))?;
            println!(
                "database {}: applied {:?}, already applied {:?}",
                config.clickhouse.database, report.applied, report.already_applied
            );
            Ok(())
        }
        SchemaCommand::Render { cluster } => {
            let topology = match cluster {
                Some(name) => Topology::Cluster { name },
                None => Topology::SingleNode,
            };
            for migration in migrations::all()? {
                println!("-- {:04}_{}", migration.version, migration.name);
                for statement in migration.statements(&topology).map_err(anyhow::Error::msg)? {
                    println!("{statement};\n");
                }
            }
            Ok(())
        }
    }
}

pub async fn topics(config: &AppConfig, command: TopicsCommand) -> anyhow::Result<()> {
    let specs = config.kafka.topic_specs();
    match command {
        TopicsCommand::Create => {
            let created = ensure_topics(&config.kafka, &specs).await?;
            println!("created {} topic(s): {}", created.len(), created.join(", "));
        }
        TopicsCommand::Show => {
            for spec in specs {
                let configs: Vec<String> = spec.configs().iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!(
                    "{}\tpartitions={}\treplication={}\t{}",
                    spec.name,
                    spec.partitions,
                    spec.replication,
                    configs.join(" ")
                );
            }
        }
    }
    Ok(())
}

pub fn config(config: &AppConfig, command: ConfigCommand) -> anyhow::Result<()> {
    match command {
        ConfigCommand::Show => print!("{}", toml::to_string_pretty(config)?),
        ConfigCommand::Check => println!("configuration is valid"),
    }
    Ok(())
}

pub fn avro(command: AvroCommand) -> anyhow::Result<()> {
    match command {
        AvroCommand::Ids => {
            for schema in schemas::all() {
                println!("{}\t{}\tv{}", schema.local_id, schema.file_name, schema.version);
            }
        }
    }
    Ok(())
}
