//! Rate limiting of log lines a remote peer can cause.
//!
//! A hostile or broken peer can trigger a warning per frame, stream or
//! connection; logging each one lets it fill the disk (1.3 MB sent made
//! 3.9 MB of log). [`LogLimiter`] lets one line per key through per interval
//! and counts the ones it held back, so the next line can say how many.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Default interval between two lines for the same key: one minute.
pub const DEFAULT_WARN_INTERVAL: Duration = Duration::from_secs(60);

/// Default number of keys remembered by a [`LogLimiter`]. Many identities
/// are cheap, so beyond this many keys logged within one interval the others
/// share one line: at most 17 lines per interval however many peers attack.
pub const DEFAULT_WARN_KEYS: usize = 16;

/// Lets one log line per key (a peer, a cause) through per interval.
///
/// Time comes in as an argument, so it can be tested without a clock. The
/// number of keys remembered is bounded: when full, keys whose interval has
/// passed are forgotten, and if none has, further new keys share one
/// overflow key (one line per interval for all of them together).
#[derive(Debug)]
pub struct LogLimiter<K> {
    interval: Duration,
    max_keys: usize,
    keys: HashMap<K, Window>,
    overflow: Window,
    suppressed_total: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Window {
    /// When the last line for this key was let through.
    logged_at: Option<Instant>,
    /// Lines held back since then.
    suppressed: u64,
}

impl Window {
    fn check(&mut self, now: Instant, interval: Duration) -> Option<u64> {
        let due = self
            .logged_at
            .is_none_or(|at| now.saturating_duration_since(at) >= interval);
        if due {
            self.logged_at = Some(now);
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

impl<K: Hash + Eq> LogLimiter<K> {
    /// A limiter letting one line per key through every `interval`,
    /// remembering at most `max_keys` keys (at least 1).
    pub fn new(interval: Duration, max_keys: usize) -> Self {
        Self {
            interval,
            max_keys: max_keys.max(1),
            keys: HashMap::new(),
            overflow: Window::default(),
            suppressed_total: 0,
        }
    }

    /// Whether a line for `key` may be logged at `now`.
    ///
    /// `Some(n)`: log it, and say that `n` lines for this key were held back
    /// since the last one. `None`: do not log (it is counted).
    pub fn check(&mut self, key: K, now: Instant) -> Option<u64> {
        let interval = self.interval;
        if !self.keys.contains_key(&key) && self.keys.len() >= self.max_keys {
            self.keys.retain(|_, w| {
                w.logged_at
                    .is_none_or(|at| now.saturating_duration_since(at) < interval)
            });
        }
        let window = if self.keys.len() < self.max_keys || self.keys.contains_key(&key) {
            self.keys.entry(key).or_default()
        } else {
            &mut self.overflow
        };
        let verdict = window.check(now, interval);
        if verdict.is_none() {
            self.suppressed_total += 1;
        }
        verdict
    }

    /// Lines held back since this limiter was made.
    pub fn suppressed_total(&self) -> u64 {
        self.suppressed_total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_key_per_interval_with_the_count() {
        let mut limiter = LogLimiter::new(Duration::from_secs(60), 16);
        let t0 = Instant::now();
        assert_eq!(limiter.check("a", t0), Some(0));
        for i in 1..=100 {
            assert_eq!(limiter.check("a", t0 + Duration::from_millis(i)), None);
        }
        // Another key is independent.
        assert_eq!(limiter.check("b", t0), Some(0));
        assert_eq!(limiter.check("a", t0 + Duration::from_secs(60)), Some(100));
        assert_eq!(limiter.check("a", t0 + Duration::from_secs(61)), None);
        assert_eq!(limiter.suppressed_total(), 101);
    }

    #[test]
    fn keys_are_bounded() {
        let mut limiter = LogLimiter::new(Duration::from_secs(60), 4);
        let t0 = Instant::now();
        for k in 0..4 {
            assert_eq!(limiter.check(k, t0), Some(0));
        }
        // Full, nothing expired: new keys share the overflow window.
        assert_eq!(limiter.check(100, t0), Some(0));
        assert_eq!(limiter.check(101, t0), None);
        assert_eq!(limiter.check(102, t0), None);
        assert_eq!(limiter.keys.len(), 4);
        // Once the interval passed, old keys make room.
        assert_eq!(limiter.check(200, t0 + Duration::from_secs(60)), Some(0));
        assert_eq!(limiter.keys.len(), 1);
    }
}
