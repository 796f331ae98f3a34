//! Volunteer hosts (G2:P2P seed 004 §3.1; BOINC's computing preferences):
//! when this peer may compute, as its owner set it.
//!
//! - `--when always` computes whenever there is work; units run at the
//!   lowest OS priority (`nice 19`, see `compute.rs`) unless the owner
//!   chose another (`--nice`), so the owner's own work comes first.
//! - `--when idle` computes only while the host is idle: other processes'
//!   CPU use (the host's busy time minus the CPU of every Colony process,
//!   BOINC's "non-BOINC CPU usage", as a fraction of all cores) has stayed
//!   at or below a threshold for some seconds. It *lingers longer* (Ryu and
//!   Hollingsworth) while that load stays low, its units at the lowest
//!   priority beside the owner's; above the threshold it pauses at once:
//!   every running unit is stopped at its next step boundary and its state
//!   handed back to its job's primary, which gives it to another peer. The
//!   peer stays a member and keeps its part in every job's home.
//! - `--max-hours-per-day` bounds the time units run here per UTC day
//!   (counted across restarts); it pauses until midnight UTC once used.
//!
//! The load monitor is a thread that samples `/proc` every
//! [`VolunteerConfig::sample_interval`]; the decision is [`Policy`], a pure
//! state machine the driver feeds with those samples.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use colony_core::membership::{ComputeWhen, PauseReason};
use tokio::sync::mpsc;
use tracing::debug;

/// When this peer computes, as its owner set it (`colony peer --when …`).
#[derive(Clone, Debug, PartialEq)]
pub struct VolunteerConfig {
    /// Always, or only while the host is idle.
    pub when: ComputeWhen,
    /// `--when idle`: other processes' CPU use, as a fraction of all the
    /// host's cores (0–1), above which the peer pauses at once.
    pub idle_cpu: f64,
    /// `--when idle`: how long other processes' CPU use must stay at or
    /// below `idle_cpu` before the peer computes (again).
    pub idle_after: Duration,
    /// Most time units may run here per UTC day; `None`: no limit.
    pub max_per_day: Option<Duration>,
    /// How often the host's CPU use is sampled (`--when idle`); a load
    /// spike is seen within about one interval.
    pub sample_interval: Duration,
    /// The OS priority (Unix nice value, 0–19) units run at. 19, the
    /// default, lets every other process of the host come first; 0 competes
    /// with them as an equal, for a node that is there to compute.
    pub nice: u8,
}

/// The lowest OS priority, which units run at unless told otherwise.
pub const LOWEST_NICE: u8 = 19;

impl Default for VolunteerConfig {
    /// Always computes; `--when idle` pauses above 25 % of the host's CPU
    /// used by other processes and resumes after 5 s below; sampled every
    /// 100 ms; no daily limit; units at the lowest priority (nice 19).
    fn default() -> Self {
        VolunteerConfig {
            when: ComputeWhen::Always,
            idle_cpu: 0.25,
            idle_after: Duration::from_secs(5),
            max_per_day: None,
            sample_interval: Duration::from_millis(100),
            nice: LOWEST_NICE,
        }
    }
}

impl VolunteerConfig {
    /// Whether anything needs watching: the host's load or the time spent.
    pub(crate) fn watches(&self) -> bool {
        self.when == ComputeWhen::Idle || self.max_per_day.is_some()
    }
}

/// One tick of the load monitor.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LoadSample {
    /// When it was taken.
    pub(crate) at: Instant,
    /// Other processes' CPU use since the previous sample, as a fraction of
    /// all cores; `None` if it could not be read (or is not watched).
    pub(crate) foreign: Option<f64>,
}

/// Days since the Unix epoch, UTC.
pub(crate) fn utc_day(unix_s: u64) -> u64 {
    unix_s / 86_400
}

/// The compute time of a day, as one counter in the peer's store: the day
/// in the high 32 bits, the milliseconds used in the low 32 (a day has
/// 86 400 000).
pub(crate) fn encode_day_use(day: u64, used: Duration) -> u64 {
    (day << 32) | (used.as_millis().min(86_400_000) as u64)
}

/// The inverse of [`encode_day_use`].
pub(crate) fn decode_day_use(value: u64) -> (u64, Duration) {
    (value >> 32, Duration::from_millis(value & 0xFFFF_FFFF))
}

/// Whether the peer may compute now, decided from load samples and the
/// time spent computing today. Pure: time and samples come in as
/// arguments.
#[derive(Debug)]
pub(crate) struct Policy {
    config: VolunteerConfig,
    /// Since when other processes' load has stayed at or below the
    /// threshold (`None`: above it at the last sample, or never sampled).
    quiet_since: Option<Instant>,
    /// The UTC day counted, and the compute time used in it.
    day: u64,
    used: Duration,
    /// The previous tick, for the time between two ticks.
    last_tick: Option<Instant>,
    /// The last sample's load.
    last_foreign: Option<f64>,
    /// The current decision: `None` computes.
    paused: Option<PauseReason>,
}

impl Policy {
    /// A policy starting on `day` with `used` of it spent (from the store).
    /// `--when idle` starts paused: the host must first be seen idle.
    pub(crate) fn new(config: VolunteerConfig, day: u64, used: Duration) -> Policy {
        let mut policy = Policy {
            config,
            quiet_since: None,
            day,
            used,
            last_tick: None,
            last_foreign: None,
            paused: None,
        };
        policy.paused = policy.decide(None);
        policy
    }

    /// Why the peer must not compute now; `None` if it may.
    pub(crate) fn paused(&self) -> Option<PauseReason> {
        self.paused
    }

    /// Its configuration.
    pub(crate) fn config(&self) -> &VolunteerConfig {
        &self.config
    }

    /// Other processes' load at the last sample, as a fraction of all cores.
    pub(crate) fn last_foreign(&self) -> Option<f64> {
        self.last_foreign
    }

    /// The UTC day counted and the compute time used in it.
    pub(crate) fn day_use(&self) -> (u64, Duration) {
        (self.day, self.used)
    }

    /// A tick at `now` on UTC day `day`: `foreign` is other processes' CPU
    /// use since the last tick (`None`: unknown, nothing changes on its
    /// account), `computing` whether units ran here until now. Returns the
    /// new decision when it changed.
    pub(crate) fn tick(
        &mut self,
        now: Instant,
        day: u64,
        foreign: Option<f64>,
        computing: bool,
    ) -> Option<Option<PauseReason>> {
        if let Some(last) = self.last_tick {
            if computing {
                self.used += now.saturating_duration_since(last);
            }
        }
        self.last_tick = Some(now);
        if day != self.day {
            self.day = day;
            self.used = Duration::ZERO;
        }
        if let Some(load) = foreign {
            self.last_foreign = Some(load);
            if load > self.config.idle_cpu {
                self.quiet_since = None;
            } else {
                self.quiet_since.get_or_insert(now);
            }
        }
        let decision = self.decide(Some(now));
        (decision != self.paused).then(|| {
            self.paused = decision;
            decision
        })
    }

    /// The load can no longer be watched: `--when idle` stops computing
    /// for good (the owner's load could return unseen). Returns the new
    /// decision when it changed.
    pub(crate) fn blind(&mut self) -> Option<Option<PauseReason>> {
        self.quiet_since = None;
        self.last_foreign = None;
        let decision = self.decide(None);
        (decision != self.paused).then(|| {
            self.paused = decision;
            decision
        })
    }

    fn decide(&self, now: Option<Instant>) -> Option<PauseReason> {
        if self.config.max_per_day.is_some_and(|max| self.used >= max) {
            return Some(PauseReason::DailyLimit);
        }
        if self.config.when == ComputeWhen::Always {
            return None;
        }
        let idle = match (self.quiet_since, now) {
            (Some(since), Some(now)) => {
                now.saturating_duration_since(since) >= self.config.idle_after
            }
            _ => false,
        };
        (!idle).then_some(PauseReason::OwnerBusy)
    }
}

/// CPU time of the whole host, in clock ticks, from `/proc/stat`'s first
/// line: (busy, all).
pub(crate) fn parse_host_cpu(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().next()?;
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let values: Vec<u64> = fields.map(|f| f.parse().ok()).collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice],
    // guest time being counted in user time already.
    let get = |i: usize| values.get(i).copied().unwrap_or(0);
    if values.len() < 4 {
        return None;
    }
    let idle = get(3).saturating_add(get(4));
    let busy = [0, 1, 2, 5, 6, 7]
        .iter()
        .fold(0u64, |sum, &i| sum.saturating_add(get(i)));
    Some((busy, busy.saturating_add(idle)))
}

/// A process's name and CPU time (user + system, in clock ticks) from its
/// `/proc/PID/stat`. The name is between the first `(` and the last `)`:
/// it may hold spaces and parentheses.
pub(crate) fn parse_process_cpu(text: &str) -> Option<(&str, u64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text.get(open + 1..close)?;
    // After the name: state (field 3) … utime (14), stime (15).
    let mut rest = text.get(close + 1..)?.split_whitespace().skip(11);
    let utime: u64 = rest.next()?.parse().ok()?;
    let stime: u64 = rest.next()?.parse().ok()?;
    Some((name, utime.saturating_add(stime)))
}

/// The name of Colony's own processes, as the kernel shows it.
const COLONY_COMM: &str = "colony";

/// Every how many samples the list of Colony processes is read again
/// (between, only their own `/proc/PID/stat` files are read).
const RESCAN_EVERY: u32 = 10;

/// Samples other processes' share of the host's CPU from `/proc`.
struct LoadReader {
    /// This process (counted as Colony's whatever its name: a program may
    /// embed a peer).
    me: u32,
    /// Colony processes and their CPU time at the last sample.
    colony: HashMap<u32, u64>,
    /// The host's (busy, all) CPU time at the last sample.
    host: Option<(u64, u64)>,
    samples: u32,
}

impl LoadReader {
    fn new() -> LoadReader {
        LoadReader {
            me: std::process::id(),
            colony: HashMap::new(),
            host: None,
            samples: 0,
        }
    }

    /// Other processes' CPU use since the last call, as a fraction of all
    /// cores; `None` on the first call or if `/proc` cannot be read.
    fn sample(&mut self) -> Option<f64> {
        let host = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|t| parse_host_cpu(&t));
        let rescan = self.samples.is_multiple_of(RESCAN_EVERY);
        self.samples = self.samples.wrapping_add(1);
        let pids: Vec<u32> = if rescan {
            process_ids()
        } else {
            self.colony.keys().copied().collect()
        };
        let mut colony = HashMap::with_capacity(self.colony.len());
        let mut colony_delta = 0u64;
        for pid in pids {
            // A process may end between listing and reading: skipped.
            let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some((name, ticks)) = parse_process_cpu(&text) else {
                continue;
            };
            if pid != self.me && name != COLONY_COMM {
                continue;
            }
            // A process not seen before counts from now on.
            let before = self.colony.get(&pid).copied().unwrap_or(ticks);
            colony_delta = colony_delta.saturating_add(ticks.saturating_sub(before));
            colony.insert(pid, ticks);
        }
        self.colony = colony;
        let previous = std::mem::replace(&mut self.host, host);
        let ((busy0, all0), (busy1, all1)) = (previous?, host?);
        let all = all1.checked_sub(all0).filter(|d| *d > 0)?;
        let busy = busy1.saturating_sub(busy0);
        let foreign = busy.saturating_sub(colony_delta);
        Some((foreign as f64 / all as f64).clamp(0.0, 1.0))
    }
}

/// The ids of every process, from `/proc`.
fn process_ids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect()
}

/// Whether this host's CPU use can be read (`/proc/stat`, Linux).
pub(crate) fn can_read_load() -> bool {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|t| parse_host_cpu(&t))
        .is_some()
}

/// Starts the load monitor: a thread that sends a [`LoadSample`] every
/// `interval` (reading `/proc` only if `read_load`) until the receiver is
/// dropped. A sample the driver has not taken yet is replaced by none:
/// the next one covers its time.
pub(crate) fn spawn_monitor(
    interval: Duration,
    read_load: bool,
) -> std::io::Result<mpsc::Receiver<LoadSample>> {
    let (tx, rx) = mpsc::channel(4);
    std::thread::Builder::new()
        .name("colony-load".into())
        .spawn(move || {
            let mut reader = LoadReader::new();
            if read_load {
                reader.sample();
            }
            loop {
                std::thread::sleep(interval);
                let foreign = if read_load { reader.sample() } else { None };
                let sample = LoadSample {
                    at: Instant::now(),
                    foreign,
                };
                match tx.try_send(sample) {
                    Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        debug!("load monitor stopped");
                        return;
                    }
                }
            }
        })?;
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle_config() -> VolunteerConfig {
        VolunteerConfig {
            when: ComputeWhen::Idle,
            idle_cpu: 0.25,
            idle_after: Duration::from_secs(3),
            ..VolunteerConfig::default()
        }
    }

    #[test]
    fn parses_proc_stat_and_process_stat() {
        let host = "cpu  100 5 20 1000 10 1 2 3 0 0\ncpu0 1 2 3 4\n";
        assert_eq!(parse_host_cpu(host), Some((131, 1141)));
        assert_eq!(parse_host_cpu("intr 1 2 3"), None);
        assert_eq!(parse_host_cpu("cpu x y"), None);
        assert_eq!(parse_host_cpu(""), None);
        let process = "4242 (colony) S 1 2 3 0 -1 4194560 100 0 0 0 250 31 0 0 39 19 5 0";
        assert_eq!(parse_process_cpu(process), Some(("colony", 281)));
        let odd = "7 (a) b (c)) R 1 2 3 0 -1 0 0 0 0 0 7 8 0 0";
        assert_eq!(parse_process_cpu(odd), Some(("a) b (c)", 15)));
        assert_eq!(parse_process_cpu("7 (trunc"), None);
        assert_eq!(parse_process_cpu("7 (short) R 1 2"), None);
    }

    #[test]
    fn reading_this_host_gives_a_fraction() {
        if !can_read_load() {
            return; // not Linux
        }
        let mut reader = LoadReader::new();
        assert_eq!(reader.sample(), None, "the first sample has no interval");
        std::thread::sleep(Duration::from_millis(50));
        if let Some(load) = reader.sample() {
            assert!((0.0..=1.0).contains(&load), "{load}");
        }
        assert!(reader.colony.contains_key(&std::process::id()));
    }

    #[test]
    fn idle_waits_for_a_quiet_host_pauses_at_once_and_resumes_after_the_wait() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut policy = Policy::new(idle_config(), 10, Duration::ZERO);
        assert_eq!(
            policy.paused(),
            Some(PauseReason::OwnerBusy),
            "starts paused"
        );
        assert_eq!(policy.tick(at(0), 10, Some(0.05), false), None);
        assert_eq!(policy.tick(at(2900), 10, Some(0.2), false), None);
        assert_eq!(policy.tick(at(3000), 10, Some(0.1), false), Some(None));
        // Lingers while the load stays low...
        assert_eq!(policy.tick(at(3200), 10, Some(0.24), true), None);
        // ...and pauses at the first sample above the threshold.
        assert_eq!(
            policy.tick(at(3400), 10, Some(0.5), true),
            Some(Some(PauseReason::OwnerBusy))
        );
        // An unreadable sample changes nothing.
        assert_eq!(policy.tick(at(3600), 10, None, false), None);
        assert_eq!(policy.tick(at(3800), 10, Some(0.0), false), None);
        assert_eq!(policy.tick(at(6700), 10, Some(0.0), false), None);
        assert_eq!(policy.tick(at(6800), 10, Some(0.0), false), Some(None));
    }

    #[test]
    fn always_computes_whatever_the_load() {
        let t0 = Instant::now();
        let mut policy = Policy::new(VolunteerConfig::default(), 10, Duration::ZERO);
        assert_eq!(policy.paused(), None);
        assert_eq!(policy.tick(t0, 10, Some(1.0), true), None);
        assert_eq!(policy.paused(), None);
    }

    #[test]
    fn the_daily_limit_counts_computing_time_and_resets_at_midnight_utc() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let config = VolunteerConfig {
            max_per_day: Some(Duration::from_secs(3600)),
            ..VolunteerConfig::default()
        };
        let mut policy = Policy::new(config.clone(), 10, Duration::from_secs(3000));
        assert_eq!(policy.tick(at(0), 10, None, true), None);
        // Not computing: the time does not count.
        assert_eq!(policy.tick(at(1000), 10, None, false), None);
        assert_eq!(policy.tick(at(1599), 10, None, true), None);
        assert_eq!(
            policy.tick(at(1600), 10, None, true),
            Some(Some(PauseReason::DailyLimit))
        );
        assert_eq!(policy.day_use(), (10, Duration::from_secs(3600)));
        // The next UTC day starts afresh.
        assert_eq!(policy.tick(at(1700), 11, None, false), Some(None));
        assert_eq!(policy.day_use(), (11, Duration::ZERO));
        // Used up already when the peer starts.
        let policy = Policy::new(config, 10, Duration::from_secs(4000));
        assert_eq!(policy.paused(), Some(PauseReason::DailyLimit));
    }

    #[test]
    fn the_day_counter_round_trips() {
        let value = encode_day_use(20_000, Duration::from_millis(86_399_999));
        assert_eq!(
            decode_day_use(value),
            (20_000, Duration::from_millis(86_399_999))
        );
        assert_eq!(decode_day_use(0), (0, Duration::ZERO));
    }
}
