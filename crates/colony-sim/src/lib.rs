//! A deterministic simulator for Colony: many peers in virtual time, each
//! built from the same sans-IO protocol cores the runtime uses (membership,
//! pipes, acquaintances, jobs) and glued together the way the runtime's
//! driver does it, on a simulated network that loses, duplicates, delays,
//! reorders and partitions, with peers that crash (memory lost, disk kept)
//! and restart, or stop and resume. Everything comes from one seed, so a
//! failing seed replays bit for bit.
//!
//! ```no_run
//! let report = colony_sim::run(&colony_sim::SimConfig::new(42));
//! for v in &report.violations {
//!     eprintln!("{v}\nreplay: {}", report.config.replay_line());
//! }
//! ```

pub mod app;
pub mod check;
pub mod faults;
pub mod peer;
pub mod rng;
pub mod sim;
pub mod trace;

pub use check::Violation;
pub use faults::FaultKinds;
pub use sim::{run, Broken, FaultCounts, Report, SimConfig, Workload};
