//! What several of colony-core's integration tests share: a small divisible
//! application and the peers' keys.

#![allow(dead_code)] // each test binary uses part of it

use colony_core::divisible::{AppError, Divisible, Step, StepContext};
use serde::{Deserialize, Serialize};

/// Sums `next..end`; every operation saturates, so its own arithmetic never
/// stands in for the core's.
#[derive(Serialize, Deserialize)]
pub struct Sum {
    /// The next number to add.
    pub next: u64,
    /// One past the last number to add.
    pub end: u64,
    /// The sum so far.
    pub acc: u64,
}

impl Divisible for Sum {
    type Params = u64;
    type Output = u64;
    const NAME: &'static str = "sum";

    fn parse_args(args: &[String]) -> Result<u64, AppError> {
        args.first()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| AppError::BadParams("usage: sum N".into()))
    }

    fn init(n: &u64) -> Result<Self, AppError> {
        Ok(Sum {
            next: 1,
            end: n.saturating_add(1),
            acc: 0,
        })
    }

    fn step(&mut self, ctx: &mut StepContext<'_>) -> Step<u64> {
        let stop = self.end.min(self.next.saturating_add(ctx.budget()));
        while self.next < stop {
            self.acc = self.acc.wrapping_add(self.next);
            self.next += 1;
        }
        if self.next >= self.end {
            Step::Done(self.acc)
        } else {
            Step::Continue
        }
    }

    fn divide(&mut self) -> Option<Self> {
        let left = self.end.checked_sub(self.next)?;
        if left < 2 {
            return None;
        }
        let mid = self.next + left / 2;
        let part = Sum {
            next: mid,
            end: self.end,
            acc: 0,
        };
        self.end = mid;
        Some(part)
    }

    fn merge(a: u64, b: u64) -> u64 {
        a.wrapping_add(b)
    }
}

/// A peer's 32-byte key for the XOR distance (splitmix64 of its number).
pub fn key_of(peer: &u64) -> [u8; 32] {
    let mut key = [0u8; 32];
    let mut x = peer.wrapping_add(0x9E37_79B9_7F4A_7C15);
    for chunk in key.chunks_mut(8) {
        x ^= x >> 31;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x ^= x >> 29;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    key
}
