//! `marquee`: the command line. Each subcommand is a module of `cli/`; settings come from a
//! `marquee.toml` (`--config`), `MARQUEE_*` variables and flags, in that order of precedence.

mod cli;

use clap::Parser;
use marquee_telemetry::LogFormat;

/// mimalloc instead of glibc's malloc: the request path allocates many small, short-lived
/// buffers across threads, and a profile of the booking benchmark (`marquee-bench booking`)
/// showed about a tenth of all CPU time in glibc's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Raises the soft limit on open files to the hard one, as Go's runtime does: a node holds a
/// descriptor per push connection and per cached live segment (sent with `sendfile`), and
/// many systems start processes at a soft limit of 1,024 under a far higher hard one.
fn raise_open_files_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => tracing::debug!(limit = ?limit.maximum, "open files limit raised"),
            Err(error) => tracing::warn!(%error, "the open files limit could not be raised"),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    let format = LogFormat::parse(&cli.log_format).unwrap_or(LogFormat::Auto);
    marquee_telemetry::init_logging(format, &cli.log_filter)?;
    raise_open_files_limit();
    cli::run(cli.command).await
}
