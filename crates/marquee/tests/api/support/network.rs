//! Nodes on a network of their own, so faults are packets: each node in a network namespace
//! (`ip netns`) joined to this one by a veth pair on a bridge, in a /24 of the benchmarking
//! range 198.18.0.0/15 with no route out of the machine; nftables rules inside a node's
//! namespace to cut or thin its traffic; relays (ours, userspace) that put PostgreSQL, Redis and
//! NATS on the bridge's address and can delay one node's bytes; libfaketime to move one node's
//! wall clock.
//!
//! Everything is named `mqf<pid>…` after the test process, removed by `Drop` (a panic included),
//! and whatever a killed earlier run left behind (its process gone) is removed before a new one
//! starts. It needs root, as `scripts/test` runs; without it the test fails, loudly.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

const PREFIX: &str = "mqf";
/// The nftables table each node's namespace has, empty while nothing is wrong.
const TABLE: &str = "marquee_fault";
/// Nodes listen on this port of their own address (each namespace has its own ports).
pub const NODE_PORT: u16 = 8080;

/// Runs a command that must succeed, with a message that says what needs fixing when not.
fn run(program: &str, args: &[&str]) {
    run_with_input(program, args, None);
}

fn run_with_input(program: &str, args: &[&str], input: Option<&str>) {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| {
            panic!("`{program}` runs (scripts/services installs iproute2 and nftables): {error}")
        });
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(input.as_bytes()).expect("stdin");
    }
    let output = child.wait_with_output().expect("waited");
    assert!(
        output.status.success(),
        "`{program} {}` failed: {} (the fault tests need root and network namespaces; \
         scripts/test runs as root)",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

/// Output of a command that may fail (listing what exists).
fn list(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
        .unwrap_or_default()
}

/// The owner process of a name this module made, if it is one.
fn owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Removes the namespaces and links of runs whose process is gone.
fn remove_stale() {
    let stale =
        |name: &str| owner(name).is_some_and(|pid| !PathBuf::from(format!("/proc/{pid}")).exists());
    for line in list("ip", &["netns", "list"]).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if stale(name) {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
    for line in list("ip", &["-o", "link", "show"]).lines() {
        // "12: mqf123b: <…" or "13: mqf123h0@if2: <…"
        let Some(name) = line.split(": ").nth(1) else {
            continue;
        };
        let name = name.split('@').next().unwrap_or(name);
        if stale(name) {
            let _ = Command::new("ip").args(["link", "del", name]).status();
        }
    }
}

/// A bridge in this namespace at `host` (x.x.x.1/24) and one namespace per node at x.x.x.(11+n).
pub struct Network {
    tag: String,
    pub host: Ipv4Addr,
    subnet: [u8; 3],
    namespaces: Vec<String>,
}

impl Network {
    pub fn create(nodes: usize) -> Network {
        // One at a time in this process (`cargo test` runs tests as threads of one): each
        // picks a /24 no other uses.
        static CREATING: Mutex<usize> = Mutex::new(0);
        let mut created = CREATING
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *created += 1;
        remove_stale();
        let pid = std::process::id();
        // `mqf<pid>x<n>`: 15 characters at most with the suffixes, the limit of a link's name.
        let tag = format!("{PREFIX}{pid}x{}", *created % 10);
        // Left by an earlier process that had this pid, whose names these are.
        for index in 0..nodes {
            let _ = Command::new("ip")
                .args(["netns", "del", &format!("{tag}-{index}")])
                .stderr(std::process::Stdio::null())
                .status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &format!("{tag}b")])
            .stderr(std::process::Stdio::null())
            .status();
        // A /24 of 198.18.0.0/15 no address of this machine is in, starting from one the pid
        // picks so concurrent tests start apart.
        let used = list("ip", &["-o", "-4", "addr", "show"]);
        let subnet = (0..512u32)
            .map(|offset| (pid + offset) % 512)
            .map(|index| [198, 18 + (index / 256) as u8, (index % 256) as u8])
            .find(|[a, b, c]| !used.contains(&format!(" {a}.{b}.{c}.")))
            .expect("a free /24 in 198.18.0.0/15");
        let [a, b, c] = subnet;
        let mut network = Network {
            host: Ipv4Addr::new(a, b, c, 1),
            subnet,
            namespaces: Vec::new(),
            tag: tag.clone(),
        };
        let bridge = network.bridge();
        run("ip", &["link", "add", &bridge, "type", "bridge"]);
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/24", network.host),
                "dev",
                &bridge,
            ],
        );
        run("ip", &["link", "set", &bridge, "up"]);
        for index in 0..nodes {
            let namespace = format!("{tag}-{index}");
            run("ip", &["netns", "add", &namespace]);
            network.namespaces.push(namespace.clone());
            let (outside, inside) = (format!("{tag}h{index}"), format!("{tag}n{index}"));
            run(
                "ip",
                &[
                    "link", "add", &outside, "type", "veth", "peer", "name", &inside,
                ],
            );
            run("ip", &["link", "set", &outside, "master", &bridge]);
            run("ip", &["link", "set", &outside, "up"]);
            run("ip", &["link", "set", &inside, "netns", &namespace]);
            let within = |args: &[&str]| {
                let mut all = vec!["netns", "exec", namespace.as_str()];
                all.extend_from_slice(args);
                run("ip", &all);
            };
            within(&["ip", "link", "set", &inside, "name", "eth0"]);
            within(&[
                "ip",
                "addr",
                "add",
                &format!("{}/24", network.node_ip(index)),
                "dev",
                "eth0",
            ]);
            within(&["ip", "link", "set", "eth0", "up"]);
            within(&["ip", "link", "set", "lo", "up"]);
            // No default route in the namespace: only the /24 is reachable, nothing leaves
            // the machine.
            run_with_input(
                "ip",
                &["netns", "exec", &namespace, "nft", "-f", "-"],
                Some(&format!(
                    "table inet {TABLE} {{
                       chain input {{ type filter hook input priority 0; policy accept; }}
                       chain output {{ type filter hook output priority 0; policy accept; }}
                     }}"
                )),
            );
        }
        network
    }

    fn bridge(&self) -> String {
        format!("{}b", self.tag)
    }

    pub fn node_ip(&self, index: usize) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, 11 + index as u8)
    }

    /// Where node `index` listens.
    pub fn node_address(&self, index: usize) -> SocketAddr {
        (self.node_ip(index), NODE_PORT).into()
    }

    /// The command line that runs a program in node `index`'s namespace.
    pub fn wrapper(&self, index: usize) -> Vec<String> {
        ["ip", "netns", "exec", &self.namespaces[index]]
            .map(str::to_string)
            .to_vec()
    }

    fn rule(&self, index: usize, chain: &str, rule: &str) {
        let mut args = vec![
            "netns",
            "exec",
            &self.namespaces[index],
            "nft",
            "add",
            "rule",
        ];
        args.extend(["inet", TABLE, chain]);
        args.extend(rule.split_whitespace());
        run("ip", &args);
    }

    /// Drops every packet between node `index` and `port` on the host (a service's relay).
    pub fn cut_from_host_port(&self, index: usize, port: u16) {
        let host = self.host;
        self.rule(
            index,
            "output",
            &format!("ip daddr {host} tcp dport {port} drop"),
        );
        self.rule(
            index,
            "input",
            &format!("ip saddr {host} tcp sport {port} drop"),
        );
    }

    /// Drops every packet to and from the node's own HTTP port: the gateway (and anyone else)
    /// cannot reach it, while it still reaches its services.
    pub fn cut_inbound(&self, index: usize) {
        self.rule(index, "input", &format!("tcp dport {NODE_PORT} drop"));
        self.rule(index, "output", &format!("tcp sport {NODE_PORT} drop"));
    }

    /// Drops `percent` of the node's TCP packets, each way, at random.
    pub fn lose(&self, index: usize, percent: u8) {
        for chain in ["input", "output"] {
            self.rule(
                index,
                chain,
                &format!("meta l4proto tcp numgen random mod 100 < {percent} drop"),
            );
        }
    }

    /// Removes every rule from node `index`'s namespace.
    pub fn heal(&self, index: usize) {
        for chain in ["input", "output"] {
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    &self.namespaces[index],
                    "nft",
                    "flush",
                    "chain",
                    "inet",
                    TABLE,
                    chain,
                ],
            );
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth, and with it the bridge's end; its
        // nftables table goes with it.
        for namespace in &self.namespaces {
            let _ = Command::new("ip")
                .args(["netns", "del", namespace])
                .status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge()])
            .status();
    }
}

type Delays = Arc<Mutex<HashMap<IpAddr, Duration>>>;

/// A TCP relay on `listen` to `upstream` (the machine's PostgreSQL, Redis or NATS on loopback,
/// which the namespaces cannot reach), which can hold back the bytes of one peer's connections
/// both ways: latency without netem, which this kernel lacks.
pub struct Relay {
    pub address: SocketAddr,
    delays: Delays,
    accepting: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn start(listen: Ipv4Addr, upstream: SocketAddr) -> Relay {
        let listener = TcpListener::bind((listen, 0)).await.expect("relay binds");
        let address = listener.local_addr().expect("address");
        let delays = Delays::default();
        let accepting = tokio::spawn({
            let delays = Arc::clone(&delays);
            async move {
                // Dropped with the task: every connection ends with the relay.
                let mut connections = tokio::task::JoinSet::new();
                loop {
                    let Ok((inbound, peer)) = listener.accept().await else {
                        continue;
                    };
                    while connections.try_join_next().is_some() {}
                    let delays = Arc::clone(&delays);
                    connections.spawn(async move {
                        let Ok(outbound) = TcpStream::connect(upstream).await else {
                            return;
                        };
                        let _ = (inbound.set_nodelay(true), outbound.set_nodelay(true));
                        let delay = move || {
                            delays
                                .lock()
                                .expect("delays")
                                .get(&peer.ip())
                                .copied()
                                .unwrap_or_default()
                        };
                        let (from_peer, to_peer) = inbound.into_split();
                        let (from_upstream, to_upstream) = outbound.into_split();
                        tokio::join!(
                            pipe(from_peer, to_upstream, delay.clone()),
                            pipe(from_upstream, to_peer, delay)
                        );
                    });
                }
            }
        });
        Relay {
            address,
            delays,
            accepting,
        }
    }

    /// The service's URL with this relay's address in place of the upstream's.
    pub fn url(&self, upstream_url: &str) -> String {
        let mut url = reqwest::Url::parse(upstream_url).expect("service URL");
        url.set_ip_host(self.address.ip()).expect("host");
        url.set_port(Some(self.address.port())).expect("port");
        url.to_string().trim_end_matches('/').to_string()
    }

    /// Holds back each chunk `peer` sends or is sent by `delay` (zero: none).
    pub fn delay(&self, peer: IpAddr, delay: Duration) {
        self.delays.lock().expect("delays").insert(peer, delay);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// The address in a service's URL (`postgres://u@127.0.0.1:5432/db`, `redis://…`).
pub fn service_address(url: &str, default_port: u16) -> SocketAddr {
    reqwest::Url::parse(url)
        .expect("service URL")
        .socket_addrs(|| Some(default_port))
        .expect("resolved")
        .into_iter()
        .next()
        .expect("an address")
}

/// A delay line: each chunk is written `delay()` after it was read, in order, so the delay
/// adds latency without capping throughput.
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    delay: impl Fn() -> Duration + Send,
) {
    let (chunks, mut due) = tokio::sync::mpsc::unbounded_channel();
    let reading = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        while let Ok(read @ 1..) = from.read(&mut buffer).await {
            let at = tokio::time::Instant::now() + delay();
            if chunks.send((at, buffer[..read].to_vec())).is_err() {
                break;
            }
        }
    };
    let writing = async move {
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reading, writing);
}

/// One process's wall clock, moved while it runs: libfaketime preloaded, reading its offset
/// from a file every second; the monotonic clock (timers, timeouts) is left alone.
pub struct Clock {
    _dir: tempfile::TempDir,
    file: PathBuf,
}

impl Clock {
    pub fn new() -> Clock {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Clock {
            file: dir.path().join("faketime"),
            _dir: dir,
        };
        clock.set_offset(0);
        clock
    }

    /// The environment that puts a process on this clock.
    pub fn env(&self) -> Vec<(String, String)> {
        let library = ["x86_64-linux-gnu", "aarch64-linux-gnu"]
            .iter()
            .map(|arch| PathBuf::from(format!("/usr/lib/{arch}/faketime/libfaketimeMT.so.1")))
            .find(|path| path.exists())
            .expect("libfaketime (Debian's faketime; scripts/services installs it)");
        [
            ("LD_PRELOAD", library.display().to_string()),
            ("FAKETIME_TIMESTAMP_FILE", self.file.display().to_string()),
            ("FAKETIME_CACHE_DURATION", "1".to_string()),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()),
        ]
        .map(|(name, value)| (name.to_string(), value))
        .to_vec()
    }

    /// Seconds ahead of (or, negative, behind) the real time, from the next second on.
    pub fn set_offset(&self, seconds: i64) {
        std::fs::write(&self.file, format!("{seconds:+}\n")).expect("faketime file");
    }
}
