//! What can go wrong in the store, in terms callers branch on.

/// A store failure. `Unavailable` means the engine could not be reached (retrying later may
/// work); `Database` and `Corrupt` mean a bug or damaged data.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("email is already registered")]
    EmailTaken,
    #[error("not found")]
    NotFound,
    #[error("the record was changed by someone else (expected version {expected})")]
    VersionConflict { expected: i64 },
    #[error("the database is unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("general admission section {section:?} has fewer places left than asked")]
    CapacityExceeded { section: String },
    #[error("seats are already sold: {seat_ids:?}")]
    SeatsSold { seat_ids: Vec<String> },
    #[error("the hold is no longer active")]
    HoldNotActive,
    #[error("a newer lease has held these seats since this hold was made")]
    Fenced,
    #[error("unsupported database URL {0:?}: expected sqlite:… or postgres://…")]
    UnsupportedUrl(String),
    #[error("stored data could not be read: {0}")]
    Corrupt(String),
    /// From the embedded store's writer thread (shared: one failed commit fails a whole batch).
    #[error("database error: {0}")]
    Sqlite(#[source] std::sync::Arc<rusqlite::Error>),
    #[error("the database writer has stopped")]
    WriterStopped,
    /// A batch of writes (PostgreSQL's booking batches) that could not reach the database,
    /// shared by every operation in it.
    #[error("the database is unavailable: {0}")]
    BatchUnavailable(#[source] std::sync::Arc<sqlx::Error>),
    /// A batch of writes that failed as a whole, shared by every operation in it.
    #[error("database error: {0}")]
    BatchFailed(#[source] std::sync::Arc<sqlx::Error>),
    /// An operation of a batch that the database refused for a reason callers do not branch
    /// on (a bug, or data that breaks a constraint the domain should have kept).
    #[error("the database refused the write ({sqlstate}): {message}")]
    Refused {
        sqlstate: String,
        message: String,
        constraint: Option<String>,
    },
}

/// True when `error` means the database could not be reached, not that it refused.
pub(crate) fn is_unavailable(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
    )
}

impl StoreError {
    /// The error every operation of a failed batch is given.
    pub(crate) fn of_batch(error: std::sync::Arc<sqlx::Error>) -> Self {
        if is_unavailable(&error) {
            StoreError::BatchUnavailable(error)
        } else {
            StoreError::BatchFailed(error)
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        if is_unavailable(&error) {
            StoreError::Unavailable(error)
        } else {
            StoreError::Database(error)
        }
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(error: serde_json::Error) -> Self {
        StoreError::Corrupt(error.to_string())
    }
}

/// True when a statement was refused by a unique index or primary key.
pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|database| database.is_unique_violation())
}
