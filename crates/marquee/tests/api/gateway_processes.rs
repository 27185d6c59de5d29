//! The gateway with real processes: `marquee serve` nodes killed with SIGKILL in the middle of
//! a run and started again, and three `marquee gateway` processes sharing one Redis quota.

use crate::gateway::gateway_config;
use crate::support::{own_address, ulid_lower, TestApp, JWT_SECRET};
use futures::StreamExt;
use marquee_gateway::{Gateway, Policy};
use reqwest::StatusCode;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::process::{Child, Command};

/// Only a bound on a hung test; no assertion depends on it.
const PATIENCE: Duration = Duration::from_secs(30);

pub(crate) fn marquee() -> Command {
    marquee_via(&[])
}

/// `marquee` started through `wrapper` (e.g. `ip netns exec <ns>`), which execs it.
pub(crate) fn marquee_via(wrapper: &[String]) -> Command {
    let binary = env!("CARGO_BIN_EXE_marquee");
    let mut command = match wrapper.split_first() {
        None => Command::new(binary),
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(binary);
            command
        }
    };
    command
        .args(["--log-filter", "warn"])
        .env("MARQUEE_JWT_SECRET", JWT_SECRET)
        // Tests register many accounts from one address; the throttle has tests of its own.
        .env("MARQUEE_AUTH_ATTEMPTS_PER_IP", "1000000")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true);
    command
}

async fn answers(url: &str) {
    let client = reqwest::Client::new();
    let ready = async {
        loop {
            if let Ok(response) = client.get(format!("{url}/healthz")).send().await {
                if response.status() == StatusCode::OK {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(PATIENCE, ready)
        .await
        .unwrap_or_else(|_| panic!("{url} never answered"));
}

async fn spawn_node(address: SocketAddr, node_id: &str, data_dir: &Path) -> Child {
    let child = marquee()
        .env("MARQUEE_RTMP_LISTEN", "off")
        .env("MARQUEE_SRT_LISTEN", "off")
        .args([
            "serve",
            "--listen",
            &address.to_string(),
            "--node-id",
            node_id,
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .spawn()
        .expect("marquee serve starts");
    answers(&format!("http://{address}")).await;
    child
}

/// Each answer a fan got through the gateway: status and the node that served it.
type Outcomes = Vec<(u16, String)>;

/// Awaits the first moment the outcomes satisfy `done`.
async fn until(
    watch: &tokio::sync::watch::Receiver<Outcomes>,
    done: impl FnMut(&Outcomes) -> bool,
) {
    let mut watch = watch.clone();
    tokio::time::timeout(PATIENCE, watch.wait_for(done))
        .await
        .expect("requests keep flowing")
        .expect("the workers are alive");
}

#[tokio::test]
async fn a_killed_node_is_ejected_then_taken_back_and_no_request_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Node 2's port stays aimed at while it is down: on an address no other test binds.
    let addresses: Vec<SocketAddr> = (0..3).map(|_| own_address()).collect();
    let mut nodes = Vec::new();
    for (n, address) in addresses.iter().enumerate() {
        let data_dir = dir.path().join(format!("node-{}", n + 1));
        nodes.push(spawn_node(*address, &format!("node-{}", n + 1), &data_dir).await);
    }
    let urls: Vec<String> = addresses
        .iter()
        .map(|address| format!("http://{address}"))
        .collect();
    let mut config = gateway_config(&urls);
    config.policies = vec![marquee_gateway::GroupPolicy {
        group: "api".into(),
        policy: Policy::RoundRobin,
    }];
    config.health.interval = Duration::from_millis(100);
    config.ejection.base = Duration::from_secs(1);
    let gateway = Arc::new(Gateway::start(config).await.expect("gateway"));
    let base = gateway.url();

    // Fans keep asking (idempotent reads) the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    // Every answer (status, node) in arrival order; watchers wake on each one.
    let (outcomes, watch) = tokio::sync::watch::channel(Outcomes::new());
    let outcomes = Arc::new(outcomes);
    let workers: Vec<_> = (0..6)
        .map(|_| {
            let (stop, outcomes, base) = (Arc::clone(&stop), Arc::clone(&outcomes), base.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                while !stop.load(Ordering::Relaxed) {
                    let response = client
                        .get(format!("{base}/api/v1/events?limit=5"))
                        .send()
                        .await
                        .expect("the gateway answers");
                    let node = response
                        .headers()
                        .get("x-marquee-node")
                        .and_then(|value| value.to_str().ok())
                        .unwrap_or("<the gateway>")
                        .to_string();
                    let status = response.status().as_u16();
                    outcomes.send_modify(|outcomes| outcomes.push((status, node)));
                }
            })
        })
        .collect();
    until(&watch, |outcomes| outcomes.len() >= 300).await;

    // SIGKILL node 2 in the middle of the run.
    nodes[1].start_kill().expect("kill");
    nodes[1].wait().await.expect("reaped");
    let killed_at = watch.borrow().len();
    // The balancer's view has no event to await; it is read until it changes.
    let out = async {
        loop {
            let status = &gateway.upstreams()[1];
            if !status.healthy || status.ejected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(PATIENCE, out)
        .await
        .expect("the dead node is taken out");
    until(&watch, |outcomes| outcomes.len() >= killed_at + 600).await;

    // Started again on the same port and data: it is taken back and serves again.
    nodes[1] = spawn_node(addresses[1], "node-2", &dir.path().join("node-2")).await;
    let restarted_at = watch.borrow().len();
    until(&watch, |outcomes| {
        outcomes[restarted_at..]
            .iter()
            .any(|(_, node)| node == "node-2")
    })
    .await;
    let status = &gateway.upstreams()[1];
    assert!(status.healthy && !status.ejected, "{status:?}");
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.expect("worker");
    }

    let outcomes = watch.borrow().clone();
    let failures: Vec<&(u16, String)> = outcomes
        .iter()
        .filter(|(status, _)| *status != 200)
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        outcomes.len(),
        &failures[..failures.len().min(5)]
    );
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for (_, node) in outcomes.iter() {
        *per_node.entry(node.as_str()).or_default() += 1;
    }
    for node in ["node-1", "node-2", "node-3"] {
        assert!(per_node.get(node).copied().unwrap_or(0) > 0, "{per_node:?}");
    }
    if let Ok(gateway) = Arc::try_unwrap(gateway) {
        gateway.shutdown().await;
    }
}

#[tokio::test]
async fn three_gateway_processes_share_one_redis_quota_within_one_percent() {
    let node = TestApp::spawn().await;
    let prefix = format!("test-gateway-{}:", ulid_lower());
    let quota = 300;
    let mut gateways = Vec::new();
    let mut urls = Vec::new();
    let admin = own_address().to_string();
    for n in 0..3 {
        let address = own_address();
        let child = marquee()
            .args([
                "gateway",
                "--listen",
                &address.to_string(),
                "--upstream",
                &node.url,
                "--rate-limit",
                &format!("route=GET /api/v1/events={quota}/h"),
                "--redis-url",
                "redis://127.0.0.1:6379",
                "--redis-prefix",
                &prefix,
                "--access-log",
                "false",
            ])
            .args(if n == 0 {
                vec!["--admin-listen", admin.as_str()]
            } else {
                vec![]
            })
            .spawn()
            .expect("marquee gateway starts");
        let url = format!("http://{address}");
        answers(&url).await;
        gateways.push(child);
        urls.push(url);
    }
    let client = reqwest::Client::new();
    let requests = futures::stream::iter(0..quota * 3)
        .map(|n| {
            let request = client
                .get(format!("{}/api/v1/events?limit=1", urls[n % 3]))
                .send();
            async move { request.await.expect("answered").status() }
        })
        .buffer_unordered(90);
    let statuses: Vec<StatusCode> = requests.collect().await;
    let allowed = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(allowed + refused, quota * 3, "only 200 or 429");
    assert!(
        (quota..=quota + quota / 100).contains(&allowed),
        "{allowed} admitted against a shared quota of {quota}"
    );
    // The operators' listener of the first gateway shows the node and the refusals.
    let upstreams: serde_json::Value = client
        .get(format!("http://{admin}/upstreams"))
        .send()
        .await
        .expect("admin answers")
        .json()
        .await
        .expect("JSON");
    assert_eq!(upstreams[0]["healthy"], true, "{upstreams}");
    assert_eq!(upstreams[0]["url"], node.url.as_str(), "{upstreams}");
    let metrics = client
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .expect("admin answers")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("gateway_request_duration_seconds"),
        "{metrics}"
    );
    assert!(metrics.contains("gateway_rate_limited_total"), "{metrics}");
    drop(gateways);
    node.stop().await;
}
