//! `marquee keys list` and `marquee keys rotate`: the cluster's signing keys in the catalog
//! database. Secrets are never printed.

use super::tools::StoreFlags;
use anyhow::Context;
use clap::{Args, Subcommand};
use marquee::keys::DEFAULT_RELOAD_INTERVAL;
use marquee_auth::Purpose;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
    #[command(flatten)]
    store: StoreFlags,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Every key: purpose, id, derivation, when it was made, signs from and retires.
    List,
    /// Add a key to one purpose; nodes sign with it after the propagation delay, and the
    /// purpose's previous keys stop verifying after the grace period (ticket codes' never do:
    /// a sold ticket must always check in).
    Rotate {
        /// access-tokens, ticket-codes, queue-passes or playback.
        #[arg(long, value_parser = parse_purpose)]
        purpose: Purpose,
        /// How long the previous keys keep verifying, e.g. `7d`, `12h`.
        #[arg(long, default_value = "7d", value_parser = super::parse_duration)]
        grace: Duration,
        /// How long before nodes sign with the new key; more than a node's 15 s reload, so
        /// every node verifies it before any node signs with it.
        #[arg(long, default_value = "60s", value_parser = super::parse_duration)]
        propagation_delay: Duration,
    },
}

fn parse_purpose(raw: &str) -> Result<Purpose, String> {
    raw.parse()
        .map_err(|error: marquee_auth::KeyringError| error.to_string())
}

fn when(millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(millis)
        .map(|at| at.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| millis.to_string())
}

pub async fn run(args: KeysArgs) -> anyhow::Result<()> {
    let config = args.store.server_config()?;
    if config.jwt_secret.is_some() {
        eprintln!(
            "note: this node is configured with --jwt-secret, which signs with that secret, \
             not with the keyring below"
        );
    }
    let store = marquee::server::open_sql_store(&config).await?;
    match args.command {
        KeysCommand::List => {
            let keys = store
                .signing_keys()
                .await
                .context("reading the signing keys")?;
            if keys.is_empty() {
                println!("No signing keys yet: a node makes them when it first starts.");
            }
            println!(
                "{:<14} {:<5} {:<12} {:<24} {:<24} RETIRES",
                "PURPOSE", "ID", "DERIVATION", "CREATED", "SIGNS FROM"
            );
            for key in keys {
                println!(
                    "{:<14} {:<5} {:<12} {:<24} {:<24} {}",
                    key.purpose,
                    key.id,
                    key.derivation,
                    when(key.created_at),
                    when(key.active_from),
                    key.retire_at.map(when).unwrap_or_else(|| "never".into())
                );
            }
        }
        KeysCommand::Rotate {
            purpose,
            grace,
            propagation_delay,
        } => {
            if propagation_delay <= DEFAULT_RELOAD_INTERVAL {
                eprintln!(
                    "warning: a propagation delay under the nodes' {} s reload lets a node sign \
                     with the key before its peers load it (they reload on an unknown key id, \
                     once a second at most)",
                    DEFAULT_RELOAD_INTERVAL.as_secs()
                );
            }
            let rotation = marquee::keys::rotate(&store, purpose, grace, propagation_delay).await?;
            println!(
                "Added {} key {}; nodes sign with it from {}.",
                rotation.purpose,
                rotation.id,
                when(rotation.active_from)
            );
            for (id, at) in &rotation.retired {
                println!("Key {id} stops verifying at {}.", when(*at));
            }
            if !purpose.retires_old_keys() {
                println!("Older {purpose} keys are kept: tickets already sold still check in.");
            }
        }
    }
    store.close().await;
    Ok(())
}
