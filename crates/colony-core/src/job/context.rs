//! The per-home context: one job's home and the parts of the core its
//! handlers read or write, borrowed once per input. Handlers that work on
//! one home run on it and write what they cause to the core's outbox;
//! effects that must wait for the change to be committed they return (a
//! [`Commit`]), and the core commits them once the borrow ends: a commit
//! runs the home core, which may act on any home. So a flow that commits
//! and then goes on looks the home up again after the commit, and only
//! then.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use rand::rngs::SmallRng;
use rand::Rng;

use crate::divisible::AppRegistry;
use crate::home::Home;
use crate::PeerKey;

use super::*;

/// Effects a handler wants released once the home's change is committed;
/// `None`: nothing to commit.
pub(super) type Commit<P> = Option<Vec<JobOutput<P>>>;

/// One job's home, held here, with what its handlers need of the core:
/// the outbox they write to, and read-only views of the peer-wide state.
pub(super) struct HomeCtx<'a, P: PeerKey> {
    /// The job.
    pub(super) job: JobId,
    /// The time of the input being handled.
    pub(super) now: Instant,
    /// Its home: the record and what only this peer keeps of it.
    pub(super) home: &'a mut Home<P, HomeState<P>>,
    /// The core's outputs.
    pub(super) out: &'a mut VecDeque<JobOutput<P>>,
    /// This peer.
    pub(super) me: &'a P,
    /// The core's tuning.
    pub(super) config: &'a JobConfig,
    /// The applications this peer can run.
    pub(super) registry: &'a AppRegistry,
    /// Live members, not this peer.
    pub(super) members: &'a BTreeSet<P>,
    /// Members suspected but not yet declared dead.
    pub(super) suspects: &'a BTreeSet<P>,
    /// Units computing here.
    pub(super) running: &'a BTreeMap<(JobId, UnitId), WorkerUnit<P>>,
    /// Live members' load averages.
    pub(super) loads: &'a BTreeMap<P, f32>,
    /// Checkpoint pieces this peer holds.
    pub(super) pieces: &'a PieceStore<JobId, P>,
    /// The core's random source (epochs, tokens).
    pub(super) rng: &'a mut SmallRng,
}

impl<P: PeerKey> Jobs<P> {
    /// The context of `job`'s home, if this peer holds it.
    pub(super) fn home_ctx(&mut self, now: Instant, job: JobId) -> Option<HomeCtx<'_, P>> {
        let home = self.homes.get_mut(&job)?;
        Some(HomeCtx {
            job,
            now,
            home,
            out: &mut self.outputs,
            me: &self.me,
            config: &self.config,
            registry: &self.registry,
            members: &self.members,
            suspects: &self.suspects,
            running: &self.running,
            loads: &self.loads,
            pieces: &self.pieces,
            rng: &mut self.rng,
        })
    }

    /// Runs `f` on `job`'s home, if held here, and commits what it
    /// returns.
    pub(super) fn with_home(
        &mut self,
        now: Instant,
        job: JobId,
        f: impl FnOnce(&mut HomeCtx<'_, P>) -> Commit<P>,
    ) {
        let Some(mut h) = self.home_ctx(now, job) else {
            return;
        };
        if let Some(effects) = f(&mut h) {
            self.commit(now, job, effects);
        }
    }
}

impl<P: PeerKey> HomeCtx<'_, P> {
    /// Queues a message; one addressed to this peer itself is looped back
    /// by the driver.
    pub(super) fn send(&mut self, to: P, msg: JobMsg<P>, bulk: bool) {
        self.out.push_back(JobOutput::Send { to, msg, bulk });
    }

    /// Queues an event.
    pub(super) fn event(&mut self, event: JobEvent<P>) {
        self.out.push_back(JobOutput::Event(event));
    }

    /// A new random epoch.
    pub(super) fn random_epoch(&mut self) -> Epoch {
        self.rng.random()
    }

    /// Whether `peer` is this peer or a live member.
    pub(super) fn is_live(&self, peer: &P) -> bool {
        *peer == *self.me || self.members.contains(peer)
    }

    /// Orders peers by the load average membership reports, lightest first.
    pub(super) fn by_load(&self, a: &P, b: &P) -> std::cmp::Ordering {
        let load = |p: &P| self.loads.get(p).copied().unwrap_or(0.0);
        load(a).total_cmp(&load(b))
    }

    /// The job's snapshot; see [`Jobs::view`].
    pub(super) fn view(&self) -> JobView<P> {
        views::view_of(
            self.job,
            self.home,
            self.me,
            self.members,
            self.config,
            self.now,
        )
    }
}
