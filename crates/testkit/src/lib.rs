//! Test support shared by the crates' suites (a dev-dependency only; never in a build).
//!
//! - [`redis_url`]: the single Redis server (`MARQUEE_TEST_REDIS_URL`, default
//!   `redis://127.0.0.1:6379`), which the test environment runs.
//! - [`redis_cluster_url`]: a three-primary Redis Cluster this test binary starts for itself on
//!   free ports, the first time a test asks, and shares with every later test (each test keeps
//!   to its own key prefix, as on the single server). The URL is the `redis+cluster://` form
//!   `marquee-redis` reads.
//!
//! A cluster in a `static` is never dropped (Rust runs no destructors for statics at exit), so
//! the servers are stopped by a small shell watchdog instead: it waits for the test process to
//! end, however it ends, then kills them and removes their directory. A [`RedisCluster`] that is
//! not shared stops its servers when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

const PRIMARIES: usize = 3;
/// Redis Cluster's bus listens on the client port plus this.
const BUS_OFFSET: u16 = 10_000;
const PATIENCE: Duration = Duration::from_secs(30);

/// The single Redis server the suites use.
pub fn redis_url() -> String {
    std::env::var("MARQUEE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The URL of this test binary's Redis Cluster, started on first use. Panics when it cannot
/// start (no `redis-server` on PATH, say): a suite that asks for a cluster needs one.
pub fn redis_cluster_url() -> String {
    static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
    CLUSTER
        .get_or_init(|| {
            let cluster = RedisCluster::start()
                .unwrap_or_else(|error| panic!("cannot start a Redis Cluster: {error}"));
            cluster.stop_with_this_process();
            cluster
        })
        .url()
}

/// Three primaries on 127.0.0.1, no replicas, no persistence.
pub struct RedisCluster {
    ports: Vec<u16>,
    dir: PathBuf,
    servers: Mutex<Vec<Child>>,
}

fn free_ports(count: usize) -> std::io::Result<Vec<u16>> {
    // Held until all are chosen, so no port is picked twice; the bus port must be free too.
    let mut held = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..1000 {
        if ports.len() == count {
            break;
        }
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let Some(bus) = port.checked_add(BUS_OFFSET) else {
            continue;
        };
        if let Ok(bus) = TcpListener::bind(("127.0.0.1", bus)) {
            ports.push(port);
            held.push((listener, bus));
        }
    }
    if ports.len() < count {
        return Err(std::io::Error::other("no free port pairs"));
    }
    Ok(ports)
}

fn redis_cli(port: u16, args: &[&str]) -> std::io::Result<String> {
    let output = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr))
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) -> std::io::Result<()> {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        if Instant::now() > deadline {
            return Err(std::io::Error::other(format!(
                "timed out waiting for {what}"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

impl RedisCluster {
    /// Starts the servers, joins them into a cluster and waits until every node says the
    /// cluster is ok.
    pub fn start() -> std::io::Result<RedisCluster> {
        let ports = free_ports(PRIMARIES)?;
        let dir = std::env::temp_dir().join(format!(
            "marquee-redis-cluster-{}-{}",
            std::process::id(),
            ports[0]
        ));
        std::fs::create_dir_all(&dir)?;
        let cluster = RedisCluster {
            servers: Mutex::new(Vec::new()),
            dir,
            ports,
        };
        for &port in &cluster.ports {
            let server = cluster.server(port)?;
            cluster
                .servers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(server);
        }
        for &port in &cluster.ports {
            wait_for(&format!("redis-server on port {port}"), || {
                redis_cli(port, &["ping"]).is_ok_and(|reply| reply.contains("PONG"))
            })?;
        }
        let nodes: Vec<String> = cluster
            .ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()?;
        if !created.status.success() {
            return Err(std::io::Error::other(format!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&created.stdout)
            )));
        }
        for &port in &cluster.ports {
            wait_for(&format!("the cluster to be ok on port {port}"), || {
                redis_cli(port, &["cluster", "info"]).is_ok_and(|info| {
                    info.contains("cluster_state:ok")
                        && info.contains(&format!("cluster_known_nodes:{PRIMARIES}"))
                })
            })?;
        }
        Ok(cluster)
    }

    fn server(&self, port: u16) -> std::io::Result<Child> {
        let log = std::fs::File::create(self.dir.join(format!("redis-{port}.log")))?;
        Command::new("redis-server")
            .arg("--port")
            .arg(port.to_string())
            .args(["--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .arg("--cluster-config-file")
            .arg(self.dir.join(format!("nodes-{port}.conf")))
            .arg("--dir")
            .arg(&self.dir)
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Leaves a watchdog that stops the servers once this process has ended.
    fn stop_with_this_process(&self) {
        let servers: Vec<String> = self
            .servers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|server| server.id().to_string())
            .collect();
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(
                r#"parent=$1; dir=$2; shift 2
while kill -0 "$parent" 2>/dev/null; do sleep 1; done
kill "$@" 2>/dev/null; sleep 1; rm -rf "$dir""#,
            )
            .arg("watchdog")
            .arg(std::process::id().to_string())
            .arg(&self.dir)
            .args(servers)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        if let Err(error) = watchdog {
            eprintln!(
                "no watchdog for the test Redis Cluster ({error}); its servers outlive the tests"
            );
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        let servers = self
            .servers
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for server in servers.iter_mut() {
            let _ = server.kill();
            let _ = server.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_starts_with_every_slot_served_and_stops_when_dropped() {
        let cluster = RedisCluster::start().expect("cluster");
        let port = cluster.ports()[0];
        let info = redis_cli(port, &["cluster", "info"]).expect("cluster info");
        assert!(info.contains("cluster_slots_ok:16384"), "{info}");
        assert!(cluster.url().starts_with("redis+cluster://127.0.0.1:"));
        let dir = cluster.dir().to_path_buf();
        drop(cluster);
        assert!(!dir.exists());
        assert!(!redis_cli(port, &["ping"])
            .expect("redis-cli")
            .contains("PONG"));
    }
}
