//! `colony bench space`: prints what `colony::bench::space` measured.

use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use colony::bench::{LatencyUs, SpaceBenchOptions, SpaceBenchReport};

use crate::at_least_one;

#[derive(Args, Debug)]
pub(crate) struct SpaceBenchArgs {
    /// Operations per sequential phase (set, get, cached get, lock).
    #[arg(long, default_value_t = 1000, value_parser = at_least_one)]
    ops: usize,
    /// Operations per pipelined phase.
    #[arg(long, default_value_t = 10_000, value_parser = at_least_one)]
    pipelined: usize,
    /// Pipelined operations in flight at once.
    #[arg(long, default_value_t = 512, value_parser = at_least_one)]
    window: usize,
    /// Size of each value written, in bytes.
    #[arg(long, default_value_t = 64, value_parser = at_least_one)]
    value_bytes: usize,
    /// Lease of the locks whose holders crash, in milliseconds.
    #[arg(long, default_value_t = 10000)]
    lease_ms: u64,
    /// Lock holders crashed, one after the other (0: none).
    #[arg(long, default_value_t = 3)]
    regrants: usize,
    /// Peers of the skewed-read networks.
    #[arg(long, default_value_t = 6, value_parser = at_least_one)]
    hot_peers: usize,
    /// Seconds every peer reads the hot object, per setting.
    #[arg(long, default_value_t = 3.0)]
    hot_secs: f64,
    /// Size of the large values written replicated and erasure-coded, in
    /// MiB.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    large_mib: u32,
    /// Large values written and read per storage.
    #[arg(long, default_value_t = 5, value_parser = at_least_one)]
    large_values: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: SpaceBenchArgs) -> Result<()> {
    if !(args.hot_secs.is_finite() && args.hot_secs > 0.0 && args.hot_secs <= 600.0) {
        bail!("--hot-secs must be in (0, 600], got {}", args.hot_secs);
    }
    if !(100..=60_000).contains(&args.lease_ms) {
        bail!(
            "--lease-ms must be from 100 to 60000, got {}",
            args.lease_ms
        );
    }
    if args.value_bytes > 1 << 20 {
        bail!(
            "--value-bytes must be at most 1 MiB, got {}",
            args.value_bytes
        );
    }
    let options = SpaceBenchOptions {
        peers: 3,
        ops: args.ops,
        pipelined: args.pipelined,
        window: args.window,
        value_bytes: args.value_bytes,
        lease: Duration::from_millis(args.lease_ms),
        regrants: args.regrants,
        hot_peers: args.hot_peers,
        hot_for: Duration::from_secs_f64(args.hot_secs),
        large_value_bytes: (args.large_mib as usize) << 20,
        large_values: args.large_values,
    };
    eprintln!(
        "running: raw TCP, then 3 peers (homes of 3): {} sets, gets, cached gets and locks one at a time, {} pipelined sets and gets, large values replicated and erasure-coded, {} crashed lock holders and one crashed primary holding a lock, then skewed reads on {} peers with hot replication off and on…",
        options.ops, options.pipelined, options.regrants, options.hot_peers
    );
    let r = colony::bench::space(&options).await?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&r)?)?;
        return Ok(());
    }
    print_report(&r)
}

fn print_report(r: &SpaceBenchReport) -> Result<()> {
    let line = |name: &str, l: &LatencyUs| {
        format!(
            "  {name:<22} p50 {:>9.1} µs  p99 {:>9.1} µs  max {:>9.1} µs",
            l.p50, l.p99, l.max
        )
    };
    outln!(
        "object space: {} peers, homes of 3, {}-byte values; first write answered {:.1} s after the network formed; \
         every partition's home created {:.2} s later",
        r.peers, r.value_bytes, r.first_write_s, r.all_homes_created_s
    )?;
    outln!("one at a time ({} each):", r.ops)?;
    outln!("{}", line("raw TCP round trip", &r.tcp_rtt_us))?;
    outln!("{}", line("set (majority on disk)", &r.set_us))?;
    outln!("{}", line("get (linearizable)", &r.get_us))?;
    outln!("{}", line("get (cached)", &r.cached_get_us))?;
    outln!("{}", line("write lock", &r.lock_us))?;
    outln!("{}", line("unlock", &r.unlock_us))?;
    outln!("  set / raw TCP (p50):    {:.1}x", r.set_over_tcp_p50)?;
    outln!("pipelined ({} ops, {} in flight):", r.pipelined, r.window)?;
    outln!("  sets, one key:          {:>9.0} /s", r.sets_per_s_one_key)?;
    outln!("  sets, spread:           {:>9.0} /s", r.sets_per_s_spread)?;
    outln!("  gets, spread:           {:>9.0} /s", r.gets_per_s_spread)?;
    outln!(
        "lock re-granted after its holder crashed (lease {} ms): p50 {:.0} ms, max {:.0} ms",
        r.lease_ms,
        r.regrant_us.p50 / 1e3,
        r.regrant_us.max / 1e3
    )?;
    outln!(
        "  when the holder was its lock's partition primary (one round): {:.0} ms",
        r.regrant_of_primary_us / 1e3
    )?;
    let l = &r.large;
    let mib = l.value_bytes as f64 / f64::from(1 << 20);
    outln!(
        "large values ({mib:.0} MiB, {} each), p50: replicated put {:.1} ms, get {:.1} ms, \
         {:.2} bytes held per byte; erasure-coded 2+1 put {:.1} ms, get {:.1} ms, {:.2} bytes held per byte",
        l.values,
        l.replicated_put_us.p50 / 1e3,
        l.replicated_get_us.p50 / 1e3,
        l.replicated_stored_per_byte,
        l.coded_put_us.p50 / 1e3,
        l.coded_get_us.p50 / 1e3,
        l.coded_stored_per_byte
    )?;
    for s in &r.skewed {
        outln!(
            "skewed cached reads, hot replication {:<3}: {:>8.0} reads/s, p50 {:>7.1} µs, p99 {:>8.1} µs; served by the home {}, by hot copies {} ({} copies sent)",
            if s.hot_replication { "on" } else { "off" },
            s.reads_per_s,
            s.read_us.p50,
            s.read_us.p99,
            s.served_by_home,
            s.served_by_hot_copies,
            s.hot_copies_sent
        )?;
    }
    Ok(())
}
