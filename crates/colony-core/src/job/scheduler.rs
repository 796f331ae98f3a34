//! The primary's scheduling: submission, reports and merges, assigning,
//! stealing and pushing units, work requests, cancel, failure and
//! completion.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use crate::divisible::SharedVars;
use crate::ft::{CheckpointStorage, FaultTolerance};
use crate::PeerKey;

use super::*;

pub(super) struct Steal<P> {
    pub(super) requester: P,
    pub(super) donor: P,
    pub(super) since: Instant,
}

/// The id of the part a unit gives away in its report `seq` of `epoch`:
/// the same however often the report is re-sent, and unique with
/// overwhelming probability.
pub(super) fn child_id(unit: UnitId, epoch: Epoch, seq: u64) -> UnitId {
    let mut x = unit
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(epoch.rotate_left(17))
        .wrapping_add(seq.wrapping_mul(0xBF58_476D_1CE4_E5B9));
    x ^= x >> 30;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    x.max(1)
}

/// Points a unit's checkpoint at its worker's disk (local storage), unless
/// it names a newer piece of the same epoch already.
pub(super) fn set_local_checkpoint<P: Clone>(
    u: &mut UnitRec<P>,
    epoch: Epoch,
    version: u64,
    worker: &P,
) {
    let newer = u
        .checkpoint
        .as_ref()
        .is_none_or(|c| c.epoch != epoch || c.version < version);
    if newer {
        u.checkpoint = Some(CheckpointRef {
            epoch,
            version,
            holders: vec![worker.clone()],
        });
    }
}

/// The acknowledgement of a unit's reports up to `seq`, for the worker `to`.
pub(super) fn ack<P>(to: P, job: JobId, unit: UnitId, epoch: Epoch, seq: u64) -> JobOutput<P> {
    JobOutput::Send {
        to,
        msg: JobMsg::Ack {
            job,
            unit,
            epoch,
            seq,
        },
        bulk: false,
    }
}

impl<P: PeerKey> Jobs<P> {
    pub(super) fn is_live(&self, peer: &P) -> bool {
        *peer == self.me || self.members.contains(peer)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_submit(
        &mut self,
        now: Instant,
        from: P,
        job: JobId,
        app_name: String,
        params: Vec<u8>,
        ft: FaultTolerance,
        deadline_ms: Option<u64>,
        keep_namespace: bool,
    ) {
        if self.homes.contains_key(&job) {
            return; // a retransmitted submission
        }
        let fail = |jobs: &Self, reason: String| {
            jobs.failed_view(&from, job, &app_name, &params, ft, reason)
        };
        if let Err(error) = ft.validate_for_job() {
            let view = fail(self, error.to_string());
            self.send(from, JobMsg::Status { view }, false);
            return;
        }
        let active = self
            .homes
            .values()
            .filter(|h| h.record.state == JobState::Running)
            .count();
        if active >= self.config.max_active_jobs {
            let view = fail(
                self,
                format!("the home peer already holds {active} running jobs, its limit; try later"),
            );
            self.send(from, JobMsg::Status { view }, false);
            return;
        }
        let prepared = self.registry.get(&app_name).and_then(|app| {
            let mut unit = app.init(&params)?;
            let shared = app.initial_shared(&params)?;
            Ok((unit.checkpoint()?, shared))
        });
        let (root, shared) = match prepared {
            Ok(ok) => ok,
            Err(error) => {
                let view = fail(self, error.to_string());
                self.send(from, JobMsg::Status { view }, false);
                return;
            }
        };
        let record = Record {
            app: app_name.clone(),
            params,
            submitter: from,
            ft,
            state: JobState::Running,
            units: BTreeMap::from([(
                0,
                UnitRec {
                    status: UnitStatus::Queued,
                    holder: None,
                    epoch: 0,
                    seq: 0,
                    checkpoint: None,
                },
            )]),
            merged: Vec::new(),
            has_merged: false,
            shared,
            stats: JobStats {
                units: 1,
                ..JobStats::default()
            },
            contributions: BTreeMap::new(),
            elapsed_ms: 0,
            deadline_ms,
            keep_namespace,
        };
        let mut home = HomeState::new(record, now);
        home.ready.insert(0, root.clone());
        self.homes.create(now, job, home, ft.home_size);
        self.event(JobEvent::Primary {
            job,
            previous: None,
        });
        self.known.insert(
            job,
            super::KnownJob {
                app: app_name,
                home: self.me.clone(),
                expires: now + self.config.advert_lifetime,
            },
        );
        self.drain_homes(now);
        // The root's state is its first checkpoint.
        if ft.checkpoints() && ft.storage != CheckpointStorage::Local {
            let me = self.me.clone();
            self.stage(now, job, 0, me, 0, 0, Report::HandBack { state: root });
        }
        self.advertise(now, job);
    }

    /// A report from a worker reached this peer.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_report(
        &mut self,
        now: Instant,
        from: P,
        job: JobId,
        unit: UnitId,
        epoch: Epoch,
        seq: u64,
        after: u64,
        report: Report,
    ) {
        let Some(h) = self.homes.get(&job) else {
            return; // not (yet) a home member: the worker re-sends
        };
        if !h.is_primary() {
            return;
        }
        // Told only once the state that makes the unit stale is committed:
        // a primary about to be replaced may hold changes no one else has.
        let stale = JobOutput::Send {
            to: from.clone(),
            msg: JobMsg::Stale { job, unit, epoch },
            bulk: false,
        };
        if h.record.state != JobState::Running {
            self.commit(now, job, vec![stale]);
            return;
        }
        let Some(u) = h.record.units.get(&unit) else {
            self.commit(now, job, vec![stale]);
            return;
        };
        // A restarted worker offering a unit from its disk: it takes the
        // unit back if it still holds it, or if the unit waits for a worker
        // and was not given out since (a restore under way is dropped).
        let resuming = matches!(report, Report::Resume { .. });
        let holds = u.holder.as_ref() == Some(&from)
            || (resuming && u.holder.is_none() && u.status == UnitStatus::Queued);
        if u.status == UnitStatus::Done || u.epoch != epoch || !holds {
            self.commit(now, job, vec![stale]);
            return;
        }
        let staged_max = h
            .staging
            .get(&unit)
            .and_then(|q| q.back())
            .map(|s| s.seq)
            .unwrap_or(0);
        if after > u.seq.max(staged_max) {
            // A report it depends on was lost (a new primary, a dropped
            // message): the worker re-sends them all, in order.
            return;
        }
        if seq <= u.seq.max(staged_max) {
            // Already applied (or being stored): confirm once replicated.
            let applied = u.seq;
            if seq <= applied {
                let ack = ack(from, job, unit, epoch, applied);
                self.commit(now, job, vec![ack]);
            }
            return;
        }
        self.stage(now, job, unit, from, epoch, seq, report);
    }

    /// Protocol `none`: a worker's improved shared variables.
    pub(super) fn on_improved(&mut self, now: Instant, job: JobId, vars: SharedVars) {
        self.with_home(now, job, |h| h.on_improved(vars));
    }

    /// A worker's count of work done, for the job's statistics.
    pub(super) fn on_progress(&mut self, now: Instant, from: P, job: JobId, work: u64) {
        self.with_home(now, job, |h| {
            h.on_progress(from, work);
            None
        });
    }

    /// An idle worker asks for work on `job`.
    pub(super) fn on_work_request(&mut self, now: Instant, from: P, job: JobId, free: u32) {
        let Some(mut h) = self.home_ctx(now, job) else {
            let finished = self.finished_jobs.contains(&job);
            self.send(from, JobMsg::NoWork { job, finished }, false);
            return;
        };
        if let Some(effects) = h.on_work_request(from, free) {
            self.commit(now, job, effects);
        }
    }

    /// Queued units that no idle worker asked for within
    /// `push_queued_after` go to the job's least-loaded worker, which runs
    /// them besides its own: a lost unit restarts at once even when every
    /// worker is busy (as a Dask scheduler hands a task to a busy worker's
    /// queue), instead of waiting for some unit to finish. A worker holds at
    /// most one pushed unit at a time, so the overload stays bounded, and it
    /// asks for no more work until it is below its cores again.
    pub(super) fn push_queued(&mut self, now: Instant, job: JobId) {
        self.with_home(now, job, |h| h.push_queued());
    }

    /// A donor declined steal `steal` of `job`.
    pub(super) fn on_steal_declined(&mut self, now: Instant, job: JobId, steal: u64) {
        self.with_home(now, job, |h| {
            h.on_steal_declined(steal);
            None
        });
    }

    /// A worker cannot send its report on `unit`: over a size limit. Only
    /// the unit's current holder may say so.
    pub(super) fn on_too_large(
        &mut self,
        now: Instant,
        from: P,
        job: JobId,
        unit: UnitId,
        epoch: Epoch,
        reason: String,
    ) {
        self.with_home(now, job, |h| h.on_too_large(from, unit, epoch, reason));
    }

    /// A message of this primary's for `job` is over its size limit: the
    /// job fails, and its partial result, which nobody will read, is
    /// dropped so the record's snapshots stay small.
    pub(super) fn fail_too_large(&mut self, now: Instant, job: JobId, reason: String) {
        let effects = self
            .home_ctx(now, job)
            .map(|mut h| h.fail_too_large(reason))
            .unwrap_or_default();
        self.commit(now, job, effects);
    }

    /// Fails `job`, if it runs here, and commits that.
    pub(super) fn fail_job(&mut self, now: Instant, job: JobId, reason: String) {
        let effects = self
            .home_ctx(now, job)
            .map(|mut h| h.fail(reason))
            .unwrap_or_default();
        self.commit(now, job, effects);
    }

    /// A request to cancel `job` from `from`: granted to the job's
    /// submitter and to this peer itself (the operator of the primary).
    pub(super) fn on_cancel(&mut self, now: Instant, from: P, job: JobId) {
        let reply = |refused: Option<String>| JobOutput::Send {
            to: from.clone(),
            msg: JobMsg::CancelReply { job, refused },
            bulk: false,
        };
        let Some(mut h) = self.home_ctx(now, job) else {
            let answer = reply(Some(super::Refusal::UnknownJob.to_string()));
            self.outputs.push_back(answer);
            return;
        };
        if !h.home.is_primary() {
            let primary = h
                .home
                .primary()
                .map(|p| format!("{p:?}"))
                .unwrap_or_default();
            let answer = reply(Some(format!(
                "this peer is not the job's primary (that is {primary})"
            )));
            h.out.push_back(answer);
            return;
        }
        let submitter = &h.home.record.submitter;
        if from != *h.me && from != *submitter {
            let msg = JobMsg::Cancel { job };
            self.refuse(&from, &msg, super::Refusal::NotTheSubmitter);
            return;
        }
        let effects = match &h.home.record.state {
            JobState::Running => {
                let by = if from == *submitter {
                    "its submitter"
                } else {
                    "the operator of its primary"
                };
                h.cancel(format!("cancelled by {by}"), vec![reply(None)])
            }
            JobState::Cancelled { .. } => Some(vec![reply(None)]),
            JobState::Done { .. } | JobState::Failed { .. } => {
                let answer = reply(Some("the job has already finished".to_string()));
                h.out.push_back(answer);
                None
            }
        };
        if let Some(effects) = effects {
            self.commit(now, job, effects);
        }
    }

    /// Sends the record's changes to every backup and holds `effects`
    /// until a majority of the home confirms them (nothing, if this peer
    /// is not the primary).
    pub(super) fn commit(&mut self, now: Instant, job: JobId, effects: Vec<JobOutput<P>>) {
        let _ = self.homes.propose(now, job, effects);
        self.drain_homes(now);
    }
}

impl<P: PeerKey> HomeCtx<'_, P> {
    /// Applies a worker's report to the record (its pieces, if any, are
    /// stored); returns what to commit.
    pub(super) fn apply_report(
        &mut self,
        unit: UnitId,
        from: P,
        epoch: Epoch,
        seq: u64,
        report: Report,
        refs: Vec<(UnitId, CheckpointRef<P>)>,
    ) -> Commit<P> {
        let job = self.job;
        let me = self.me.clone();
        let merge_fn = self.registry.get(&self.home.record.app);
        let result_max = self.config.limits.result_bytes;
        let h = &mut *self.home;
        if from == me && seq == 0 {
            // The root's initial checkpoint, stored at submission.
            if let Some(u) = h.unit(unit) {
                u.checkpoint = refs.into_iter().next().map(|(_, c)| c);
            }
            return Some(Vec::new());
        }
        let u = h.record.units.get(&unit)?;
        let resuming = matches!(report, Report::Resume { .. });
        let holds = u.holder.as_ref() == Some(&from)
            || (resuming && u.holder.is_none() && u.status == UnitStatus::Queued);
        if u.status == UnitStatus::Done || u.epoch != epoch || seq <= u.seq || !holds {
            // Reissued (or finished) while its pieces were being stored.
            return None;
        }
        let mut effects = vec![ack(from.clone(), job, unit, epoch, seq)];
        let local = h.record.ft.checkpoints() && h.record.ft.storage == CheckpointStorage::Local;
        if resuming && local && u.status == UnitStatus::Queued {
            // Back with its worker: no restore, no other worker.
            h.ready.remove(&unit);
            h.restoring.remove(&unit);
            let c = h.record.contributions.entry(from.clone()).or_default();
            c.units_running = c.units_running.saturating_add(1);
            if let Some(u) = h.unit(unit) {
                u.status = UnitStatus::Running;
                u.holder = Some(from.clone());
            }
        }
        let u = h.record.units.get(&unit)?;
        let was_assigned = u.status == UnitStatus::Assigned;
        for (id, checkpoint) in &refs {
            if *id == unit {
                if let Some(u) = h.unit(unit) {
                    u.checkpoint = Some(checkpoint.clone());
                }
            }
        }
        if let Some(u) = h.unit(unit) {
            u.seq = seq;
            if was_assigned {
                u.status = UnitStatus::Running;
            }
        }
        if was_assigned {
            h.assigned.remove(&unit);
            let c = h.record.contributions.entry(from.clone()).or_default();
            c.units_running = c.units_running.saturating_add(1);
            h.record.stats.peers_used = h
                .record
                .contributions
                .values()
                .filter(|c| c.units_running > 0 || c.units_done > 0)
                .count() as u64;
        }
        let mut improved = None;
        match report {
            Report::Started => {}
            Report::Checkpoint { state, shared } => {
                h.record.stats.checkpoints = h.record.stats.checkpoints.saturating_add(1);
                h.record.stats.checkpoint_bytes = h
                    .record
                    .stats
                    .checkpoint_bytes
                    .saturating_add(state.len() as u64);
                if h.record.shared.merge(&shared) {
                    improved = Some(h.record.shared.clone());
                }
            }
            Report::LocalCheckpoint { shared, version } => {
                h.record.stats.checkpoints = h.record.stats.checkpoints.saturating_add(1);
                if let Some(u) = h.unit(unit) {
                    set_local_checkpoint(u, epoch, version, &from);
                }
                if h.record.shared.merge(&shared) {
                    improved = Some(h.record.shared.clone());
                }
            }
            Report::Divided {
                steal,
                part,
                remaining,
                shared,
            } => {
                h.record.stats.checkpoints = h.record.stats.checkpoints.saturating_add(1);
                h.record.stats.checkpoint_bytes = h
                    .record
                    .stats
                    .checkpoint_bytes
                    .saturating_add((part.len() + remaining.len()) as u64);
                if h.record.shared.merge(&shared) {
                    improved = Some(h.record.shared.clone());
                }
                let child = child_id(unit, epoch, seq);
                h.record.stats.units = h.record.stats.units.saturating_add(1);
                h.record.stats.steals = h.record.stats.steals.saturating_add(1);
                let c = h.record.contributions.entry(from.clone()).or_default();
                c.donated = c.donated.saturating_add(1);
                let checkpoint = refs
                    .iter()
                    .find(|(id, _)| *id == child)
                    .map(|(_, c)| c.clone())
                    .or_else(|| {
                        // Local storage: the donor keeps the part on its
                        // disk until the part's own worker stores it.
                        local.then(|| CheckpointRef {
                            epoch: 0,
                            version: 0,
                            holders: vec![from.clone()],
                        })
                    });
                h.touched.insert(child);
                h.record.units.insert(
                    child,
                    UnitRec {
                        status: UnitStatus::Queued,
                        holder: None,
                        epoch: 0,
                        seq: 0,
                        checkpoint,
                    },
                );
                h.ready.insert(child, part);
                if !h.record.ft.checkpoints() {
                    // Without checkpoints, what a unit restarts from.
                    h.kept.insert(unit, remaining.clone());
                }
                let requester = h.steals.remove(&steal).map(|s| s.requester);
                if let Some(requester) = requester.filter(|r| *r == me || self.members.contains(r))
                {
                    if let Some(assign) = self.assign(child, requester) {
                        effects.push(assign);
                    }
                }
                let _ = remaining;
            }
            Report::Done { output } => {
                let merged = if h.record.has_merged {
                    // A panic in the application's merge is an error here.
                    merge_fn
                        .and_then(|a| a.merge(&h.record.merged, &output))
                        .map_err(|e| e.to_string())
                } else {
                    Ok(output.clone())
                };
                match merged {
                    // Nobody could receive it: fail now, not at the end.
                    Ok(m) if m.len() > result_max => {
                        h.record.state = JobState::Failed {
                            reason: super::limits::result_too_large(m.len(), result_max),
                        };
                    }
                    Ok(m) => {
                        h.record.merged = m;
                        h.record.has_merged = true;
                    }
                    Err(error) => {
                        h.record.state = JobState::Failed {
                            reason: format!("merging unit {unit}: {error}"),
                        };
                    }
                }
                h.merged_dirty = true;
                let _ = output;
                h.kept.remove(&unit);
                if let Some(u) = h.unit(unit) {
                    u.status = UnitStatus::Done;
                    u.holder = None;
                }
                h.record.stats.units_done = h.record.stats.units_done.saturating_add(1);
                let c = h.record.contributions.entry(from.clone()).or_default();
                c.units_done = c.units_done.saturating_add(1);
                c.units_running = c.units_running.saturating_sub(1);
                self.event(JobEvent::Merged { job, unit });
            }
            Report::Resume {
                state,
                shared,
                version,
            } if local => {
                // It runs on from the state on its worker's disk.
                if let Some(u) = h.unit(unit) {
                    set_local_checkpoint(u, epoch, version, &from);
                }
                h.record.stats.checkpoint_bytes = h
                    .record
                    .stats
                    .checkpoint_bytes
                    .saturating_add(state.len() as u64);
                if h.record.shared.merge(&shared) {
                    improved = Some(h.record.shared.clone());
                }
            }
            Report::HandBack { state } | Report::Resume { state, .. } => {
                h.kept.remove(&unit);
                if let Some(u) = h.unit(unit) {
                    u.status = UnitStatus::Queued;
                    u.holder = None;
                }
                let c = h.record.contributions.entry(from.clone()).or_default();
                c.units_running = c.units_running.saturating_sub(1);
                h.ready.insert(unit, state);
            }
        }
        if let Some(vars) = improved {
            effects.extend(self.shared_broadcast(vars));
        }
        self.check_complete(&mut effects);
        Some(effects)
    }

    /// Messages giving `vars` to every worker of the job.
    pub(super) fn shared_broadcast(&self, vars: SharedVars) -> Vec<JobOutput<P>> {
        let job = self.job;
        let holders: BTreeSet<P> = self
            .home
            .record
            .units
            .values()
            .filter(|u| matches!(u.status, UnitStatus::Running | UnitStatus::Assigned))
            .filter_map(|u| u.holder.clone())
            .collect();
        holders
            .into_iter()
            .map(|to| JobOutput::Send {
                to,
                msg: JobMsg::Shared {
                    job,
                    vars: vars.clone(),
                },
                bulk: false,
            })
            .collect()
    }

    /// Protocol `none`: a worker's improved shared variables.
    pub(super) fn on_improved(&mut self, vars: SharedVars) -> Commit<P> {
        if !self.home.is_primary() || !self.home.record.shared.merge(&vars) {
            return None;
        }
        let vars = self.home.record.shared.clone();
        Some(self.shared_broadcast(vars))
    }

    /// A worker's count of work done, for the job's statistics.
    pub(super) fn on_progress(&mut self, from: P, work: u64) {
        let h = &mut *self.home;
        if h.is_primary() {
            h.record.stats.work = h.record.stats.work.saturating_add(work);
            let c = h.record.contributions.entry(from).or_default();
            c.work = c.work.saturating_add(work);
        }
    }

    /// Assigns a queued unit whose state is ready to `to`; the message is
    /// returned, to be released with the update.
    pub(super) fn assign(&mut self, unit: UnitId, to: P) -> Option<JobOutput<P>> {
        let (job, now) = (self.job, self.now);
        let epoch = self.random_epoch();
        let h = &mut *self.home;
        let state = h.ready.remove(&unit)?;
        h.queued_since.remove(&unit);
        if !h.record.ft.checkpoints() {
            h.kept.insert(unit, state.clone());
        }
        let reissue = h
            .record
            .units
            .get(&unit)
            .is_some_and(|u| u.epoch != 0 || u.seq != 0);
        let u = h.unit(unit)?;
        u.status = UnitStatus::Assigned;
        u.holder = Some(to.clone());
        u.epoch = epoch;
        u.seq = 0;
        h.assigned.insert(
            unit,
            Assignment {
                since: now,
                delivered: false,
            },
        );
        let msg = JobMsg::Assign {
            job,
            unit,
            epoch,
            app: h.record.app.clone(),
            state,
            shared: h.record.shared.clone(),
            ft: h.record.ft,
        };
        self.event(JobEvent::Assigned {
            job,
            unit,
            to: to.clone(),
            reissue,
        });
        Some(JobOutput::Send {
            to,
            msg,
            bulk: true,
        })
    }

    /// An idle worker `from` asks for up to `free` units: queued ones are
    /// assigned (and committed), else the busiest holder is asked to divide.
    pub(super) fn on_work_request(&mut self, from: P, free: u32) -> Commit<P> {
        let job = self.job;
        let h = &*self.home;
        if !h.is_primary() || h.record.state != JobState::Running {
            let finished = h.record.state != JobState::Running;
            self.send(from, JobMsg::NoWork { job, finished }, false);
            return None;
        }
        let ready: Vec<UnitId> = h
            .ready
            .keys()
            .copied()
            .filter(|u| {
                h.record
                    .units
                    .get(u)
                    .is_some_and(|r| r.status == UnitStatus::Queued)
            })
            .take(free.max(1) as usize)
            .collect();
        if !ready.is_empty() {
            let mut effects = Vec::new();
            for unit in ready {
                effects.extend(self.assign(unit, from.clone()));
            }
            return Some(effects);
        }
        // Steal: the holder with the most running units, then the lightest load.
        let mut running: BTreeMap<P, u32> = BTreeMap::new();
        for u in h.record.units.values() {
            if u.status == UnitStatus::Running {
                if let Some(holder) = u.holder.as_ref().filter(|p| **p != from) {
                    *running.entry(holder.clone()).or_default() += 1;
                }
            }
        }
        let asked = |donor: &P| h.steals.values().filter(|s| &s.donor == donor).count() as u32;
        let donor = running
            .iter()
            .filter(|(p, n)| **n > asked(p))
            .max_by(|a, b| a.1.cmp(b.1).then_with(|| self.by_load(b.0, a.0)))
            .map(|(p, _)| p.clone());
        let Some(donor) = donor else {
            self.send(
                from,
                JobMsg::NoWork {
                    job,
                    finished: false,
                },
                false,
            );
            return None;
        };
        let h = &mut *self.home;
        let steal = h.next_steal;
        h.next_steal += 1;
        h.steals.insert(
            steal,
            Steal {
                requester: from,
                donor: donor.clone(),
                since: self.now,
            },
        );
        self.send(donor, JobMsg::StealRequest { job, steal }, false);
        None
    }

    /// See [`Jobs::push_queued`].
    pub(super) fn push_queued(&mut self) -> Commit<P> {
        let now = self.now;
        let patience = self.config.push_queued_after;
        if !self.home.is_primary() || self.home.record.state != JobState::Running {
            return None;
        }
        let h = self.home.state_mut();
        let held = |u: &UnitRec<P>| matches!(u.status, UnitStatus::Running | UnitStatus::Assigned);
        // Pushes end when their unit leaves the worker (merged, lost).
        let units = &h.record.units;
        h.pushed.retain(|id, p| {
            units
                .get(id)
                .is_some_and(|u| held(u) && u.holder.as_ref() == Some(p))
        });
        let ready = &h.ready;
        h.queued_since.retain(|id, _| ready.contains_key(id));
        let mut due = Vec::new();
        for id in h.ready.keys() {
            if units
                .get(id)
                .is_some_and(|u| u.status == UnitStatus::Queued)
            {
                let since = *h.queued_since.entry(*id).or_insert(now);
                if now.saturating_duration_since(since) >= patience {
                    due.push(*id);
                }
            }
        }
        if due.is_empty() {
            return None;
        }
        // The job's live workers, with the units each holds.
        let mut load: BTreeMap<P, usize> = BTreeMap::new();
        for u in units.values().filter(|u| held(u)) {
            if let Some(p) = u.holder.clone() {
                *load.entry(p).or_default() += 1;
            }
        }
        let mut pushed: BTreeSet<P> = h.pushed.values().cloned().collect();
        load.retain(|p, _| self.is_live(p));
        let mut effects = Vec::new();
        for unit in due {
            let target = load
                .iter()
                .filter(|(p, _)| !pushed.contains(*p))
                .min_by(|a, b| a.1.cmp(b.1).then_with(|| self.by_load(a.0, b.0)))
                .map(|(p, _)| p.clone());
            let Some(to) = target else {
                break;
            };
            if let Some(msg) = self.assign(unit, to.clone()) {
                effects.push(msg);
                self.home.pushed.insert(unit, to.clone());
                *load.entry(to.clone()).or_default() += 1;
                pushed.insert(to);
            }
        }
        Some(effects)
    }

    /// The donor of steal `steal` has nothing to give: its requester is
    /// told there is no work.
    pub(super) fn on_steal_declined(&mut self, steal: u64) {
        let Some(s) = self.home.steals.remove(&steal) else {
            return;
        };
        let job = self.job;
        self.send(
            s.requester,
            JobMsg::NoWork {
                job,
                finished: false,
            },
            false,
        );
    }

    /// Marks the job done once every unit is merged; the result goes to
    /// the submitter with the update.
    pub(super) fn check_complete(&mut self, effects: &mut Vec<JobOutput<P>>) {
        let h = &mut *self.home;
        if h.record.state == JobState::Running
            && h.record
                .units
                .values()
                .all(|u| u.status == UnitStatus::Done)
        {
            h.record.state = JobState::Done {
                result: h.record.merged.clone(),
            };
        }
        if h.record.state != JobState::Running && h.finished.is_none() {
            h.finished = Some(self.now);
            let ok = matches!(h.record.state, JobState::Done { .. });
            let submitter = h.record.submitter.clone();
            effects.push(JobOutput::Send {
                to: submitter,
                msg: JobMsg::Status { view: self.view() },
                bulk: true,
            });
            effects.push(JobOutput::Event(JobEvent::Finished { job: self.job, ok }));
        }
    }

    /// See [`Jobs::on_too_large`].
    pub(super) fn on_too_large(
        &mut self,
        from: P,
        unit: UnitId,
        epoch: Epoch,
        reason: String,
    ) -> Commit<P> {
        let h = &*self.home;
        let holds = h.is_primary()
            && h.record
                .units
                .get(&unit)
                .is_some_and(|u| u.holder.as_ref() == Some(&from) && u.epoch == epoch);
        holds.then(|| self.fail_too_large(format!("unit {unit} on {from}: {reason}")))
    }

    /// See [`Jobs::fail_too_large`]; returns what to commit.
    pub(super) fn fail_too_large(&mut self, reason: String) -> Vec<JobOutput<P>> {
        let h = &mut *self.home;
        if h.is_primary() && h.record.state == JobState::Running {
            h.record.merged = Vec::new();
            h.record.has_merged = false;
            h.merged_dirty = true;
        }
        self.fail(reason)
    }

    /// Fails the job, if it runs; returns what to commit.
    pub(super) fn fail(&mut self, reason: String) -> Vec<JobOutput<P>> {
        if self.home.record.state == JobState::Running {
            self.home.record.state = JobState::Failed { reason };
        }
        let mut effects = Vec::new();
        self.check_complete(&mut effects);
        effects
    }

    /// Ends a running job as cancelled: no more work is handed out, and
    /// once that is committed every worker is told its unit is stale (its
    /// thread stops within a step), the submitter gets the final status,
    /// and `effects` are released. Returns what to commit.
    pub(super) fn cancel(&mut self, reason: String, mut effects: Vec<JobOutput<P>>) -> Commit<P> {
        let job = self.job;
        let h = &mut *self.home;
        if h.record.state != JobState::Running {
            return None;
        }
        h.record.state = JobState::Cancelled { reason };
        h.ready.clear();
        h.queued_since.clear();
        h.pushed.clear();
        h.steals.clear();
        h.restoring.clear();
        let holders: Vec<(UnitId, P, Epoch)> = h
            .record
            .units
            .iter()
            .filter(|(_, u)| u.status != UnitStatus::Done)
            .filter_map(|(id, u)| u.holder.clone().map(|p| (*id, p, u.epoch)))
            .collect();
        h.touched.insert(0);
        for (unit, to, epoch) in holders {
            effects.push(JobOutput::Send {
                to,
                msg: JobMsg::Stale { job, unit, epoch },
                bulk: false,
            });
        }
        self.check_complete(&mut effects);
        Some(effects)
    }
}
