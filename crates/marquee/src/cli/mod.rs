//! The command line: one module per subcommand; `main` only dispatches.

pub mod config;
pub mod gateway;
pub mod keys;
pub mod node;
pub mod tools;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

/// Marquee: an open live-events platform. Organizers put on events; fans find them, buy seats
/// fairly, watch seat maps change live, and watch the show.
#[derive(Debug, Parser)]
#[command(
    name = "marquee",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Log format: `auto` (pretty on a terminal, JSON otherwise), `json` or `pretty`.
    #[arg(long, env = "MARQUEE_LOG_FORMAT", default_value = "auto", global = true,
          value_parser = ["auto", "json", "pretty"])]
    pub log_format: String,

    /// Which logs to keep, in RUST_LOG syntax.
    #[arg(
        long,
        env = "MARQUEE_LOG",
        default_value = "info,sqlx=warn,tower_http=info,tantivy=warn",
        global = true
    )]
    pub log_filter: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node of the platform.
    Serve(node::NodeFlags),
    /// Run a node on a data dir seeded with demo venues, events and accounts.
    Demo(node::NodeFlags),
    /// Run the gateway: a reverse proxy in front of many nodes (TLS, JWT and roles at the
    /// edge, rate limits, load balancing, health checks, retries).
    Gateway(gateway::GatewayArgs),
    /// A node's configuration: check it and print what takes effect.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Administrative tasks that are never exposed over HTTP.
    #[command(subcommand)]
    Admin(tools::AdminCommand),
    /// The search index of a data dir.
    #[command(subcommand)]
    Search(tools::SearchCommand),
    /// The jobs queue (e-mail, webhooks, reminders): list, inspect, replay and drop dead
    /// letters, and see each queue's depth.
    Jobs(tools::JobsArgs),
    /// The cluster's signing keys (access tokens, ticket codes, waiting-room passes, playback):
    /// list them, rotate one purpose.
    Keys(keys::KeysArgs),
}

/// `--config`: the node's `marquee.toml`.
#[derive(Debug, Clone, Args)]
pub struct ConfigFile {
    /// A TOML configuration file (see marquee.example.toml); variables and flags override it.
    #[arg(long = "config", env = "MARQUEE_CONFIG", global = true)]
    file: Option<PathBuf>,
}

impl ConfigFile {
    pub fn path(&self) -> Option<PathBuf> {
        self.file.clone()
    }
}

pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw).map_err(|error| format!("{error} (try `90s`, `10m`, `1h`)"))
}

pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(flags) => node::serve(flags).await,
        Command::Demo(flags) => node::demo(flags).await,
        Command::Gateway(args) => gateway::gateway(args).await,
        Command::Config(command) => config::run(command),
        Command::Admin(tools::AdminCommand::Create(args)) => tools::create_admin(args).await,
        Command::Search(tools::SearchCommand::Reindex(args)) => tools::reindex(args).await,
        Command::Jobs(args) => tools::jobs_command(args).await,
        Command::Keys(args) => keys::run(args).await,
    }
}
