//! Host statistics published in presence records (seed 003 §4.4), read from
//! `/proc` on Linux; fields that cannot be read stay zero.

use std::time::{SystemTime, UNIX_EPOCH};

use colony_core::membership::PeerStats;

/// Seconds since the Unix epoch.
pub(crate) fn unix_now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Samples the host into `stats`, keeping the counters already there.
pub(crate) fn sample(stats: &mut PeerStats, cores_offered: Option<u32>) {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    stats.cores = cores;
    stats.cores_offered = cores_offered.unwrap_or(cores).min(cores);
    if let Ok(text) = std::fs::read_to_string("/proc/loadavg") {
        if let Some(first) = text.split_whitespace().next() {
            stats.load_avg_1m = first.parse().unwrap_or(0.0);
        }
    }
    if let Ok(text) = std::fs::read_to_string("/proc/meminfo") {
        if let Some(kib) = text
            .lines()
            .find(|l| l.starts_with("MemAvailable:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
        {
            stats.free_memory_bytes = kib * 1024;
        }
    }
    if let Ok(text) = std::fs::read_to_string("/proc/uptime") {
        if let Some(secs) = text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            stats.uptime_s = secs as u64;
        }
    }
}
