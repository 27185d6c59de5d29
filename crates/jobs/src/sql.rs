//! [`SqlJobQueue`]: jobs on SQLite or PostgreSQL through `sqlx::Any`.
//!
//! The engines differ in two places, handled here and nowhere else:
//! - **Claiming.** PostgreSQL claims with `FOR UPDATE SKIP LOCKED`, so workers of many nodes
//!   take disjoint jobs without waiting on each other's rows. SQLite has one writer at a time;
//!   an in-process gate serialises this process's writes (the file is this process's alone), so
//!   no statement ever meets `SQLITE_BUSY`.
//! - **Schema.** Created with `IF NOT EXISTS` statements at connect rather than `sqlx`
//!   migrations: on PostgreSQL the tables share the catalog's database and schema, whose
//!   migration table belongs to the store's migrator (which refuses versions it does not know).
//!   Nodes starting together take an advisory lock around it.
//!
//! Per-key order is the claim's `NOT EXISTS`: a job is due only when no job of its key with a
//! smaller id is still ready or running. Under PostgreSQL's read committed isolation a claim
//! that runs while an earlier job of the key is being claimed or finished sees it as still
//! there, so the check errs on the side of waiting, never of overtaking.

use crate::{
    Claim, Enqueued, Job, JobFilter, JobId, JobQueue, JobRecord, JobState, JobsError, NewJob,
    QueueStats, MAX_BATCH,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};
use std::time::Duration;
use tokio::sync::{Mutex, MutexGuard};

/// Key of the advisory lock around the schema statements ("MRQJOBS\0").
const SCHEMA_LOCK_KEY: i64 = 0x4D52_514A_4F42_5300;
/// Most claims one completion statement names.
const COMPLETE_CHUNK: usize = 200;
/// Most jobs one insert statement carries (6 parameters each, well under SQLite's and
/// PostgreSQL's parameter limits).
const ROWS_PER_INSERT: usize = 100;
/// How often a queue's lapsed claims are looked for (by whichever claim comes next): a job
/// whose worker died runs again within this of its visibility timeout, and a busy queue's
/// claims are one statement, not three.
const SWEEP_EVERY_MS: i64 = 1_000;

/// The tables, given the id column's definition (the one thing the engines spell apart):
/// `AUTOINCREMENT` on SQLite so ids of deleted jobs are never handed out again (they order a
/// key's jobs), an identity column on PostgreSQL.
fn schema(id_column: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS jobs (
            id           {id_column},
            queue        TEXT NOT NULL,
            state        TEXT NOT NULL,
            ordering_key TEXT,
            dedupe_key   TEXT,
            payload      TEXT NOT NULL,
            attempt      BIGINT NOT NULL DEFAULT 0,
            max_attempts BIGINT NOT NULL,
            run_at       BIGINT NOT NULL,
            locked_until BIGINT,
            last_error   TEXT,
            enqueued_at  BIGINT NOT NULL,
            updated_at   BIGINT NOT NULL
        );
        CREATE TABLE IF NOT EXISTS job_cursors (name TEXT PRIMARY KEY, position BIGINT NOT NULL);"
    )
}

const SQLITE_ID: &str = "INTEGER PRIMARY KEY AUTOINCREMENT";
const POSTGRES_ID: &str = "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY";

/// Both engines: partial indexes keep each hot query on the rows it can match.
const INDEXES: &str = "
CREATE UNIQUE INDEX IF NOT EXISTS jobs_dedupe ON jobs (queue, dedupe_key);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (queue, run_at, id) WHERE state = 'ready';
CREATE INDEX IF NOT EXISTS jobs_claimed ON jobs (queue, locked_until) WHERE state = 'running';
CREATE INDEX IF NOT EXISTS jobs_line ON jobs (queue, ordering_key, id)
    WHERE state IN ('ready', 'running');
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, queue, id);
";

const RECORD_COLUMNS: &str = "id, queue, state, ordering_key, dedupe_key, payload, attempt, \
     max_attempts, run_at, locked_until, last_error, enqueued_at, updated_at";

const LAPSED: &str = "its claim lapsed: the worker died or overran the visibility timeout";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    Sqlite,
    Postgres,
}

/// Jobs in a SQL database; see the module comment.
pub struct SqlJobQueue {
    pool: AnyPool,
    engine: Engine,
    /// SQLite only: this process's writers, one at a time.
    write_gate: Option<Mutex<()>>,
    claim_sql: String,
    /// Per queue, the job-clock time of the last sweep for lapsed claims.
    last_sweep: std::sync::Mutex<std::collections::HashMap<String, i64>>,
}

impl SqlJobQueue {
    /// Keeps the jobs in the PostgreSQL database `pool` is connected to (the catalog's: one
    /// pool per node there), creating the tables if they are missing.
    pub async fn on_postgres_pool(pool: AnyPool) -> Result<SqlJobQueue, JobsError> {
        Self::setup(pool, Engine::Postgres).await
    }

    /// Connects to `url` (`sqlite://path?mode=rwc` or `postgres://…`) and creates the tables.
    pub async fn connect(url: &str, max_connections: u32) -> Result<SqlJobQueue, JobsError> {
        sqlx::any::install_default_drivers();
        let engine = if url.starts_with("sqlite:") {
            Engine::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Engine::Postgres
        } else {
            return Err(JobsError::UnsupportedUrl(redact(url)));
        };
        let mut options = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(5));
        if engine == Engine::Sqlite {
            // No idle reaper either: it is a timer that would wake the runtime for nothing (and
            // move a test's paused clock).
            options = options
                .test_before_acquire(false)
                .idle_timeout(None)
                .max_lifetime(None)
                .after_connect(|connection, _| {
                    Box::pin(async move {
                        connection
                            .execute(
                                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA busy_timeout = 5000;",
                            )
                            .await?;
                        Ok(())
                    })
                });
        }
        if engine == Engine::Sqlite {
            // The tables first, on a connection of their own: a connection that read the schema
            // before an index existed would refuse statements that need it (SQLite checks
            // `ON CONFLICT` targets against the schema it has cached).
            let setup = AnyPoolOptions::new()
                .max_connections(1)
                .connect(url)
                .await?;
            let tables = schema(SQLITE_ID);
            for statement in statements(&tables).chain(statements(INDEXES)) {
                setup.execute(statement).await?;
            }
            setup.close().await;
        }
        let pool = options.connect(url).await?;
        Self::setup(pool, engine).await
    }

    async fn setup(pool: AnyPool, engine: Engine) -> Result<SqlJobQueue, JobsError> {
        match engine {
            Engine::Sqlite => {}
            Engine::Postgres if Self::postgres_schema_exists(&pool).await? => {}
            Engine::Postgres => {
                let mut transaction = pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(SCHEMA_LOCK_KEY)
                    .execute(&mut *transaction)
                    .await?;
                (&mut *transaction)
                    .execute(schema(POSTGRES_ID).as_str())
                    .await?;
                (&mut *transaction).execute(INDEXES).await?;
                transaction.commit().await?;
            }
        }
        let lock = match engine {
            Engine::Sqlite => "",
            Engine::Postgres => " FOR UPDATE SKIP LOCKED",
        };
        let claim_sql = format!(
            "WITH due AS (\
                SELECT j.id FROM jobs j \
                WHERE j.queue = $1 AND j.state = 'ready' AND j.run_at <= $2 \
                  AND (j.ordering_key IS NULL OR NOT EXISTS (\
                      SELECT 1 FROM jobs e WHERE e.queue = j.queue \
                        AND e.ordering_key = j.ordering_key AND e.id < j.id \
                        AND e.state IN ('ready', 'running'))) \
                ORDER BY j.run_at, j.id LIMIT $3{lock}) \
             UPDATE jobs SET state = 'running', attempt = attempt + 1, locked_until = $4, \
                updated_at = $2 \
             WHERE id IN (SELECT id FROM due) \
             RETURNING id, queue, ordering_key, payload, attempt, max_attempts, enqueued_at"
        );
        Ok(SqlJobQueue {
            pool,
            engine,
            write_gate: (engine == Engine::Sqlite).then(|| Mutex::new(())),
            claim_sql,
            last_sweep: std::sync::Mutex::new(std::collections::HashMap::new()),
        })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// True when every table and index is there already: a node joining a busy cluster then
    /// takes no lock at all (`CREATE INDEX IF NOT EXISTS` would queue for a share lock on
    /// `jobs` behind every open writer, and stall the writers queued behind it).
    async fn postgres_schema_exists(pool: &AnyPool) -> Result<bool, JobsError> {
        let row = sqlx::query(
            "SELECT CAST(COUNT(*) AS BIGINT) AS present FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = current_schema() AND c.relname IN \
               ('jobs', 'job_cursors', 'jobs_dedupe', 'jobs_due', 'jobs_claimed', 'jobs_line', \
                'jobs_by_state')",
        )
        .fetch_one(pool)
        .await?;
        Ok(row.try_get::<i64, _>("present")? == 7)
    }

    async fn gate(&self) -> Option<MutexGuard<'_, ()>> {
        match &self.write_gate {
            Some(gate) => Some(gate.lock().await),
            None => None,
        }
    }

    async fn insert(
        transaction: &mut sqlx::Transaction<'static, sqlx::Any>,
        job: &NewJob,
        now: DateTime<Utc>,
    ) -> Result<Enqueued, JobsError> {
        let payload = job.checked_payload()?;
        let run_at = job.run_at.unwrap_or(now);
        let created = sqlx::query(
            "INSERT INTO jobs (queue, state, ordering_key, dedupe_key, payload, attempt, \
                max_attempts, run_at, enqueued_at, updated_at) \
             VALUES ($1, 'ready', $2, $3, $4, 0, $5, $6, $7, $7) \
             ON CONFLICT (queue, dedupe_key) DO NOTHING RETURNING id",
        )
        .bind(job.queue.as_str())
        .bind(job.ordering_key.clone())
        .bind(job.dedupe_key.clone())
        .bind(payload)
        .bind(i64::from(job.max_attempts))
        .bind(millis(run_at))
        .bind(millis(now))
        .fetch_optional(&mut **transaction)
        .await?;
        if let Some(row) = created {
            return Ok(Enqueued::Created(row.try_get("id")?));
        }
        let existing: i64 = sqlx::query("SELECT id FROM jobs WHERE queue = $1 AND dedupe_key = $2")
            .bind(job.queue.as_str())
            .bind(job.dedupe_key.clone())
            .fetch_one(&mut **transaction)
            .await?
            .try_get("id")?;
        Ok(Enqueued::Duplicate(existing))
    }

    /// Inserts `jobs` with few statements (a multi-row insert per [`ROWS_PER_INSERT`]) when their
    /// ids are not needed: a follower enqueues one job per change of a batch, and one round
    /// trip per job was most of what the database spent on the change stream's jobs.
    async fn insert_all(
        transaction: &mut sqlx::Transaction<'static, sqlx::Any>,
        jobs: &[NewJob],
        now: DateTime<Utc>,
    ) -> Result<(), JobsError> {
        const COLUMNS: usize = 6;
        for chunk in jobs.chunks(ROWS_PER_INSERT) {
            let rows: Vec<String> = (0..chunk.len())
                .map(|row| {
                    let n = row * COLUMNS;
                    format!(
                        "(${}, 'ready', ${}, ${}, ${}, 0, ${}, ${}, $1, $1)",
                        n + 2,
                        n + 3,
                        n + 4,
                        n + 5,
                        n + 6,
                        n + 7
                    )
                })
                .collect();
            let sql = format!(
                "INSERT INTO jobs (queue, state, ordering_key, dedupe_key, payload, attempt, \
                    max_attempts, run_at, enqueued_at, updated_at) VALUES {} \
                 ON CONFLICT (queue, dedupe_key) DO NOTHING",
                rows.join(", ")
            );
            let mut statement = sqlx::query(&sql).bind(millis(now));
            for job in chunk {
                statement = statement
                    .bind(job.queue.as_str())
                    .bind(job.ordering_key.clone())
                    .bind(job.dedupe_key.clone())
                    .bind(job.checked_payload()?)
                    .bind(i64::from(job.max_attempts))
                    .bind(millis(job.run_at.unwrap_or(now)));
            }
            statement.execute(&mut **transaction).await?;
        }
        Ok(())
    }

    /// True (and remembered) when `queue` was not swept in the last second of job time. A
    /// clock that went back (another node's, a test's) sweeps at once.
    fn sweep_due(&self, queue: &str, now: i64) -> bool {
        let Ok(mut last) = self.last_sweep.lock() else {
            return true;
        };
        match last.get(queue) {
            Some(&swept) if now >= swept && now - swept < SWEEP_EVERY_MS => false,
            _ => {
                last.insert(queue.to_string(), now);
                true
            }
        }
    }

    /// Puts back the claims of `queue` that lapsed, burying those that were on their last
    /// attempt.
    async fn reclaim_lapsed(&self, queue: &str, now: i64) -> Result<(), JobsError> {
        sqlx::query(
            "UPDATE jobs SET state = 'dead', locked_until = NULL, last_error = $3, \
                updated_at = $2 \
             WHERE queue = $1 AND state = 'running' AND locked_until <= $2 \
               AND attempt >= max_attempts",
        )
        .bind(queue)
        .bind(now)
        .bind(format!("{LAPSED}, on its last attempt"))
        .execute(&self.pool)
        .await?;
        sqlx::query(
            "UPDATE jobs SET state = 'ready', locked_until = NULL, last_error = $3, \
                updated_at = $2 \
             WHERE queue = $1 AND state = 'running' AND locked_until <= $2",
        )
        .bind(queue)
        .bind(now)
        .bind(LAPSED)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn settle(
        &self,
        claim: Claim,
        state: JobState,
        run_at: Option<DateTime<Utc>>,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, JobsError> {
        let _gate = self.gate().await;
        let changed = sqlx::query(
            "UPDATE jobs SET state = $3, run_at = COALESCE($4, run_at), locked_until = NULL, \
                last_error = $5, updated_at = $6 \
             WHERE id = $1 AND attempt = $2 AND state = 'running'",
        )
        .bind(claim.id)
        .bind(i64::from(claim.attempt))
        .bind(state.as_str())
        .bind(run_at.map(millis))
        .bind(truncate(error, 4_000))
        .bind(millis(now))
        .execute(&self.pool)
        .await?;
        Ok(changed.rows_affected() == 1)
    }
}

#[async_trait]
impl JobQueue for SqlJobQueue {
    fn backend(&self) -> &'static str {
        match self.engine {
            Engine::Sqlite => "sqlite",
            Engine::Postgres => "postgres",
        }
    }

    async fn enqueue(
        &self,
        jobs: &[NewJob],
        now: DateTime<Utc>,
    ) -> Result<Vec<Enqueued>, JobsError> {
        check_batch(jobs)?;
        let _gate = self.gate().await;
        let mut transaction = self.pool.begin().await?;
        let mut enqueued = Vec::with_capacity(jobs.len());
        for job in jobs {
            enqueued.push(Self::insert(&mut transaction, job, now).await?);
        }
        transaction.commit().await?;
        Ok(enqueued)
    }

    async fn enqueue_after(
        &self,
        cursor: &str,
        from: i64,
        to: i64,
        jobs: &[NewJob],
        now: DateTime<Utc>,
    ) -> Result<bool, JobsError> {
        check_batch(jobs)?;
        let _gate = self.gate().await;
        let mut transaction = self.pool.begin().await?;
        // The cursor first: on PostgreSQL its row lock makes a second follower wait here and
        // then find the cursor moved, before it has inserted anything.
        let moved =
            sqlx::query("UPDATE job_cursors SET position = $3 WHERE name = $1 AND position = $2")
                .bind(cursor)
                .bind(from)
                .bind(to)
                .execute(&mut *transaction)
                .await?;
        if moved.rows_affected() != 1 {
            return Ok(false);
        }
        Self::insert_all(&mut transaction, jobs, now).await?;
        transaction.commit().await?;
        Ok(true)
    }

    async fn cursor(&self, name: &str, initial: i64) -> Result<i64, JobsError> {
        {
            let _gate = self.gate().await;
            sqlx::query(
                "INSERT INTO job_cursors (name, position) VALUES ($1, $2) \
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(initial)
            .execute(&self.pool)
            .await?;
        }
        Ok(
            sqlx::query("SELECT position FROM job_cursors WHERE name = $1")
                .bind(name)
                .fetch_one(&self.pool)
                .await?
                .try_get("position")?,
        )
    }

    async fn claim(
        &self,
        queue: &str,
        limit: u32,
        visibility: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<Job>, JobsError> {
        let now_ms = millis(now);
        let until = millis(now + chrono::Duration::from_std(visibility).unwrap_or_default());
        let _gate = self.gate().await;
        if self.sweep_due(queue, now_ms) {
            self.reclaim_lapsed(queue, now_ms).await?;
        }
        let rows = sqlx::query(&self.claim_sql)
            .bind(queue)
            .bind(now_ms)
            .bind(i64::from(limit.clamp(1, MAX_BATCH as u32)))
            .bind(until)
            .fetch_all(&self.pool)
            .await?;
        let mut jobs = rows.iter().map(job_row).collect::<Result<Vec<_>, _>>()?;
        jobs.sort_by_key(|job| job.id);
        Ok(jobs)
    }

    async fn complete(&self, claims: &[Claim], now: DateTime<Utc>) -> Result<u64, JobsError> {
        let mut completed = 0;
        let _gate = self.gate().await;
        for chunk in claims.chunks(COMPLETE_CHUNK) {
            let matches = |first: usize| {
                (0..chunk.len())
                    .map(|index| {
                        let id = first + 2 * index;
                        format!("(id = ${id} AND attempt = ${})", id + 1)
                    })
                    .collect::<Vec<_>>()
                    .join(" OR ")
            };
            let mut transaction = self.pool.begin().await?;
            // Jobs with a de-duplication key stay as `done` so the key keeps answering; the
            // rest have nothing left to say.
            let delete = format!(
                "DELETE FROM jobs WHERE state = 'running' AND dedupe_key IS NULL AND ({})",
                matches(1)
            );
            let mut query = sqlx::query(&delete);
            for claim in chunk {
                query = query.bind(claim.id).bind(i64::from(claim.attempt));
            }
            completed += query.execute(&mut *transaction).await?.rows_affected();
            let update = format!(
                "UPDATE jobs SET state = 'done', locked_until = NULL, updated_at = $1 \
                 WHERE state = 'running' AND ({})",
                matches(2)
            );
            let mut query = sqlx::query(&update).bind(millis(now));
            for claim in chunk {
                query = query.bind(claim.id).bind(i64::from(claim.attempt));
            }
            completed += query.execute(&mut *transaction).await?.rows_affected();
            transaction.commit().await?;
        }
        Ok(completed)
    }

    async fn retry(
        &self,
        claim: Claim,
        at: DateTime<Utc>,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, JobsError> {
        self.settle(claim, JobState::Ready, Some(at), error, now)
            .await
    }

    async fn bury(&self, claim: Claim, error: &str, now: DateTime<Utc>) -> Result<bool, JobsError> {
        self.settle(claim, JobState::Dead, None, error, now).await
    }

    async fn get(&self, id: JobId) -> Result<Option<JobRecord>, JobsError> {
        sqlx::query(&format!("SELECT {RECORD_COLUMNS} FROM jobs WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(record_row)
            .transpose()
    }

    async fn list(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, JobsError> {
        let mut conditions = vec!["1 = 1".to_string()];
        let mut next = 1;
        let mut placeholder = || {
            let name = format!("${next}");
            next += 1;
            name
        };
        if filter.queue.is_some() {
            conditions.push(format!("queue = {}", placeholder()));
        }
        if filter.state.is_some() {
            conditions.push(format!("state = {}", placeholder()));
        }
        if filter.key_prefix.is_some() {
            conditions.push(format!("ordering_key LIKE {} ESCAPE '!'", placeholder()));
        }
        if filter.before.is_some() {
            conditions.push(format!("id < {}", placeholder()));
        }
        let limit = placeholder();
        let statement = format!(
            "SELECT {RECORD_COLUMNS} FROM jobs WHERE {} ORDER BY id DESC LIMIT {limit}",
            conditions.join(" AND ")
        );
        let mut query = sqlx::query(&statement);
        if let Some(queue) = &filter.queue {
            query = query.bind(queue.clone());
        }
        if let Some(state) = filter.state {
            query = query.bind(state.as_str());
        }
        if let Some(prefix) = &filter.key_prefix {
            let escaped = prefix
                .replace('!', "!!")
                .replace('%', "!%")
                .replace('_', "!_");
            query = query.bind(format!("{escaped}%"));
        }
        if let Some(before) = filter.before {
            query = query.bind(before);
        }
        query = query.bind(i64::from(filter.limit.clamp(1, 1_000)));
        query
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(record_row)
            .collect()
    }

    async fn replay(&self, id: JobId, now: DateTime<Utc>) -> Result<Option<JobId>, JobsError> {
        let _gate = self.gate().await;
        let mut transaction = self.pool.begin().await?;
        let Some(row) = sqlx::query(&format!(
            "DELETE FROM jobs WHERE id = $1 AND state = 'dead' RETURNING {RECORD_COLUMNS}"
        ))
        .bind(id)
        .fetch_optional(&mut *transaction)
        .await?
        else {
            return Ok(None);
        };
        let dead = record_row(&row)?;
        let job = NewJob {
            queue: dead.queue,
            payload: dead.payload,
            ordering_key: dead.ordering_key,
            dedupe_key: dead.dedupe_key,
            run_at: Some(now),
            max_attempts: dead.max_attempts,
        };
        let replayed = Self::insert(&mut transaction, &job, now).await?;
        transaction.commit().await?;
        Ok(Some(replayed.id()))
    }

    async fn drop_dead(&self, id: JobId) -> Result<bool, JobsError> {
        let _gate = self.gate().await;
        let dropped = sqlx::query("DELETE FROM jobs WHERE id = $1 AND state = 'dead'")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(dropped.rows_affected() == 1)
    }

    async fn stats(&self, now: DateTime<Utc>) -> Result<Vec<QueueStats>, JobsError> {
        let rows = sqlx::query(
            "SELECT queue, state, \
                CAST(CASE WHEN state = 'ready' AND run_at <= $1 THEN 1 ELSE 0 END AS BIGINT) \
                    AS due, \
                COUNT(*) AS jobs, MIN(run_at) AS oldest \
             FROM jobs WHERE state <> 'done' GROUP BY queue, state, due ORDER BY queue",
        )
        .bind(millis(now))
        .fetch_all(&self.pool)
        .await?;
        let mut stats: Vec<QueueStats> = Vec::new();
        for row in &rows {
            let queue: String = row.try_get("queue")?;
            let state: String = row.try_get("state")?;
            let due: i64 = row.try_get("due")?;
            let jobs = u64::try_from(row.try_get::<i64, _>("jobs")?).unwrap_or(0);
            let oldest: Option<i64> = row.try_get("oldest")?;
            if stats.last().is_none_or(|last| last.queue != queue) {
                stats.push(QueueStats {
                    queue: queue.clone(),
                    ..QueueStats::default()
                });
            }
            let Some(entry) = stats.last_mut() else {
                continue;
            };
            match (state.as_str(), due) {
                ("ready", 1) => {
                    entry.due += jobs;
                    let waited = oldest.map_or(0, |oldest| millis(now) - oldest);
                    entry.oldest_due_age =
                        Duration::from_millis(u64::try_from(waited).unwrap_or(0));
                }
                ("ready", _) => entry.scheduled += jobs,
                ("running", _) => entry.running += jobs,
                ("dead", _) => entry.dead += jobs,
                _ => {}
            }
        }
        Ok(stats)
    }

    async fn purge_done(&self, before: DateTime<Utc>) -> Result<u64, JobsError> {
        let _gate = self.gate().await;
        Ok(
            sqlx::query("DELETE FROM jobs WHERE state = 'done' AND updated_at < $1")
                .bind(millis(before))
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }
}

/// Refuses a batch before anything of it is written: too many jobs, or one that breaks a limit.
fn check_batch(jobs: &[NewJob]) -> Result<(), JobsError> {
    if jobs.len() > MAX_BATCH {
        return Err(JobsError::BatchTooLarge { count: jobs.len() });
    }
    jobs.iter()
        .try_for_each(|job| job.checked_payload().map(|_| ()))
}

fn statements(script: &str) -> impl Iterator<Item = &str> {
    script
        .split(';')
        .map(str::trim)
        .filter(|statement| !statement.is_empty())
}

fn millis(time: DateTime<Utc>) -> i64 {
    time.timestamp_millis()
}

fn time_of(id: JobId, millis: i64) -> Result<DateTime<Utc>, JobsError> {
    DateTime::from_timestamp_millis(millis).ok_or_else(|| JobsError::Corrupt {
        id,
        reason: format!("timestamp {millis} out of range"),
    })
}

fn count(id: JobId, value: i64) -> Result<u32, JobsError> {
    u32::try_from(value).map_err(|_| JobsError::Corrupt {
        id,
        reason: format!("count {value} out of range"),
    })
}

fn payload_of(id: JobId, raw: &str) -> Result<serde_json::Value, JobsError> {
    serde_json::from_str(raw).map_err(|error| JobsError::Corrupt {
        id,
        reason: format!("payload: {error}"),
    })
}

fn job_row(row: &AnyRow) -> Result<Job, JobsError> {
    let id: i64 = row.try_get("id")?;
    Ok(Job {
        id,
        queue: row.try_get("queue")?,
        ordering_key: row.try_get("ordering_key")?,
        payload: payload_of(id, &row.try_get::<String, _>("payload")?)?,
        attempt: count(id, row.try_get("attempt")?)?,
        max_attempts: count(id, row.try_get("max_attempts")?)?,
        enqueued_at: time_of(id, row.try_get("enqueued_at")?)?,
    })
}

fn record_row(row: &AnyRow) -> Result<JobRecord, JobsError> {
    let id: i64 = row.try_get("id")?;
    let state: String = row.try_get("state")?;
    Ok(JobRecord {
        id,
        queue: row.try_get("queue")?,
        state: JobState::parse(&state).ok_or_else(|| JobsError::Corrupt {
            id,
            reason: format!("state {state:?}"),
        })?,
        ordering_key: row.try_get("ordering_key")?,
        dedupe_key: row.try_get("dedupe_key")?,
        payload: payload_of(id, &row.try_get::<String, _>("payload")?)?,
        attempt: count(id, row.try_get("attempt")?)?,
        max_attempts: count(id, row.try_get("max_attempts")?)?,
        run_at: time_of(id, row.try_get("run_at")?)?,
        locked_until: row
            .try_get::<Option<i64>, _>("locked_until")?
            .map(|until| time_of(id, until))
            .transpose()?,
        last_error: row.try_get("last_error")?,
        enqueued_at: time_of(id, row.try_get("enqueued_at")?)?,
        updated_at: time_of(id, row.try_get("updated_at")?)?,
    })
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***{}", &url[..scheme_end], &url[at..])
        }
        _ => url.to_string(),
    }
}
