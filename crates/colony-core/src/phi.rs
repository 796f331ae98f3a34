//! The phi-accrual failure detector (Hayashibara et al., 2004), in the form
//! Akka and Cassandra use: instead of a yes/no timeout it gives a suspicion
//! level `phi` that grows with the time since the last heartbeat, scaled by
//! the observed distribution of heartbeat intervals. `phi = 8` means the
//! chance that the peer is alive and merely late is about 10^-8.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Tuning of a [`PhiDetector`].
#[derive(Clone, Debug, PartialEq)]
pub struct PhiConfig {
    /// How many recent heartbeat intervals shape the distribution.
    pub window: usize,
    /// Floor on the standard deviation, so a perfectly regular history does
    /// not make the detector fire on the first slightly late heartbeat.
    pub min_std_dev: Duration,
    /// Pause that is always tolerated on top of the mean interval
    /// (garbage collection, a busy scheduler).
    pub acceptable_pause: Duration,
}

impl Default for PhiConfig {
    fn default() -> Self {
        PhiConfig {
            window: 100,
            min_std_dev: Duration::from_millis(80),
            acceptable_pause: Duration::ZERO,
        }
    }
}

/// Tracks heartbeat arrivals from one peer and answers how suspicious its
/// silence is.
#[derive(Clone, Debug)]
pub struct PhiDetector {
    config: PhiConfig,
    intervals_s: VecDeque<f64>,
    sum: f64,
    sum_sq: f64,
    last_heartbeat: Instant,
}

impl PhiDetector {
    /// Starts a detector as if a heartbeat arrived at `now`, assuming
    /// `expected_interval` until real intervals are observed — so a peer that
    /// never answers is still suspected in bounded time.
    pub fn new(config: PhiConfig, now: Instant, expected_interval: Duration) -> Self {
        let mut detector = PhiDetector {
            config,
            intervals_s: VecDeque::new(),
            sum: 0.0,
            sum_sq: 0.0,
            last_heartbeat: now,
        };
        detector.push_interval(expected_interval.as_secs_f64());
        detector
    }

    /// Records a heartbeat arriving at `now`.
    pub fn heartbeat(&mut self, now: Instant) {
        let interval = now.saturating_duration_since(self.last_heartbeat);
        self.last_heartbeat = now;
        self.push_interval(interval.as_secs_f64());
    }

    /// When the last heartbeat arrived.
    pub fn last_heartbeat(&self) -> Instant {
        self.last_heartbeat
    }

    fn push_interval(&mut self, interval_s: f64) {
        if self.intervals_s.len() == self.config.window.max(1) {
            if let Some(old) = self.intervals_s.pop_front() {
                self.sum -= old;
                self.sum_sq -= old * old;
            }
        }
        self.intervals_s.push_back(interval_s);
        self.sum += interval_s;
        self.sum_sq += interval_s * interval_s;
    }

    /// The suspicion level at `now`: 0 right after a heartbeat, growing
    /// without bound while the peer stays silent.
    pub fn phi(&self, now: Instant) -> f64 {
        let count = self.intervals_s.len().max(1) as f64;
        let mean = self.sum / count + self.config.acceptable_pause.as_secs_f64();
        let variance = (self.sum_sq / count - (self.sum / count).powi(2)).max(0.0);
        let std_dev = variance.sqrt().max(self.config.min_std_dev.as_secs_f64());
        let elapsed = now
            .saturating_duration_since(self.last_heartbeat)
            .as_secs_f64();
        // Logistic approximation of the normal CDF, as in Akka.
        let y = (elapsed - mean) / std_dev;
        let e = (-y * (1.5976 + 0.070566 * y * y)).exp();
        if elapsed > mean {
            -(e / (1.0 + e)).log10()
        } else {
            -(1.0 - 1.0 / (1.0 + e)).log10()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phi_grows_with_silence_and_resets_on_heartbeat() {
        let start = Instant::now();
        let mut detector =
            PhiDetector::new(PhiConfig::default(), start, Duration::from_millis(100));
        let mut now = start;
        for _ in 0..50 {
            now += Duration::from_millis(100);
            detector.heartbeat(now);
        }
        assert!(detector.phi(now + Duration::from_millis(50)) < 1.0);
        let late = detector.phi(now + Duration::from_millis(300));
        let later = detector.phi(now + Duration::from_millis(600));
        assert!(late < later, "{late} < {later}");
        assert!(
            later > 8.0,
            "600 ms of silence after 100 ms beats is suspicious: {later}"
        );
        detector.heartbeat(now + Duration::from_millis(600));
        assert!(detector.phi(now + Duration::from_millis(610)) < 1.0);
    }

    #[test]
    fn jittery_history_tolerates_longer_silence() {
        let start = Instant::now();
        let config = PhiConfig::default();
        let mut steady = PhiDetector::new(config.clone(), start, Duration::from_millis(100));
        let mut jittery = PhiDetector::new(config, start, Duration::from_millis(100));
        let (mut a, mut b) = (start, start);
        for i in 0..100u64 {
            a += Duration::from_millis(100);
            steady.heartbeat(a);
            b += Duration::from_millis(if i % 2 == 0 { 20 } else { 380 });
            jittery.heartbeat(b);
        }
        let silence = Duration::from_millis(700);
        assert!(jittery.phi(b + silence) < steady.phi(a + silence));
    }
}
