//! Fault-tolerance settings of a job, chosen at deployment (seed 000 §6.1:
//! the protocol and its time to checkpoint, TTC), not in the application.
//!
//! A job's home is the `home_size` live peers closest to its id; the
//! closest is the primary, the others its backups (P³'s shadow managers).
//! Where unit checkpoints are kept is the [`CheckpointStorage`].

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Largest home a job may have.
pub const MAX_HOME_SIZE: u8 = 16;

/// Shortest time to checkpoint a job may ask for. Below it a worker would
/// checkpoint after nearly every step and flood its home with pieces.
pub const MIN_TTC: Duration = Duration::from_millis(10);

/// The rollback-recovery protocol protecting a job's units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FtProtocol {
    /// No checkpoints: a unit whose worker is declared dead restarts
    /// elsewhere from the state it was handed out with (or kept at its last
    /// divide), and its work is done again; if the worker was alive after
    /// all, its copy is told to stop. Only the primary holds those states,
    /// in memory: if it is lost before the unit's worker, the job fails with
    /// a reason saying so. Workers that are merely suspected keep their
    /// units.
    None,
    /// Units checkpoint every TTC and after each divide; a lost unit
    /// restarts elsewhere from its last checkpoint.
    Checkpoint,
    /// Pessimistic message logging, for distributed objects only: every
    /// call an object serves is logged at a majority of its home before its
    /// effects leave, so a crash replays it and a call answered ran exactly
    /// once. Jobs refuse it ([`FaultTolerance::validate_for_job`]).
    Pml,
    /// Communication-induced checkpointing, for distributed objects only:
    /// each object checkpoints at least every TTC, checkpoint indexes ride
    /// on its messages and force a checkpoint before a delivery that would
    /// otherwise cross a recovery line, so the latest checkpoints always
    /// form a consistent global state; a crash rolls every object that
    /// depends on the lost state back to it. Jobs refuse it.
    Cic,
}

impl FtProtocol {
    /// Every protocol, in the order descriptors list them.
    pub const ALL: [FtProtocol; 4] = [
        FtProtocol::None,
        FtProtocol::Checkpoint,
        FtProtocol::Pml,
        FtProtocol::Cic,
    ];

    /// Its name in descriptors and the API: `none`, `checkpoint`, `pml`,
    /// `cic`.
    pub fn name(self) -> &'static str {
        match self {
            FtProtocol::None => "none",
            FtProtocol::Checkpoint => "checkpoint",
            FtProtocol::Pml => "pml",
            FtProtocol::Cic => "cic",
        }
    }

    /// The protocol called `name` (exactly as [`FtProtocol::name`] spells
    /// it).
    pub fn from_name(name: &str) -> Option<FtProtocol> {
        FtProtocol::ALL.into_iter().find(|p| p.name() == name)
    }
}

impl fmt::Display for FtProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where unit checkpoints are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckpointStorage {
    /// On the worker's own disk only (G2:P2P scenario 2): for peers expected
    /// back; a unit waits for its worker to return.
    Local,
    /// Whole copies on the `r` closest home members.
    Copies {
        /// Number of copies.
        r: u8,
    },
    /// Reed–Solomon coded: `k` data and `m` parity shards, one per home
    /// member; any `k` of them restore the state.
    Shards {
        /// Data shards.
        k: u8,
        /// Parity shards.
        m: u8,
    },
}

impl CheckpointStorage {
    /// How many home members hold a piece of each checkpoint (0 for local).
    pub fn holders(self) -> usize {
        match self {
            CheckpointStorage::Local => 0,
            CheckpointStorage::Copies { r } => usize::from(r),
            CheckpointStorage::Shards { k, m } => usize::from(k) + usize::from(m),
        }
    }

    /// How many of those holders may die with every checkpoint still
    /// restorable.
    pub fn tolerated_failures(self) -> usize {
        match self {
            CheckpointStorage::Local => 0,
            CheckpointStorage::Copies { r } => usize::from(r).saturating_sub(1),
            CheckpointStorage::Shards { m, .. } => usize::from(m),
        }
    }
}

impl fmt::Display for CheckpointStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointStorage::Local => write!(f, "local"),
            CheckpointStorage::Copies { r } => write!(f, "copies:{r}"),
            CheckpointStorage::Shards { k, m } => write!(f, "shards:{k}+{m}"),
        }
    }
}

impl std::str::FromStr for CheckpointStorage {
    type Err = FtError;

    /// Parses `local`, `copies:R` or `shards:K+M`.
    fn from_str(s: &str) -> Result<Self, FtError> {
        let bad = || FtError::BadStorage(s.to_string());
        if s == "local" {
            return Ok(CheckpointStorage::Local);
        }
        if let Some(r) = s.strip_prefix("copies:") {
            let r = r.parse().map_err(|_| bad())?;
            return Ok(CheckpointStorage::Copies { r });
        }
        if let Some(km) = s.strip_prefix("shards:") {
            let (k, m) = km.split_once('+').ok_or_else(bad)?;
            return Ok(CheckpointStorage::Shards {
                k: k.parse().map_err(|_| bad())?,
                m: m.parse().map_err(|_| bad())?,
            });
        }
        Err(bad())
    }
}

/// A job's fault-tolerance settings; they travel with the job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultTolerance {
    /// The protocol.
    pub protocol: FtProtocol,
    /// Time to checkpoint: how often a worker checkpoints each unit.
    pub ttc: Duration,
    /// Where checkpoints go.
    pub storage: CheckpointStorage,
    /// Members of the job's home (primary and backups); the job record is
    /// replicated on all of them, and every change to it, like the choice
    /// of a new primary, needs a majority of them: a home of `2f + 1`
    /// members keeps working with `f` of them lost or cut off
    /// ([`FaultTolerance::home_tolerates`]).
    pub home_size: u8,
    /// Whether home members write checkpoint pieces to disk (redb, group
    /// commit) before acknowledging them, so they survive a restart.
    pub durable: bool,
}

impl Default for FaultTolerance {
    /// Checkpoints every second, two whole copies, a home of three.
    fn default() -> Self {
        FaultTolerance {
            protocol: FtProtocol::Checkpoint,
            ttc: Duration::from_secs(1),
            storage: CheckpointStorage::Copies { r: 2 },
            home_size: 3,
            durable: false,
        }
    }
}

impl FaultTolerance {
    /// How many home members may be lost or cut off at once with the job
    /// record still able to change and to elect a primary: a minority.
    pub fn home_tolerates(&self) -> usize {
        usize::from(self.home_size).saturating_sub(1) / 2
    }

    /// No checkpoints; the job record is still replicated on a home of
    /// three, so the job survives its primary.
    pub fn none() -> Self {
        FaultTolerance {
            protocol: FtProtocol::None,
            ..FaultTolerance::default()
        }
    }

    /// A home size as given (an integer of any size), checked to be
    /// between 1 and [`MAX_HOME_SIZE`].
    pub fn home_size_from(n: i64) -> Result<u8, FtError> {
        u8::try_from(n)
            .ok()
            .filter(|&h| (1..=MAX_HOME_SIZE).contains(&h))
            .ok_or(FtError::HomeSize(n))
    }

    /// A time to checkpoint given in seconds, as the descriptor (`ttc`) and
    /// the API (`ttc_s`) take it: positive, finite, at least [`MIN_TTC`].
    /// The one conversion every entry point uses, so they all refuse the
    /// same values with the same words.
    pub fn ttc_from_secs(secs: f64) -> Result<Duration, FtError> {
        if secs == 0.0 {
            return Err(FtError::ZeroTtc);
        }
        if !(secs.is_finite() && secs > 0.0) {
            return Err(FtError::TtcNotPositive(secs.to_string()));
        }
        if secs < MIN_TTC.as_secs_f64() {
            return Err(FtError::TtcTooSmall {
                got: format!("{secs} s"),
            });
        }
        Duration::try_from_secs_f64(secs).map_err(|_| FtError::TtcTooLarge(format!("{secs:e}")))
    }

    /// Checks the settings are coherent: a TTC of at least [`MIN_TTC`], a
    /// home of 1 to [`MAX_HOME_SIZE`] members, and checkpoint storage that
    /// fits in the home (copies ≤ home size, data + parity shards ≤ home
    /// size). The descriptor, the CLI, the API and the job's home all call
    /// it, so they accept and refuse the same settings.
    pub fn validate(&self) -> Result<(), FtError> {
        if self.ttc.is_zero() {
            return Err(FtError::ZeroTtc);
        }
        if self.ttc < MIN_TTC {
            return Err(FtError::TtcTooSmall {
                got: format!("{:?}", self.ttc),
            });
        }
        if self.home_size == 0 || self.home_size > MAX_HOME_SIZE {
            return Err(FtError::HomeSize(i64::from(self.home_size)));
        }
        match self.storage {
            CheckpointStorage::Local => {}
            CheckpointStorage::Copies { r } => {
                if r == 0 || r > self.home_size {
                    return Err(FtError::Copies {
                        r,
                        home_size: self.home_size,
                    });
                }
            }
            CheckpointStorage::Shards { k, m } => {
                if k == 0 || u16::from(k) + u16::from(m) > u16::from(self.home_size) {
                    return Err(FtError::Shards {
                        k,
                        m,
                        home_size: self.home_size,
                    });
                }
            }
        }
        Ok(())
    }

    /// [`FaultTolerance::validate`], and a protocol that protects a
    /// divisible job's units: `none` or `checkpoint`. The submitting peer,
    /// the API and the job's home all call it.
    pub fn validate_for_job(&self) -> Result<(), FtError> {
        self.validate()?;
        match self.protocol {
            FtProtocol::None | FtProtocol::Checkpoint => Ok(()),
            FtProtocol::Pml | FtProtocol::Cic => Err(FtError::ObjectsOnly(self.protocol)),
        }
    }

    /// Whether units checkpoint.
    pub fn checkpoints(&self) -> bool {
        self.protocol == FtProtocol::Checkpoint
    }
}

/// Incoherent fault-tolerance settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FtError {
    /// TTC of zero.
    #[error("ttc must be greater than zero")]
    ZeroTtc,
    /// TTC negative, infinite or not a number (the value as given).
    #[error("ttc must be a positive number of seconds, got {0}")]
    TtcNotPositive(String),
    /// TTC below [`MIN_TTC`].
    #[error("ttc must be at least {MIN_TTC:?}, got {got}")]
    TtcTooSmall {
        /// The value as given.
        got: String,
    },
    /// TTC beyond what a duration holds (the value as given, in seconds).
    #[error("ttc = {0} seconds is too large")]
    TtcTooLarge(String),
    /// Home size out of range (as given, which may not fit a `u8`).
    #[error("home_size must be between 1 and {MAX_HOME_SIZE}, got {0}")]
    HomeSize(i64),
    /// More copies than home members, or none.
    #[error("copies r = {r} must be between 1 and home_size = {home_size}")]
    Copies {
        /// Copies asked.
        r: u8,
        /// Home size.
        home_size: u8,
    },
    /// More shards than home members, or no data shard.
    #[error(
        "shards need k >= 1 and k + m <= home_size (k = {k}, m = {m}, home_size = {home_size})"
    )]
    Shards {
        /// Data shards.
        k: u8,
        /// Parity shards.
        m: u8,
        /// Home size.
        home_size: u8,
    },
    /// Unknown protocol name (as given).
    #[error("protocol must be \"none\", \"checkpoint\", \"pml\" or \"cic\", got {0:?}")]
    BadProtocol(String),
    /// A protocol for objects given to a job.
    #[error(
        "protocol {0} protects distributed objects, not jobs: a job's units use \"none\" or \"checkpoint\""
    )]
    ObjectsOnly(FtProtocol),
    /// Unparsable storage.
    #[error("storage must be \"local\", \"copies:R\" or \"shards:K+M\", got {0:?}")]
    BadStorage(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_problem() {
        let ok = FaultTolerance::default();
        assert_eq!(ok.validate(), Ok(()));
        let zero = FaultTolerance {
            ttc: Duration::ZERO,
            ..ok
        };
        assert_eq!(zero.validate(), Err(FtError::ZeroTtc));
        let tiny = FaultTolerance {
            ttc: Duration::from_nanos(1),
            ..ok
        };
        assert!(matches!(tiny.validate(), Err(FtError::TtcTooSmall { .. })));
        let floor = FaultTolerance { ttc: MIN_TTC, ..ok };
        assert_eq!(floor.validate(), Ok(()));
        let too_many = FaultTolerance {
            storage: CheckpointStorage::Shards { k: 4, m: 2 },
            home_size: 5,
            ..ok
        };
        assert!(matches!(too_many.validate(), Err(FtError::Shards { .. })));
        let copies = FaultTolerance {
            storage: CheckpointStorage::Copies { r: 0 },
            ..ok
        };
        assert!(matches!(copies.validate(), Err(FtError::Copies { .. })));
    }

    #[test]
    fn ttc_in_seconds_has_a_floor_and_a_ceiling() {
        assert_eq!(
            FaultTolerance::ttc_from_secs(0.5),
            Ok(Duration::from_millis(500))
        );
        assert_eq!(FaultTolerance::ttc_from_secs(0.01), Ok(MIN_TTC));
        assert_eq!(FaultTolerance::ttc_from_secs(0.0), Err(FtError::ZeroTtc));
        let tiny = FaultTolerance::ttc_from_secs(1e-9).unwrap_err();
        assert_eq!(
            tiny.to_string(),
            "ttc must be at least 10ms, got 0.000000001 s"
        );
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                FaultTolerance::ttc_from_secs(bad),
                Err(FtError::TtcNotPositive(_))
            ));
        }
        assert!(matches!(
            FaultTolerance::ttc_from_secs(1e300),
            Err(FtError::TtcTooLarge(_))
        ));
    }

    #[test]
    fn home_size_as_given_is_checked() {
        assert_eq!(FaultTolerance::home_size_from(3), Ok(3));
        for bad in [0, -1, 17, 300, i64::MAX] {
            assert_eq!(
                FaultTolerance::home_size_from(bad),
                Err(FtError::HomeSize(bad))
            );
        }
        assert_eq!(
            FtError::HomeSize(300).to_string(),
            "home_size must be between 1 and 16, got 300"
        );
    }

    #[test]
    fn storage_parses_and_prints() {
        for s in ["local", "copies:2", "shards:4+2"] {
            let parsed: CheckpointStorage = s.parse().unwrap();
            assert_eq!(parsed.to_string(), s);
        }
        assert!("copies".parse::<CheckpointStorage>().is_err());
        assert!("shards:4".parse::<CheckpointStorage>().is_err());
        assert_eq!(
            CheckpointStorage::Shards { k: 4, m: 2 }.tolerated_failures(),
            2
        );
    }
}
