//! CPU time from `/proc` and CPU caps through cgroups.
//!
//! A process's CPU time is `utime + stime` of `/proc/<pid>/stat` (every thread, in clock ticks
//! of `getconf CLK_TCK`). The peers are found by their `comm`: PostgreSQL's are every process
//! whose name starts with `postgres` (the postmaster, its workers and one backend per
//! connection), Redis's `redis-server`, NATS's `nats-server`. A peer process that exits during
//! a run takes its time with it (a backend whose connection closed); one started during the run
//! counts from its start. Whatever else runs on the machine and talks to the same servers is
//! counted too.

use anyhow::Context;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What a run reads of one process's `/proc/<pid>/stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    pub comm: String,
    /// `utime + stime`, in clock ticks.
    pub ticks: u64,
    /// Start time after boot, in clock ticks: with the pid, tells a process from a later one that
    /// reused its pid.
    pub start: u64,
}

/// Parses the contents of `/proc/<pid>/stat`. The command name (field 2) is in parentheses and
/// may itself hold spaces and parentheses, so the fields after it are counted from the last `)`.
pub fn parse_stat(stat: &str) -> Option<ProcStat> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // fields[0] is field 3 (state), so field n (1-based, as in proc(5)) is fields[n - 3]:
    // utime 14, stime 15, starttime 22.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let start: u64 = fields.get(19)?.parse().ok()?;
    Some(ProcStat {
        comm,
        ticks: utime + stime,
        start,
    })
}

fn read_stat(pid: u32) -> Option<ProcStat> {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| parse_stat(&stat))
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 when it cannot be asked).
pub fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .filter(|ticks: &u64| *ticks > 0)
        .unwrap_or(100)
}

/// The shared engines whose CPU time a run reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    Postgres,
    Redis,
    Nats,
}

impl Peer {
    pub fn of(comm: &str) -> Option<Peer> {
        if comm.starts_with("postgres") {
            Some(Peer::Postgres)
        } else if comm == "redis-server" {
            Some(Peer::Redis)
        } else if comm == "nats-server" {
            Some(Peer::Nats)
        } else {
            None
        }
    }
}

/// One reading of the CPU time of the nodes, the peers and this process, in clock ticks.
#[derive(Debug, Clone, Default)]
pub struct CpuSnapshot {
    /// Per node, in the order given (0 for one that is gone).
    pub nodes: Vec<u64>,
    /// Every peer process, by (pid, start time).
    pub peers: HashMap<(u32, u64), (Peer, u64)>,
    pub bench: u64,
}

impl CpuSnapshot {
    pub fn take(node_pids: &[u32]) -> CpuSnapshot {
        let mut peers = HashMap::new();
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<u32>().ok())
                else {
                    continue;
                };
                let Some(stat) = read_stat(pid) else { continue };
                if let Some(peer) = Peer::of(&stat.comm) {
                    peers.insert((pid, stat.start), (peer, stat.ticks));
                }
            }
        }
        CpuSnapshot {
            nodes: node_pids
                .iter()
                .map(|pid| read_stat(*pid).map_or(0, |stat| stat.ticks))
                .collect(),
            peers,
            bench: read_stat(std::process::id()).map_or(0, |stat| stat.ticks),
        }
    }
}

/// CPU seconds used between two snapshots.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CpuUsage {
    pub nodes: Vec<f64>,
    pub postgres: f64,
    pub redis: f64,
    pub nats: f64,
    pub bench: f64,
}

impl CpuUsage {
    pub fn between(before: &CpuSnapshot, after: &CpuSnapshot, ticks_per_sec: u64) -> CpuUsage {
        let seconds = |ticks: u64| ticks as f64 / ticks_per_sec.max(1) as f64;
        let mut usage = CpuUsage {
            nodes: after
                .nodes
                .iter()
                .zip(&before.nodes)
                .map(|(after, before)| seconds(after.saturating_sub(*before)))
                .collect(),
            bench: seconds(after.bench.saturating_sub(before.bench)),
            ..CpuUsage::default()
        };
        for (key, (peer, ticks)) in &after.peers {
            let earlier = before.peers.get(key).map_or(0, |(_, ticks)| *ticks);
            let used = seconds(ticks.saturating_sub(earlier));
            match peer {
                Peer::Postgres => usage.postgres += used,
                Peer::Redis => usage.redis += used,
                Peer::Nats => usage.nats += used,
            }
        }
        usage
    }

    pub fn node_total(&self) -> f64 {
        self.nodes.iter().sum()
    }
}

/// The CFS period the caps use: short, so a capped node is throttled in small slices rather
/// than stopped for most of every 100 ms.
pub const PERIOD_US: u64 = 10_000;

/// The quota for `cores` of CPU per [`PERIOD_US`] (the kernel refuses less than 1 ms).
pub fn quota_us(cores: f64) -> u64 {
    (cores * PERIOD_US as f64).round().max(1_000.0) as u64
}

/// cgroup v2's `cpu.max` for `cores`: `"<quota> <period>"`.
pub fn cpu_max(cores: f64) -> String {
    format!("{} {PERIOD_US}", quota_us(cores))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

/// Where CPU-capped groups can be made: cgroup v1's `cpu` controller, or the v2 hierarchy.
#[derive(Debug, Clone)]
pub struct CpuCap {
    pub version: CgroupVersion,
    pub root: PathBuf,
    pub cores: f64,
}

impl CpuCap {
    /// cgroup v1's `cpu` controller at `/sys/fs/cgroup/cpu` when mounted, else cgroup v2 at
    /// `/sys/fs/cgroup` (enabling its `cpu` controller for children).
    pub fn detect(cores: f64) -> anyhow::Result<CpuCap> {
        anyhow::ensure!(
            cores > 0.0 && cores.is_finite(),
            "--cpu-quota must be positive"
        );
        let v1 = Path::new("/sys/fs/cgroup/cpu");
        if v1.join("cpu.cfs_quota_us").exists() {
            return Ok(CpuCap {
                version: CgroupVersion::V1,
                root: v1.to_path_buf(),
                cores,
            });
        }
        let v2 = Path::new("/sys/fs/cgroup");
        let controllers = std::fs::read_to_string(v2.join("cgroup.controllers"))
            .context("neither cgroup v1's cpu controller nor cgroup v2 is mounted")?;
        anyhow::ensure!(
            controllers.split_whitespace().any(|name| name == "cpu"),
            "cgroup v2 has no cpu controller here"
        );
        // Already enabled, or refused because this cgroup has processes of its own: the group's
        // cpu.max write below tells.
        let _ = std::fs::write(v2.join("cgroup.subtree_control"), "+cpu");
        Ok(CpuCap {
            version: CgroupVersion::V2,
            root: v2.to_path_buf(),
            cores,
        })
    }

    /// What a group is given, for the report.
    pub fn describe(&self) -> String {
        match self.version {
            CgroupVersion::V1 => format!(
                "cgroup v1, {}/<group>: cpu.cfs_period_us = {PERIOD_US}, cpu.cfs_quota_us = {}",
                self.root.display(),
                quota_us(self.cores)
            ),
            CgroupVersion::V2 => format!(
                "cgroup v2, {}/<group>: cpu.max = \"{}\"",
                self.root.display(),
                cpu_max(self.cores)
            ),
        }
    }

    pub fn create(&self, name: &str) -> anyhow::Result<CpuGroup> {
        let dir = self.root.join(name);
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let group = CpuGroup { dir };
        let written = match self.version {
            CgroupVersion::V1 => group
                .write("cpu.cfs_period_us", &PERIOD_US.to_string())
                .and_then(|()| group.write("cpu.cfs_quota_us", &quota_us(self.cores).to_string())),
            CgroupVersion::V2 => group.write("cpu.max", &cpu_max(self.cores)),
        };
        if let Err(error) = written {
            let _ = std::fs::remove_dir(&group.dir);
            return Err(error);
        }
        Ok(group)
    }
}

/// A CPU-capped group holding one node.
#[derive(Debug)]
pub struct CpuGroup {
    pub dir: PathBuf,
}

impl CpuGroup {
    fn write(&self, file: &str, value: &str) -> anyhow::Result<()> {
        let path = self.dir.join(file);
        std::fs::write(&path, value)
            .with_context(|| format!("writing {value} to {}", path.display()))
    }

    /// Moves a process (all its threads) into the group.
    pub fn add(&self, pid: u32) -> anyhow::Result<()> {
        self.write("cgroup.procs", &pid.to_string())
    }

    /// Removes the group once its processes have exited (retrying while the kernel lets go).
    pub async fn remove(self) -> anyhow::Result<()> {
        let mut last = None;
        for _ in 0..50 {
            match std::fs::remove_dir(&self.dir) {
                Ok(()) => return Ok(()),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(error) => last = Some(error),
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Err(anyhow::anyhow!(
            "removing {}: {}",
            self.dir.display(),
            last.map_or_else(String::new, |error| error.to_string())
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A real line (PostgreSQL backend), fields 14/15 = 1234/56, field 22 = 987654.
    const STAT: &str = "4242 (postgres) S 900 900 900 0 -1 4194560 1500 0 0 0 1234 56 0 0 20 0 1 0 987654 226566144 3000 18446744073709551615 1 1 0 0 0 0 4194304 19935232 536892039 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = parse_stat(STAT).expect("parses");
        assert_eq!(stat.comm, "postgres");
        assert_eq!(stat.ticks, 1290);
        assert_eq!(stat.start, 987654);
    }

    #[test]
    fn a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let odd = STAT.replace("(postgres)", "(tokio (worker) 1)");
        let stat = parse_stat(&odd).expect("parses");
        assert_eq!(stat.comm, "tokio (worker) 1");
        assert_eq!(stat.ticks, 1290);
        assert_eq!(stat.start, 987654);
    }

    #[test]
    fn a_truncated_stat_is_refused() {
        assert_eq!(parse_stat("4242 (postgres) S 900 900"), None);
        assert_eq!(parse_stat(""), None);
    }

    #[test]
    fn this_process_has_a_stat() {
        let stat = read_stat(std::process::id()).expect("own stat");
        assert!(!stat.comm.is_empty());
    }

    #[test]
    fn peers_are_told_by_name() {
        assert_eq!(Peer::of("postgres"), Some(Peer::Postgres));
        assert_eq!(Peer::of("postgres: walwriter"), Some(Peer::Postgres));
        assert_eq!(Peer::of("redis-server"), Some(Peer::Redis));
        assert_eq!(Peer::of("nats-server"), Some(Peer::Nats));
        assert_eq!(Peer::of("marquee"), None);
    }

    #[test]
    fn usage_is_the_difference_and_counts_new_processes_whole() {
        let before = CpuSnapshot {
            nodes: vec![100, 200],
            peers: HashMap::from([
                ((1, 10), (Peer::Postgres, 500)),
                ((2, 10), (Peer::Redis, 50)),
                ((3, 10), (Peer::Postgres, 70)),
            ]),
            bench: 1_000,
        };
        let after = CpuSnapshot {
            nodes: vec![250, 300],
            peers: HashMap::from([
                ((1, 10), (Peer::Postgres, 600)),
                ((2, 10), (Peer::Redis, 80)),
                // pid 3 exited; pid 4 started during the run; pid 1 reused would differ in start.
                ((4, 20), (Peer::Postgres, 40)),
                ((5, 20), (Peer::Nats, 10)),
            ]),
            bench: 1_300,
        };
        let usage = CpuUsage::between(&before, &after, 100);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert_eq!(usage.nodes.len(), 2);
        assert!(close(usage.nodes[0], 1.5) && close(usage.nodes[1], 1.0));
        assert!(close(usage.node_total(), 2.5));
        assert!(close(usage.postgres, 1.4), "{}", usage.postgres);
        assert!(close(usage.redis, 0.3));
        assert!(close(usage.nats, 0.1));
        assert!(close(usage.bench, 3.0));
    }

    #[test]
    fn cgroup_values_for_a_fraction_of_a_core() {
        assert_eq!(quota_us(0.3), 3_000);
        assert_eq!(quota_us(1.5), 15_000);
        // The kernel's minimum quota is 1 ms.
        assert_eq!(quota_us(0.01), 1_000);
        assert_eq!(cpu_max(0.3), "3000 10000");
        assert_eq!(cpu_max(2.0), "20000 10000");
    }
}
