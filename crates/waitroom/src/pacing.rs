//! Pacing and the measured rate, in plain arithmetic that the Redis Lua scripts mirror line
//! for line (`redis_room.rs`), so both implementations admit the same fans at the same times.

/// How long the measured rate remembers, in ms.
pub(crate) const RATE_MEMORY_MS: f64 = 30_000.0;
/// Below this much backlogged time the measurement is too young; the configured rate is used.
pub(crate) const MIN_MEASURED_MS: f64 = 5_000.0;
/// The most credit that can build up: this many ms of admissions, and at least one fan.
pub(crate) const CREDIT_CAP_MS: f64 = 1_000.0;

pub(crate) fn per_ms(admit_per_minute: u32) -> f64 {
    f64::from(admit_per_minute) / 60_000.0
}

pub(crate) fn credit_cap(admit_per_minute: u32) -> f64 {
    (per_ms(admit_per_minute) * CREDIT_CAP_MS).max(1.0)
}

/// Admission credit and the backlogged-time rate estimate of one room.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Pacer {
    pub(crate) credit: f64,
    pub(crate) credit_at: u64,
    /// Exponentially weighted admissions per ms while fans were waiting.
    pub(crate) rate: f64,
    pub(crate) rate_at: u64,
    /// Total ms during which fans were waiting (for the bias correction of a young estimate).
    pub(crate) busy_ms: f64,
}

impl Pacer {
    pub(crate) fn opened(now: u64) -> Pacer {
        Pacer {
            credit: 1.0,
            credit_at: now,
            rate: 0.0,
            rate_at: now,
            busy_ms: 0.0,
        }
    }

    pub(crate) fn accrue(&mut self, now: u64, admit_per_minute: u32) {
        let elapsed = now.saturating_sub(self.credit_at) as f64;
        self.credit =
            (self.credit + elapsed * per_ms(admit_per_minute)).min(credit_cap(admit_per_minute));
        self.credit_at = self.credit_at.max(now);
    }

    /// Records `admitted` fans at `now`; `backlogged` says whether fans were waiting since the
    /// last record (an empty queue's idle time must not pull the rate down).
    pub(crate) fn record(&mut self, now: u64, admitted: u64, backlogged: bool) {
        let elapsed = now.saturating_sub(self.rate_at) as f64;
        if backlogged {
            self.rate *= (-elapsed / RATE_MEMORY_MS).exp();
            self.busy_ms += elapsed;
        }
        self.rate += admitted as f64 / RATE_MEMORY_MS;
        self.rate_at = self.rate_at.max(now);
    }

    /// The measured rate per ms, bias-corrected while young; `None` while too young to trust.
    pub(crate) fn measured(&self) -> Option<f64> {
        if self.busy_ms < MIN_MEASURED_MS {
            return None;
        }
        let warmth = 1.0 - (-self.busy_ms / RATE_MEMORY_MS).exp();
        Some(self.rate / warmth)
    }

    /// The ETA of `position` in ms: by the measured rate, else the configured one.
    pub(crate) fn eta_ms(&self, position: u64, admit_per_minute: u32) -> u64 {
        let rate = self
            .measured()
            .filter(|rate| *rate > 0.0)
            .unwrap_or_else(|| per_ms(admit_per_minute));
        eta(position, rate)
    }
}

pub(crate) fn eta(position: u64, per_ms: f64) -> u64 {
    if per_ms <= 0.0 {
        return u64::MAX;
    }
    // Capped at a day: past that, the number means "a long time" either way.
    ((position as f64) / per_ms).min(86_400_000.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_accrues_at_the_rate_and_is_capped() {
        let mut pacer = Pacer::opened(0);
        pacer.credit = 0.0;
        pacer.accrue(100, 600);
        assert!((pacer.credit - 1.0).abs() < 1e-9);
        pacer.credit = 0.0;
        pacer.accrue(60_000, 600);
        assert!(
            (pacer.credit - 10.0).abs() < 1e-9,
            "capped at a second's worth"
        );
        pacer.accrue(50_000, 600);
        assert_eq!(pacer.credit_at, 60_000, "time never runs backwards");
    }

    #[test]
    fn measured_rate_converges_on_the_admission_rate() {
        let mut pacer = Pacer::opened(0);
        for step in 1..=600u64 {
            pacer.record(step * 100, 1, true);
        }
        let measured = pacer.measured().expect("a minute is old enough") * 60_000.0;
        assert!((measured - 600.0).abs() < 15.0, "{measured}");
    }

    #[test]
    fn idle_time_does_not_drag_the_rate_down() {
        let mut pacer = Pacer::opened(0);
        for step in 1..=600u64 {
            pacer.record(step * 100, 1, true);
        }
        let before = pacer.measured().expect("old enough");
        pacer.record(600_000, 0, false);
        assert_eq!(pacer.measured(), Some(before));
    }
}
