//! The `bulkhead` command line: the daemon (no subcommand), and
//! `bulkhead config default` / `bulkhead config check FILE`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, DEFAULT_CONFIG_PATH, LogFormat};
use crate::{Error, Result, daemon};

#[derive(Debug, Parser)]
#[command(
    name = "bulkhead",
    version,
    args_override_self = true,
    about = "A Kubernetes container runtime: CRI v1 on a unix socket"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file; when not given, /etc/bulkhead/config.toml if it exists, else the embedded defaults.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory for durable state [default: /var/lib/bulkhead].
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Directory for state that does not outlive a reboot [default: /run/bulkhead].
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
    /// The CRI unix socket [default: /run/bulkhead/bulkhead.sock].
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Log level or tracing filter [default: info].
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Log format on stderr [default: text].
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Serve Prometheus metrics on this host:port (GET /metrics) [default: off].
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print or validate configuration files.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigAction {
    /// Print the full default configuration, with a comment per key.
    Default,
    /// Validate a configuration file; exit status 0 when it is valid.
    Check { file: PathBuf },
}

impl Cli {
    /// The configuration in force: embedded defaults, then the file, then flags.
    fn effective_config(&self) -> Result<(Config, Option<PathBuf>)> {
        let (path, explicit) = match &self.config {
            Some(path) => (path.clone(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        let (mut config, read) = Config::load(&path, explicit)?;
        let mut flagged = false;
        for (flag, target) in
            [(&self.root, &mut config.root), (&self.state, &mut config.state), (&self.socket, &mut config.socket)]
        {
            if let Some(value) = flag {
                *target = value.clone();
                flagged = true;
            }
        }
        if let Some(level) = &self.log_level {
            config.log.level = level.clone();
            flagged = true;
        }
        if let Some(format) = self.log_format {
            config.log.format = format;
        }
        if let Some(address) = &self.metrics_addr {
            config.metrics.address = address.clone();
            flagged = true;
        }
        if flagged {
            config.validate(Path::new("command-line flags")).map_err(name_flag)?;
        }
        Ok((config, read.then_some(path)))
    }
}

/// Names the flag, not the config key, when a flag's value is refused.
fn name_flag(e: Error) -> Error {
    match e {
        Error::Config { origin, key, message } => {
            let flag = match key.as_str() {
                "root" => "--root",
                "state" => "--state",
                "socket" => "--socket",
                "log.level" => "--log-level",
                "metrics.address" => "--metrics-addr",
                _ => return Error::Config { origin, key, message },
            };
            Error::Config { origin, key: format!("{key}` (flag `{flag}"), message }
        }
        e => e,
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::builder()
        .parse(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).init(),
    }
}

fn serve(cli: &Cli) -> Result<()> {
    let (config, file) = cli.effective_config()?;
    daemon::check_root()?;
    init_logging(&config);
    match &file {
        Some(path) => tracing::info!(config = %path.display(), "configuration read"),
        None => tracing::info!("no config file; using the embedded defaults"),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bulkhead")
        .build()
        .map_err(crate::Error::io("start the async runtime", "tokio"))?;
    let grace = std::time::Duration::from_secs(config.shutdown_timeout_seconds);
    let outcome = runtime.block_on(daemon::run(config, file));
    // Blocking tasks (disk writes) still running get the same grace, no more.
    runtime.shutdown_timeout(grace);
    outcome
}

/// Writes to stdout; a reader that went away is not an error.
fn emit(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

/// Entry point of the `bulkhead` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match &cli.command {
        None => serve(&cli),
        Some(Command::Config { action: ConfigAction::Default }) => {
            emit(&Config::default().render_commented());
            Ok(())
        }
        Some(Command::Config { action: ConfigAction::Check { file } }) => {
            Config::load(file, true).map(|_| emit(&format!("{}: valid\n", file.display())))
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bulkhead: error: {e}");
            ExitCode::FAILURE
        }
    }
}
