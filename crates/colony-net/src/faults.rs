//! Sender-side fault injection: loss, duplication, delay and jitter.
//!
//! This machine has no `tc netem`; tests and benchmarks use this instead.
//! Faults are decided per frame, at the sender, before the priority queue,
//! for every priority (membership must survive loss too).

use std::time::Duration;

use libp2p::PeerId;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::error::NetError;

/// Faults applied to every outgoing frame. The default injects nothing.
#[derive(Clone, Debug, Default)]
pub struct FaultConfig {
    /// Probability in `0.0..=1.0` that a frame is dropped.
    pub loss: f64,
    /// Probability in `0.0..=1.0` that a frame that was not dropped is sent twice.
    pub duplicate: f64,
    /// Fixed delay added to every frame (each copy) before it is queued.
    pub delay: Duration,
    /// Extra uniform delay in `0..=jitter` per copy; frames get reordered.
    pub jitter: Duration,
    /// Seed of the per-peer random generators; the same seed gives the same
    /// decisions for the same sequence of frames to the same peer.
    pub seed: u64,
}

impl FaultConfig {
    /// Whether any fault would be injected.
    pub fn is_active(&self) -> bool {
        self.loss > 0.0 || self.duplicate > 0.0 || !self.delay.is_zero() || !self.jitter.is_zero()
    }

    pub(crate) fn validate(&self) -> Result<(), NetError> {
        for (field, p) in [
            ("faults.loss", self.loss),
            ("faults.duplicate", self.duplicate),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(NetError::InvalidConfig {
                    field,
                    reason: format!("must be a probability in 0.0..=1.0, got {p}"),
                });
            }
        }
        Ok(())
    }
}

/// What to do with one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FaultPlan {
    /// How many copies to enqueue: 0 (dropped), 1 or 2 (duplicated).
    pub copies: usize,
    /// Hold-back of each copy before it enters the queue; zero means none.
    pub delays: [Duration; 2],
}

/// Draws [`FaultPlan`]s from a seeded generator.
#[derive(Debug)]
pub(crate) struct FaultInjector {
    config: FaultConfig,
    rng: SmallRng,
}

impl FaultInjector {
    /// An injector for frames to `peer`: seeded from the config seed and the
    /// peer id, so peers get independent but reproducible streams of faults.
    pub fn for_peer(config: &FaultConfig, peer: &PeerId) -> Self {
        Self::with_seed(config, config.seed ^ fnv1a(&peer.to_bytes()))
    }

    /// An injector with an explicit seed.
    pub fn with_seed(config: &FaultConfig, seed: u64) -> Self {
        Self {
            config: config.clone(),
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    /// Decides the fate of the next frame.
    pub fn plan(&mut self) -> FaultPlan {
        if self.config.loss > 0.0 && self.rng.random::<f64>() < self.config.loss {
            return FaultPlan {
                copies: 0,
                delays: [Duration::ZERO; 2],
            };
        }
        let copies =
            if self.config.duplicate > 0.0 && self.rng.random::<f64>() < self.config.duplicate {
                2
            } else {
                1
            };
        let mut delays = [Duration::ZERO; 2];
        for d in delays.iter_mut().take(copies) {
            *d = self.config.delay + self.jitter();
        }
        FaultPlan { copies, delays }
    }

    fn jitter(&mut self) -> Duration {
        let max = u64::try_from(self.config.jitter.as_nanos()).unwrap_or(u64::MAX);
        if max == 0 {
            Duration::ZERO
        } else {
            Duration::from_nanos(self.rng.random_range(0..=max))
        }
    }
}

/// FNV-1a, a stable hash (unlike `DefaultHasher`, stable across releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(seed: u64) -> FaultConfig {
        FaultConfig {
            loss: 0.2,
            duplicate: 0.3,
            delay: Duration::from_millis(5),
            jitter: Duration::from_millis(10),
            seed,
        }
    }

    fn plans(inj: &mut FaultInjector, n: usize) -> Vec<FaultPlan> {
        (0..n).map(|_| inj.plan()).collect()
    }

    #[test]
    fn same_seed_same_decisions() {
        let peer = PeerId::random();
        let a = plans(&mut FaultInjector::for_peer(&config(7), &peer), 1000);
        let b = plans(&mut FaultInjector::for_peer(&config(7), &peer), 1000);
        assert_eq!(a, b);
        let c = plans(&mut FaultInjector::for_peer(&config(8), &peer), 1000);
        assert_ne!(a, c);
        let other = PeerId::random();
        let d = plans(&mut FaultInjector::for_peer(&config(7), &other), 1000);
        assert_ne!(a, d);
    }

    #[test]
    fn rates_and_delays_are_as_configured() {
        let mut inj = FaultInjector::with_seed(&config(1), 1);
        let all = plans(&mut inj, 20_000);
        let dropped = all.iter().filter(|p| p.copies == 0).count() as f64 / 20_000.0;
        assert!((0.18..0.22).contains(&dropped), "loss rate {dropped}");
        let kept: Vec<_> = all.iter().filter(|p| p.copies > 0).collect();
        let dup = kept.iter().filter(|p| p.copies == 2).count() as f64 / kept.len() as f64;
        assert!((0.27..0.33).contains(&dup), "duplicate rate {dup}");
        for p in &kept {
            for d in &p.delays[..p.copies] {
                assert!(*d >= Duration::from_millis(5) && *d <= Duration::from_millis(15));
            }
        }
    }

    #[test]
    fn no_faults_by_default() {
        let cfg = FaultConfig::default();
        assert!(!cfg.is_active());
        let mut inj = FaultInjector::with_seed(&cfg, 3);
        for _ in 0..100 {
            assert_eq!(
                inj.plan(),
                FaultPlan {
                    copies: 1,
                    delays: [Duration::ZERO; 2]
                }
            );
        }
    }

    #[test]
    fn probabilities_are_validated() {
        let mut cfg = FaultConfig {
            loss: 1.5,
            ..FaultConfig::default()
        };
        assert!(cfg.validate().is_err());
        cfg.loss = f64::NAN;
        assert!(cfg.validate().is_err());
        cfg.loss = 1.0;
        assert!(cfg.validate().is_ok());
    }
}
