//! The `faregate` command: one binary with a subcommand per service (`ingress`, `processor`,
//! `budget`), all of them in one process (`up`), and the admin commands (`schema`, `topics`,
//! `config`, `avro`).
//!
//! Order of work in `main`: parse arguments -> load and validate configuration -> initialise
//! telemetry -> run the command -> flush telemetry. Errors print as one line to stderr with a
//! non-zero exit code.

pub mod app_config;
pub mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser;

pub use app_config::AppConfig;

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.downcast_ref::<commands::Blind>().is_some() => {
            eprintln!("{error}");
            ExitCode::from(2)
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
