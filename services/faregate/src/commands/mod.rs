//! The implementation of each subcommand.

mod admin;
mod prices;
mod services;

use anyhow::Context as _;

use crate::AppConfig;
use crate::cli::{Cli, Command};
use faregate_core::config::load_from_process_env;

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config: AppConfig = load_from_process_env(cli.config.as_deref()).context("loading configuration")?;
    match cli.command {
        Command::Up => services::up(config).await,
        Command::Ingress => services::single(config, services::Service::Ingress).await,
        Command::Processor => services::single(config, services::Service::Processor).await,
        Command::Budget => services::single(config, services::Service::Budget).await,
        Command::Schema(command) => admin::schema(&config, command).await,
        Command::Topics(command) => admin::topics(&config, command).await,
        Command::Config(command) => admin::config(&config, command),
        Command::Avro(command) => admin::avro(command),
        Command::Prices(command) => prices::prices(&config, command),
        Command::Reprice { from, to, dry_run } => prices::reprice(&config, from, to, dry_run).await,
    }
}
