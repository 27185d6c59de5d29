//! The operators' commands that work on a node's stores without serving: `admin create`,
//! `search reindex` and `jobs …`. They read the node's configuration (file, variables, flags)
//! for where its stores are, exactly as `serve` does.

use super::node::DatabaseFlags;
use super::ConfigFile;
use anyhow::Context;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use marquee::settings::NodeSettings;
use marquee::ServerConfig;
use marquee_domain::{DisplayName, Email, Password, Role, User, UserId};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;

/// Where a node keeps its data: the part of its configuration these commands need.
#[derive(Debug, Args, Serialize)]
pub struct StoreFlags {
    #[command(flatten)]
    #[serde(skip)]
    config: ConfigFile,
    /// The node's data dir (embedded database, jobs, search index) [default: marquee-data].
    #[arg(long, env = "MARQUEE_DATA_DIR", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    database: DatabaseFlags,
}

impl StoreFlags {
    pub(super) fn server_config(&self) -> anyhow::Result<ServerConfig> {
        let mut settings = NodeSettings::load(self.config.path().as_deref(), self)
            .context("the node's configuration")?;
        // Only the stores are opened: no listener is bound.
        settings.listen = ([127, 0, 0, 1], 0).into();
        Ok(settings.into_server_config())
    }
}

#[derive(Debug, Args)]
pub struct JobsArgs {
    #[command(subcommand)]
    command: JobsCommand,
    #[command(flatten)]
    store: StoreFlags,
}

#[derive(Debug, Subcommand)]
enum JobsCommand {
    /// Jobs, newest first.
    List {
        #[arg(long)]
        queue: Option<String>,
        /// ready, running, dead or done.
        #[arg(long, value_parser = parse_job_state)]
        state: Option<marquee_jobs::JobState>,
        /// Only jobs older than this id (the last id of the previous page).
        #[arg(long)]
        before: Option<i64>,
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
    /// One job in full, as JSON.
    Inspect { id: i64 },
    /// Run dead letters again from their first attempt.
    Replay {
        ids: Vec<i64>,
        /// Every dead letter of this queue, oldest first.
        #[arg(long, conflicts_with = "ids")]
        all: Option<String>,
    },
    /// Delete dead letters.
    Drop {
        #[arg(required = true)]
        ids: Vec<i64>,
    },
    /// Each queue's due, scheduled, running and dead jobs, and the oldest due job's wait.
    Stats,
}

fn parse_job_state(raw: &str) -> Result<marquee_jobs::JobState, String> {
    marquee_jobs::JobState::parse(raw)
        .ok_or_else(|| "expected ready, running, dead or done".to_string())
}

pub async fn jobs_command(args: JobsArgs) -> anyhow::Result<()> {
    use marquee::jobs_cli::JobsAction;
    let config = args.store.server_config()?;
    let url = config.jobs_url();
    if url.starts_with("sqlite:") && !config.data_dir.join("jobs.db").exists() {
        anyhow::bail!(
            "no jobs database at {} (is --data-dir the node's?)",
            config.data_dir.join("jobs.db").display()
        );
    }
    let jobs = marquee_jobs::SqlJobQueue::connect(&url, 2)
        .await
        .with_context(|| {
            format!(
                "opening the jobs queue at {}",
                marquee_store::redact_url(&url)
            )
        })?;
    let action = match args.command {
        JobsCommand::List {
            queue,
            state,
            before,
            limit,
        } => JobsAction::List {
            queue,
            state,
            before,
            limit,
        },
        JobsCommand::Inspect { id } => JobsAction::Inspect(id),
        JobsCommand::Replay { ids, all } => {
            if ids.is_empty() && all.is_none() {
                anyhow::bail!("name the jobs to replay, or --all <queue>");
            }
            JobsAction::Replay { ids, all_of: all }
        }
        JobsCommand::Drop { ids } => JobsAction::Drop(ids),
        JobsCommand::Stats => JobsAction::Stats,
    };
    let result = marquee::jobs_cli::run(&jobs, action).await;
    jobs.close().await;
    print!("{}", result?);
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum SearchCommand {
    /// Rebuild the search index from the store (stop the node on this data dir first; a
    /// running node resumes from its own index and needs no rebuild).
    Reindex(ReindexArgs),
}

#[derive(Debug, Args)]
pub struct ReindexArgs {
    #[command(flatten)]
    store: StoreFlags,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create an admin account (admins are never made over HTTP).
    Create(AdminCreateArgs),
}

#[derive(Debug, Args)]
pub struct AdminCreateArgs {
    #[arg(long)]
    email: String,
    /// At least 8 characters. Prefer MARQUEE_ADMIN_PASSWORD so it stays out of shell history.
    #[arg(long, env = "MARQUEE_ADMIN_PASSWORD", hide_env_values = true)]
    password: String,
    #[arg(long, default_value = "Administrator")]
    name: String,
    #[command(flatten)]
    store: StoreFlags,
}

pub async fn reindex(args: ReindexArgs) -> anyhow::Result<()> {
    let config = args.store.server_config()?;
    let store = marquee::server::open_store(&config).await?;
    let index = Arc::new(marquee::server::open_search_index(&config)?);
    let total = store
        .count_events(Some(marquee_domain::EventStatus::Published))
        .await?;
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} events  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = std::time::Instant::now();
    let (count, position) =
        marquee_search::rebuild(&index, store.as_ref(), &|done| bar.set_position(done)).await?;
    bar.finish();
    println!(
        "Indexed {count} published events up to outbox position {position} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

pub async fn create_admin(args: AdminCreateArgs) -> anyhow::Result<()> {
    let email =
        Email::parse(&args.email).map_err(|message| anyhow::anyhow!("--email {message}"))?;
    let password = Password::parse(args.password)
        .map_err(|message| anyhow::anyhow!("--password {message}"))?;
    let name =
        DisplayName::parse(&args.name).map_err(|message| anyhow::anyhow!("--name {message}"))?;
    let config = args.store.server_config()?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let store = marquee::server::open_store(&config).await?;
    let user = User {
        id: UserId::generate(),
        email,
        name,
        role: Role::Admin,
        created_at: marquee_domain::timestamp_now(),
    };
    let hash = marquee_auth::hash_password(password).await?;
    store
        .create_user(&user, &hash)
        .await
        .with_context(|| format!("creating admin {}", user.email.as_str()))?;
    println!("Created admin {} ({})", user.email.as_str(), user.id);
    Ok(())
}
