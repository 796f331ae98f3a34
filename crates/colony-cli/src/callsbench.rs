//! `colony bench calls`: prints what `colony::bench::calls` measured.

use anyhow::Result;
use clap::Args;
use colony::bench::{CallsBenchOptions, CallsBenchReport};

use crate::at_least_one;

#[derive(Args, Debug)]
pub(crate) struct CallsBenchArgs {
    /// Calls made one after the other, per protocol.
    #[arg(long, default_value_t = 2000, value_parser = at_least_one)]
    calls: usize,
    /// Calls made pipelined, per protocol.
    #[arg(long, default_value_t = 20_000, value_parser = at_least_one)]
    pipelined: usize,
    /// Pipelined calls in flight at once.
    #[arg(long, default_value_t = 256, value_parser = at_least_one)]
    window: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: CallsBenchArgs) -> Result<()> {
    let options = CallsBenchOptions {
        calls: args.calls,
        pipelined: args.pipelined,
        window: args.window,
    };
    eprintln!(
        "running: raw TCP, then 3 peers: {} calls one at a time and {} pipelined ({} in flight) to one object, with protocols none, checkpoint and pml…",
        options.calls, options.pipelined, options.window
    );
    let report = colony::bench::calls(&options).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

fn print_report(report: &CallsBenchReport) {
    println!(
        "raw TCP round trip (64 B): p50 {:.0} µs, p99 {:.0} µs",
        report.raw_tcp.p50, report.raw_tcp.p99
    );
    for p in &report.protocols {
        println!(
            "{:>10}: call p50 {:.0} µs ({:.1}× raw TCP), p99 {:.0} µs; {:.0} calls/s one at a time, {:.0} calls/s pipelined",
            p.protocol,
            p.sync.p50,
            p.sync.p50 / report.raw_tcp.p50.max(1e-9),
            p.sync.p99,
            p.sync_per_sec,
            p.pipelined_per_sec
        );
    }
}
