//! A job queue of a test's own: a SQLite file in a temporary directory, or a PostgreSQL schema
//! (from `MARQUEE_TEST_DATABASE_URL`, default the local `test` database), so tests run at once.

#![allow(dead_code)]

use marquee_jobs::SqlJobQueue;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

pub struct Harness {
    pub jobs: Arc<SqlJobQueue>,
    /// Where a second queue over the same data connects (another node, or the CLI).
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { admin_url: String, schema: String },
}

impl Harness {
    pub async fn open(engine: Engine) -> Harness {
        Self::open_with(engine, 4).await
    }

    /// With at most `connections` connections on SQLite.
    pub async fn open_with(engine: Engine, connections: u32) -> Harness {
        match engine {
            Engine::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("jobs.db").display());
                let jobs = SqlJobQueue::connect(&url, connections)
                    .await
                    .expect("sqlite jobs");
                Harness {
                    jobs: Arc::new(jobs),
                    url,
                    cleanup: Cleanup::Sqlite(dir),
                }
            }
            Engine::Postgres => {
                let admin_url = std::env::var("MARQUEE_TEST_DATABASE_URL")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
                let schema = format!("jobs_{}", ulid::Ulid::new().to_string().to_lowercase());
                sqlx::any::install_default_drivers();
                let admin = sqlx::AnyPool::connect(&admin_url).await.expect("postgres");
                sqlx::query(&format!("CREATE SCHEMA {schema}"))
                    .execute(&admin)
                    .await
                    .expect("create schema");
                admin.close().await;
                let separator = if admin_url.contains('?') { '&' } else { '?' };
                let url = format!("{admin_url}{separator}options=-c%20search_path%3D{schema}");
                let jobs = SqlJobQueue::connect(&url, 8).await.expect("postgres jobs");
                Harness {
                    jobs: Arc::new(jobs),
                    url,
                    cleanup: Cleanup::Postgres { admin_url, schema },
                }
            }
        }
    }

    pub async fn finish(self) {
        self.jobs.close().await;
        if let Cleanup::Postgres { admin_url, schema } = self.cleanup {
            let admin = sqlx::AnyPool::connect(&admin_url).await.expect("postgres");
            sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                .execute(&admin)
                .await
                .expect("drop schema");
        }
    }
}
