//! End-to-end tests of the HTTP contract: each test starts the real server on port 0 over its
//! own SQLite file (or its own PostgreSQL schema) and speaks HTTP to it.

mod accounts;
mod authz;
mod cluster;
mod demo;
mod events;
mod faults;
mod gateway;
mod gateway_http1;
mod gateway_processes;
mod holds;
mod live;
mod notifications;
mod push;
mod queue;
mod rate_limits;
mod search;
mod slowloris;
mod stress;
mod support;
mod surge;
mod system;
mod venues;
mod web;
