//! The event trace of a run, kept as a running 64-bit hash (so two runs of
//! one seed can be compared cheaply) and, when verbose, printed line by line.

use std::time::Duration;

/// FNV-1a over bytes, for hashing frame contents into the trace.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A running hash of everything that happened, plus an optional log.
#[derive(Clone, Debug)]
pub struct Trace {
    hash: u64,
    entries: u64,
    verbose: bool,
}

impl Trace {
    /// An empty trace; `verbose` prints notable entries to stdout.
    pub fn new(verbose: bool) -> Self {
        Trace {
            hash: 0x7261_6365_5f63_6f6c,
            entries: 0,
            verbose,
        }
    }

    /// Folds one entry (a kind tag and some words) into the hash.
    pub fn record(&mut self, at: Duration, tag: u8, words: &[u64]) {
        self.mix(at.as_nanos() as u64);
        self.mix(u64::from(tag));
        for w in words {
            self.mix(*w);
        }
        self.entries += 1;
    }

    fn mix(&mut self, w: u64) {
        self.hash = (self.hash ^ w)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29);
    }

    /// Prints `line` when verbose.
    pub fn log(&self, at: Duration, line: impl FnOnce() -> String) {
        if self.verbose {
            println!("[{:>9.3}s] {}", at.as_secs_f64(), line());
        }
    }

    /// Whether lines are printed.
    pub fn verbose(&self) -> bool {
        self.verbose
    }

    /// The hash so far.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// Entries folded in so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }
}
