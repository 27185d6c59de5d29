//! `marquee config check`: loads a node's configuration exactly as `serve` would (file, then
//! variables, then flags), refuses what `serve` would refuse, and prints the effective settings
//! as TOML with secrets redacted — what an operator diffs between nodes.

use super::node::NodeFlags;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print the effective settings (secrets redacted).
    Check(Box<NodeFlags>),
    /// Print the defaults as a complete `marquee.toml`.
    Defaults,
}

pub fn run(command: ConfigCommand) -> anyhow::Result<()> {
    match command {
        ConfigCommand::Check(flags) => {
            let settings = flags.settings()?;
            match flags.config.path() {
                Some(path) => eprintln!("{} is valid; the effective settings:", path.display()),
                None => eprintln!("no configuration file; the effective settings:"),
            }
            print!("{}", settings.redacted_toml()?);
            Ok(())
        }
        ConfigCommand::Defaults => {
            print!(
                "{}",
                marquee::settings::NodeSettings::default().redacted_toml()?
            );
            Ok(())
        }
    }
}
