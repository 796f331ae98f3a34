//! Replication: updates from the primary to its backups, commitment by a
//! majority of both member lists, member changes and hand-over.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::time::{Duration, Instant};

use super::{
    majority_seq, valid_members, Home, HomeMsg, HomeOutput, Homes, NotPrimary, Pending, Replicated,
    Role, Update,
};
use crate::PeerKey;

/// Messages a primary sends within this of a lease round's start carry
/// that round: a busy home starts a few hundred rounds a lease, not one a
/// message.
pub(super) const ROUND_GRANULARITY: Duration = Duration::from_millis(5);

impl<K, P, S> Homes<K, P, S>
where
    K: Copy + Ord + Debug,
    P: PeerKey,
    S: Replicated,
{
    /// Sends what changed in the state of `key` to every backup and holds
    /// `effects` until a majority of both the committed and the latest
    /// members confirm it ([`HomeOutput::Released`]). Returns the update
    /// that carries the change (the current one if nothing changed).
    pub fn propose(
        &mut self,
        now: Instant,
        key: K,
        effects: Vec<S::Effect>,
    ) -> Result<u64, NotPrimary> {
        let Some(h) = self.homes.get_mut(&key) else {
            return Err(NotPrimary);
        };
        if !h.is_primary() {
            return Err(NotPrimary);
        }
        self.send_delta(now, key);
        let Some(h) = self.homes.get_mut(&key) else {
            return Err(NotPrimary);
        };
        // New members are committed once a majority of both the old and
        // the new members hold the update that named them.
        if h.members != h.config && h.proposed.as_ref().is_none_or(|(_, m)| *m != h.members) {
            h.proposed = Some((h.seq, h.members.clone()));
        }
        let seq = h.seq;
        if !effects.is_empty() {
            h.pending.push_back(Pending { seq, effects });
        }
        self.release(now, key);
        self.reschedule(now, key);
        Ok(seq)
    }

    /// Sends the backups what changed since the last update, if anything
    /// did (the state, or the member lists).
    fn send_delta(&mut self, now: Instant, key: K) {
        let Some(h) = self.homes.get_mut(&key) else {
            return;
        };
        let delta = h.state.take_delta(h.members_dirty);
        if delta.is_none() && !h.members_dirty {
            return;
        }
        // An update that changes nothing (a read barrier) needs no disk:
        // if every update before it is durable here, so is it.
        let barrier = !h.members_dirty && delta.as_ref().is_none_or(S::changes_nothing);
        if barrier && h.durable_seq == h.seq {
            h.durable_seq = h.seq.saturating_add(1);
        }
        h.seq = h.seq.saturating_add(1);
        if h.members_dirty {
            h.lists_seq = h.seq;
        }
        h.members_dirty = false;
        h.heard_at = now;
        let (term, seq) = (h.term, h.seq);
        let members = h.members.clone();
        let config = h.config.clone();
        let delta = delta.map(Box::new);
        let backups: Vec<P> = h.acked.keys().cloned().collect();
        for to in backups {
            let update = Update::Delta {
                members: members.clone(),
                config: config.clone(),
                delta: delta.clone(),
            };
            self.send_replica(now, to, key, (term, seq), update);
        }
    }

    /// Releases the effects whose updates a majority of the home confirmed.
    pub(super) fn release(&mut self, now: Instant, key: K) {
        let me = self.me.clone();
        let Some(h) = self.homes.get_mut(&key) else {
            return;
        };
        if !h.is_primary() {
            return;
        }
        // The highest update a majority of the committed members, and of
        // the latest ones, hold.
        let own = if h.state.durable() {
            h.durable_seq
        } else {
            h.seq
        };
        let held = |m: &P| {
            if *m == me {
                own
            } else {
                h.acked.get(m).copied().unwrap_or(0)
            }
        };
        let committed = majority_seq(&h.config, held).min(majority_seq(&h.members, held));
        let mut config_changed = false;
        if let Some((_, members)) = h.proposed.take_if(|(seq, _)| *seq <= committed) {
            // Sent at once (below). Members of the old list that are not in
            // the new one are released only once that update is committed
            // (`maintain`): if this primary died before a majority of
            // backups heard of the new list, those backups would still
            // count the released member's vote.
            h.config = members;
            h.members_dirty = true;
            config_changed = true;
        }
        let mut released = Vec::new();
        while h.pending.front().is_some_and(|p| p.seq <= committed) {
            if let Some(p) = h.pending.pop_front() {
                released.extend(p.effects);
            }
        }
        if committed > h.committed {
            h.committed = committed;
            let term = h.term;
            self.outputs.push_back(HomeOutput::Committed {
                key,
                term,
                seq: committed,
            });
        }
        if !released.is_empty() {
            self.outputs.push_back(HomeOutput::Released {
                key,
                effects: released,
            });
        }
        if config_changed {
            self.send_delta(now, key);
        }
    }

    /// Keeps the home of `key` in shape after any change: snapshots to
    /// members without a replica, releases to those no longer in the home,
    /// hands the primary role to a closer peer holding a replica.
    pub(super) fn maintain(&mut self, now: Instant, key: K) {
        let Some(h) = self.homes.get(&key) else {
            return;
        };
        if !h.is_primary() {
            return;
        }
        if h.state.durable() && h.config == [self.me.clone()] && h.durable_seq == 0 {
            // A durable home created here, not yet on this peer's disk, is
            // handed to nobody: if this peer crashed now, they would follow
            // a primary without a replica, the only member that could
            // elect another. `Homes::durable` grows it.
            return;
        }
        let size = h.size;
        let home = self.home_of(&key, size);
        let (term, seq) = (h.term, h.seq);
        // Every member, committed or not, gets the updates, and so do the
        // peers now in the home.
        let mut targets: BTreeSet<P> = home.iter().cloned().collect();
        targets.extend(h.members.iter().cloned());
        targets.extend(h.config.iter().cloned());
        let fresh: Vec<P> = targets
            .into_iter()
            .filter(|p| *p != self.me && !h.acked.contains_key(p))
            .collect();
        let gone: Vec<P> = h
            .acked
            .keys()
            .filter(|p| !home.contains(p))
            .cloned()
            .collect();
        // Members no longer among the closest leave the members list once
        // closer ones hold a replica, the farthest first; they are released
        // only when members without them are committed, so the committed
        // members keep a majority able to confirm updates meanwhile.
        let excess = h.members.len().saturating_sub(size);
        let mut leaving: Vec<P> = h
            .members
            .iter()
            .rev()
            .filter(|m| gone.contains(m))
            .cloned()
            .collect();
        // Lost members first (a stable sort keeps the farthest first).
        leaving.sort_by_key(|m| self.live.contains(m));
        leaving.truncate(excess);
        // Members leaving gracefully go with or without a replacement:
        // they still confirm the lists without them.
        for m in h.members.iter().filter(|m| self.draining.contains(*m)) {
            if !leaving.contains(m) {
                leaving.push(m.clone());
            }
        }
        // Released only once a majority holds lists without them (see
        // `lists_seq`); until then they stay backups and get the updates.
        let lists_committed = !h.members_dirty && h.committed >= h.lists_seq;
        let gone: Vec<P> = gone
            .into_iter()
            .filter(|p| !h.config.contains(p) && !h.members.contains(p) && lists_committed)
            .collect();
        let snapshot = (!fresh.is_empty()).then(|| h.state.snapshot(now));
        let (members, config) = (h.members.clone(), h.config.clone());
        let size_u8 = u8::try_from(h.size).unwrap_or(u8::MAX);
        for to in &gone {
            self.send_replica(now, to.clone(), key, (term, seq), Update::Release);
        }
        if let Some(snapshot) = snapshot {
            for to in &fresh {
                let update = Update::Snapshot {
                    size: size_u8,
                    members: members.clone(),
                    config: config.clone(),
                    state: Box::new(snapshot.clone()),
                };
                self.send_replica(now, to.clone(), key, (term, seq), update);
            }
        }
        for peer in &gone {
            self.outputs.push_back(HomeOutput::Left {
                key,
                peer: peer.clone(),
            });
        }
        let me = self.me.clone();
        let Some(h) = self.homes.get_mut(&key) else {
            return;
        };
        let mut members_changed = false;
        for to in gone {
            h.acked.remove(&to);
        }
        for to in leaving {
            h.members.retain(|m| *m != to);
            members_changed = true;
        }
        for to in fresh {
            // Counted as a backup from now on; a member once it confirms.
            h.acked.insert(to, 0);
        }
        // Hand over to a closer peer that holds a replica.
        let up_to_date = |b: &P| h.acked.get(b).is_some_and(|a| *a >= h.seq);
        let closer = home
            .first()
            .filter(|b| {
                **b != me && h.members.contains(b) && up_to_date(b) && h.settled() && !h.pinned
            })
            .cloned();
        if let Some(best) = closer {
            self.promote(now, key, best);
            return;
        }
        if members_changed {
            h.members_dirty = true;
        }
        self.release(now, key);
        if members_changed {
            let _ = self.propose(now, key, Vec::new());
        }
    }

    pub(super) fn on_replica(
        &mut self,
        now: Instant,
        from: P,
        key: K,
        (term, seq, committed, round): (u64, u64, u64, u64),
        update: Update<P, S::Snapshot, S::Delta>,
    ) {
        // Member lists that cannot be a home's are ignored whole.
        let lists_ok = match &update {
            Update::Snapshot {
                members, config, ..
            }
            | Update::Delta {
                members, config, ..
            } => valid_members(members) && valid_members(config),
            _ => true,
        };
        if !lists_ok {
            return;
        }
        let closer = |a: &P, b: &P| (self.closeness)(&key, a) < (self.closeness)(&key, b);
        let me_closer = closer(&self.me, &from);
        let left_in = self.left_in(&key);
        let promised_another = self.promised_another(&key, &from, (term, committed));
        let Some(h) = self.homes.get_mut(&key) else {
            if promised_another {
                // A creator whose promises lapsed: this peer promised the
                // home to another since, and must not be the majority of
                // a second home beside that one's.
                return;
            }
            if let Some(left) = left_in.filter(|left| term < *left) {
                // A primary of a term this peer has seen the home leave:
                // tell it, so it steps down.
                let ack = HomeMsg::Ack {
                    key,
                    term: left,
                    seq: 0,
                    round: 0,
                };
                self.send(from, ack, false);
                return;
            }
            match update {
                Update::Snapshot {
                    size,
                    members,
                    config,
                    state,
                } => {
                    if self.homes.len() >= self.config.max_homes {
                        return;
                    }
                    let Some(state) = S::restore(now, *state) else {
                        return;
                    };
                    let role = Role::Backup {
                        primary: Some(from.clone()),
                    };
                    let mut home =
                        Home::new(state, usize::from(size), members, config, role, term, now);
                    home.seq = seq;
                    home.round_heard = (term, round);
                    self.homes.insert(key, home);
                    // The home exists: a creation here is over, and the
                    // replica refuses other creators from now on.
                    self.not_founded(key, Some(from.clone()));
                    self.promises.remove(&key);
                    self.ack_held(from, key);
                }
                Update::Delta { .. } | Update::Heartbeat => {
                    // A member that lost its replica (a restart).
                    self.send(from, HomeMsg::Nack { key, term: 0 }, false);
                }
                Update::Promote | Update::Release => {}
            }
            return;
        };
        let outranked = term < h.term.max(h.promised)
            || (term == h.term && !h.yields_in_term(&from, (seq, committed), me_closer));
        if outranked {
            let my_term = h.term.max(h.promised);
            let ack = HomeMsg::Ack {
                key,
                term: my_term,
                seq: 0,
                round: 0,
            };
            self.send(from, ack, false);
            return;
        }
        let was_primary = h.is_primary();
        if was_primary {
            h.drop_primary_state();
        }
        // A primary of this term exists: stop campaigning.
        h.candidacy = None;
        h.campaign_at = None;
        h.heard_at = now;
        // Echoed in acks: this member now refuses other candidates for a
        // while (`primary_present`), which the primary's lease counts on.
        let (heard_term, heard) = h.round_heard;
        h.round_heard = (
            term,
            if heard_term == term {
                heard.max(round)
            } else {
                round
            },
        );
        let backup = Role::Backup {
            primary: Some(from.clone()),
        };
        match update {
            Update::Snapshot {
                size,
                members,
                config,
                state,
            } => {
                if !h.state.apply_snapshot(now, *state) {
                    return;
                }
                h.size = usize::from(size).max(1);
                h.members = members;
                h.config = config;
                if h.term != term {
                    // Nothing of the new term is on disk yet.
                    h.durable_seq = 0;
                }
                h.term = term;
                h.seq = seq;
                h.role = backup;
                self.stepped_down(key, was_primary);
                self.ack_held(from, key);
            }
            Update::Delta {
                members,
                config,
                delta,
            } => {
                if term == h.term && seq <= h.seq {
                    return; // a duplicate
                }
                // (An update that changes nothing, a read barrier, needs
                // no disk: acknowledged at once if everything before it is
                // durable here.)
                let barrier = delta.as_deref().is_none_or(S::changes_nothing)
                    && members == h.members
                    && config == h.config;
                let fits = term == h.term && Some(seq) == h.seq.checked_add(1);
                let applied = fits && delta.is_none_or(|d| h.state.apply_delta(now, *d));
                if !applied {
                    // An update was missed: resynchronise.
                    let my_term = h.term;
                    self.send(from, HomeMsg::Nack { key, term: my_term }, false);
                    return;
                }
                if barrier && h.durable_seq == h.seq {
                    h.durable_seq = seq;
                }
                h.role = backup;
                h.members = members;
                h.config = config;
                h.seq = seq;
                self.stepped_down(key, was_primary);
                self.ack_held(from, key);
            }
            Update::Promote => {
                // Confirms the hand-over; the role itself takes a majority.
                let ack = HomeMsg::Ack {
                    key,
                    term,
                    seq: 0,
                    round: 0,
                };
                self.send(from.clone(), ack, false);
                self.campaign_handed_over(now, key, term, from);
            }
            Update::Heartbeat => {
                if term != h.term || seq > h.seq {
                    // The snapshot of this term, or updates, were missed
                    // (a pipe that gave up).
                    let my_term = h.term;
                    self.send(from, HomeMsg::Nack { key, term: my_term }, false);
                    return;
                }
                h.role = backup;
                self.stepped_down(key, was_primary);
                self.ack_held(from, key);
            }
            Update::Release => {
                if term >= h.term {
                    self.leave(&key, term);
                    self.outputs.push_back(HomeOutput::Dropped { key });
                }
            }
        }
    }

    /// Tells the primary `to` which updates of `key` this backup holds:
    /// every applied one, or, for a durable state, those on its disk.
    pub(super) fn ack_held(&mut self, to: P, key: K) {
        let Some(h) = self.homes.get(&key) else {
            return;
        };
        let seq = if h.state.durable() {
            h.durable_seq.min(h.seq)
        } else {
            h.seq
        };
        let term = h.term;
        let round = if h.round_heard.0 == term {
            h.round_heard.1
        } else {
            0
        };
        self.send(
            to,
            HomeMsg::Ack {
                key,
                term,
                seq,
                round,
            },
            false,
        );
    }

    fn stepped_down(&mut self, key: K, was_primary: bool) {
        if was_primary {
            self.outputs.push_back(HomeOutput::SteppedDown { key });
        }
    }

    pub(super) fn on_ack(
        &mut self,
        now: Instant,
        from: P,
        key: K,
        term: u64,
        (seq, round): (u64, u64),
    ) {
        let Some(h) = self.homes.get_mut(&key) else {
            return;
        };
        if h.handing_over.as_ref() == Some(&from) && term == h.promised {
            h.handing_over = None;
            return;
        }
        if !h.is_primary() {
            return;
        }
        if term > h.term {
            // Someone follows a newer primary: step down; it will sync us.
            h.role = Role::Backup { primary: None };
            h.drop_primary_state();
            self.outputs.push_back(HomeOutput::SteppedDown { key });
            return;
        }
        // An update from the future was never sent: a lie or a bug.
        if term < h.term || seq > h.seq {
            return;
        }
        if !h.acked.contains_key(&from) {
            // A replica this primary does not count: a snapshot sent before
            // its release (releases overtake bulk) founded it again. Release
            // it again, unless it is to join.
            let (term, seq, size) = (h.term, h.seq, h.size);
            let counted = h.has_member(&from) || self.home_of(&key, size).contains(&from);
            if !counted {
                self.send_replica(now, from, key, (term, seq), Update::Release);
            }
            return;
        }
        if let Some(a) = h.acked.get_mut(&from) {
            *a = (*a).max(seq);
        }
        // A round never sent is a lie or a bug.
        if round <= h.round {
            let acked = h.round_acked.entry(from.clone()).or_default();
            *acked = (*acked).max(round);
        }
        let (absent, size) = (!h.members.contains(&from), h.size);
        let handed_by_it = h.handed_by.as_ref() == Some(&from);
        let home = self.home_of(&key, size);
        let joins = absent && home.contains(&from);
        // The peer this home is to move to (closer than this one, or this
        // one leaving) may now hold the latest update: hand over then.
        // Nothing else looks again once it has joined, when this primary
        // is the member to go (a home of one, or this peer leaving).
        let moves_to_it = !absent && home.first() == Some(&from) && !handed_by_it;
        if joins {
            let me = self.me.clone();
            let closeness = &self.closeness;
            if let Some(h) = self.homes.get_mut(&key) {
                h.members.push(from);
                // Order the members by closeness, primary first.
                h.members
                    .sort_by_cached_key(|p| (*p != me, closeness(&key, p)));
                h.members_dirty = true;
            }
            let _ = self.propose(now, key, Vec::new());
            self.maintain(now, key);
        } else if moves_to_it {
            self.maintain(now, key);
        }
        self.release(now, key);
    }

    /// A member's replica is missing or behind: a snapshot if it still
    /// belongs to the home, else a release.
    pub(super) fn on_nack(&mut self, now: Instant, from: P, key: K, _term: u64) {
        let Some(h) = self.homes.get(&key) else {
            return;
        };
        if !h.is_primary() {
            return;
        }
        let home = self.home_of(&key, h.size);
        let (term, seq) = (h.term, h.seq);
        if home.contains(&from) || h.has_member(&from) {
            let update = Update::Snapshot {
                size: u8::try_from(h.size).unwrap_or(u8::MAX),
                members: h.members.clone(),
                config: h.config.clone(),
                state: Box::new(h.state.snapshot(now)),
            };
            self.send_replica(now, from.clone(), key, (term, seq), update);
            if let Some(h) = self.homes.get_mut(&key) {
                h.acked.insert(from, 0);
            }
        } else {
            self.send_replica(now, from.clone(), key, (term, seq), Update::Release);
            if let Some(h) = self.homes.get_mut(&key) {
                if h.acked.remove(&from).is_some() || h.members.contains(&from) {
                    h.members.retain(|m| *m != from);
                    h.members_dirty = true;
                    let _ = self.propose(now, key, Vec::new());
                }
            }
        }
    }

    /// This peer takes the primary role of `key` over (from a lost primary,
    /// or handed over by `previous`).
    pub(super) fn become_primary(&mut self, now: Instant, key: K, previous: Option<P>) {
        let me = self.me.clone();
        let Some(h) = self.homes.get_mut(&key) else {
            return;
        };
        h.role = Role::Primary;
        h.drop_primary_state();
        h.handed_by = previous.clone();
        h.members.retain(|m| *m != me);
        h.members.insert(0, me);
        h.committed = 0;
        // Nothing of the new term is on disk yet.
        h.durable_seq = 0;
        // Every update of the new term, from its snapshots on, carries
        // this member's lists.
        h.lists_seq = h.seq;
        // Every other member gets the state under the new term.
        h.acked.clear();
        self.outputs
            .push_back(HomeOutput::BecamePrimary { key, previous });
        self.maintain(now, key);
        let _ = self.propose(now, key, Vec::new());
    }

    /// Hands the primary role of `key` to `to`, a member holding a replica,
    /// under the next term; this peer follows it as a backup.
    pub(super) fn promote(&mut self, now: Instant, key: K, to: P) {
        let Some(h) = self.homes.get_mut(&key) else {
            return;
        };
        let Some(term) = h.term.max(h.promised).checked_add(1) else {
            return;
        };
        let was_primary = h.is_primary();
        h.role = Role::Backup {
            primary: Some(to.clone()),
        };
        // The hand-over is this member's vote for `to` in the new term.
        h.promised = term;
        h.voted_for = Some(to.clone());
        h.handing_over = Some(to.clone());
        h.drop_primary_state();
        self.stepped_down(key, was_primary);
        self.send_replica(now, to, key, (term, 0), Update::Promote);
    }

    /// Sends a replica update; states (snapshots, deltas) travel as bulk.
    pub(super) fn send_replica(
        &mut self,
        now: Instant,
        to: P,
        key: K,
        (term, seq): (u64, u64),
        update: Update<P, S::Snapshot, S::Delta>,
    ) {
        let bulk = matches!(update, Update::Snapshot { .. } | Update::Delta { .. });
        let round = self.lease_round(now, key);
        let committed = self.homes.get(&key).map_or(0, |h| h.committed);
        let msg = HomeMsg::Replica {
            key,
            term,
            seq,
            committed,
            round,
            update,
        };
        self.send(to, msg, bulk);
    }

    /// The lease round a primary's message sent now carries: a new one
    /// unless the last began within [`ROUND_GRANULARITY`] (reusing it
    /// dates the lease a little earlier than it could be, never later).
    /// Rounds older than a lease are forgotten. 0 from a backup.
    fn lease_round(&mut self, now: Instant, key: K) -> u64 {
        let lease = self.config.lease;
        let Some(h) = self.homes.get_mut(&key) else {
            return 0;
        };
        if !h.is_primary() {
            return 0;
        }
        let recent = h
            .rounds
            .back()
            .is_some_and(|(_, at)| now.saturating_duration_since(*at) < ROUND_GRANULARITY);
        if !recent {
            h.round += 1;
            h.rounds.push_back((h.round, now));
        }
        while h
            .rounds
            .front()
            .is_some_and(|(_, at)| now.saturating_duration_since(*at) > lease)
            && h.rounds.len() > 1
        {
            h.rounds.pop_front();
        }
        h.round
    }

    /// Whether the primary of `key` may act alone now: a majority of both
    /// member lists acknowledged a message it sent less than a lease ago,
    /// so none of them votes for another candidate before the lease ends
    /// (they refuse votes for twice the heartbeat interval after hearing
    /// from it). A home of one always holds it.
    pub fn has_lease(&self, now: Instant, key: &K) -> bool {
        let Some(h) = self.homes.get(key) else {
            return false;
        };
        if !h.is_primary() {
            return false;
        }
        let round_of = |m: &P| {
            if *m == self.me {
                h.round
            } else {
                h.round_acked.get(m).copied().unwrap_or(0)
            }
        };
        let lists = [&h.config, &h.members];
        let Some(round) = lists.iter().map(|l| majority_seq(l, round_of)).min() else {
            return false;
        };
        if lists.iter().all(|l| l.iter().all(|m| *m == self.me)) {
            return true;
        }
        let Ok(i) = h.rounds.binary_search_by_key(&round, |(r, _)| *r) else {
            return false;
        };
        h.rounds
            .get(i)
            .is_some_and(|(_, sent)| now.saturating_duration_since(*sent) < self.config.lease)
    }

    pub(super) fn send(&mut self, to: P, msg: HomeMsg<K, P, S::Snapshot, S::Delta>, bulk: bool) {
        self.outputs.push_back(HomeOutput::Send { to, msg, bulk });
    }
}
