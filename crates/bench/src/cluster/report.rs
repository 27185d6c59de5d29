//! Medians over rounds and the summary table.

use super::cpu::CpuUsage;
use super::workload::Workload;

/// One timed run: one workload on one node count in one round.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub round: usize,
    pub workload: Workload,
    pub nodes: usize,
    pub bookings: u64,
    pub bookings_per_sec: f64,
    pub hold_p50_ms: f64,
    pub hold_p99_ms: f64,
    pub lag_p50_ms: f64,
    pub lag_p99_ms: f64,
    pub lag_max_ms: f64,
    /// CPU seconds during the timed booking run (not the lag phase).
    pub cpu: CpuUsage,
}

impl Measurement {
    /// Bookings per CPU second of all the nodes together.
    pub fn bookings_per_node_cpu_sec(&self) -> f64 {
        let cpu = self.cpu.node_total();
        if cpu > 0.0 {
            self.bookings as f64 / cpu
        } else {
            f64::NAN
        }
    }

    pub fn line(&self) -> String {
        let nodes: Vec<String> = self.cpu.nodes.iter().map(|s| format!("{s:.2}")).collect();
        format!(
            "round {} · {} · {} node(s): {:.0} bookings/s, hold p50 {:.1} ms p99 {:.1} ms; lag to every node p50 {:.1} ms p99 {:.1} ms max {:.1} ms; {:.1} bookings per node-CPU-s; CPU s: nodes {} postgres {:.2} redis {:.2} nats {:.2} bench {:.2}",
            self.round,
            self.workload.name(),
            self.nodes,
            self.bookings_per_sec,
            self.hold_p50_ms,
            self.hold_p99_ms,
            self.lag_p50_ms,
            self.lag_p99_ms,
            self.lag_max_ms,
            self.bookings_per_node_cpu_sec(),
            nodes.join("+"),
            self.cpu.postgres,
            self.cpu.redis,
            self.cpu.nats,
            self.cpu.bench,
        )
    }
}

/// The p-quantile of sorted values (nearest rank); NaN when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// The median (the mean of the middle two for an even count), ignoring NaN; NaN when nothing is
/// left.
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.into_iter().filter(|v| !v.is_nan()).collect();
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

/// The medians over rounds of one workload on one node count.
#[derive(Debug, Clone)]
pub struct Summary {
    pub workload: Workload,
    pub nodes: usize,
    pub rounds: usize,
    pub bookings_per_sec: f64,
    pub hold_p50_ms: f64,
    pub hold_p99_ms: f64,
    pub lag_p50_ms: f64,
    pub lag_p99_ms: f64,
    pub per_node_cpu_sec: f64,
    pub cpu_nodes: f64,
    pub cpu_postgres: f64,
    pub cpu_redis: f64,
    pub cpu_nats: f64,
    pub cpu_bench: f64,
}

pub fn summarise(
    measurements: &[Measurement],
    workload: Workload,
    nodes: usize,
) -> Option<Summary> {
    let runs: Vec<&Measurement> = measurements
        .iter()
        .filter(|m| m.workload == workload && m.nodes == nodes)
        .collect();
    if runs.is_empty() {
        return None;
    }
    let of = |f: fn(&Measurement) -> f64| median(runs.iter().copied().map(f));
    Some(Summary {
        workload,
        nodes,
        rounds: runs.len(),
        bookings_per_sec: of(|m| m.bookings_per_sec),
        hold_p50_ms: of(|m| m.hold_p50_ms),
        hold_p99_ms: of(|m| m.hold_p99_ms),
        lag_p50_ms: of(|m| m.lag_p50_ms),
        lag_p99_ms: of(|m| m.lag_p99_ms),
        per_node_cpu_sec: of(Measurement::bookings_per_node_cpu_sec),
        cpu_nodes: of(|m| m.cpu.node_total()),
        cpu_postgres: of(|m| m.cpu.postgres),
        cpu_redis: of(|m| m.cpu.redis),
        cpu_nats: of(|m| m.cpu.nats),
        cpu_bench: of(|m| m.cpu.bench),
    })
}

/// The Markdown summary: one row per workload × node count, then the anchor.
pub fn table(summaries: &[Summary], pgbench_tps: Option<f64>, clients: usize) -> String {
    let mut out = String::from(
        "| workload | nodes | rounds | bookings/s | ÷ 1 node | hold p50 / p99 ms | lag p50 / p99 ms | bookings per node-CPU-s | CPU s nodes | postgres | redis | nats | bench | 1-node bookings/s ÷ pgbench tps |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for summary in summaries {
        let one = summaries
            .iter()
            .find(|s| s.workload == summary.workload && s.nodes == 1)
            .map(|s| s.bookings_per_sec);
        let scale = one.map_or(f64::NAN, |one| summary.bookings_per_sec / one);
        let anchor = match (summary.nodes, pgbench_tps) {
            (1, Some(tps)) => format!("{:.3}", summary.bookings_per_sec / tps),
            _ => String::new(),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} |\n",
            summary.workload.name(),
            summary.nodes,
            summary.rounds,
            summary.bookings_per_sec,
            scale,
            summary.hold_p50_ms,
            summary.hold_p99_ms,
            summary.lag_p50_ms,
            summary.lag_p99_ms,
            summary.per_node_cpu_sec,
            summary.cpu_nodes,
            summary.cpu_postgres,
            summary.cpu_redis,
            summary.cpu_nats,
            summary.cpu_bench,
            anchor,
        ));
    }
    match pgbench_tps {
        Some(tps) => out.push_str(&format!(
            "\npgbench TPC-B-like (-s 64, -c {clients} -j 2 -M prepared), median of rounds: {tps:.0} tps\n"
        )),
        None => out.push_str("\npgbench: no anchor (not installed or failed)\n"),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median([3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median([4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median([7.0]), 7.0);
        assert!(median(Vec::new()).is_nan());
    }

    #[test]
    fn median_ignores_nan() {
        assert_eq!(median([f64::NAN, 5.0, 1.0, 3.0]), 3.0);
        assert!(median([f64::NAN]).is_nan());
    }

    #[test]
    fn percentile_by_nearest_rank() {
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 0.5), 51.0);
        assert_eq!(percentile(&sorted, 0.99), 99.0);
        assert_eq!(percentile(&sorted, 1.0), 100.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    fn measurement(round: usize, nodes: usize, bookings: u64, node_cpu: f64) -> Measurement {
        Measurement {
            round,
            workload: Workload::Hot,
            nodes,
            bookings,
            bookings_per_sec: bookings as f64 / 10.0,
            hold_p50_ms: 1.0,
            hold_p99_ms: 9.0,
            lag_p50_ms: 2.0,
            lag_p99_ms: 8.0,
            lag_max_ms: 10.0,
            cpu: CpuUsage {
                nodes: vec![node_cpu / nodes as f64; nodes],
                ..CpuUsage::default()
            },
        }
    }

    #[test]
    fn summary_takes_medians_and_the_table_scales_to_one_node() {
        let runs = vec![
            measurement(1, 1, 1000, 10.0),
            measurement(2, 1, 3000, 10.0),
            measurement(3, 1, 2000, 10.0),
            measurement(1, 3, 4000, 20.0),
        ];
        let one = summarise(&runs, Workload::Hot, 1).expect("one node");
        assert_eq!(one.rounds, 3);
        assert_eq!(one.bookings_per_sec, 200.0);
        assert_eq!(one.per_node_cpu_sec, 200.0);
        assert!(summarise(&runs, Workload::Spread, 1).is_none());
        let three = summarise(&runs, Workload::Hot, 3).expect("three nodes");
        let table = table(&[one, three], Some(400.0), 64);
        assert!(table.contains("| hot | 1 | 3 | 200 | 1.00 |"), "{table}");
        assert!(table.contains("| hot | 3 | 1 | 400 | 2.00 |"), "{table}");
        assert!(table.contains("| 0.500 |"), "{table}");
        assert!(table.contains("400 tps"), "{table}");
    }
}
