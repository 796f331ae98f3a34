//! What a job looks like from outside: statistics, contributions, states
//! and the views built from a home's record.

use std::collections::BTreeSet;
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::divisible::SharedVars;
use crate::ft::FaultTolerance;
use crate::home::Home;
use crate::PeerKey;

use super::*;

/// Counters of one job, as the primary sees them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStats {
    /// Units named so far (the root plus one per successful divide).
    pub units: u64,
    /// Units merged.
    pub units_done: u64,
    /// Successful steals.
    pub steals: u64,
    /// Work counted by the application (nodes explored, rows computed).
    pub work: u64,
    /// Peers that ran at least one unit.
    pub peers_used: u64,
    /// Checkpoints stored.
    pub checkpoints: u64,
    /// Bytes of checkpoint state received.
    pub checkpoint_bytes: u64,
    /// Units reissued after their holder was lost or left.
    pub reissued: u64,
    /// Times another home member took the primary role over.
    pub takeovers: u64,
}

/// One peer's part in a job.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contribution {
    /// Units it finished.
    pub units_done: u64,
    /// Units it is running now.
    pub units_running: u64,
    /// Work it reported.
    pub work: u64,
    /// Units it gave away to others.
    pub donated: u64,
}

/// A snapshot of a job for progress display, `colony jobs` and results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "P: DeserializeOwned"))]
pub struct JobView<P> {
    /// The job.
    pub job: JobId,
    /// Its application.
    pub app: String,
    /// Its serialised parameters.
    #[serde(with = "serde_bytes")]
    pub params: Vec<u8>,
    /// Its primary, as the peer answering sees it.
    pub home: P,
    /// The home's members, primary first.
    pub home_members: Vec<P>,
    /// Who submitted it.
    pub submitter: P,
    /// Its fault-tolerance settings.
    pub ft: FaultTolerance,
    /// Whether its submitter asked to keep its namespace in the object
    /// space when it ends ([`SubmitOptions::keep_namespace`]); false for a
    /// submission refused before it became a job.
    ///
    /// [`SubmitOptions::keep_namespace`]: super::SubmitOptions::keep_namespace
    pub keep_namespace: bool,
    /// Running, done or failed.
    pub state: JobState,
    /// Counters.
    pub stats: JobStats,
    /// Each peer's part.
    pub contributions: Vec<(P, Contribution)>,
    /// Current shared variables.
    pub shared: SharedVars,
    /// Seconds since submission (or until completion).
    pub elapsed_s: f64,
    /// Set while the job's home has lost its majority, as the member
    /// answering sees it: the job waits for the lost members and fails
    /// once its patience is over. (Boxed: rarely set, and views travel in
    /// enums.)
    pub home_majority_lost: Option<Box<MajorityLost>>,
    /// Set once a peer refused to work on the job (it cannot run its
    /// application, does not run the guest's code, or does not accept jobs
    /// from its submitter), as the job's primary heard it. Not replicated:
    /// a new primary lists only the refusals it heard itself. (Boxed:
    /// rarely set, and views travel in enums.)
    pub declined: Option<Box<Declined<P>>>,
    /// Whether the job's primary (the peer answering) knows a majority of
    /// the job's full home to hold it: from then on the job survives the
    /// loss of any minority of its home, its primary included. A
    /// submission is acknowledged once it is.
    pub replicated: bool,
}

/// The peers that refused to work on a job, as its primary heard them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(deserialize = "P: DeserializeOwned"))]
pub struct Declined<P> {
    /// Each peer and why, in a sentence: at most 64, by peer.
    pub peers: Vec<(P, String)>,
    /// Refusals heard beyond those listed.
    pub unlisted: u64,
}

/// A job's home that lost its majority: nothing can be committed until the
/// lost members return, and the job fails if they do not in time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MajorityLost {
    /// Members of the home gone from the view.
    pub members_gone: u32,
    /// Members of the home (latest or committed list, the longer).
    pub members: u32,
    /// Seconds since the loss was noticed.
    pub lost_for_s: f64,
    /// Seconds until the job fails, unless the members return.
    pub fails_in_s: f64,
}

/// Where a job stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    /// Units are being computed.
    Running,
    /// Every unit is merged; the result is final.
    Done {
        /// The merged result, serialised by the application.
        #[serde(with = "serde_bytes")]
        result: Vec<u8>,
    },
    /// The job could not run.
    Failed {
        /// Why.
        reason: String,
    },
    /// The job was cancelled (by its submitter, the operator of its
    /// primary, or its deadline) before it finished.
    Cancelled {
        /// By whom, or why.
        reason: String,
    },
}

impl<P: PeerKey> Jobs<P> {
    /// The view of a submission that failed before it became a job.
    pub(super) fn failed_view(
        &self,
        submitter: &P,
        job: JobId,
        app: &str,
        params: &[u8],
        ft: FaultTolerance,
        reason: String,
    ) -> JobView<P> {
        JobView {
            job,
            app: app.to_string(),
            params: params.to_vec(),
            home: self.me.clone(),
            home_members: vec![self.me.clone()],
            submitter: submitter.clone(),
            ft,
            keep_namespace: false,
            state: JobState::Failed { reason },
            stats: JobStats::default(),
            contributions: Vec::new(),
            shared: SharedVars::default(),
            elapsed_s: 0.0,
            home_majority_lost: None,
            declined: None,
            replicated: false,
        }
    }

    /// For diagnostics: the units of `job`'s record here that are not
    /// done, each described in one line (status, holder, epoch, report
    /// sequence, and whether the primary has its state or restores it).
    pub fn open_units(&self, job: JobId) -> Vec<(UnitId, String)> {
        let Some(h) = self.homes.get(&job) else {
            return Vec::new();
        };
        h.record
            .units
            .iter()
            .filter(|(_, u)| u.status != UnitStatus::Done)
            .map(|(id, u)| {
                let line = format!(
                    "{:?} on {:?} epoch {} seq {} ready {} restoring {} staged {} (first waits for {:?})",
                    u.status,
                    u.holder,
                    u.epoch,
                    u.seq,
                    h.ready.contains_key(id),
                    h.restoring.contains_key(id),
                    h.staging.get(id).map_or(0, |q| q.len()),
                    h.staging
                        .get(id)
                        .and_then(|q| q.front())
                        .map(|s| (s.seq, s.waiting.len())),
                );
                (*id, line)
            })
            .collect()
    }

    /// A job's snapshot, if this peer holds its record (as primary or
    /// backup).
    pub fn view(&self, now: Instant, job: JobId) -> Option<JobView<P>> {
        let h = self.homes.get(&job)?;
        Some(view_of(job, h, &self.me, &self.members, &self.config, now))
    }

    /// Snapshots of every job whose primary is this peer, and of every
    /// job whose home lost its majority with this peer among its members
    /// (no primary can be elected: this member speaks for the job).
    /// The jobs whose record this peer holds (as primary or backup), with
    /// their application and the primary it knows of: what this peer must
    /// be able to run to take over, or to restart a unit once it has.
    pub fn homed_apps(&self) -> impl Iterator<Item = (JobId, &str, Option<&P>)> + '_ {
        self.homes
            .iter()
            .map(|(job, h)| (*job, h.record.app.as_str(), h.primary()))
    }

    /// Whether `job`'s submitter asked to keep its namespace in the object
    /// space when it ends; false for a job whose record this peer does not
    /// hold.
    pub fn keeps_namespace(&self, job: JobId) -> bool {
        self.homes
            .get(&job)
            .is_some_and(|h| h.record.keep_namespace)
    }

    /// Whether `job`, whose record this peer holds, has ended (done,
    /// failed or cancelled).
    pub fn has_ended(&self, job: JobId) -> bool {
        self.homes
            .get(&job)
            .is_some_and(|h| !matches!(h.record.state, JobState::Running))
    }

    /// A peer's position in the overlay's key space.
    pub fn key_of(&self, peer: &P) -> [u8; 32] {
        (self.key_of)(peer)
    }

    pub fn homed_views(&self, now: Instant) -> Vec<JobView<P>> {
        self.homes
            .iter()
            .filter(|(_, h)| h.is_primary() || h.majority_lost_since.is_some())
            .filter_map(|(job, _)| self.view(now, *job))
            .collect()
    }
}

/// The snapshot of `job` from its home `h` here, as `me` sees it at `now`
/// with the live `members`.
pub(super) fn view_of<P: PeerKey>(
    job: JobId,
    h: &Home<P, HomeState<P>>,
    me: &P,
    members: &BTreeSet<P>,
    config: &JobConfig,
    now: Instant,
) -> JobView<P> {
    let record = &h.record;
    JobView {
        job,
        app: record.app.clone(),
        params: record.params.clone(),
        home: h.primary().cloned().unwrap_or_else(|| me.clone()),
        home_members: h.members().to_vec(),
        submitter: record.submitter.clone(),
        ft: record.ft,
        keep_namespace: record.keep_namespace,
        state: record.state.clone(),
        stats: record.stats.clone(),
        contributions: record
            .contributions
            .iter()
            .map(|(p, c)| (p.clone(), c.clone()))
            .collect(),
        shared: record.shared.clone(),
        elapsed_s: h
            .finished
            .unwrap_or(now)
            .saturating_duration_since(h.started)
            .as_secs_f64(),
        home_majority_lost: h.majority_lost_since.map(|since| {
            let live = |p: &P| *p == *me || members.contains(p);
            let mut gone: Vec<&P> = h
                .members()
                .iter()
                .chain(h.config())
                .filter(|p| !live(p))
                .collect();
            gone.sort();
            gone.dedup();
            let lost_for = now.saturating_duration_since(since);
            let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
            Box::new(MajorityLost {
                members_gone: count(gone.len()),
                members: count(h.members().len().max(h.config().len())),
                lost_for_s: lost_for.as_secs_f64(),
                fails_in_s: config
                    .majority_patience
                    .saturating_sub(lost_for)
                    .as_secs_f64(),
            })
        }),
        declined: h.declines.view(),
        replicated: h.replicated(members.len() + usize::from(!members.contains(me))),
    }
}
