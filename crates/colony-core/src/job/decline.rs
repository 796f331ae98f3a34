//! Peers that refuse a job tell its primary why, so its submitter learns
//! which peers refused and why instead of wondering why they stay idle.
//!
//! A worker that receives the advert of a job it will not run — it has no
//! such application, does not run the guest's code, or accepts jobs only
//! from other submitters — sends the advertising primary one
//! [`JobMsg::Declined`]. A module still being fetched is no refusal
//! ([`AppError::ModuleMissing`]): the fetch ends with the job run, or with
//! the advert seen again and then refused.
//!
//! Everything is bounded: a worker remembers the last
//! [`MAX_DECLINES_REMEMBERED`] (job, primary) pairs it declined, so
//! repeated adverts are not answered again (one that comes after it forgot
//! may be, and a new primary after a takeover is told anew); a primary
//! lists at most [`MAX_DECLINES_LISTED`] peers per job and only counts the
//! others; a reason is cut to [`MAX_REASON_CHARS`] characters.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::divisible::AppError;
use crate::PeerKey;

use super::*;

/// Longest reason kept, in characters.
pub(super) const MAX_REASON_CHARS: usize = 200;
/// (job, primary) pairs a worker remembers having declined.
pub(super) const MAX_DECLINES_REMEMBERED: usize = 256;
/// Peers a primary lists as refusing one job.
pub(super) const MAX_DECLINES_LISTED: usize = 64;

/// Why a peer with an `--accept-jobs-from` list refuses others' jobs.
const NOT_THE_SUBMITTERS: &str = "this peer accepts jobs only from the peers its operator listed \
     (colony peer --accept-jobs-from), and not from this job's submitter";

/// The refusals a job's primary heard: peer → why.
///
/// Kept beside the record, not replicated: a new primary (after a
/// takeover or a hand-over) starts with none and hears again only from
/// the workers its own adverts reach. Losing them loses no work.
#[derive(Clone, Debug)]
pub(super) struct Declines<P> {
    listed: BTreeMap<P, String>,
    /// Refusals past the listed peers: counted, not kept (a peer that
    /// declines again after it forgot may count twice).
    unlisted: u64,
}

impl<P> Default for Declines<P> {
    fn default() -> Self {
        Declines {
            listed: BTreeMap::new(),
            unlisted: 0,
        }
    }
}

impl<P: PeerKey> Declines<P> {
    /// Records that `peer` refused the job, and why (its latest reason).
    pub(super) fn record(&mut self, peer: P, reason: String) {
        if let Some(known) = self.listed.get_mut(&peer) {
            *known = reason;
        } else if self.listed.len() < MAX_DECLINES_LISTED {
            self.listed.insert(peer, reason);
        } else {
            self.unlisted = self.unlisted.saturating_add(1);
        }
    }

    /// What the job's view shows of them: `None` if nobody refused.
    pub(super) fn view(&self) -> Option<Box<Declined<P>>> {
        if self.listed.is_empty() && self.unlisted == 0 {
            return None;
        }
        Some(Box::new(Declined {
            peers: self
                .listed
                .iter()
                .map(|(p, r)| (p.clone(), r.clone()))
                .collect(),
            unlisted: self.unlisted,
        }))
    }

    /// Forgets them all (this peer is no longer the job's primary).
    pub(super) fn clear(&mut self) {
        self.listed.clear();
        self.unlisted = 0;
    }
}

/// The (job, primary) pairs this worker declined, oldest first.
pub(super) struct DeclinedJobs<P> {
    order: VecDeque<(JobId, P)>,
    set: BTreeSet<(JobId, P)>,
}

impl<P> Default for DeclinedJobs<P> {
    fn default() -> Self {
        DeclinedJobs {
            order: VecDeque::new(),
            set: BTreeSet::new(),
        }
    }
}

impl<P: PeerKey> DeclinedJobs<P> {
    /// Remembers `job` declined to `primary`; false if it already was.
    /// The oldest pair is forgotten past [`MAX_DECLINES_REMEMBERED`].
    fn insert(&mut self, job: JobId, primary: P) -> bool {
        let key = (job, primary);
        if self.set.contains(&key) {
            return false;
        }
        if self.order.len() >= MAX_DECLINES_REMEMBERED {
            if let Some(oldest) = self.order.pop_front() {
                self.set.remove(&oldest);
            }
        }
        self.set.insert(key.clone());
        self.order.push_back(key);
        true
    }
}

/// `reason` as a primary keeps and shows it: control characters (a
/// hostile peer's terminal escapes) replaced by spaces, cut to
/// [`MAX_REASON_CHARS`] characters.
pub(super) fn clean_reason(reason: &str) -> String {
    let mut out: String = reason
        .chars()
        .take(MAX_REASON_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if reason.chars().nth(MAX_REASON_CHARS).is_some() {
        out.pop();
        out.push('…');
    }
    out
}

impl<P: PeerKey> Jobs<P> {
    /// Whether this peer will not work on the advertised `job` of `app`
    /// submitted by `submitter`: it cannot run `app` (a module still to
    /// fetch aside), or does not work for `submitter`. A terminal refusal
    /// is told to the job's `primary`, once.
    pub(super) fn refuses_advert(
        &mut self,
        job: JobId,
        app: &str,
        primary: &P,
        submitter: &P,
    ) -> bool {
        let reason = match self.registry.get(app) {
            Ok(_) if self.works_for(submitter) => return false,
            Ok(_) => NOT_THE_SUBMITTERS.to_string(),
            Err(AppError::ModuleMissing(_)) => return true,
            Err(error) => error.to_string(),
        };
        self.decline(job, primary.clone(), &reason);
        true
    }

    /// Tells `primary` once that this peer will not work on `job`, and why.
    pub(super) fn decline(&mut self, job: JobId, primary: P, reason: &str) {
        if primary == self.me || !self.declined_jobs.insert(job, primary.clone()) {
            return;
        }
        let reason = clean_reason(reason);
        self.send(primary, JobMsg::Declined { job, reason }, false);
    }

    /// `from` will not work on `job`: listed in the job's view if this
    /// peer is its primary and the job still runs; ignored otherwise.
    pub(super) fn on_declined(&mut self, from: P, job: JobId, reason: &str) {
        let Some(h) = self.homes.get_mut(&job) else {
            return;
        };
        if !h.is_primary() || h.record.state != JobState::Running {
            return;
        }
        h.declines.record(from, clean_reason(reason));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_cut_and_lose_control_characters() {
        assert_eq!(clean_reason("no\x1b[31m app\n"), "no [31m app ");
        let long = "x".repeat(MAX_REASON_CHARS + 50);
        let cut = clean_reason(&long);
        assert_eq!(cut.chars().count(), MAX_REASON_CHARS);
        assert!(cut.ends_with('…'));
        let exact = "é".repeat(MAX_REASON_CHARS);
        assert_eq!(clean_reason(&exact), exact);
    }

    #[test]
    fn the_lists_are_bounded() {
        let mut declines = Declines::default();
        for peer in 0..(MAX_DECLINES_LISTED as u32 + 10) {
            declines.record(peer, format!("no {peer}"));
        }
        declines.record(3, "changed".into());
        let view = declines.view().expect("refusals");
        assert_eq!(view.peers.len(), MAX_DECLINES_LISTED);
        assert_eq!(view.unlisted, 10);
        assert!(view.peers.contains(&(3, "changed".to_string())));
        declines.clear();
        assert_eq!(declines.view(), None);

        let mut declined = DeclinedJobs::default();
        assert!(declined.insert(JobId([0; 16]), 1u32));
        assert!(!declined.insert(JobId([0; 16]), 1));
        assert!(declined.insert(JobId([0; 16]), 2), "a new primary is told");
        for i in 1..MAX_DECLINES_REMEMBERED {
            let mut id = [0; 16];
            id[..8].copy_from_slice(&(i as u64).to_be_bytes());
            declined.insert(JobId(id), 1);
        }
        assert_eq!(declined.order.len(), MAX_DECLINES_REMEMBERED);
        assert!(
            declined.insert(JobId([0; 16]), 1),
            "the oldest is forgotten"
        );
    }
}
