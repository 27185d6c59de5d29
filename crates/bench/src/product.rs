//! What the benchmarks run against: the product binary beside this one, and PostgreSQL
//! databases they make for themselves.

use anyhow::{bail, Context};
use sqlx::postgres::PgConnection;
use sqlx::Connection;
use std::path::PathBuf;

/// The `marquee` binary the multi-process benchmarks start as nodes: `MARQUEE_BIN`, or the one
/// built beside this binary (`cargo build --release -p marquee -p marquee-bench`). The bench
/// never builds it itself, so what is measured is exactly what was built.
pub fn marquee_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("MARQUEE_BIN") {
        return Ok(PathBuf::from(path));
    }
    let here = std::env::current_exe().context("locating the bench binary")?;
    let beside = here.with_file_name("marquee");
    if !beside.exists() {
        bail!(
            "{} not found: build the product beside the bench (`cargo build --release -p marquee -p marquee-bench`) or set MARQUEE_BIN",
            beside.display()
        );
    }
    Ok(beside)
}

/// A database a benchmark made for itself on the server it was pointed at, and drops when done.
///
/// Benchmarks create and drop schemas and tables by the dozen; pointed at a database they did not
/// make (an operator's `MARQUEE_DATABASE_URL`, say) they could damage it. So each run makes
/// `marquee_bench_<id>` and works only inside it, unless `--use-existing-database` says
/// explicitly that the given database is theirs to use.
#[derive(Debug)]
pub struct ScratchDatabase {
    /// The database the run works in.
    pub url: String,
    /// The URL the server was reached through, and the name made there; `None` when the run was
    /// told to use the given database as it is.
    made: Option<(String, String)>,
}

impl ScratchDatabase {
    /// Makes a fresh database on the server `server_url` names (connecting to its database only to
    /// issue `CREATE DATABASE`), or, with `use_existing`, uses that database itself.
    pub async fn create(server_url: &str, use_existing: bool) -> anyhow::Result<ScratchDatabase> {
        if use_existing {
            return Ok(ScratchDatabase {
                url: server_url.to_string(),
                made: None,
            });
        }
        let mut url = url::Url::parse(server_url).context("parsing the PostgreSQL URL")?;
        let name = format!(
            "marquee_bench_{}",
            ulid::Ulid::new().to_string().to_lowercase()
        );
        let mut connection = PgConnection::connect(server_url)
            .await
            .with_context(|| format!("connecting to {}", redact(server_url)))?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut connection)
            .await
            .with_context(|| format!("creating database {name}"))?;
        connection.close().await.ok();
        url.set_path(&format!("/{name}"));
        Ok(ScratchDatabase {
            url: url.to_string(),
            made: Some((server_url.to_string(), name)),
        })
    }

    /// Drops the database if this run made it (`WITH (FORCE)`: nodes a failed run left behind
    /// may still hold connections).
    pub async fn drop_database(self) -> anyhow::Result<()> {
        let Some((server_url, name)) = self.made else {
            return Ok(());
        };
        let mut connection = PgConnection::connect(&server_url).await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut connection)
            .await
            .with_context(|| format!("dropping database {name}"))?;
        Ok(())
    }
}

/// The URL without its password, for messages.
fn redact(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("***"));
            url.to_string()
        }
        Ok(url) => url.to_string(),
        Err(_) => "<unparsable URL>".to_string(),
    }
}

/// POSTs `body` to `path` as the user `token` names and returns the answer's JSON, refusing any
/// status but success: how the load runs build their fixtures (venues, events).
pub async fn post_json(
    client: &reqwest::Client,
    url: &str,
    path: &str,
    token: &str,
    body: &serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    Ok(client
        .post(format!("{url}{path}"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// Creates an event with `body` as the organizer `token` names, publishes it and returns its id:
/// the fixture every load run starts from.
pub async fn publish_event(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    body: &serde_json::Value,
) -> anyhow::Result<String> {
    let event = post_json(client, url, "/api/v1/events", token, body).await?;
    let event_id = event["id"].as_str().context("event id")?.to_string();
    client
        .post(format!("{url}/api/v1/events/{event_id}/publish"))
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?;
    Ok(event_id)
}

/// Creates a venue of one reserved section, `rows` as the API takes them, through the API;
/// answers its id and the ids of its seats in seat-map order.
pub async fn venue_seats(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    name: &str,
    rows: Vec<serde_json::Value>,
) -> anyhow::Result<(serde_json::Value, Vec<String>)> {
    use anyhow::Context;
    let venue = post_json(
        client,
        url,
        "/api/v1/venues",
        token,
        &serde_json::json!({"name": name, "city": "Leeds", "country": "GB", "lat": 53.8,
                "lon": -1.55, "sections": [{"name": "Bowl", "rows": rows}]}),
    )
    .await?;
    let seats = venue["sections"][0]["rows"]
        .as_array()
        .context("rows")?
        .iter()
        .flat_map(|row| row["seats"].as_array().cloned().unwrap_or_default())
        .filter_map(|seat| seat["id"].as_str().map(str::to_string))
        .collect();
    Ok((venue["id"].clone(), seats))
}

/// Takes the complete Server-Sent Events in `buffer` (what has arrived so far) out of it and
/// answers the JSON of each one's `data:` line; a partial event stays for the next chunk.
pub fn take_sse_messages(buffer: &mut String) -> Vec<serde_json::Value> {
    let mut messages = Vec::new();
    while let Some(end) = buffer.find("\n\n") {
        let block: String = buffer.drain(..end + 2).collect();
        if let Some(message) = block
            .lines()
            .find_map(|line| line.strip_prefix("data:"))
            .and_then(|data| serde_json::from_str(data.trim()).ok())
        {
            messages.push(message);
        }
    }
    messages
}
