//! Elections: a backup whose primary is gone campaigns for the next term,
//! and a peer that would create a home first wins term 1 ([`Homes::found`]).

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::time::{Duration, Instant};

use rand::Rng;

use super::{
    majority, Candidacy, Founding, HomeMsg, HomeMsgOf, HomeOutput, Homes, Replicated, Role,
    MIN_FOUNDING_VOTERS,
};
use crate::PeerKey;

impl<K, P, S> Homes<K, P, S>
where
    K: Copy + Ord + Debug,
    P: PeerKey,
    S: Replicated,
{
    /// Creation as an election for term 1: asks the would-be home of `key`
    /// (its `size` closest peers, at least three, this one included,
    /// suspected ones and those declared dead less than `founding_memory`
    /// ago too) to promise term 1 to this peer;
    /// those peers are then the home's members. A member of an existing
    /// home refuses and names its primary; a peer that promised another
    /// creator a moment ago refuses and names it. Once every peer asked
    /// has answered with a majority of the would-be home's promises (or
    /// at `election_timeout`, without those still silent)
    /// [`HomeOutput::Founded`] follows (then [`Homes::create`]), else
    /// [`HomeOutput::NotFounded`]. Asked again while it runs, it asks
    /// those that have not answered again.
    pub fn found(&mut self, now: Instant, key: K, size: u8) {
        if let Some(f) = self.founding.get(&key) {
            let missing: Vec<P> = f
                .voters
                .iter()
                .filter(|v| !f.granted.contains(*v) && !f.refused.contains(*v))
                .cloned()
                .collect();
            self.ask_for_votes(key, 1, (0, 0), missing, None);
            return;
        }
        if let Some(h) = self.homes.get(&key) {
            let primary = h.primary().filter(|p| **p != self.me).cloned();
            self.outputs
                .push_back(HomeOutput::NotFounded { key, primary });
            return;
        }
        if let Some(other) = self.promised_to(now, &key) {
            let primary = Some(other.clone());
            self.outputs
                .push_back(HomeOutput::NotFounded { key, primary });
            return;
        }
        if self.left_in(&key).is_some() || self.founding.len() >= self.config.max_homes {
            self.outputs
                .push_back(HomeOutput::NotFounded { key, primary: None });
            return;
        }
        // Suspected peers are voters too: a peer back from a pause or a
        // partition suspects those it has not heard from yet, and a
        // would-be home of only the peers it still sees may miss every
        // member of a home founded meanwhile, and found a second one
        // beside it. Cut off with a minority, it founds nothing.
        let asked = usize::from(size).max(MIN_FOUNDING_VOTERS);
        let voters = self.closest(&key, asked, Some(now));
        let until = now + self.config.election_timeout;
        let others: Vec<P> = voters.iter().filter(|v| **v != self.me).cloned().collect();
        self.founding.insert(
            key,
            Founding {
                size,
                voters,
                granted: BTreeSet::from([self.me.clone()]),
                refused: BTreeSet::new(),
                hint: None,
                until,
            },
        );
        self.timers.insert((until, key));
        self.ask_for_votes(key, 1, (0, 0), others, None);
        self.count_promises(key, false);
    }

    /// The creator this peer promised term 1 of `key` to, if the promise
    /// still holds.
    fn promised_to(&self, now: Instant, key: &K) -> Option<&P> {
        self.promises
            .get(key)
            .filter(|(_, until)| *until > now)
            .map(|(creator, _)| creator)
    }

    /// Whether a replica of `key`, of which this peer holds no home, from
    /// `from`, of `term` with updates up to `committed` held by a majority,
    /// is one of term 1 from a creator other than the one this peer last
    /// promised it to (lapsed or not) that has committed nothing. A creator
    /// that has committed was promised by a majority of its would-be home
    /// and reached it: that home is joined (should another of its term be
    /// alive, the two settle it when they meet), or the peer closest to
    /// the key would stay out of it for good.
    pub(super) fn promised_another(
        &self,
        key: &K,
        from: &P,
        (term, committed): (u64, u64),
    ) -> bool {
        term == 1
            && committed == 0
            && self
                .promises
                .get(key)
                .is_some_and(|(creator, _)| creator != from)
    }

    /// Ends the creation of `key` here with a majority of promises once
    /// every peer asked has answered (or, `at_deadline`, without those still
    /// silent), or without once a majority is out of reach. Waiting for
    /// all keeps a late refusal from a member of an existing home from
    /// being overtaken by a majority of peers that know nothing of it.
    pub(super) fn count_promises(&mut self, key: K, at_deadline: bool) {
        let Some(f) = self.founding.get(&key) else {
            return;
        };
        let answered = |v: &P| f.granted.contains(v) || f.refused.contains(v);
        let all_answered = f.voters.iter().all(answered);
        if majority(&f.voters, |v| f.granted.contains(v)) && (all_answered || at_deadline) {
            if let Some(f) = self.founding.remove(&key) {
                self.timers.remove(&(f.until, key));
                // The would-be home, this peer first, are its members.
                let mut members = vec![self.me.clone()];
                members.extend(f.voters.into_iter().filter(|v| *v != self.me));
                members.truncate(usize::from(f.size).max(1));
                if self.founded.len() >= self.config.max_homes {
                    self.founded.pop_first();
                }
                self.founded.insert(key, members);
            }
            self.outputs.push_back(HomeOutput::Founded { key });
        } else if !majority(&f.voters, |v| !f.refused.contains(v)) {
            let hint = f.hint.clone();
            self.not_founded(key, hint);
        }
    }

    /// Gives the creation of `key` here up.
    pub(super) fn not_founded(&mut self, key: K, primary: Option<P>) {
        if let Some(f) = self.founding.remove(&key) {
            self.timers.remove(&(f.until, key));
            let primary = primary.filter(|p| *p != self.me);
            self.outputs
                .push_back(HomeOutput::NotFounded { key, primary });
        }
    }

    /// A creator asks for term 1 of `key`, of which this peer holds no
    /// home: promised unless this peer left that home, promised it to
    /// another creator, or creates it itself and is closer.
    fn on_founding_vote(&mut self, now: Instant, from: P, key: K) {
        let closer = (self.closeness)(&key, &from) < (self.closeness)(&key, &self.me);
        let (granted, primary, log_term) = if let Some(left) = self.left_in(&key) {
            // The home exists, or did: no new one.
            (false, None, left)
        } else if let Some(other) = self.promised_to(now, &key).filter(|p| **p != from) {
            (false, Some(other.clone()), 0)
        } else if self.founding.contains_key(&key) && !closer {
            // Creating it here too: the closer creator goes on.
            (false, Some(self.me.clone()), 0)
        } else {
            if !self.room_for_promise(now, &key) {
                // No room to remember a promise: none is made.
                (false, None, 0)
            } else {
                // A closer creator: this one gives way to it.
                self.not_founded(key, Some(from.clone()));
                let until = now + 2 * self.config.election_timeout;
                self.promises.insert(key, (from.clone(), until));
                (true, None, 0)
            }
        };
        let reply = HomeMsg::VoteReply {
            key,
            term: 1,
            granted,
            promised: 1,
            log_term,
            log_seq: 0,
            primary,
        };
        self.send(from, reply, false);
    }

    /// Whether a promise about `key` can be remembered: one is already, or
    /// there is room, made if need be by forgetting the promise that
    /// lapsed longest ago (lapsed ones are kept to refuse replicas, see
    /// [`Homes::promised_another`]).
    fn room_for_promise(&mut self, now: Instant, key: &K) -> bool {
        if self.promises.contains_key(key) || self.promises.len() < self.config.max_homes {
            return true;
        }
        let oldest = self
            .promises
            .iter()
            .filter(|(_, (_, until))| *until <= now)
            .min_by_key(|(_, (_, until))| *until)
            .map(|(k, _)| *k);
        oldest.is_some_and(|k| self.promises.remove(&k).is_some())
    }

    /// An answer to this peer's creation of `key`: a voter that holds a
    /// replica (its log has a term) ends it at once.
    fn on_founding_reply(
        &mut self,
        from: P,
        key: K,
        granted: bool,
        log_term: u64,
        primary: Option<P>,
    ) {
        let Some(f) = self.founding.get_mut(&key) else {
            return;
        };
        if !f.voters.contains(&from) {
            return;
        }
        if granted {
            f.granted.insert(from);
        } else if log_term > 0 {
            self.not_founded(key, primary);
            return;
        } else {
            f.refused.insert(from);
            if primary.is_some() {
                f.hint = primary;
            }
        }
        self.count_promises(key, false);
    }

    /// A backup whose primary is gone campaigns to replace it, the members
    /// in the home's order one after the other (the first live one at once),
    /// and again, later, if no one won.
    pub(super) fn campaign(&mut self, now: Instant, key: K) {
        let me = self.me.clone();
        let stagger = self.config.election_stagger;
        let Some(h) = self.homes.get(&key) else {
            return;
        };
        let live: Vec<P> = h
            .members
            .iter()
            .filter(|m| self.is_live(m))
            .cloned()
            .collect();
        let primary_live = h.primary_present(now, &self.config, |p| self.is_live(p));
        let Some(h) = self.homes.get_mut(&key) else {
            return;
        };
        if h.is_primary() || h.leaving_member(&me) {
            return;
        }
        if primary_live {
            h.campaign_at = None;
            h.candidacy = None;
            return;
        }
        let voters = h.voters(&me);
        if let Some(c) = &mut h.candidacy {
            if now < c.until {
                if now >= c.resend_at {
                    c.resend_at = now + stagger;
                    let term = c.term;
                    let missing: Vec<P> = voters
                        .into_iter()
                        .filter(|v| !c.votes.contains(v))
                        .collect();
                    let last = (h.term, h.seq);
                    let by = c.handed_over_by.clone();
                    self.ask_for_votes(key, term, last, missing, by);
                }
                return;
            }
            // Lost, or split: try again after the others had their turn.
            h.candidacy = None;
            let rank = live.iter().position(|m| *m == me).unwrap_or(live.len());
            let jitter = self
                .rng
                .random_range(0..=stagger.as_millis().min(u128::from(u64::MAX)) as u64);
            let rank = u32::try_from(rank).unwrap_or(u32::MAX).saturating_add(1);
            h.campaign_at =
                Some(now + stagger.saturating_mul(rank) + Duration::from_millis(jitter));
            return;
        }
        let rank = live.iter().position(|m| *m == me).unwrap_or(live.len());
        let rank = u32::try_from(rank).unwrap_or(u32::MAX);
        let at = *h
            .campaign_at
            .get_or_insert(now + stagger.saturating_mul(rank));
        if now < at {
            return;
        }
        h.campaign_at = None;
        // Terms a peer sent may be the highest: no campaign beyond it.
        let Some(term) = h.term.max(h.promised).max(h.campaigned).checked_add(1) else {
            return;
        };
        h.campaigned = term;
        h.candidacy = Some(Candidacy {
            term,
            votes: BTreeSet::from([me]),
            until: now + self.config.election_timeout,
            resend_at: now + stagger,
            handed_over_by: None,
        });
        let last = (h.term, h.seq);
        self.ask_for_votes(key, term, last, voters, None);
        self.count_votes(now, key);
    }

    /// The primary `by` handed this member the role for `term`: it
    /// campaigns for that term with `by`'s vote. It becomes primary only
    /// with a majority, as any candidate: handed over while cut off from
    /// most of the home, it would otherwise be a primary of a term the
    /// other side may elect one of too.
    pub(super) fn campaign_handed_over(&mut self, now: Instant, key: K, term: u64, by: P) {
        let me = self.me.clone();
        let stagger = self.config.election_stagger;
        let timeout = self.config.election_timeout;
        let Some(h) = self.homes.get_mut(&key) else {
            return;
        };
        if h.is_primary() || term <= h.term.max(h.promised) || term <= h.campaigned {
            return;
        }
        h.role = Role::Backup { primary: None };
        h.campaigned = term;
        h.campaign_at = None;
        h.candidacy = Some(Candidacy {
            term,
            votes: BTreeSet::from([me.clone(), by.clone()]),
            until: now + timeout,
            resend_at: now + stagger,
            handed_over_by: Some(by.clone()),
        });
        let voters: Vec<P> = h.voters(&me).into_iter().filter(|v| *v != by).collect();
        let last = (h.term, h.seq);
        self.ask_for_votes(key, term, last, voters, Some(by));
        self.count_votes(now, key);
    }

    fn ask_for_votes(
        &mut self,
        key: K,
        term: u64,
        last: (u64, u64),
        voters: Vec<P>,
        handed_over_by: Option<P>,
    ) {
        let (last_term, last_seq) = last;
        for to in voters {
            let msg = HomeMsg::Vote {
                key,
                term,
                last_term,
                last_seq,
                handed_over_by: handed_over_by.clone(),
            };
            self.send(to, msg, false);
        }
    }

    /// Becomes primary if the candidacy has a majority of both the
    /// committed and the latest members.
    fn count_votes(&mut self, now: Instant, key: K) {
        let Some(h) = self.homes.get_mut(&key) else {
            return;
        };
        let Some(c) = &h.candidacy else {
            return;
        };
        let voted = |m: &P| c.votes.contains(m);
        if !(majority(&h.config, voted) && majority(&h.members, voted)) {
            return;
        }
        h.term = c.term;
        h.seq = 1;
        let previous = c.handed_over_by.clone();
        h.candidacy = None;
        self.become_primary(now, key, previous);
    }

    pub(super) fn on_vote(
        &mut self,
        now: Instant,
        from: P,
        key: K,
        term: u64,
        last: (u64, u64),
        handed_over_by: Option<P>,
    ) {
        if !self.homes.contains_key(&key) {
            if term == 1 && last == (0, 0) && handed_over_by.is_none() {
                self.on_founding_vote(now, from, key);
            } else {
                // No replica here (a member restarted without it): said
                // so, with no log, for a volatile home's candidate.
                let reply = HomeMsg::VoteReply {
                    key,
                    term,
                    granted: false,
                    promised: 0,
                    log_term: 0,
                    log_seq: 0,
                    primary: None,
                };
                self.send(from, reply, false);
            }
            return;
        }
        let live = |p: &P| *p == self.me || self.live.contains(p);
        let Some(h) = self.homes.get_mut(&key) else {
            return;
        };
        // A candidate the primary handed the role to needs no wait for
        // that primary to fall silent.
        let handed_over = handed_over_by.is_some() && h.primary() == handed_over_by.as_ref();
        let primary_live = h.primary() != Some(&from)
            && !handed_over
            && h.primary_present(now, &self.config, live);
        let granted = term > h.term
            && (term > h.promised || (term == h.promised && h.voted_for.as_ref() == Some(&from)))
            && h.candidacy.as_ref().is_none_or(|c| c.term < term)
            && last >= (h.term, h.seq)
            && !primary_live
            && h.has_member(&from);
        if granted {
            h.promised = term;
            h.voted_for = Some(from.clone());
            h.candidacy = None;
            // Give the candidate time to win before campaigning here.
            h.campaign_at = Some(now + self.config.election_timeout);
        }
        let reply = HomeMsg::VoteReply {
            key,
            term,
            granted,
            promised: h.promised,
            log_term: h.term,
            log_seq: h.seq,
            primary: h.primary().filter(|p| primary_live && **p != from).cloned(),
        };
        // A candidate behind this replica cannot have this vote, and this
        // member may be ranked after it: without a primary, campaign soon
        // (after a short random delay, so that equally recent members do
        // not split the vote), for a term above the one asked for, rather
        // than wait for the stale candidates to take their turns.
        let behind = last < (h.term, h.seq);
        let may_campaign = !granted
            && behind
            && !primary_live
            && !h.is_primary()
            && !h.leaving_member(&self.me)
            && h.state.active()
            && h.has_member(&from);
        if may_campaign {
            h.campaigned = h.campaigned.max(term);
            if h.candidacy.as_ref().is_some_and(|c| c.term <= term) {
                h.candidacy = None;
            }
            if h.candidacy.is_none() {
                let window = self.config.election_stagger.as_millis() / 2;
                let window = u64::try_from(window).unwrap_or(u64::MAX);
                let at = now + Duration::from_millis(self.rng.random_range(0..=window));
                h.campaign_at = Some(h.campaign_at.map_or(at, |t| t.min(at)));
            }
        }
        self.send(from, reply, false);
    }

    pub(super) fn on_vote_reply(&mut self, now: Instant, from: P, reply: HomeMsgOf<K, P, S>) {
        let HomeMsg::VoteReply {
            key,
            term,
            granted,
            promised,
            log_term,
            log_seq,
            primary,
        } = reply
        else {
            return;
        };
        let log = (log_term, log_seq);
        if term == 1 && self.founding.contains_key(&key) && !self.homes.contains_key(&key) {
            self.on_founding_reply(from, key, granted, log_term, primary);
            return;
        }
        let Some(h) = self.homes.get_mut(&key) else {
            return;
        };
        // A later candidacy asks for a term no voter has promised yet.
        h.campaigned = h.campaigned.max(promised);
        let Some(c) = &mut h.candidacy else {
            return;
        };
        if c.term != term {
            return;
        }
        // A member without a replica of a volatile state holds nothing
        // this candidate could miss ([`Replicated::volatile`]).
        let empty = log_term == 0 && h.state.volatile();
        if granted || empty {
            // Only members' votes count (`majority` looks members up).
            c.votes.insert(from);
            self.count_votes(now, key);
            return;
        }
        if log > (h.term, h.seq) {
            // A more recent member: not this candidate.
            h.candidacy = None;
            h.campaign_at = Some(now + self.config.election_timeout);
            if let Some(p) = primary.filter(|p| *p != self.me) {
                if log.0 > h.term {
                    // This replica is of an older term: ask the primary
                    // to bring it up to date, or release it.
                    let my_term = h.term;
                    h.role = Role::Backup {
                        primary: Some(p.clone()),
                    };
                    self.send(p, HomeMsg::Nack { key, term: my_term }, false);
                }
            }
        }
    }
}
