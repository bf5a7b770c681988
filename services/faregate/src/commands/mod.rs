//! The implementation of each subcommand.

mod admin;
mod budgets;
mod demo;
mod fake;
mod import;
mod keys;
mod me;
mod prices;
mod report;
mod services;
mod status;

pub use status::Blind;

use anyhow::Context as _;

use crate::AppConfig;
use crate::cli::{Cli, Command};
use faregate_core::config::load_from_process_env;

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config: AppConfig = load_from_process_env(cli.config.as_deref()).context("loading configuration")?;
    match cli.command {
        Command::Up(args) => services::up(config, args).await,
        Command::Ingress => services::single(config, services::Service::Ingress).await,
        Command::Processor => services::single(config, services::Service::Processor).await,
        Command::Budget => services::single(config, services::Service::Budget).await,
        Command::Schema(command) => admin::schema(&config, command).await,
        Command::Topics(command) => admin::topics(&config, command).await,
        Command::Config(command) => admin::config(&config, command),
        Command::Avro(command) => admin::avro(command),
        Command::Prices(command) => prices::prices(&config, command),
        Command::Reprice { from, to, dry_run } => prices::reprice(&config, from, to, dry_run).await,
        Command::Keys(command) => keys::keys(&config, command).await,
        Command::Budgets(command) => budgets::budgets(&config, command).await,
        Command::FakeUpstream { listen, stream_delay_ms } => {
            fake::fake_upstream(listen, stream_delay_ms).await
        }
        Command::Report(args) => report::report(&config, args).await,
        Command::Status(args) => status::status(&config, args).await,
        Command::Me(args) => me::me(args).await,
        Command::Import(command) => import::import(&config, command).await,
    }
}
