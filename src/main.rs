//! The `sluice` binary: CLI, wiring and the admin API.

mod admin;
mod api;
#[cfg(feature = "timer")]
mod schedule;
mod serve;
mod server;
mod test_rule;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice_connectors::{self as config, Validated};

/// sluice: a self-hosted event bus and trigger router.
#[derive(Parser)]
#[command(
    version,
    about,
    after_help = "Environment:\n  SLUICE_CONFIG      the configuration file when -c is not given\n  SLUICE_LOG         log level or filter (default: info; e.g. debug, sluice_connectors=debug)\n  SLUICE_LOG_FORMAT  `json` for JSON log lines (default: text)\n  ${NAME} in a configuration value is read from the environment too."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run sluice. Without a config file it runs the embedded default: HTTP ingest
    /// on 127.0.0.1:8080, data in ./sluice-data, no rules.
    Serve {
        /// Configuration file.
        #[arg(short, long, env = "SLUICE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Check a configuration file without starting anything; exit 1 listing every error.
    Validate {
        /// The configuration file to check.
        #[arg(short, long, env = "SLUICE_CONFIG")]
        config: PathBuf,
    },
    /// Dry-run one rule: does each event match, which clause failed if not, and
    /// what would be delivered. Exit 0 when it ran, 1 on a config or input error.
    TestRule {
        /// The configuration file that holds the rule.
        #[arg(short, long, env = "SLUICE_CONFIG")]
        config: PathBuf,
        /// The rule's name.
        #[arg(long)]
        rule: String,
        /// A file with one event (CloudEvents JSON), a JSON array of events, or JSON
        /// lines; `-` reads standard input.
        #[arg(long)]
        event: String,
        #[arg(long, value_enum, default_value = "text")]
        format: test_rule::Format,
    },
    /// Print the JSON Schema of the configuration file.
    Schema,
    /// Print the next fire instants of a timer schedule (RFC 3339 with the zone's
    /// offset, one a line), daylight-saving transitions included.
    #[cfg(feature = "timer")]
    Schedule {
        /// A cron expression (6 fields, seconds first, or 5), `@every 30s`, `@daily`...
        #[arg(long)]
        cron: String,
        /// IANA time zone the expression is read in.
        #[arg(long, default_value = "UTC")]
        tz: String,
        /// Start after this RFC 3339 instant (default: now).
        #[arg(long)]
        from: Option<String>,
        /// How many instants.
        #[arg(long, default_value_t = 10)]
        count: usize,
        #[arg(long, value_enum, default_value = "text")]
        format: schedule::Format,
    },
}

/// jemalloc: the event path allocates many small short-lived buffers, and the
/// system allocator's locking showed up in profiles.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The configuration `sluice serve` uses when given no file.
pub const EMBEDDED_DEFAULT: &str = include_str!("../schemas/examples/default.yaml");

fn read_config(path: &std::path::Path) -> Result<Validated, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    config::load(&text).map_err(|errors| {
        errors
            .0
            .iter()
            .map(|e| format!("{}: {e}", path.display()))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&config::json_schema()).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        #[cfg(feature = "timer")]
        Command::Schedule {
            cron,
            tz,
            from,
            count,
            format,
        } => match schedule::run(&cron, &tz, from.as_deref(), count, format) {
            Ok(out) => {
                print!("{out}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::TestRule {
            config,
            rule,
            event,
            format,
        } => {
            let result = read_config(&config)
                .and_then(|c| test_rule::run(&c, &config, &rule, &event, format));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Validate { config } => match read_config(&config) {
            Ok(v) => {
                println!(
                    "{}: valid ({} sources, {} targets, {} rules)",
                    config.display(),
                    v.config.sources.len(),
                    v.config.targets.len(),
                    v.config.rules.len()
                );
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::FAILURE
            }
        },
        Command::Serve { config } => {
            let loaded = match &config {
                Some(path) => read_config(path),
                None => config::load(EMBEDDED_DEFAULT).map_err(|e| e.to_string()),
            };
            let config = match loaded {
                Ok(c) => c,
                Err(errors) => {
                    eprintln!("{errors}");
                    return ExitCode::FAILURE;
                }
            };
            serve::init_tracing();
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve::run(config)) {
                Ok(serve::Outcome::Stopped) => ExitCode::SUCCESS,
                Ok(serve::Outcome::Restart) => {
                    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
                    restart()
                }
                Err(e) => {
                    // Once, in the log (stderr), whatever its format.
                    tracing::error!(error = format!("{e:#}"), "sluice stopped.");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Run this program again in place, with the same arguments and environment
/// (after a store failure the disk recovered from; see `serve::Outcome`).
fn restart() -> ExitCode {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let exe = match std::env::current_exe() {
            Ok(exe) => exe,
            Err(e) => {
                tracing::error!(error = %e, "Cannot find this program to start it again.");
                return ExitCode::FAILURE;
            }
        };
        let e = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .exec();
        tracing::error!(error = %e, "Starting again failed.");
    }
    ExitCode::FAILURE
}
