//! What a home does over time: taking a job over, reissuing lost units,
//! watching the majority, reconciling what workers hold, handing homes
//! over, and the home timers.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rand::Rng;

use crate::ft::CheckpointStorage;
use crate::home::{majority, HomeOutput, Role};
use crate::PeerKey;

use super::*;

impl<P: PeerKey> Jobs<P> {
    /// Carries out what the home core asks for.
    pub(super) fn drain_homes(&mut self, now: Instant) {
        while let Some(out) = self.homes.poll() {
            match out {
                HomeOutput::Send { to, msg, bulk } => self.send(to, JobMsg::Home(msg), bulk),
                HomeOutput::Released { effects, .. } => self.outputs.extend(effects),
                HomeOutput::BecamePrimary { key, previous } => self.took_over(now, key, previous),
                HomeOutput::Left { key, peer } => self.holder_left(now, key, peer),
                HomeOutput::Committed { key, .. } => self.with_home(now, key, |h| {
                    h.report_replicated();
                    None
                }),
                HomeOutput::SteppedDown { .. }
                | HomeOutput::Dropped { .. }
                | HomeOutput::Founded { .. }
                | HomeOutput::NotFounded { .. } => {}
            }
        }
    }

    /// `peer` left the home of `job`: it drops the job's pieces, so stop
    /// waiting for its confirmations (the checkpoint has fewer copies).
    pub(super) fn holder_left(&mut self, now: Instant, job: JobId, peer: P) {
        let Some(h) = self.homes.get_mut(&job) else {
            return;
        };
        let mut unblocked = Vec::new();
        for (owner, queue) in h.staging.iter_mut() {
            if let Some(front) = queue.front_mut() {
                let before = front.waiting.len();
                front.waiting.retain(|(holder, _, _)| *holder != peer);
                if before > 0 && front.waiting.is_empty() {
                    unblocked.push(*owner);
                }
            }
        }
        for owner in unblocked {
            self.staged_done(now, job, owner);
        }
    }

    /// Advertises `job` to every member, and sets when to again.
    pub(super) fn advertise(&mut self, now: Instant, job: JobId) {
        let Some(h) = self.homes.get_mut(&job) else {
            return;
        };
        h.next_advert_at = now + self.config.advert_interval;
        let msg = JobMsg::Advert {
            job,
            app: h.record.app.clone(),
            home: self.me.clone(),
            lifetime_ms: self.config.advert_lifetime.as_millis() as u64,
            submitter: h.submitter().clone(),
        };
        for to in self.members.clone() {
            self.send(to, msg.clone(), false);
        }
        if let Some(k) = self.known.get_mut(&job) {
            k.expires = now + self.config.advert_lifetime;
            if k.home != self.me {
                k.home = self.me.clone();
                self.primary_changed(now, job);
            }
        }
    }

    /// This peer took the primary role of `job` over (from a lost primary,
    /// or handed over by `previous`): units whose holders are gone are
    /// reissued, queued ones restored, the submitter told.
    pub(super) fn took_over(&mut self, now: Instant, job: JobId, previous: Option<P>) {
        let Some(lost) = self.home_ctx(now, job).map(|mut h| h.took_over(previous)) else {
            return;
        };
        for (unit, holder) in lost {
            match holder {
                Some(holder) => self.lose_unit(now, job, unit, holder),
                None => self.restore_unit(now, job, unit),
            }
        }
        let Some(mut h) = self.home_ctx(now, job) else {
            return;
        };
        if h.home.record.state != JobState::Running {
            // The submitter may have missed the result.
            let view = h.view();
            let to = view.submitter.clone();
            h.send(to, JobMsg::Status { view }, true);
        } else {
            self.advertise(now, job);
        }
        self.commit(now, job, Vec::new());
    }

    /// `unit`'s holder is gone: reissue it from its last checkpoint.
    pub(super) fn lose_unit(&mut self, now: Instant, job: JobId, unit: UnitId, lost: P) {
        self.reissue_unit(now, job, unit, lost, false);
    }

    /// The pipe settled an assignment: delivered, the worker's
    /// confirmation clock starts now; not delivered, the unit is reissued.
    pub(super) fn assign_settled(
        &mut self,
        now: Instant,
        sent: SentAssignment<P>,
        delivered: bool,
    ) {
        let SentAssignment {
            to,
            job,
            unit,
            epoch,
        } = sent;
        let Some(h) = self.homes.get_mut(&job) else {
            return;
        };
        // Confirmed, reissued or given out again since: nothing to do.
        let current = h
            .record
            .units
            .get(&unit)
            .is_some_and(|u| u.status == UnitStatus::Assigned && u.epoch == epoch);
        let Some(assignment) = h.assigned.get_mut(&unit).filter(|_| current) else {
            return;
        };
        if delivered {
            assignment.delivered = true;
            assignment.since = now;
        } else {
            self.lose_unit(now, job, unit, to);
            self.commit(now, job, Vec::new());
        }
    }

    /// Reissues `unit` of `job`, lost with `lost`; `unheld` when `lost` is
    /// live and said it does not hold the unit (a local-storage unit is
    /// then not waited for: no disk will offer it back).
    pub(super) fn reissue_unit(
        &mut self,
        now: Instant,
        job: JobId,
        unit: UnitId,
        lost: P,
        unheld: bool,
    ) {
        let Some(mut h) = self.home_ctx(now, job) else {
            return;
        };
        match h.reissue(unit, lost, unheld) {
            Reissue::Done => {}
            Reissue::Restore => self.restore_unit(now, job, unit),
            Reissue::Fail(reason) => self.fail_job(now, job, reason),
        }
    }

    /// See [`HomeCtx::watch_majority`].
    pub(super) fn watch_majority(&mut self, now: Instant, job: JobId) {
        self.with_home(now, job, |h| {
            h.watch_majority();
            None
        });
    }

    /// See [`HomeCtx::ask_holders`].
    pub(super) fn ask_holders(&mut self, now: Instant, job: JobId) {
        self.with_home(now, job, |h| {
            h.ask_holders();
            None
        });
    }

    /// A worker's answer to [`JobMsg::Holds`]: a unit the record had
    /// running on it when asked, still does under the same epoch, and the
    /// worker does not hold is reissued from its last checkpoint. (A unit
    /// the worker dropped legitimately — finished, handed back, stale —
    /// changed in the record before the worker could drop it.)
    pub(super) fn on_held(
        &mut self,
        now: Instant,
        from: P,
        job: JobId,
        token: u64,
        units: Vec<(UnitId, Epoch)>,
    ) {
        let Some(h) = self.homes.get_mut(&job) else {
            return;
        };
        if !h.is_primary() || h.record.state != JobState::Running {
            return;
        }
        if h.holds_asked.get(&from).is_none_or(|(t, _)| *t != token) {
            return;
        }
        let Some((_, asked)) = h.holds_asked.remove(&from) else {
            return;
        };
        let held: BTreeSet<(UnitId, Epoch)> = units.into_iter().collect();
        let missing: Vec<UnitId> = asked
            .difference(&held)
            .filter(|(id, epoch)| {
                h.record.units.get(id).is_some_and(|u| {
                    u.status == UnitStatus::Running
                        && u.epoch == *epoch
                        && u.holder.as_ref() == Some(&from)
                })
            })
            .map(|(id, _)| *id)
            .collect();
        if missing.is_empty() {
            return;
        }
        for unit in missing {
            self.reissue_unit(now, job, unit, from.clone(), true);
        }
        self.commit(now, job, Vec::new());
    }

    /// Membership changed: every record held here adjusts (the home core
    /// already replaced lost members and started elections).
    pub(super) fn reconcile_homes(&mut self, now: Instant) {
        self.homes.refresh(now);
        self.drain_homes(now);
        let jobs: Vec<JobId> = self.homes.keys().copied().collect();
        for job in jobs {
            let Some(mut h) = self.home_ctx(now, job) else {
                continue;
            };
            match h.home.role().clone() {
                Role::Primary => {
                    let Reconciled {
                        lost,
                        dead_asked,
                        staged,
                    } = h.reconcile();
                    for owner in staged {
                        self.staged_done(now, job, owner);
                    }
                    for unit in dead_asked {
                        self.try_restore(now, job, unit);
                    }
                    for (unit, holder) in lost {
                        self.lose_unit(now, job, unit, holder);
                    }
                    self.commit(now, job, Vec::new());
                }
                Role::Backup { .. } => {}
            }
        }
    }

    /// Leaving: every primary role goes to the next member.
    pub(super) fn hand_over_homes(&mut self, now: Instant) {
        self.homes.hand_over_all(now);
        self.drain_homes(now);
    }

    pub(super) fn homes_handed_over(&self) -> bool {
        self.homes.handed_over()
    }

    /// Periodic work of homes: adverts, progress, steals and assignments
    /// that timed out, retention.
    /// The home core's timers, durable records to write, records and
    /// pieces past their retention.
    pub(super) fn homes_timeout(&mut self, now: Instant) {
        // Elections, heartbeats, members joining and leaving.
        self.homes.handle_timeout(now);
        self.drain_homes(now);
        self.persist_records(now);
        self.drop_retired(now);
    }

    /// What is due for the record of `job`: a lost majority, a restored
    /// record to resume, and on its primary the deadline, adverts, steals
    /// and assignments not confirmed, units to restore, push or reissue,
    /// pieces to re-send, holdings to reconcile, progress to report.
    pub(super) fn home_timeout(&mut self, now: Instant, job: JobId) {
        self.home_pass(now, job);
        self.drop_retired(now);
    }

    fn home_pass(&mut self, now: Instant, job: JobId) {
        self.watch_majority(now, job);
        self.resume_restored(now, job);
        let Some(mut h) = self.home_ctx(now, job) else {
            return;
        };
        if !h.home.is_primary() || h.home.record.state != JobState::Running {
            return;
        }
        if let Some(deadline_ms) = h.home.record.deadline_ms {
            let elapsed = now.saturating_duration_since(h.home.started);
            if elapsed >= Duration::from_millis(deadline_ms) {
                let reason = format!(
                    "cancelled: its deadline of {:.1} s passed",
                    deadline_ms as f64 / 1000.0
                );
                if let Some(effects) = h.cancel(reason, Vec::new()) {
                    self.commit(now, job, effects);
                }
                return;
            }
        }
        // What is due does not depend on the advert.
        let advert_due = h.home.next_advert_at <= now;
        let HomeDue {
            stale_steals,
            unconfirmed,
            unready,
        } = h.home.due(now, h.config);
        if advert_due {
            self.advertise(now, job);
        }
        for steal in stale_steals {
            self.on_steal_declined(now, job, steal);
        }
        for (unit, holder) in unconfirmed {
            self.lose_unit(now, job, unit, holder);
        }
        for unit in unready {
            self.restore_unit(now, job, unit);
        }
        self.retry_restores(now, job);
        let resend = self
            .homes
            .get(&job)
            .map_or(Vec::new(), |h| h.resend_due(now, &self.config));
        for unit in resend {
            self.send_staged_pieces(now, job, unit);
        }
        self.push_queued(now, job);
        self.ask_holders(now, job);
        self.with_home(now, job, |h| {
            h.report_progress();
            None
        });
        self.commit(now, job, Vec::new());
    }

    /// Drops finished records past their retention, the oldest over the
    /// cap, and pieces of jobs this peer no longer holds a record of.
    fn drop_retired(&mut self, now: Instant) {
        let retention = self.config.result_retention;
        let expired: Vec<JobId> = self
            .homes
            .iter()
            .filter(|(_, h)| {
                h.finished
                    .is_some_and(|f| now.saturating_duration_since(f) >= retention)
            })
            .map(|(id, _)| *id)
            .collect();
        for job in expired {
            self.homes.remove(&job);
            self.pieces.forget(job);
            self.outputs.push_back(JobOutput::Forget { job });
        }
        // Pieces of jobs this peer no longer holds a record of.
        if let Some(before) = now.checked_sub(retention) {
            for job in self.pieces.quiet_since(before) {
                if !self.homes.contains_key(&job) {
                    self.pieces.forget(job);
                    self.outputs.push_back(JobOutput::Forget { job });
                }
            }
        }
        while self.homes.len() > self.config.max_retained_results {
            let oldest = self
                .homes
                .iter()
                .filter(|(_, h)| h.finished.is_some())
                .min_by_key(|(_, h)| h.finished)
                .map(|(id, _)| *id);
            match oldest {
                Some(id) => {
                    self.homes.remove(&id);
                    self.pieces.forget(id);
                    self.outputs.push_back(JobOutput::Forget { job: id });
                }
                None => break,
            }
        }
    }
}

/// What follows a unit's reissue on its record.
enum Reissue {
    /// Nothing more.
    Done,
    /// Its last checkpoint must be restored.
    Restore,
    /// The job fails, for this reason.
    Fail(String),
}

impl<P: PeerKey> HomeCtx<'_, P> {
    /// Whether a handed-out unit must be given up: its holder is lost (out
    /// of the view, and for jobs without checkpoints, which cannot restart
    /// a unit, declared dead rather than only suspected), or it is this
    /// peer and does not run the unit any more (it restarted).
    pub(super) fn unit_lost(&self, unit: UnitId, rec: &UnitRec<P>, ft: &FaultTolerance) -> bool {
        let Some(holder) = rec.holder.as_ref() else {
            return false;
        };
        if *holder == *self.me {
            return rec.status == UnitStatus::Running
                && !self.running.contains_key(&(self.job, unit));
        }
        !self.is_live(holder) && (ft.checkpoints() || !self.suspects.contains(holder))
    }

    /// The primary role was taken over (from a lost primary, or handed
    /// over by `previous`): returns the units to reissue (with their lost
    /// holder) or restore (none).
    pub(super) fn took_over(&mut self, previous: Option<P>) -> Vec<(UnitId, Option<P>)> {
        let (job, now) = (self.job, self.now);
        let h = &mut *self.home;
        h.record.stats.takeovers = h
            .record
            .stats
            .takeovers
            .saturating_add(u64::from(previous.is_none()));
        // Whether the previous primary's assignments arrived is unknown
        // here: their workers get the confirmation timeout from now.
        let assigned: Vec<UnitId> = h
            .record
            .units
            .iter()
            .filter(|(_, u)| u.status == UnitStatus::Assigned)
            .map(|(id, _)| *id)
            .collect();
        for id in assigned {
            h.assigned.insert(
                id,
                Assignment {
                    since: now,
                    delivered: true,
                },
            );
        }
        self.event(JobEvent::Primary { job, previous });
        // Units whose holders are gone, and queued ones, need their state.
        let h = &*self.home;
        h.record
            .units
            .iter()
            .filter(|(id, u)| match u.status {
                UnitStatus::Queued => true,
                UnitStatus::Assigned | UnitStatus::Running => {
                    u.holder.is_none() || self.unit_lost(**id, u, &h.record.ft)
                }
                UnitStatus::Done => false,
            })
            .map(|(id, u)| (*id, u.holder.clone()))
            .collect()
    }

    /// Requeues `unit`, lost with `lost`, on the record; says what must
    /// follow. See [`Jobs::reissue_unit`].
    fn reissue(&mut self, unit: UnitId, lost: P, unheld: bool) -> Reissue {
        let job = self.job;
        let h = &mut *self.home;
        let ft = h.record.ft;
        let Some(u) = h.record.units.get(&unit) else {
            return Reissue::Done;
        };
        if u.status == UnitStatus::Done {
            return Reissue::Done;
        }
        if ft.checkpoints()
            && ft.storage == CheckpointStorage::Local
            && u.status == UnitStatus::Running
            && !unheld
        {
            // Its state is on the lost peer's disk: wait for it to come back
            // and resume it. One only assigned may never have reached that
            // disk: it restarts from its last checkpoint (and its worker, if
            // it did store it, may still take it back until it is given out).
            return Reissue::Done;
        }
        let was_running = u.status == UnitStatus::Running;
        if let Some(u) = h.unit(unit) {
            u.status = UnitStatus::Queued;
            u.holder = None;
        }
        h.assigned.remove(&unit);
        // Reports of the lost copy still being stored must not apply.
        h.staging.remove(&unit);
        if was_running {
            let c = h.record.contributions.entry(lost.clone()).or_default();
            c.units_running = c.units_running.saturating_sub(1);
        }
        h.record.stats.reissued = h.record.stats.reissued.saturating_add(1);
        self.event(JobEvent::Reissued {
            job,
            unit,
            lost: lost.clone(),
        });
        if !ft.checkpoints() {
            // It restarts from the state it was handed out with (or kept at
            // its last divide); its worker's reports are stale from now on.
            let h = &mut *self.home;
            if let Some(state) = h.kept.remove(&unit) {
                h.ready.insert(unit, state);
            }
            if !h.ready.contains_key(&unit) {
                return Reissue::Fail(format!(
                    "unit {unit} was lost with peer {lost}, and the state it was handed out with was lost with the job's primary; the job's fault tolerance is \"none\", so nothing can restart it"
                ));
            }
            return Reissue::Done;
        }
        Reissue::Restore
    }

    /// Fails `job` here, with a reason naming the lost members, once a
    /// majority of its home's members (latest or committed) has been gone
    /// from the view for `majority_patience`: no update can commit and no
    /// election can be won without them, so the job would wait forever.
    /// The failure cannot be committed (that needs the majority): this
    /// member ends the job on its own, stops its units and tells the
    /// submitter; any peer asking about the job hears it from here.
    pub(super) fn watch_majority(&mut self) {
        let (job, now) = (self.job, self.now);
        let patience = self.config.majority_patience;
        let (me, members) = (self.me, self.members);
        let live = |p: &P| *p == *me || members.contains(p);
        let h = &mut *self.home;
        let lost_in = |set: &[P]| !set.is_empty() && !majority(set, live);
        let lost = h.record.state == JobState::Running
            && h.has_member(me)
            && (lost_in(h.members()) || lost_in(h.config()));
        if !lost {
            h.majority_lost_since = None;
            return;
        }
        let mut gone: Vec<P> = h
            .members()
            .iter()
            .chain(h.config())
            .filter(|p| !live(p))
            .cloned()
            .collect();
        gone.sort();
        gone.dedup();
        let members = h.members().len().max(h.config().len());
        // Live holders of units out: told to stop once the job fails.
        let holders: Vec<(UnitId, Epoch, P)> = h
            .record
            .units
            .iter()
            .filter(|(_, u)| matches!(u.status, UnitStatus::Assigned | UnitStatus::Running))
            .filter_map(|(id, u)| u.holder.clone().map(|p| (*id, u.epoch, p)))
            .filter(|(_, _, p)| live(p))
            .collect();
        let since = h.majority_lost_since;
        let Some(since) = since else {
            h.majority_lost_since = Some(now);
            self.event(JobEvent::HomeMajorityLost {
                job,
                gone,
                fails_in: patience,
            });
            self.tell_majority_lost();
            return;
        };
        if now.saturating_duration_since(since) < patience {
            self.tell_majority_lost();
            return;
        }
        let reason = format!(
            "the job's home lost its majority: {} of its {members} members ({gone:?}) left the network and did not come back within {:.0} s, so no change to the job can be committed any more",
            gone.len(),
            patience.as_secs_f64()
        );
        h.record.state = JobState::Failed { reason };
        let mut effects = Vec::new();
        self.check_complete(&mut effects);
        for (unit, epoch, holder) in holders {
            self.send(holder, JobMsg::Stale { job, unit, epoch }, false);
        }
        self.out.extend(effects);
    }

    /// While the home of `job` has lost its majority, a member that is not
    /// the primary (the primary's progress already carries it) sends the
    /// submitter the job's view every `progress_interval`, so it sees the
    /// job waiting, and when it fails.
    fn tell_majority_lost(&mut self) {
        let now = self.now;
        let h = &mut *self.home;
        let first = h.next_progress_at <= now || h.majority_lost_since == Some(now);
        if h.is_primary() || !first {
            return;
        }
        h.next_progress_at = now + self.config.progress_interval;
        let submitter = h.record.submitter.clone();
        let view = self.view();
        self.send(submitter, JobMsg::Status { view }, false);
    }

    /// Asks every worker the record names as running a unit of `job` which
    /// units it holds, every `holdings_interval`: a unit recorded on a
    /// live worker that no longer runs it (a lost hand-back, a thread that
    /// failed to start) would otherwise wait forever.
    pub(super) fn ask_holders(&mut self) {
        let (job, now) = (self.job, self.now);
        let interval = self.config.holdings_interval;
        let h = &*self.home;
        if !h.is_primary() || h.record.state != JobState::Running || h.next_holds_at > now {
            return;
        }
        let mut running: BTreeMap<P, BTreeSet<(UnitId, Epoch)>> = BTreeMap::new();
        for (id, u) in &h.record.units {
            if let (UnitStatus::Running, Some(holder)) = (u.status, &u.holder) {
                running
                    .entry(holder.clone())
                    .or_default()
                    .insert((*id, u.epoch));
            }
        }
        let mut asked = BTreeMap::new();
        for (worker, units) in running {
            let token = self.rng.random();
            self.send(worker.clone(), JobMsg::Holds { job, token }, false);
            asked.insert(worker, (token, units));
        }
        self.home.next_holds_at = now + interval;
        // An unanswered question is replaced: its answer is ignored.
        self.home.holds_asked = asked;
    }

    /// Tells the submitter, once, as soon as a majority of the job's full
    /// home holds it: its submission is acknowledged then.
    fn report_replicated(&mut self) {
        if self.home.told_replicated || !self.home.is_primary() {
            return;
        }
        let view = self.view();
        if view.replicated {
            self.home.told_replicated = true;
            let submitter = self.home.record.submitter.clone();
            self.send(submitter, JobMsg::Status { view }, false);
        }
    }

    /// Sends the submitter the job's view, every `progress_interval`.
    fn report_progress(&mut self) {
        let now = self.now;
        let h = &mut *self.home;
        if h.next_progress_at <= now {
            h.next_progress_at = now + self.config.progress_interval;
            let submitter = h.record.submitter.clone();
            let view = self.view();
            self.send(submitter, JobMsg::Status { view }, false);
        }
    }
}

/// What a primary's record must still do after a membership change.
struct Reconciled<P> {
    /// Units out with lost holders, to reissue.
    lost: Vec<(UnitId, P)>,
    /// Units being restored that lost a holder asked for pieces (once per
    /// lost holder).
    dead_asked: Vec<UnitId>,
    /// Units whose head staged report waits for no piece any more.
    staged: Vec<UnitId>,
}

impl<P: PeerKey> HomeCtx<'_, P> {
    /// The primary's side of a membership change: steals and piece
    /// requests involving lost peers are dropped; returns what must follow.
    fn reconcile(&mut self) -> Reconciled<P> {
        let h = &*self.home;
        // Lost workers.
        let lost: Vec<(UnitId, P)> = h
            .record
            .units
            .iter()
            .filter(|(_, u)| matches!(u.status, UnitStatus::Assigned | UnitStatus::Running))
            .filter(|(id, u)| self.unit_lost(**id, u, &h.record.ft))
            .filter_map(|(id, u)| u.holder.clone().map(|p| (*id, p)))
            .collect();
        let dead_steals: Vec<u64> = h
            .steals
            .iter()
            .filter(|(_, s)| !self.is_live(&s.donor) || !self.is_live(&s.requester))
            .map(|(id, _)| *id)
            .collect();
        let dead_asked: Vec<(UnitId, P)> = h
            .restoring
            .iter()
            .flat_map(|(u, r)| r.asked.iter().map(move |p| (*u, p.clone())))
            .filter(|(_, p)| !self.is_live(p))
            .collect();
        // Pieces promised by lost holders will not come.
        let dead_holders: Vec<(UnitId, P, UnitId, u8)> = h
            .staging
            .iter()
            .filter_map(|(owner, q)| q.front().map(|s| (owner, s)))
            .flat_map(|(owner, s)| {
                s.waiting
                    .iter()
                    .map(move |(p, id, i)| (*owner, p.clone(), *id, *i))
            })
            .filter(|(_, p, _, _)| !self.is_live(p))
            .collect();
        let h = &mut *self.home;
        for steal in dead_steals {
            h.steals.remove(&steal);
        }
        for (unit, p) in &dead_asked {
            if let Some(r) = h.restoring.get_mut(unit) {
                r.asked.remove(p);
            }
        }
        let mut staged = Vec::new();
        for (owner, p, id, i) in dead_holders {
            if let Some(front) = h.staging.get_mut(&owner).and_then(|q| q.front_mut()) {
                front.waiting.remove(&(p, id, i));
                if front.waiting.is_empty() {
                    staged.push(owner);
                }
            }
        }
        Reconciled {
            lost,
            dead_asked: dead_asked.into_iter().map(|(unit, _)| unit).collect(),
            staged,
        }
    }
}
