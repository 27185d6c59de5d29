//! `marquee-bench push`: SSE push against a `marquee serve` child process and, in the same run
//! with the same client, nginx with the nchan module — the well-known peer for this job.
//!
//! Two phases per target:
//! 1. **Idle connections** — `idle` SSE connections held open on one channel, spread over
//!    loopback source addresses (127.0.0.2, .3, …) so no address runs out of ports; the server's
//!    resident memory is read from `/proc` before and after, giving bytes per connection.
//! 2. **Fan-out** — `subscribers` connections on one hot channel; the publisher sends `messages`
//!    messages at `rate` per second, each carrying its send time in microseconds; every
//!    subscriber records the delay of each delivery. Reported: deliveries per second (all
//!    deliveries over the time from the first publish to the last delivery) and the p50 / p99
//!    delay over all deliveries.
//!
//! Servers run as child processes (so their memory is theirs alone and each process stays under
//! the machine's 20,000 open files); the client runs here. The client is raw TCP with a tiny
//! parser so that its own cost is small and identical for both targets.

use anyhow::{bail, Context};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

#[derive(Debug, Clone)]
pub struct PushBench {
    pub idle: usize,
    pub subscribers: usize,
    pub messages: usize,
    pub rate: f64,
    pub with_nchan: bool,
}

#[derive(Debug, Clone)]
pub struct PushReport {
    pub target: &'static str,
    pub idle_connections: usize,
    pub idle_bytes_per_connection: f64,
    pub subscribers: usize,
    pub delivered: u64,
    pub expected: u64,
    pub deliveries_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Connections per loopback source address (each has ~28,000 ephemeral ports).
const PER_SOURCE: usize = 5_000;

enum Target {
    Marquee {
        child: Child,
        addr: SocketAddr,
        admin: SocketAddr,
        _data: tempfile::TempDir,
    },
    Nchan {
        child: Child,
        addr: SocketAddr,
        _dir: tempfile::TempDir,
    },
}

impl Drop for Target {
    fn drop(&mut self) {
        let child = match self {
            Target::Marquee { child, .. } | Target::Nchan { child, .. } => child,
        };
        stop_child(child);
    }
}

/// Stops a server the benchmark started the way its operator would: SIGTERM, so that an nginx
/// master takes its workers with it (SIGKILL leaves them running, holding their sockets), and
/// SIGKILL if it has not gone within five seconds.
pub(crate) fn stop_child(child: &mut Child) {
    let pid = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid {
        if rustix::process::kill_process(pid, rustix::process::Signal::TERM).is_ok() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// nginx's `http` settings that keep a benchmark's nginx off the system's log and temp
/// directories (it runs unprivileged, from a temp dir).
pub(crate) fn nginx_private_paths(dir: &Path) -> String {
    let dir = dir.display();
    format!(
        "  access_log off;\n  client_body_temp_path {dir}/body;\n  proxy_temp_path {dir}/proxy;\n  \
         fastcgi_temp_path {dir}/fastcgi;\n  uwsgi_temp_path {dir}/uwsgi;\n  scgi_temp_path {dir}/scgi;"
    )
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Target {
    fn name(&self) -> &'static str {
        match self {
            Target::Marquee { .. } => "marquee",
            Target::Nchan { .. } => "nginx + nchan",
        }
    }

    fn addr(&self) -> SocketAddr {
        match self {
            Target::Marquee { addr, .. } | Target::Nchan { addr, .. } => *addr,
        }
    }

    fn subscribe_path(&self, channel: &str) -> String {
        match self {
            Target::Marquee { .. } => format!("/api/v1/push/sse?channel=queue:{channel}"),
            Target::Nchan { .. } => format!("/sub/{channel}"),
        }
    }

    async fn start_marquee() -> anyhow::Result<Target> {
        let data = tempfile::tempdir()?;
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let admin: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let child = Command::new(crate::product::marquee_binary()?)
            // Benchmarks sign many fans in from one address: lift the sign-in throttle.
            .env("MARQUEE_AUTH_ATTEMPTS_PER_IP", "1000000")
            .env("MARQUEE_RTMP_LISTEN", "off")
            .env("MARQUEE_SRT_LISTEN", "off")
            .args(["--log-filter", "warn", "serve", "--listen"])
            .arg(addr.to_string())
            .arg("--admin-listen")
            .arg(admin.to_string())
            .arg("--data-dir")
            .arg(data.path())
            .args(["--push-max-per-ip", "1000000", "--push-buffer", "4096"])
            .stdout(Stdio::null())
            .spawn()
            .context("starting marquee serve")?;
        let target = Target::Marquee {
            child,
            addr,
            admin,
            _data: data,
        };
        wait_for_port(admin).await?;
        wait_for_port(addr).await?;
        Ok(target)
    }

    async fn start_nchan() -> anyhow::Result<Target> {
        let module = Path::new("/usr/lib/nginx/modules/ngx_nchan_module.so");
        if !module.exists() {
            bail!("nchan is not installed (apt-get install nginx-light libnginx-mod-nchan)");
        }
        let dir = tempfile::tempdir()?;
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let config = format!(
            r#"load_module {module};
worker_processes 2;
worker_rlimit_nofile 20000;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 20000; }}
http {{
{private}
  server {{
    listen {addr};
    location ~ ^/sub/(\w+)$ {{
      nchan_subscriber eventsource;
      nchan_channel_id $1;
      nchan_subscriber_timeout 0;
    }}
    location ~ ^/pub/(\w+)$ {{
      nchan_publisher;
      nchan_channel_id $1;
    }}
  }}
}}
"#,
            module = module.display(),
            dir = dir.path().display(),
            private = nginx_private_paths(dir.path()),
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, config)?;
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&path)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdout(Stdio::null())
            .spawn()
            .context("starting nginx (apt-get install nginx-light libnginx-mod-nchan)")?;
        let target = Target::Nchan {
            child,
            addr,
            _dir: dir,
        };
        wait_for_port(addr).await?;
        Ok(target)
    }

    /// Resident memory of the server: the process and, for nginx, its workers.
    fn rss_bytes(&self) -> u64 {
        let pid = match self {
            Target::Marquee { child, .. } | Target::Nchan { child, .. } => child.id(),
        };
        let mut pids = vec![pid];
        if let Target::Nchan { .. } = self {
            if let Ok(output) = Command::new("pgrep")
                .args(["-P", &pid.to_string()])
                .output()
            {
                pids.extend(
                    String::from_utf8_lossy(&output.stdout)
                        .lines()
                        .filter_map(|line| line.trim().parse::<u32>().ok()),
                );
            }
        }
        pids.iter().map(|pid| rss_of(*pid)).sum()
    }
}

/// Where to publish, without owning the server process.
enum PublishHandle {
    Marquee(SocketAddr),
    Nchan(SocketAddr),
}

impl Target {
    fn clone_handle(&self) -> PublishHandle {
        match self {
            Target::Marquee { admin, .. } => PublishHandle::Marquee(*admin),
            Target::Nchan { addr, .. } => PublishHandle::Nchan(*addr),
        }
    }
}

impl PublishHandle {
    async fn publish(&self, client: &reqwest::Client, channel: &str, body: &str) -> bool {
        let request = match self {
            PublishHandle::Marquee(admin) => client
                .post(format!("http://{admin}/push/publish"))
                .header("content-type", "application/json")
                .body(format!(
                    r#"{{"channel":"queue:{channel}","type":"bench","data":{body}}}"#
                )),
            PublishHandle::Nchan(addr) => client
                .post(format!("http://{addr}/pub/{channel}"))
                .body(body.to_string()),
        };
        matches!(request.send().await, Ok(response) if response.status().is_success())
    }
}

fn rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

pub(crate) async fn wait_for_port(addr: SocketAddr) -> anyhow::Result<()> {
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("nothing listens on {addr}")
}

fn source_address(index: usize) -> IpAddr {
    let n = 2 + index / PER_SOURCE;
    IpAddr::V4(Ipv4Addr::new(127, 0, (n / 250) as u8, (n % 250) as u8 + 1))
}

/// Opens an SSE request from `source` and returns the stream once the response headers say 200.
async fn open_sse(target: SocketAddr, source: IpAddr, path: &str) -> anyhow::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let mut stream = socket.connect(target).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut head = Vec::with_capacity(512);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 {
            bail!("connection closed before the response headers");
        }
        head.push(byte[0]);
        if head.len() > 8192 {
            bail!("response headers too long");
        }
    }
    if !head.starts_with(b"HTTP/1.1 200") {
        bail!(
            "subscription refused: {}",
            String::from_utf8_lossy(&head).lines().next().unwrap_or("")
        );
    }
    Ok(stream)
}

/// Opens `count` SSE connections, 500 at a time.
async fn open_many(target: &Target, channel: &str, count: usize) -> anyhow::Result<Vec<TcpStream>> {
    let addr = target.addr();
    let path = target.subscribe_path(channel);
    let mut streams = Vec::with_capacity(count);
    let mut index = 0;
    while index < count {
        let batch: Vec<_> = (index..count.min(index + 500))
            .map(|i| {
                let path = path.clone();
                tokio::spawn(async move {
                    // A burst of connects can overflow a listen backlog (reset by peer); a
                    // real client would retry, so the bench does, a few times.
                    let mut attempt = 0;
                    loop {
                        match open_sse(addr, source_address(i), &path).await {
                            Ok(stream) => return Ok(stream),
                            Err(error) if attempt >= 4 => return Err(error),
                            Err(_) => {
                                attempt += 1;
                                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                            }
                        }
                    }
                })
            })
            .collect();
        for opening in batch {
            streams.push(opening.await??);
        }
        index += 500;
    }
    Ok(streams)
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_micros() as u64)
}

/// Reads deliveries until `expected` arrived or the stream ends; returns each delay in µs.
async fn read_deliveries(
    mut stream: TcpStream,
    expected: usize,
    last_delivery: Arc<AtomicU64>,
) -> Vec<u32> {
    let mut delays = Vec::with_capacity(expected);
    let mut buffer = vec![0u8; 8192];
    let mut carry: Vec<u8> = Vec::new();
    while delays.len() < expected {
        let read = match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        let now = now_micros();
        carry.extend_from_slice(&buffer[..read]);
        let mut consumed = 0;
        while let Some(newline) = carry[consumed..].iter().position(|byte| *byte == b'\n') {
            let line = &carry[consumed..consumed + newline];
            if let Some(sent) = sent_time(line) {
                delays.push(now.saturating_sub(sent).min(u64::from(u32::MAX)) as u32);
            }
            consumed += newline + 1;
        }
        carry.drain(..consumed);
        last_delivery.fetch_max(now, Ordering::Relaxed);
    }
    delays
}

/// The `"t":<micros>` stamp of a data line.
fn sent_time(line: &[u8]) -> Option<u64> {
    let at = line.windows(4).position(|window| window == b"\"t\":")?;
    let digits: Vec<u8> = line[at + 4..]
        .iter()
        .copied()
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

async fn run_target(target: &Target, bench: &PushBench) -> anyhow::Result<PushReport> {
    let client = reqwest::Client::new();
    // Warm up: one subscriber, one message.
    let warm = open_many(target, "warm", 1).await?;
    target
        .clone_handle()
        .publish(&client, "warm", r#"{"t":0}"#)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(warm);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Phase 1: idle connections.
    let before = target.rss_bytes();
    let idle = open_many(target, "idle", bench.idle).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = target.rss_bytes();
    let idle_connections = idle.len();
    let idle_bytes_per_connection =
        after.saturating_sub(before) as f64 / idle_connections.max(1) as f64;
    drop(idle);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Phase 2: fan-out of one hot channel.
    let streams = open_many(target, "hot", bench.subscribers).await?;
    let last_delivery = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = streams
        .into_iter()
        .map(|stream| {
            tokio::spawn(read_deliveries(
                stream,
                bench.messages,
                last_delivery.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let published = Arc::new(AtomicUsize::new(0));
    let first_publish = now_micros();
    let interval = Duration::from_secs_f64(1.0 / bench.rate.max(0.001));
    let start = tokio::time::Instant::now();
    let handle = Arc::new(target.clone_handle());
    let mut publishes = Vec::with_capacity(bench.messages);
    for index in 0..bench.messages {
        let offset = interval.mul_f64(index as f64);
        tokio::time::sleep_until(start + offset).await;
        // Stamped with the scheduled time, and sent from its own task: a publish that is slow
        // to answer delays no other, and any lag counts in the delay (no coordinated omission).
        let scheduled = first_publish + offset.as_micros() as u64;
        let body = format!(r#"{{"t":{scheduled},"n":{index}}}"#);
        let (client, handle, published) = (client.clone(), handle.clone(), published.clone());
        publishes.push(tokio::spawn(async move {
            if handle.publish(&client, "hot", &body).await {
                published.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for publish in publishes {
        publish.await?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut delays: Vec<u32> = Vec::with_capacity(bench.subscribers * bench.messages);
    for reader in readers {
        let left = deadline.saturating_duration_since(Instant::now());
        let abort = reader.abort_handle();
        match tokio::time::timeout(left, reader).await {
            Ok(Ok(mut subscriber)) => delays.append(&mut subscriber),
            _ => abort.abort(),
        }
    }
    delays.sort_unstable();
    let delivered = delays.len() as u64;
    let span = last_delivery
        .load(Ordering::Relaxed)
        .saturating_sub(first_publish)
        .max(1) as f64
        / 1e6;
    let percentile = |p: f64| {
        delays
            .get(((delays.len() as f64 * p) as usize).min(delays.len().saturating_sub(1)))
            .map_or(0.0, |micros| f64::from(*micros) / 1000.0)
    };
    Ok(PushReport {
        target: target.name(),
        idle_connections,
        idle_bytes_per_connection,
        subscribers: bench.subscribers,
        delivered,
        expected: (published.load(Ordering::Relaxed) * bench.subscribers) as u64,
        deliveries_per_sec: delivered as f64 / span,
        p50_ms: percentile(0.50),
        p99_ms: percentile(0.99),
    })
}

/// Runs marquee, then nchan, with the same client; returns a report per target.
pub async fn run_push(bench: &PushBench) -> anyhow::Result<Vec<PushReport>> {
    let mut reports = Vec::new();
    {
        let marquee = Target::start_marquee().await?;
        reports.push(run_target(&marquee, bench).await?);
    }
    if bench.with_nchan {
        let nchan = Target::start_nchan().await?;
        reports.push(run_target(&nchan, bench).await?);
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_found_in_both_servers_formats() {
        assert_eq!(
            sent_time(br#"data: {"channel":"queue:hot","data":{"n":1,"t":123},"offset":2,"type":"bench"}"#),
            Some(123)
        );
        assert_eq!(sent_time(br#"data: {"t":456,"n":0}"#), Some(456));
        assert_eq!(sent_time(b": heartbeat"), None);
    }

    #[test]
    fn sources_spread_over_loopback() {
        assert_eq!(source_address(0), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)));
        assert_ne!(source_address(0), source_address(PER_SOURCE));
    }
}
