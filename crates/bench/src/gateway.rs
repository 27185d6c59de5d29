//! `marquee-bench gateway`: `marquee gateway` beside nginx as a reverse proxy, both in front of
//! the same `marquee serve` node on this machine, in the same run.
//!
//! Two measurements, each repeated for a few interleaved rounds (the median is reported, since
//! these machines are noisy):
//! - **Peak throughput**: `wrk` with the same threads and connections against the node
//!   directly, through the gateway and through nginx.
//! - **Added latency at a fixed rate**: an open-loop client (wrk2's method over the same number
//!   of connections: requests are sent on a schedule and latency is measured from the scheduled
//!   time, so a stall is not hidden by the client waiting politely) at half the lower of the two
//!   proxies' peaks; the added p50/p99 is the proxied figure minus the direct one at the same
//!   rate.
//!
//! Every process gets the same two cores: nginx runs `worker_processes 2`, the gateway its
//! default two tokio workers; neither logs requests.

use crate::push::{free_port, nginx_private_paths, wait_for_port};
use anyhow::{bail, Context};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct GatewayBench {
    pub duration: Duration,
    pub connections: usize,
    pub rounds: usize,
    /// Fixed rate for the latency phase; `None` means half of the lower proxy peak.
    pub rate: Option<u64>,
    /// The path requested (a cheap one, so the proxies rather than the node are measured).
    pub path: String,
}

#[derive(Debug, Clone)]
pub struct TargetFigures {
    pub name: &'static str,
    pub peak_rps: Vec<f64>,
    pub p50_ms: Vec<f64>,
    pub p99_ms: Vec<f64>,
}

pub struct GatewayReport {
    pub targets: Vec<TargetFigures>,
    pub rate: u64,
}

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        crate::push::stop_child(&mut self.0);
    }
}

pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

pub async fn run_gateway_bench(bench: &GatewayBench) -> anyhow::Result<GatewayReport> {
    if Command::new("wrk").arg("--version").output().is_err() {
        bail!("wrk is not installed (apt-get install wrk)");
    }
    let dir = tempfile::tempdir()?;
    let exe = crate::product::marquee_binary()?;
    let node: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let _node = Process(
        Command::new(&exe)
            // Benchmarks sign many fans in from one address: lift the sign-in throttle.
            .env("MARQUEE_AUTH_ATTEMPTS_PER_IP", "1000000")
            .env("MARQUEE_RTMP_LISTEN", "off")
            .env("MARQUEE_SRT_LISTEN", "off")
            .args([
                "--log-filter",
                "warn",
                "serve",
                "--listen",
                &node.to_string(),
            ])
            .arg("--data-dir")
            .arg(dir.path().join("node"))
            .stdout(Stdio::null())
            .spawn()
            .context("starting marquee serve")?,
    );
    wait_for_port(node).await?;
    let gateway: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let _gateway = Process(
        Command::new(&exe)
            .env("MARQUEE_RTMP_LISTEN", "off")
            .env("MARQUEE_SRT_LISTEN", "off")
            .args([
                "--log-filter",
                "warn",
                "gateway",
                "--listen",
                &gateway.to_string(),
            ])
            .args(["--upstream", &format!("http://{node}")])
            .args(["--access-log", "false"])
            .stdout(Stdio::null())
            .spawn()
            .context("starting marquee gateway")?,
    );
    wait_for_port(gateway).await?;
    let nginx: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let _nginx = Process(start_nginx(dir.path(), nginx, node)?);
    wait_for_port(nginx).await?;

    let targets = [
        ("direct", node),
        ("marquee gateway", gateway),
        ("nginx", nginx),
    ];
    let mut figures: Vec<TargetFigures> = targets
        .iter()
        .map(|(name, _)| TargetFigures {
            name,
            peak_rps: Vec::new(),
            p50_ms: Vec::new(),
            p99_ms: Vec::new(),
        })
        .collect();
    for _ in 0..bench.rounds {
        for (index, (_, address)) in targets.iter().enumerate() {
            let url = format!("http://{address}{}", bench.path);
            figures[index]
                .peak_rps
                .push(wrk(&url, bench.connections, bench.duration)?);
        }
    }
    let rate = bench.rate.unwrap_or_else(|| {
        (median(&figures[1].peak_rps).min(median(&figures[2].peak_rps)) / 2.0) as u64
    });
    for _ in 0..bench.rounds {
        for (index, (name, address)) in targets.iter().enumerate() {
            let (p50, p99) = open_loop(
                *address,
                &bench.path,
                rate,
                bench.duration,
                bench.connections,
            )
            .await
            .map_err(|error| anyhow::anyhow!("{name} at {rate} requests/s: {error:#}"))?;
            figures[index].p50_ms.push(p50);
            figures[index].p99_ms.push(p99);
        }
    }
    Ok(GatewayReport {
        targets: figures,
        rate,
    })
}

fn start_nginx(
    dir: &std::path::Path,
    listen: SocketAddr,
    node: SocketAddr,
) -> anyhow::Result<Child> {
    let config = format!(
        r#"worker_processes 2;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
{private}
  upstream marquee {{
    server {node};
    keepalive 256;
  }}
  server {{
    listen {listen};
    location / {{
      proxy_pass http://marquee;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Request-Id $request_id;
    }}
  }}
}}
"#,
        dir = dir.display(),
        private = nginx_private_paths(dir),
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, config)?;
    Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&path)
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdout(Stdio::null())
        .spawn()
        .context("starting nginx (apt-get install nginx-light)")
}

/// `wrk -t2 -cN -dD URL`: requests per second.
pub(crate) fn wrk(url: &str, connections: usize, duration: Duration) -> anyhow::Result<f64> {
    let output = Command::new("wrk")
        .args(["-t2", &format!("-c{connections}")])
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .arg(url)
        .output()
        .context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        bail!("wrk saw errors against {url}:\n{text}");
    }
    text.lines()
        .find_map(|line| line.strip_prefix("Requests/sec:"))
        .and_then(|value| value.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's output:\n{text}"))
}

/// wrk2's method: `connections` keep-alive connections each send their share of `rate`
/// requests per second on a fixed schedule, one at a time, and each latency is measured from
/// the request's *scheduled* time, so a stall also counts against the requests that should
/// have gone out during it (no coordinated omission). The client speaks HTTP/1.1 straight over
/// the sockets: at tens of thousands of requests a second on two shared cores, a full HTTP
/// client library would be the bottleneck and measure itself. p50 and p99 in ms.
async fn open_loop(
    address: SocketAddr,
    path: &str,
    rate: u64,
    duration: Duration,
    connections: usize,
) -> anyhow::Result<(f64, f64)> {
    let connections = connections.clamp(1, rate.max(1) as usize);
    let total = (rate as f64 * duration.as_secs_f64()) as u64;
    let interval = Duration::from_secs_f64(connections as f64 / rate.max(1) as f64);
    let request: Arc<[u8]> =
        Arc::from(format!("GET {path} HTTP/1.1\r\nhost: {address}\r\n\r\n").into_bytes());
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::with_capacity(connections);
    for connection in 0..connections {
        let request = Arc::clone(&request);
        // Connection k sends requests k, k + n, k + 2n, … of the global schedule.
        let first = start + interval.mul_f64(connection as f64 / connections as f64);
        let count = total / connections as u64
            + u64::from((connection as u64) < total % connections as u64);
        tasks.push(tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(address).await?;
            stream.set_nodelay(true)?;
            let mut latencies = Vec::with_capacity(count as usize);
            let mut buffer = Vec::with_capacity(4096);
            for index in 0..count {
                let scheduled = first + interval.mul_f64(index as f64);
                tokio::time::sleep_until(scheduled).await;
                stream.write_all(&request).await?;
                let closing = read_answer(&mut stream, &mut buffer).await?;
                latencies.push(scheduled.elapsed().as_secs_f64() * 1000.0);
                if closing {
                    // nginx closes a connection after `keepalive_requests` (1,000); wrk
                    // reconnects too.
                    stream = tokio::net::TcpStream::connect(address).await?;
                    stream.set_nodelay(true)?;
                    buffer.clear();
                }
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(total as usize);
    for task in tasks {
        latencies.extend(task.await??);
    }
    if latencies.is_empty() {
        bail!("the rate and duration send no request");
    }
    latencies.sort_by(f64::total_cmp);
    let at = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    Ok((at(0.50), at(0.99)))
}

/// Reads one answer with a `Content-Length` body; anything but a 2xx is an error. Whether the
/// server closes the connection after it.
async fn read_answer(
    stream: &mut tokio::net::TcpStream,
    buffer: &mut Vec<u8>,
) -> anyhow::Result<bool> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut answer = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(head) = answer.parse(buffer)? {
            let status = answer.code.unwrap_or(0);
            if !(200..300).contains(&status) {
                bail!("status {status}");
            }
            let length: usize = answer
                .headers
                .iter()
                .find(|header| header.name.eq_ignore_ascii_case("content-length"))
                .and_then(|header| std::str::from_utf8(header.value).ok()?.parse().ok())
                .context("an answer without Content-Length")?;
            let closing = answer.headers.iter().any(|header| {
                header.name.eq_ignore_ascii_case("connection")
                    && header.value.eq_ignore_ascii_case(b"close")
            });
            if buffer.len() >= head + length {
                buffer.drain(..head + length);
                return Ok(closing);
            }
        }
        let mut chunk = [0u8; 4096];
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            bail!("the server closed the connection");
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
}
