//! `recap`: open a time-boxed, cgroup-scoped eBPF window on a workload.
//!
//! Exit codes: 0 the window ran (completed, interrupted, or its target exited: the summary
//! says which); 1 it could not run (bad target, no privileges, kernel refused); 2 bad usage.

use clap::Parser;
use recap_agent::cli::{self, Cli, Command};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The agent logs what it does (its audit lines among it); a one-shot command only warns.
    let default_level = match cli.command {
        Command::Agent(_) => "info",
        _ => "warn",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
        .format_target(false)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("recap: error: starting the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Window(command) => cli::window::run(*command).await,
            Command::Agent(args) => cli::agent::run(*args).await,
            Command::Fleet(command) => cli::fleet::run(*command).await,
            Command::CapsuleImage(args) => cli::capsule_image::run(args).await,
            Command::Families(args) => cli::print_families(&args),
            Command::MetricsCatalog => {
                print!("{}", recap_agent::export::catalog::markdown());
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("recap: error: {e:#}");
            let usage = e.downcast_ref::<cli::UsageError>().is_some();
            std::process::ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}
