//! The anchor: `pgbench` TPC-B-like on the same PostgreSQL, in a schema of its own in the run's
//! database, with the nodes' `synchronous_commit`.

use super::admin;
use std::time::Duration;
use tokio::process::Command;

/// pgbench's scale: 64 branches, 6.4 million accounts.
const SCALE: &str = "64";

/// A pgbench schema initialised once and run once per round.
pub struct Pgbench {
    database_url: String,
    schema: String,
    options: String,
}

impl Pgbench {
    /// `pgbench -i -s 64` in a fresh schema; `None` (with the reason printed) when pgbench is
    /// not installed or fails.
    pub async fn init(
        database_url: &str,
        synchronous_commit: &str,
    ) -> anyhow::Result<Option<Pgbench>> {
        let schema = format!(
            "bench_pgbench_{}",
            ulid::Ulid::new().to_string().to_lowercase()
        );
        admin(database_url, &format!("CREATE SCHEMA {schema}")).await?;
        let pgbench = Pgbench {
            database_url: database_url.to_string(),
            options: format!("-c search_path={schema} -c synchronous_commit={synchronous_commit}"),
            schema,
        };
        let initialised = Command::new("pgbench")
            .args(["-i", "-q", "-s", SCALE, database_url])
            .env("PGOPTIONS", &pgbench.options)
            .stdout(std::process::Stdio::null())
            .output()
            .await;
        match initialised {
            Ok(output) if output.status.success() => Ok(Some(pgbench)),
            Ok(output) => {
                println!(
                    "pgbench -i failed: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                );
                pgbench.drop_schema().await?;
                Ok(None)
            }
            Err(error) => {
                println!("pgbench not runnable ({error}); no anchor");
                pgbench.drop_schema().await?;
                Ok(None)
            }
        }
    }

    /// `pgbench -b tpcb-like -c <clients> -j 2 -M prepared -T <duration>`: transactions/s, or
    /// `None` when it failed.
    pub async fn run(&self, clients: usize, duration: Duration) -> Option<f64> {
        let output = Command::new("pgbench")
            .args(["-b", "tpcb-like", "-c", &clients.to_string(), "-j", "2"])
            .args([
                "-M",
                "prepared",
                "-T",
                &duration.as_secs().max(1).to_string(),
            ])
            .arg(&self.database_url)
            .env("PGOPTIONS", &self.options)
            .output()
            .await
            .ok()?;
        let tps = parse_tps(&String::from_utf8_lossy(&output.stdout));
        if tps.is_none() {
            println!(
                "pgbench run failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        tps
    }

    pub async fn drop_schema(self) -> anyhow::Result<()> {
        admin(
            &self.database_url,
            &format!("DROP SCHEMA {} CASCADE", self.schema),
        )
        .await
    }
}

/// The transactions/s of pgbench's report (`tps = 1234.56 (without initial connection time)`).
pub fn parse_tps(stdout: &str) -> Option<f64> {
    stdout
        .lines()
        .find(|line| line.starts_with("tps = "))
        .and_then(|line| line.split_whitespace().nth(2))
        .and_then(|value| value.parse::<f64>().ok())
}

/// `SHOW synchronous_commit` on the database the nodes use.
pub async fn synchronous_commit(database_url: &str) -> anyhow::Result<String> {
    use sqlx::Connection;
    let mut connection = sqlx::postgres::PgConnection::connect(database_url).await?;
    let value: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&mut connection)
        .await?;
    connection.close().await.ok();
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tps_is_read_from_pgbench_15s_report() {
        let report = "transaction type: <builtin: TPC-B (sort of)>\nscaling factor: 64\n\
                      number of clients: 64\nlatency average = 41.2 ms\n\
                      initial connection time = 80.1 ms\n\
                      tps = 1553.402117 (without initial connection time)\n";
        assert_eq!(parse_tps(report), Some(1553.402117));
        assert_eq!(parse_tps("pgbench: error: connection failed"), None);
    }
}
