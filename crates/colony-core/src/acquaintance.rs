//! Joining and staying joined: the bootstrap list with retry and failover
//! (JXTA's rendezvous list, seed 003 §4.2) and ProActive's acquaintance
//! maintenance (seed 000 §4.2.2) with its two knobs — NOA, the minimum
//! number of acquaintances, and TTU, how often that is checked.
//!
//! Until the peer has joined (knows a live member), it dials the bootstrap
//! entries one at a time in list order, moving to the next when a dial fails;
//! after a full pass without success it backs off (capped exponential) and
//! starts again. Once joined, every TTU it compares its live acquaintances
//! with NOA and, when short, explores: a random walk in the DHT and another
//! dial of a bootstrap entry it is not connected to.

use std::time::{Duration, Instant};

/// Tuning of acquaintance maintenance.
#[derive(Clone, Debug, PartialEq)]
pub struct AcquaintanceConfig {
    /// NOA: below this many live acquaintances the peer explores for more.
    pub noa: usize,
    /// TTU: how often the acquaintance count is checked.
    pub ttu: Duration,
    /// Pause after the first full failed pass over the bootstrap list.
    pub bootstrap_backoff_initial: Duration,
    /// Cap of the doubling pause between passes.
    pub bootstrap_backoff_max: Duration,
    /// How long one bootstrap entry has to produce a join (a live member)
    /// before the next entry is tried — also when its dial connected to a
    /// peer that turned out not to be of this network.
    pub join_timeout: Duration,
}

impl Default for AcquaintanceConfig {
    fn default() -> Self {
        AcquaintanceConfig {
            noa: 6,
            ttu: Duration::from_secs(5),
            bootstrap_backoff_initial: Duration::from_millis(250),
            bootstrap_backoff_max: Duration::from_secs(10),
            join_timeout: Duration::from_secs(2),
        }
    }
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AcquaintanceOutput {
    /// Dial bootstrap entry `index` (its address is `bootstrap[index]`);
    /// report a failure with `dial_failed`. A connection counts only once
    /// membership reports a live member (`set_live_members`).
    DialBootstrap {
        /// Position in the bootstrap list.
        index: usize,
    },
    /// Too few acquaintances: look for more (DHT random walk, view sync).
    Explore,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Not joined. With `attempting`, entry `next` was dialed and has
    /// until `at` to produce a join; without, dialing `next` is due at `at`.
    Joining {
        next: usize,
        attempting: bool,
        at: Instant,
    },
    /// Joined; next NOA check at `at`.
    Joined { at: Instant },
}

/// The acquaintance core of one peer. See the module docs.
#[derive(Debug)]
pub struct Acquaintances {
    config: AcquaintanceConfig,
    bootstrap_len: usize,
    phase: Phase,
    backoff: Duration,
    live: usize,
    outputs: Vec<AcquaintanceOutput>,
    /// Rotates exploration dials over the list.
    explore_next: usize,
}

impl Acquaintances {
    /// A core with `bootstrap_len` bootstrap entries; with none the peer
    /// starts a network of its own and waits to be found.
    pub fn new(config: AcquaintanceConfig, bootstrap_len: usize, now: Instant) -> Self {
        let phase = if bootstrap_len == 0 {
            Phase::Joined {
                at: now + config.ttu,
            }
        } else {
            Phase::Joining {
                next: 0,
                attempting: false,
                at: now,
            }
        };
        Acquaintances {
            backoff: config.bootstrap_backoff_initial,
            config,
            bootstrap_len,
            phase,
            live: 0,
            outputs: Vec::new(),
            explore_next: 0,
        }
    }

    /// Whether the peer has joined a network (or started its own).
    pub fn joined(&self) -> bool {
        matches!(self.phase, Phase::Joined { .. })
    }

    /// Membership reports how many other members are live now.
    pub fn set_live_members(&mut self, now: Instant, live: usize) {
        self.live = live;
        if live > 0 && !self.joined() {
            self.backoff = self.config.bootstrap_backoff_initial;
            self.phase = Phase::Joined {
                at: now + self.config.ttu,
            };
        }
    }

    /// The dial of bootstrap entry `index` failed: fail over to the next.
    pub fn dial_failed(&mut self, now: Instant, index: usize) {
        if let Phase::Joining {
            next,
            attempting: true,
            ..
        } = self.phase
        {
            if next == index {
                self.fail_over(now);
            }
        }
    }

    /// Moves to the next entry; after a full pass, backs off.
    fn fail_over(&mut self, now: Instant) {
        let Phase::Joining { next, .. } = self.phase else {
            return;
        };
        let next = (next + 1) % self.bootstrap_len.max(1);
        let at = if next == 0 {
            let at = now + self.backoff;
            self.backoff = (self.backoff * 2).min(self.config.bootstrap_backoff_max);
            at
        } else {
            now
        };
        self.phase = Phase::Joining {
            next,
            attempting: false,
            at,
        };
    }

    /// When the core next needs [`Acquaintances::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Joining { at, .. } | Phase::Joined { at } => Some(at),
        }
    }

    /// Runs whatever is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.phase {
            Phase::Joining { attempting, at, .. } => {
                if at > now {
                    return;
                }
                if attempting {
                    // The entry had its chance and produced no join.
                    self.fail_over(now);
                }
                if let Phase::Joining { next, at, .. } = self.phase {
                    if at <= now {
                        self.phase = Phase::Joining {
                            next,
                            attempting: true,
                            at: now + self.config.join_timeout,
                        };
                        self.outputs
                            .push(AcquaintanceOutput::DialBootstrap { index: next });
                    }
                }
            }
            Phase::Joined { at } => {
                if at > now {
                    return;
                }
                self.phase = Phase::Joined {
                    at: now + self.config.ttu,
                };
                if self.live < self.config.noa {
                    self.outputs.push(AcquaintanceOutput::Explore);
                    if self.bootstrap_len > 0 {
                        let index = self.explore_next % self.bootstrap_len;
                        self.explore_next += 1;
                        self.outputs
                            .push(AcquaintanceOutput::DialBootstrap { index });
                    }
                }
                if self.live == 0 && self.bootstrap_len > 0 {
                    // Lost every acquaintance: rejoin through the list.
                    self.phase = Phase::Joining {
                        next: 0,
                        attempting: false,
                        at: now,
                    };
                }
            }
        }
    }

    /// The next thing the driver must do, if any.
    pub fn poll(&mut self) -> Option<AcquaintanceOutput> {
        if self.outputs.is_empty() {
            None
        } else {
            Some(self.outputs.remove(0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(core: &mut Acquaintances) -> Vec<AcquaintanceOutput> {
        std::iter::from_fn(|| core.poll()).collect()
    }

    #[test]
    fn fails_over_along_the_list_then_backs_off() {
        let start = Instant::now();
        let mut core = Acquaintances::new(AcquaintanceConfig::default(), 3, start);
        let mut now = start;
        for index in 0..3 {
            core.handle_timeout(now);
            assert_eq!(
                drain(&mut core),
                vec![AcquaintanceOutput::DialBootstrap { index }]
            );
            core.dial_failed(now, index);
        }
        // A full pass failed: the next try waits for the backoff.
        core.handle_timeout(now);
        assert!(drain(&mut core).is_empty());
        let retry_at = core.poll_timeout().unwrap();
        assert_eq!(retry_at - now, Duration::from_millis(250));
        now = retry_at;
        core.handle_timeout(now);
        assert_eq!(
            drain(&mut core),
            vec![AcquaintanceOutput::DialBootstrap { index: 0 }]
        );
        core.dial_failed(now, 0);
        core.handle_timeout(now);
        assert_eq!(
            drain(&mut core),
            vec![AcquaintanceOutput::DialBootstrap { index: 1 }]
        );
        core.dial_failed(now, 1);
        core.handle_timeout(now);
        assert_eq!(
            drain(&mut core),
            vec![AcquaintanceOutput::DialBootstrap { index: 2 }]
        );
        core.dial_failed(now, 2);
        assert_eq!(
            core.poll_timeout().unwrap() - now,
            Duration::from_millis(500)
        );
    }

    #[test]
    fn third_entry_joins_and_noa_drives_exploration() {
        let start = Instant::now();
        let config = AcquaintanceConfig::default();
        let mut core = Acquaintances::new(config.clone(), 3, start);
        for index in 0..2 {
            core.handle_timeout(start);
            drain(&mut core);
            core.dial_failed(start, index);
        }
        core.handle_timeout(start);
        assert_eq!(
            drain(&mut core),
            vec![AcquaintanceOutput::DialBootstrap { index: 2 }]
        );
        core.set_live_members(start, 1);
        assert!(core.joined());
        let check = start + config.ttu;
        core.handle_timeout(check);
        let out = drain(&mut core);
        assert!(out.contains(&AcquaintanceOutput::Explore), "1 < NOA");
        core.set_live_members(check, 10);
        core.handle_timeout(check + config.ttu);
        assert!(drain(&mut core).is_empty(), "10 >= NOA: nothing to do");
    }

    #[test]
    fn an_entry_that_connects_but_never_yields_a_join_is_failed_over() {
        let start = Instant::now();
        let config = AcquaintanceConfig::default();
        let mut core = Acquaintances::new(config.clone(), 2, start);
        core.handle_timeout(start);
        assert_eq!(
            drain(&mut core),
            vec![AcquaintanceOutput::DialBootstrap { index: 0 }]
        );
        // Connected, but to a peer of another network: no member appears.
        let deadline = core.poll_timeout().unwrap();
        assert_eq!(deadline - start, config.join_timeout);
        core.handle_timeout(deadline);
        assert_eq!(
            drain(&mut core),
            vec![AcquaintanceOutput::DialBootstrap { index: 1 }]
        );
    }

    #[test]
    fn without_bootstrap_the_peer_starts_its_own_network() {
        let start = Instant::now();
        let core = Acquaintances::new(AcquaintanceConfig::default(), 0, start);
        assert!(core.joined());
    }
}
