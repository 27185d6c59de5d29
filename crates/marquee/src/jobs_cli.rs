//! `marquee jobs`: the operator's view of the jobs queue — list, inspect, replay and drop dead
//! letters, and each queue's depth. It opens the same database a node uses (a running node may
//! keep running: SQLite in WAL mode and PostgreSQL both take a second process).

use anyhow::Context;
use marquee_jobs::{JobFilter, JobId, JobQueue, JobRecord, JobState};
use std::fmt::Write as _;

/// What to do.
#[derive(Debug, Clone)]
pub enum JobsAction {
    List {
        queue: Option<String>,
        state: Option<JobState>,
        before: Option<JobId>,
        limit: u32,
    },
    Inspect(JobId),
    /// Dead jobs back to the queue: the ids given, or every dead job of a queue.
    Replay {
        ids: Vec<JobId>,
        all_of: Option<String>,
    },
    Drop(Vec<JobId>),
    Stats,
}

/// Runs `action` and answers what to print.
pub async fn run(jobs: &dyn JobQueue, action: JobsAction) -> anyhow::Result<String> {
    let now = chrono::Utc::now();
    let mut out = String::new();
    match action {
        JobsAction::List {
            queue,
            state,
            before,
            limit,
        } => {
            let records = jobs
                .list(&JobFilter {
                    queue,
                    state,
                    key_prefix: None,
                    before,
                    limit,
                })
                .await?;
            let _ = writeln!(
                out,
                "{:>10}  {:<10} {:<8} {:>7}  {:<24}  LAST ERROR",
                "ID", "QUEUE", "STATE", "ATTEMPT", "RUN AT"
            );
            for record in &records {
                let _ = writeln!(out, "{}", row(record));
            }
            if records.is_empty() {
                let _ = writeln!(out, "(no jobs)");
            }
        }
        JobsAction::Inspect(id) => {
            let record = jobs
                .get(id)
                .await?
                .with_context(|| format!("no job {id}"))?;
            out = serde_json::to_string_pretty(&record)? + "\n";
        }
        JobsAction::Replay { ids, all_of } => {
            let mut ids = ids;
            if let Some(queue) = all_of {
                let mut before = None;
                loop {
                    let page = jobs
                        .list(&JobFilter {
                            queue: Some(queue.clone()),
                            state: Some(JobState::Dead),
                            key_prefix: None,
                            before,
                            limit: 1_000,
                        })
                        .await?;
                    ids.extend(page.iter().map(|record| record.id));
                    match page.last() {
                        Some(last) if page.len() == 1_000 => before = Some(last.id),
                        _ => break,
                    }
                }
                // Oldest first, so a key's dead letters keep their order.
                ids.sort_unstable();
            }
            for id in ids {
                match jobs.replay(id, now).await? {
                    Some(new) => {
                        let _ = writeln!(out, "replayed {id} as {new}");
                    }
                    None => anyhow::bail!("job {id} is not a dead letter"),
                }
            }
        }
        JobsAction::Drop(ids) => {
            for id in ids {
                if !jobs.drop_dead(id).await? {
                    anyhow::bail!("job {id} is not a dead letter");
                }
                let _ = writeln!(out, "dropped {id}");
            }
        }
        JobsAction::Stats => {
            let _ = writeln!(
                out,
                "{:<12} {:>8} {:>10} {:>8} {:>8}  OLDEST DUE",
                "QUEUE", "DUE", "SCHEDULED", "RUNNING", "DEAD"
            );
            for queue in jobs.stats(now).await? {
                let _ = writeln!(
                    out,
                    "{:<12} {:>8} {:>10} {:>8} {:>8}  {:.1}s",
                    queue.queue,
                    queue.due,
                    queue.scheduled,
                    queue.running,
                    queue.dead,
                    queue.oldest_due_age.as_secs_f64()
                );
            }
        }
    }
    Ok(out)
}

fn row(record: &JobRecord) -> String {
    let error = record
        .last_error
        .as_deref()
        .unwrap_or("")
        .replace('\n', " ");
    let error: String = error.chars().take(80).collect();
    format!(
        "{:>10}  {:<10} {:<8} {:>3}/{:<3}  {:<24}  {}",
        record.id,
        record.queue,
        record.state.as_str(),
        record.attempt,
        record.max_attempts,
        record.run_at.format("%Y-%m-%d %H:%M:%S%.3f"),
        error
    )
}
