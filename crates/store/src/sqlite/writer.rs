//! The embedded store's writer for the booking hot path: one thread owning one SQLite connection,
//! committing the writes that arrive together as one transaction (group commit).
//!
//! Why not `sqlx` here: each statement of a `sqlx` SQLite transaction is a round trip between the
//! async task and SQLite's worker thread, and on a busy runtime every round trip waits in the run
//! queue behind thousands of requests — while the transaction holds SQLite's only write lock.
//! Under an on-sale rush that turned a ~100 µs hold into tens of milliseconds of queueing for
//! every writer behind it. Here a write is one hand-off: the caller sends a closure, this thread
//! runs all of its statements back to back, and one reply comes back after the commit.
//!
//! **Group commit.** The thread takes every write waiting in its queue (up to [`MAX_BATCH`]),
//! runs each inside its own `SAVEPOINT` so a refused write (a fenced order, a full section) rolls
//! back alone, then commits them together. A reply is sent only after its batch committed, so
//! no caller hears "done" for a write that could still be lost; if the commit fails, every write
//! of the batch fails with it.
//!
//! The thread also serves the hot path's point reads (a hold by id), between batches.
//!
//! **One writer.** The catalog's other writes still go through `sqlx` behind the store's write
//! gate; this thread takes the same gate (blocking — it is not on the runtime) for each batch, so
//! SQLite never sees two writers and outbox positions still commit in order.

use crate::StoreError;
use rusqlite::Connection;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Mutex};

/// Most writes committed together; bounds how long the gate is held by one batch.
const MAX_BATCH: usize = 256;

/// Writes waiting beyond this make callers wait to enqueue (backpressure, not unbounded memory).
const QUEUE_DEPTH: usize = 4096;

/// One write: its statements run inside the batch's transaction.
trait WriteJob: Send {
    /// Runs the write; `false` if it failed and its savepoint must be rolled back.
    fn run(&mut self, connection: &Connection) -> bool;
    /// Delivers the outcome once the batch is decided; `batch_failure` overrides it.
    fn finish(self: Box<Self>, batch_failure: Option<&Arc<rusqlite::Error>>);
}

struct Job<F, T> {
    work: Option<F>,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<F, T> WriteJob for Job<F, T>
where
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send,
    T: Send,
{
    fn run(&mut self, connection: &Connection) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        let result = work(connection);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, batch_failure: Option<&Arc<rusqlite::Error>>) {
        let outcome = match (batch_failure, self.result) {
            (Some(failure), _) => Err(StoreError::Sqlite(failure.clone())),
            (None, Some(result)) => result,
            (None, None) => Err(StoreError::WriterStopped),
        };
        // The caller may have given up waiting (its request was cancelled); nothing to do then.
        let _ = self.reply.send(outcome);
    }
}

/// What the thread is asked to do.
enum Request {
    Write(Box<dyn WriteJob>),
    /// A point read, run outside any transaction: it sees committed data only.
    Read(Box<dyn FnOnce(&Connection) + Send>),
}

/// A handle to the writer thread; dropping the last one lets the thread finish and exit.
pub(crate) struct SqliteWriter {
    queue: mpsc::Sender<Request>,
    /// Dropped with the writer, which tells the checkpointer to stop.
    _checkpointer: std::sync::mpsc::Sender<()>,
}

impl SqliteWriter {
    /// Opens a second connection to the (already migrated) database file at `path` and starts
    /// the thread. `gate` is the store's write gate, shared with the `sqlx` writers.
    pub(crate) fn start(path: &Path, gate: Arc<Mutex<()>>) -> Result<SqliteWriter, StoreError> {
        let connection = open(path)?;
        connection.set_prepared_statement_cache_capacity(64);
        let checkpoints = open(path)?;
        // A RESTART checkpoint holds writers back while it waits for readers: never for long.
        checkpoints
            .busy_timeout(std::time::Duration::from_millis(10))
            .map_err(sqlite)?;
        let (queue, jobs) = mpsc::channel(QUEUE_DEPTH);
        let (checkpointer, stop) = std::sync::mpsc::channel();
        let spawn_failed =
            |error: std::io::Error| StoreError::Corrupt(format!("cannot start a thread: {error}"));
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn({
                let gate = gate.clone();
                let log = wal_path(path);
                move || run(connection, &log, jobs, gate)
            })
            .map_err(spawn_failed)?;
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint_until_stopped(&checkpoints, &gate, &stop))
            .map_err(spawn_failed)?;
        Ok(SqliteWriter {
            queue,
            _checkpointer: checkpointer,
        })
    }

    /// Runs `work` in the next batch and returns its result once that batch has committed.
    pub(crate) async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, outcome) = oneshot::channel();
        let job = Box::new(Job {
            work: Some(work),
            result: None,
            reply,
        });
        self.queue
            .send(Request::Write(job))
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        outcome.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Runs a point read of the hot path on this thread, between batches. One hand-off to a
    /// thread that is awake anyway costs less than `sqlx`'s pool and worker round trip, and
    /// its page cache is never invalidated by another connection's writes.
    pub(crate) async fn read<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, outcome) = oneshot::channel();
        let read = Box::new(move |connection: &Connection| {
            let _ = reply.send(work(connection));
        });
        self.queue
            .send(Request::Read(read))
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        outcome.await.map_err(|_| StoreError::WriterStopped)?
    }
}

/// A log this long (in 4 KiB frames) starts over even if writes kept the last passive
/// checkpoint from catching up: what is left to copy under the gate is what came in during it.
const RESTART_AFTER_FRAMES: i64 = 2_048;

/// How long a statement waits for a lock another connection holds (as the `sqlx` pool does).
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// How often the write-ahead log is copied back into the database file.
const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

fn open(path: &Path) -> Result<Connection, StoreError> {
    let connection = Connection::open(path).map_err(sqlite)?;
    // `wal_autocheckpoint = 0`: the committing writer would otherwise copy the log back (with
    // an fsync) itself, stalling every write and read queued behind it; a passive checkpoint
    // on another thread does the same work without taking the write lock.
    connection
        .execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
             PRAGMA foreign_keys = ON; \
             PRAGMA mmap_size = 268435456; PRAGMA wal_autocheckpoint = 0; \
             PRAGMA journal_size_limit = 16777216;",
        )
        .map_err(sqlite)?;
    connection.busy_timeout(BUSY_TIMEOUT).map_err(sqlite)?;
    Ok(connection)
}

/// Copies the log back into the database every [`CHECKPOINT_INTERVAL`] and keeps it short.
///
/// A passive checkpoint alone never lets the log start over under steady load: the writer
/// thread takes SQLite's write lock again as soon as it lets go of it, so a checkpoint that
/// waits for that lock starves, and a new write always finds some reader still on old frames.
/// So once a passive checkpoint (which blocks nobody) has copied everything, or the log is past
/// [`RESTART_AFTER_FRAMES`] and the passive pass has copied most of it, this thread takes
/// its turn at the write gate — a fair queue, so it gets it between two batches — and runs a
/// `RESTART` checkpoint: copy the few frames written since, wait for readers of the old frames
/// to finish (at most 10 ms, else try again next time), and let the next write start at the
/// top of the log. Should this thread fall behind, the writer restarts the log itself past
/// [`WAL_HARD_LIMIT`].
fn checkpoint_until_stopped(
    connection: &Connection,
    gate: &Mutex<()>,
    stop: &std::sync::mpsc::Receiver<()>,
) {
    let checkpoint = |mode: &str| {
        connection.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| {
            Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
        })
    };
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
        stop.recv_timeout(CHECKPOINT_INTERVAL)
    {
        let outcome = checkpoint("PASSIVE").and_then(|(frames, copied)| {
            if frames > 0 && (copied == frames || frames >= RESTART_AFTER_FRAMES) {
                let _writers_wait = gate.blocking_lock();
                checkpoint("RESTART").map(drop)
            } else {
                Ok(())
            }
        });
        if let Err(error) = outcome {
            tracing::warn!(%error, "checkpoint failed");
        }
    }
}

pub(crate) fn sqlite(error: rusqlite::Error) -> StoreError {
    StoreError::Sqlite(Arc::new(error))
}

/// The log file of a database in WAL mode.
fn wal_path(database: &Path) -> std::path::PathBuf {
    let mut name = database.as_os_str().to_os_string();
    name.push("-wal");
    name.into()
}

/// Past this size the writer restarts the log itself: the checkpoint thread has fallen behind
/// (a starved CPU), and a bounded log matters more than one slower batch. After a restart the
/// file is cut back to `journal_size_limit` (16 MiB), so size past it means frames in use.
const WAL_HARD_LIMIT: u64 = 24 << 20;

/// How long the writer, past [`WAL_HARD_LIMIT`], keeps trying to restart the log before it
/// lets the batch go and tries again after the next one.
const RESTART_PATIENCE: std::time::Duration = std::time::Duration::from_millis(500);

fn restart_log_if_too_long(connection: &Connection, log: &Path) {
    if std::fs::metadata(log).map_or(0, |meta| meta.len()) <= WAL_HARD_LIMIT {
        return;
    }
    // `PRAGMA wal_checkpoint` reports a checkpoint it could not finish in its first column
    // rather than failing. It gives up at once, never calling the busy handler, while the
    // checkpoint thread holds the checkpoint lock for a passive pass, and that pass is slowest
    // (a long copy and an fsync) exactly when the log is this long. Giving up then let writes
    // run on at full speed and the log grow past 40 MiB in a second. So the writer, which holds
    // the write gate and adds no frames meanwhile, tries again until the restart goes through.
    // Readers of old frames are short; the busy timeout bounds each wait for one.
    let restart = || -> Result<bool, rusqlite::Error> {
        connection.query_row("PRAGMA wal_checkpoint(RESTART)", [], |row| {
            row.get::<_, i64>(0).map(|busy| busy == 0)
        })
    };
    let started = std::time::Instant::now();
    let outcome = connection
        .busy_timeout(std::time::Duration::from_millis(50))
        .and_then(|()| loop {
            match restart() {
                Ok(false) if started.elapsed() < RESTART_PATIENCE => {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                done => break done,
            }
        });
    let reset = connection.busy_timeout(BUSY_TIMEOUT);
    match outcome.and_then(|restarted| reset.map(|()| restarted)) {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(patience = ?RESTART_PATIENCE, "the write-ahead log is past its limit and readers kept it from restarting");
        }
        Err(error) => tracing::warn!(%error, "could not restart the write-ahead log"),
    }
}

fn run(
    connection: Connection,
    log: &Path,
    mut requests: mpsc::Receiver<Request>,
    gate: Arc<Mutex<()>>,
) {
    let mut batch: Vec<Box<dyn WriteJob>> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = requests.blocking_recv() {
        let mut next = Some(first);
        while let Some(request) = next.take() {
            match request {
                Request::Write(job) => batch.push(job),
                Request::Read(read) => read(&connection),
            }
            if batch.len() < MAX_BATCH {
                next = requests.try_recv().ok();
            }
        }
        if batch.is_empty() {
            continue;
        }
        let failure = {
            let _only_writer = gate.blocking_lock();
            let failure = commit_batch(&connection, &mut batch).err().map(Arc::new);
            restart_log_if_too_long(&connection, log);
            failure
        };
        if let Some(failure) = &failure {
            tracing::error!(error = %failure, writes = batch.len(), "a batch of writes failed to commit");
        }
        for job in batch.drain(..) {
            job.finish(failure.as_ref());
        }
    }
}

/// Runs every job of the batch in one transaction, each behind a savepoint (a batch of one
/// needs none: its failure rolls the whole transaction back).
fn commit_batch(
    connection: &Connection,
    batch: &mut [Box<dyn WriteJob>],
) -> Result<(), rusqlite::Error> {
    let run = |sql: &str| connection.prepare_cached(sql)?.execute([]).map(drop);
    run("BEGIN IMMEDIATE")?;
    let outcome = (|| {
        if let [job] = batch {
            return Ok(job.run(connection));
        }
        for job in batch.iter_mut() {
            run("SAVEPOINT write")?;
            if job.run(connection) {
                run("RELEASE write")?;
            } else if connection.is_autocommit() {
                // Some errors (disk full, I/O) make SQLite roll the whole transaction back.
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
                    Some("the transaction was rolled back by an earlier error".into()),
                ));
            } else {
                run("ROLLBACK TO write")?;
                run("RELEASE write")?;
            }
        }
        Ok(true)
    })();
    let ended = match outcome {
        Ok(true) => run("COMMIT"),
        // The only write failed: nothing to keep (unless its error already rolled it back,
        // in which case the write's own error is the one to report).
        Ok(false) if connection.is_autocommit() => Ok(()),
        Ok(false) => run("ROLLBACK"),
        Err(error) => Err(error),
    };
    if ended.is_err() && !connection.is_autocommit() {
        let _ = connection.execute_batch("ROLLBACK");
    }
    ended
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer() -> (tempfile::TempDir, SqliteWriter) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("w.db");
        open(&path)
            .and_then(|connection| {
                connection
                    .execute_batch(
                        "CREATE TABLE seats (id INTEGER PRIMARY KEY, owner TEXT NOT NULL)",
                    )
                    .map_err(sqlite)
            })
            .expect("schema");
        let writer = SqliteWriter::start(&path, Arc::new(Mutex::new(()))).expect("writer");
        (dir, writer)
    }

    /// Many writes at once end up in shared batches; the ones that fail (a seat taken twice)
    /// roll back alone, every caller hears its own outcome, and exactly one owner per seat stays.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_write_rolls_back_alone_inside_a_shared_batch() {
        let (_dir, writer) = writer();
        let writer = Arc::new(writer);
        let attempts: Vec<_> = (0..400)
            .map(|fan: i64| {
                let writer = writer.clone();
                tokio::spawn(async move {
                    writer
                        .write(move |connection| {
                            // Two statements per write: the first always succeeds, so a refused
                            // second one must take the first back with it.
                            connection
                                .execute(
                                    "INSERT INTO seats (id, owner) VALUES (?1, 'probe')",
                                    [1_000 + fan],
                                )
                                .map_err(sqlite)?;
                            connection
                                .execute(
                                    "INSERT INTO seats (id, owner) VALUES (?1, ?2)",
                                    (fan % 50, fan.to_string()),
                                )
                                .map_err(sqlite)?;
                            Ok(fan)
                        })
                        .await
                })
            })
            .collect();
        let mut granted = Vec::new();
        for attempt in attempts {
            if let Ok(fan) = attempt.await.expect("task") {
                granted.push(fan);
            }
        }
        assert_eq!(granted.len(), 50, "one write per seat succeeds");
        let (seats, probes, owners): (i64, i64, Vec<String>) = writer
            .read(|connection| {
                let count = |sql: &str| {
                    connection
                        .query_row(sql, [], |row| row.get(0))
                        .map_err(sqlite)
                };
                let mut statement = connection
                    .prepare("SELECT owner FROM seats WHERE id < 1000 ORDER BY id")
                    .map_err(sqlite)?;
                let owners = statement
                    .query_map([], |row| row.get(0))
                    .and_then(Iterator::collect)
                    .map_err(sqlite)?;
                Ok((
                    count("SELECT COUNT(*) FROM seats WHERE id < 1000")?,
                    count("SELECT COUNT(*) FROM seats WHERE id >= 1000")?,
                    owners,
                ))
            })
            .await
            .expect("read");
        assert_eq!(seats, 50);
        assert_eq!(
            probes, 50,
            "a refused write left its first statement behind"
        );
        let mut expected: Vec<String> = granted.iter().map(ToString::to_string).collect();
        expected.sort_by_key(|fan| fan.parse::<i64>().map(|fan| fan % 50).unwrap_or(-1));
        assert_eq!(
            owners, expected,
            "each seat belongs to the write that was told it won"
        );
    }

    /// Under a steady stream of writes, with readers always somewhere in the log, the log is
    /// checkpointed and starts over instead of growing for as long as the load lasts.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_log_stays_bounded_under_steady_writes_and_reads() {
        let (dir, writer) = writer();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let reader = open(&dir.path().join("w.db")).expect("reader");
                let done = done.clone();
                std::thread::spawn(move || {
                    while !done.load(std::sync::atomic::Ordering::Relaxed) {
                        let _ = reader.query_row("SELECT COUNT(*) FROM seats", [], |row| {
                            row.get::<_, i64>(0)
                        });
                    }
                })
            })
            .collect();
        let payload = "x".repeat(2_000);
        // ~48 MiB of rows; without the RESTART step the log grew to about three times the data.
        let log_size =
            || std::fs::metadata(dir.path().join("w.db-wal")).map_or(0, |meta| meta.len());
        let mut longest_log = 0;
        for id in 0..24_000_i64 {
            let payload = payload.clone();
            writer
                .write(move |connection| {
                    connection
                        .execute(
                            "INSERT INTO seats (id, owner) VALUES (?1, ?2)",
                            (id, payload),
                        )
                        .map_err(sqlite)
                })
                .await
                .expect("write");
            if id % 500 == 0 {
                longest_log = longest_log.max(log_size());
            }
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        for reader in readers {
            reader.join().expect("reader");
        }
        longest_log = longest_log.max(log_size());
        assert!(
            longest_log < 40 << 20,
            "the log reached {longest_log} bytes while logging ~48 MiB of rows"
        );
    }
}
