//! Logs and metrics, set up once per process.
//!
//! - **Logs** go through `tracing`: JSON lines for machines by default, a readable format when
//!   stderr is a terminal. Every HTTP request's span carries its request id, so each line logged
//!   while serving it can be traced back to it.
//! - **Metrics** are recorded with the `metrics` facade and rendered in the Prometheus text format.
//!   Latency histograms use explicit buckets (from 1 ms to 10 s) rather than summaries, so they
//!   can be aggregated across nodes.
//!
//! Both are process-wide by nature (one global subscriber, one global recorder); the functions
//! here are idempotent so tests can start many servers in one process.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::io::IsTerminal;
use std::sync::OnceLock;
use tracing_subscriber::{fmt, EnvFilter};

/// Names of the metrics the HTTP layer records.
pub mod names {
    pub const HTTP_REQUESTS_TOTAL: &str = "http_requests_total";
    pub const HTTP_REQUEST_DURATION_SECONDS: &str = "http_request_duration_seconds";
    pub const HTTP_REQUESTS_IN_FLIGHT: &str = "http_requests_in_flight";
}

/// Request latency buckets, in seconds.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Pretty on a terminal, JSON otherwise.
    Auto,
    Json,
    Pretty,
}

impl LogFormat {
    pub fn parse(raw: &str) -> Option<LogFormat> {
        match raw {
            "auto" => Some(LogFormat::Auto),
            "json" => Some(LogFormat::Json),
            "pretty" => Some(LogFormat::Pretty),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log filter {filter:?}: {reason}")]
    Filter { filter: String, reason: String },
    #[error("metrics recorder could not be built: {0}")]
    Metrics(String),
}

/// Installs the global log subscriber. `filter` uses `RUST_LOG` syntax (`info,marquee=debug`).
/// Calling it again is harmless: the first subscriber stays.
pub fn init_logging(format: LogFormat, filter: &str) -> Result<(), TelemetryError> {
    let env_filter = EnvFilter::try_new(filter).map_err(|error| TelemetryError::Filter {
        filter: filter.to_string(),
        reason: error.to_string(),
    })?;
    let pretty = match format {
        LogFormat::Auto => std::io::stderr().is_terminal(),
        LogFormat::Json => false,
        LogFormat::Pretty => true,
    };
    let builder = fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr);
    let _already_installed = if pretty {
        builder.compact().try_init()
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    };
    Ok(())
}

/// Installs the global Prometheus recorder once and returns the handle that renders it.
pub fn install_metrics() -> Result<PrometheusHandle, TelemetryError> {
    // One initialiser runs even when many threads ask at once; the others wait for its result.
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(names::HTTP_REQUEST_DURATION_SECONDS.to_string()),
                    LATENCY_BUCKETS,
                )
                .map_err(|error| error.to_string())?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder)
                .map_err(|_| "another metrics recorder is installed".to_string())?;
            describe_metrics();
            Ok(handle)
        })
        .clone()
        .map_err(TelemetryError::Metrics)
}

fn describe_metrics() {
    metrics::describe_counter!(
        names::HTTP_REQUESTS_TOTAL,
        "HTTP requests served, by method, route and status"
    );
    metrics::describe_histogram!(
        names::HTTP_REQUEST_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "HTTP request latency, by method, route and status"
    );
    metrics::describe_gauge!(
        names::HTTP_REQUESTS_IN_FLIGHT,
        "HTTP requests being served right now"
    );
}
