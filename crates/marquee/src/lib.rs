//! The `marquee` binary's library half: configuration, wiring of concrete backends, and the
//! server's lifecycle. It is the only crate that chooses implementations (SQLite or PostgreSQL,
//! in-process or Redis, the outbox or NATS JetStream; S3 as the media block lands). Tests start the real server through
//! [`Server::start`] on port 0, exactly as `marquee serve` does.

pub mod config;
pub mod demo;
pub mod jobs_cli;
pub mod keys;
pub mod server;
pub mod settings;

pub use config::ServerConfig;
pub use server::Server;
