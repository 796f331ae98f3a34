//! The job core's timer table: one deadline per worker unit, per home, for
//! the home core and for the peer's own housekeeping, so that
//! [`Jobs::poll_timeout`] is the earliest of them and
//! [`Jobs::handle_timeout`] runs only what is due (an idle peer is not
//! woken at all). Deadlines are recomputed from the state after every input
//! ([`Jobs::rearm`]): they are data, never a fixed tick.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::PeerKey;

use super::*;

/// How long after an input a home's state-driven work (units to restore or
/// push, a lost majority to notice, a restored record to resume) runs:
/// inputs that come together share one pass.
pub(super) const HOME_PASS_DELAY: Duration = Duration::from_millis(20);

/// The smallest step past a deadline checked with a strict "more than".
const TICK: Duration = Duration::from_nanos(1);

/// What a deadline is for. The order is the order in which timers due at
/// the same instant run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    /// Adverts and parked messages past their lifetime.
    Expiry,
    /// A unit running here: a checkpoint due, reports to re-send.
    Unit(JobId, UnitId),
    /// The home core's own timers (elections, heartbeats), durable records
    /// to write, pieces of forgotten jobs to drop.
    Homes,
    /// A job record held here.
    Home(JobId),
    /// Asking a primary for work.
    WorkRequest,
}

/// Deadlines, by timer and by time.
#[derive(Default)]
pub(super) struct Timers {
    at: BTreeMap<Timer, Instant>,
    queue: BTreeSet<(Instant, Timer)>,
}

impl Timers {
    /// Sets (or, with `None`, clears) `timer`'s deadline.
    pub(super) fn set(&mut self, timer: Timer, at: Option<Instant>) {
        if self.at.get(&timer).copied() == at {
            return;
        }
        if let Some(old) = self.at.remove(&timer) {
            self.queue.remove(&(old, timer));
        }
        if let Some(at) = at {
            self.at.insert(timer, at);
            self.queue.insert((at, timer));
        }
    }

    /// `timer`'s deadline, if set.
    pub(super) fn deadline(&self, timer: Timer) -> Option<Instant> {
        self.at.get(&timer).copied()
    }

    /// The earliest deadline.
    pub(super) fn next(&self) -> Option<Instant> {
        self.queue.first().map(|(at, _)| *at)
    }

    /// Takes the timers due at `now`, earliest first.
    pub(super) fn take_due(&mut self, now: Instant) -> Vec<Timer> {
        let mut due = Vec::new();
        while let Some(&(at, timer)) = self.queue.first() {
            if at > now {
                break;
            }
            self.queue.remove(&(at, timer));
            self.at.remove(&timer);
            due.push(timer);
        }
        due
    }

    /// Deadlines set, for tests and counters.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.at.len()
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

impl<P: PeerKey> Jobs<P> {
    /// Marks every home held here for a pass soon: something they depend on
    /// (a message, the members, a unit) changed.
    pub(super) fn homes_touched(&mut self, now: Instant) {
        let soon = now + HOME_PASS_DELAY;
        for job in self.homes.keys() {
            self.home_soon.entry(*job).or_insert(soon);
        }
    }

    /// Recomputes every deadline from the state.
    pub(super) fn rearm(&mut self, now: Instant) {
        self.clock = self.clock.max(now);
        // Housekeeping.
        let expiry = earliest(
            self.known.values().map(|k| k.expires).min(),
            self.parked.next_expiry(),
        );
        self.timers.set(Timer::Expiry, expiry);
        // Units running here.
        let stale: Vec<Timer> = self
            .timers
            .at
            .keys()
            .filter(|t| match t {
                Timer::Unit(job, unit) => !self.running.contains_key(&(*job, *unit)),
                Timer::Home(job) => !self.homes.contains_key(job),
                _ => false,
            })
            .copied()
            .collect();
        for timer in stale {
            self.timers.set(timer, None);
        }
        self.home_soon.retain(|job, _| self.homes.contains_key(job));
        let units: Vec<(Timer, Option<Instant>)> = self
            .running
            .iter()
            .map(|((job, unit), w)| (Timer::Unit(*job, *unit), self.unit_deadline(w)))
            .collect();
        for (timer, at) in units {
            self.timers.set(timer, at);
        }
        // Homes.
        let homes: Vec<(Timer, Option<Instant>)> = self
            .homes
            .keys()
            .map(|job| {
                let soon = self.home_soon.get(job).copied();
                (Timer::Home(*job), earliest(soon, self.home_deadline(*job)))
            })
            .collect();
        for (timer, at) in homes {
            self.timers.set(timer, at);
        }
        let homes = earliest(self.homes.poll_timeout(), self.records_deadline());
        let homes = earliest(homes, self.quiet_pieces_deadline());
        self.timers.set(Timer::Homes, homes);
        self.timers
            .set(Timer::WorkRequest, self.work_request_deadline());
    }

    /// When a unit running here next needs attention.
    fn unit_deadline(&self, w: &WorkerUnit<P>) -> Option<Instant> {
        let checkpoint =
            (w.ft.checkpoints() && !w.checkpoint_asked && w.stopping.is_none() && !w.finished())
                .then_some(w.next_checkpoint_at);
        let resend = (!w.unacked.is_empty()).then(|| w.last_sent + self.config.resend_interval);
        earliest(checkpoint, resend)
    }

    /// When a unit's timer is due: asks for its checkpoint, re-sends its
    /// reports.
    pub(super) fn unit_timeout(&mut self, now: Instant, job: JobId, unit: UnitId) {
        let Some(w) = self.running.get_mut(&(job, unit)) else {
            return;
        };
        if w.ft.checkpoints()
            && !w.checkpoint_asked
            && w.stopping.is_none()
            && !w.finished()
            && w.next_checkpoint_at <= now
        {
            w.checkpoint_asked = true;
            self.outputs.push_back(JobOutput::Checkpoint { job, unit });
        }
        let Some(w) = self.running.get(&(job, unit)) else {
            return;
        };
        if !w.unacked.is_empty()
            && now.saturating_duration_since(w.last_sent) >= self.config.resend_interval
        {
            self.resend_reports(now, job, unit);
        }
    }

    /// When this peer may next ask for work, if it would.
    fn work_request_deadline(&self) -> Option<Instant> {
        if self.leaving || self.paused || self.config.cores <= self.running.len() as u32 {
            return None;
        }
        let target = match self.current_job {
            Some(job) => self.known.contains_key(&job),
            None => self
                .known
                .keys()
                .any(|job| !self.finished_jobs.contains(job)),
        };
        target.then_some(self.next_request_at)
    }

    /// When changed durable records are next written, if any changed.
    fn records_deadline(&self) -> Option<Instant> {
        let gone = self
            .records_on_disk
            .keys()
            .any(|job| !self.homes.contains_key(job));
        let changed = self.homes.iter().any(|(job, h)| {
            h.record.ft.durable && self.records_on_disk.get(job) != Some(&(h.term(), h.seq()))
        });
        (gone || changed).then_some(self.next_record_persist)
    }

    /// When pieces of a job this peer holds no record of are next dropped.
    fn quiet_pieces_deadline(&self) -> Option<Instant> {
        self.pieces
            .last_touched()
            .filter(|(job, _)| !self.homes.contains_key(job))
            .map(|(_, at)| at + self.config.result_retention + TICK)
            .min()
    }

    /// The next deadline of the home of `job`.
    fn home_deadline(&self, job: JobId) -> Option<Instant> {
        let h = self.homes.get(&job)?;
        h.deadline(h.is_primary(), self.clock, &self.config)
    }
}

/// What a primary's pass finds due in its record ([`HomeState::due`]).
pub(super) struct HomeDue<P> {
    /// Steals unanswered past their timeout.
    pub(super) stale_steals: Vec<u64>,
    /// Units assigned and not confirmed in time, with their holders.
    pub(super) unconfirmed: Vec<(UnitId, P)>,
    /// Queued units with no state here yet (after a takeover).
    pub(super) unready: Vec<UnitId>,
}

/// The timers of one home, read from its state: [`HomeState::deadline`]
/// says when, [`HomeState::due`] and [`HomeState::resend_due`] what; the
/// two read the same fields, so a timer never fires with nothing due.
impl<P: PeerKey> HomeState<P> {
    /// What of the primary's work with a timeout is due at `now`.
    pub(super) fn due(&self, now: Instant, c: &JobConfig) -> HomeDue<P> {
        let stale_steals = self
            .steals
            .iter()
            .filter(|(_, s)| now.saturating_duration_since(s.since) > c.steal_timeout)
            .map(|(id, _)| *id)
            .collect();
        let unconfirmed = self
            .assigned
            .iter()
            .filter(|(_, a)| now > a.expires(c))
            .filter_map(|(id, _)| {
                self.record
                    .units
                    .get(id)
                    .and_then(|u| u.holder.clone())
                    .map(|p| (*id, p))
            })
            .collect();
        let unready = self.unready().collect();
        HomeDue {
            stale_steals,
            unconfirmed,
            unready,
        }
    }

    /// Units whose staged pieces wait for holders past the re-send
    /// interval.
    pub(super) fn resend_due(&self, now: Instant, c: &JobConfig) -> Vec<UnitId> {
        self.staging
            .iter()
            .filter(|(_, q)| {
                q.front().is_some_and(|s| {
                    !s.waiting.is_empty()
                        && now.saturating_duration_since(s.sent_at) >= c.resend_interval
                })
            })
            .map(|(unit, _)| *unit)
            .collect()
    }

    /// Queued units with no state here yet.
    fn unready(&self) -> impl Iterator<Item = UnitId> + '_ {
        self.record
            .units
            .iter()
            .filter(|(id, u)| {
                u.status == UnitStatus::Queued
                    && !self.ready.contains_key(id)
                    && !self.restoring.contains_key(id)
            })
            .map(|(id, _)| *id)
    }

    /// When this home (its `primary` or a backup) next has something due by
    /// time (`clock` is the latest time the core has seen): retention, a lost majority's
    /// patience, a restored record to resume, and on a running primary its
    /// deadline, adverts, holdings, progress, steals and assignments to
    /// time out, restores to retry, pieces to re-send, queued units to push
    /// or restore.
    pub(super) fn deadline(&self, primary: bool, clock: Instant, c: &JobConfig) -> Option<Instant> {
        let mut at = self.finished.map(|f| f + c.result_retention);
        if let Some(since) = self.majority_lost_since {
            at = earliest(at, Some(since + c.majority_patience));
        }
        if self.restored {
            at = earliest(at, Some(clock + HOME_PASS_DELAY));
        }
        if !primary || self.record.state != JobState::Running {
            return at;
        }
        if let Some(deadline_ms) = self.record.deadline_ms {
            at = earliest(
                at,
                self.started.checked_add(Duration::from_millis(deadline_ms)),
            );
        }
        at = earliest(at, Some(self.next_advert_at));
        at = earliest(at, Some(self.next_holds_at));
        at = earliest(at, Some(self.next_progress_at));
        let steals = self
            .steals
            .values()
            .map(|s| s.since + c.steal_timeout + TICK);
        let assigned = self.assigned.values().map(|a| a.expires(c) + TICK);
        let restores = self.restoring.values().map(|r| r.retry_at);
        let staged = self.staging.values().filter_map(|q| {
            q.front()
                .filter(|s| !s.waiting.is_empty())
                .map(|s| s.sent_at + c.resend_interval)
        });
        let queued = self.ready.keys().filter_map(|id| {
            let queued = self
                .record
                .units
                .get(id)
                .is_some_and(|u| u.status == UnitStatus::Queued);
            queued.then(|| {
                self.queued_since
                    .get(id)
                    .map_or(clock + HOME_PASS_DELAY, |since| {
                        *since + c.push_queued_after
                    })
            })
        });
        let unready = self.unready().next().map(|_| clock + HOME_PASS_DELAY);
        let timed = steals
            .chain(assigned)
            .chain(restores)
            .chain(staged)
            .chain(queued)
            .chain(unready)
            .min();
        earliest(at, timed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_due_timers_in_order_and_forgets_cleared_ones() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut timers = Timers::default();
        let job = JobId([1; 16]);
        timers.set(Timer::WorkRequest, Some(t0 + ms(5)));
        timers.set(Timer::Home(job), Some(t0 + ms(5)));
        timers.set(Timer::Unit(job, 3), Some(t0 + ms(1)));
        timers.set(Timer::Expiry, Some(t0 + ms(9)));
        timers.set(Timer::Expiry, None);
        timers.set(Timer::Homes, Some(t0 + ms(20)));
        timers.set(Timer::Homes, Some(t0 + ms(7)));
        assert_eq!(timers.next(), Some(t0 + ms(1)));
        assert!(timers.take_due(t0).is_empty());
        assert_eq!(
            timers.take_due(t0 + ms(5)),
            vec![Timer::Unit(job, 3), Timer::Home(job), Timer::WorkRequest]
        );
        assert_eq!(timers.next(), Some(t0 + ms(7)));
        assert_eq!(timers.take_due(t0 + ms(100)), vec![Timer::Homes]);
        assert_eq!(timers.len(), 0);
        assert_eq!(timers.next(), None);
    }
}
