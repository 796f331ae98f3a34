//! A cell's membership as replicated state: the super-peers of one cell in
//! the order they joined, at most `peers_per_cell`. It lives on the home of
//! [`CellId::key`] as a [`Replicated`] state of the generic home core,
//! which does the consensus; this type only says what a valid cell is and
//! how it changes. Every super-peer that reads the same record computes
//! the same successor for a failed member ([`CellRecord::successor`]).

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::cell_id::CellId;
use crate::home::Replicated;
use crate::PeerKey;

/// Largest `peers_per_cell` a record accepts (snapshots naming more are
/// refused).
pub const MAX_PEERS_PER_CELL: usize = 64;

/// Most changes one delta may carry.
pub const MAX_CELL_CHANGES: usize = 4 * MAX_PEERS_PER_CELL;

/// A change to a cell's membership.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CellChange<P> {
    /// `0` joined the cell (it goes last in the order).
    Joined(P),
    /// `0` left the cell, or was declared failed.
    Left(P),
}

/// The whole record, for a new backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellSnapshot<P> {
    /// The cell.
    pub cell: CellId,
    /// How many super-peers it may hold.
    pub peers_per_cell: u8,
    /// Its members in join order.
    pub members: Vec<P>,
}

/// What the cell's primary releases once a change is committed: the
/// join or leave is acknowledged to the peer and propagated to the
/// parent cell (seed 001 Listing 3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CellEffect<P> {
    /// `peer` is a member of `cell`.
    Joined {
        /// The cell.
        cell: CellId,
        /// The new member.
        peer: P,
    },
    /// `peer` is no longer a member of `cell`.
    Left {
        /// The cell.
        cell: CellId,
        /// The former member.
        peer: P,
    },
}

/// Why a peer cannot join a cell.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The cell holds `peers_per_cell` members already.
    #[error("cell {cell} is full ({max} super-peers): ask for another cell")]
    CellFull {
        /// The cell.
        cell: CellId,
        /// Its capacity.
        max: usize,
    },
    /// The peer is a member already.
    #[error("the peer is a member of cell {cell} already")]
    AlreadyMember {
        /// The cell.
        cell: CellId,
    },
}

/// The replicated membership of one cell. See the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CellRecord<P> {
    cell: CellId,
    peers_per_cell: u8,
    members: Vec<P>,
    /// Primary: changes not yet taken for replication.
    changes: Vec<CellChange<P>>,
}

impl<P: PeerKey> CellRecord<P> {
    /// An empty cell holding at most `peers_per_cell` super-peers
    /// (clamped to `1..=MAX_PEERS_PER_CELL`).
    pub fn new(cell: CellId, peers_per_cell: u8) -> CellRecord<P> {
        let peers_per_cell = peers_per_cell.clamp(1, MAX_PEERS_PER_CELL as u8);
        CellRecord {
            cell,
            peers_per_cell,
            members: Vec::new(),
            changes: Vec::new(),
        }
    }

    /// The cell.
    pub fn cell(&self) -> &CellId {
        &self.cell
    }

    /// Its members in join order.
    pub fn members(&self) -> &[P] {
        &self.members
    }

    /// How many super-peers it may hold.
    pub fn peers_per_cell(&self) -> usize {
        usize::from(self.peers_per_cell)
    }

    /// Whether it holds `peers_per_cell` members.
    pub fn is_full(&self) -> bool {
        self.members.len() >= self.peers_per_cell()
    }

    /// Primary: `peer` joins (last in the order); the effect to release
    /// once the change is committed.
    pub fn join(&mut self, peer: P) -> Result<CellEffect<P>, JoinError> {
        if self.members.contains(&peer) {
            return Err(JoinError::AlreadyMember {
                cell: self.cell.clone(),
            });
        }
        if self.is_full() {
            return Err(JoinError::CellFull {
                cell: self.cell.clone(),
                max: self.peers_per_cell(),
            });
        }
        self.members.push(peer.clone());
        self.changes.push(CellChange::Joined(peer.clone()));
        Ok(CellEffect::Joined {
            cell: self.cell.clone(),
            peer,
        })
    }

    /// Primary: `peer` leaves (or failed); the effect to release, or
    /// `None` if it was not a member.
    pub fn leave(&mut self, peer: &P) -> Option<CellEffect<P>> {
        let index = self.members.iter().position(|m| m == peer)?;
        self.members.remove(index);
        self.changes.push(CellChange::Left(peer.clone()));
        Some(CellEffect::Left {
            cell: self.cell.clone(),
            peer: peer.clone(),
        })
    }

    /// The member that takes over the frames of `failed`: the first member
    /// in join order that is not `failed` and is `alive`. Every member
    /// reading the same record computes the same one.
    pub fn successor(&self, failed: &P, alive: impl Fn(&P) -> bool) -> Option<&P> {
        successor_in(&self.members, failed, alive)
    }
}

/// The first of `members` (in their order) other than `failed` that is
/// `alive`: the deterministic successor of a failed cell member.
pub fn successor_in<'a, P: PartialEq>(
    members: &'a [P],
    failed: &P,
    alive: impl Fn(&P) -> bool,
) -> Option<&'a P> {
    members.iter().find(|m| *m != failed && alive(m))
}

/// Whether `members` has no duplicate (a small list: quadratic is fine).
fn distinct<P: PartialEq>(members: &[P]) -> bool {
    members
        .iter()
        .enumerate()
        .all(|(i, m)| !members[..i].contains(m))
}

impl<P: PeerKey> Replicated for CellRecord<P> {
    type Snapshot = CellSnapshot<P>;
    type Delta = Vec<CellChange<P>>;
    type Effect = CellEffect<P>;

    /// A cell's record is in memory only: its members renew their places
    /// every `MeshPeerConfig::refresh`, which restores what a restart lost.
    fn volatile(&self) -> bool {
        true
    }

    fn snapshot(&self, _now: Instant) -> CellSnapshot<P> {
        CellSnapshot {
            cell: self.cell.clone(),
            peers_per_cell: self.peers_per_cell,
            members: self.members.clone(),
        }
    }

    fn restore(_now: Instant, snapshot: CellSnapshot<P>) -> Option<Self> {
        let per_cell = usize::from(snapshot.peers_per_cell);
        let valid = (1..=MAX_PEERS_PER_CELL).contains(&per_cell)
            && snapshot.members.len() <= per_cell
            && distinct(&snapshot.members);
        valid.then(|| CellRecord {
            cell: snapshot.cell,
            peers_per_cell: snapshot.peers_per_cell,
            members: snapshot.members,
            changes: Vec::new(),
        })
    }

    fn apply_snapshot(&mut self, now: Instant, snapshot: CellSnapshot<P>) -> bool {
        if snapshot.cell != self.cell {
            return false;
        }
        match CellRecord::restore(now, snapshot) {
            Some(record) => {
                *self = record;
                true
            }
            None => false,
        }
    }

    fn take_delta(&mut self, force: bool) -> Option<Vec<CellChange<P>>> {
        if self.changes.is_empty() && !force {
            return None;
        }
        Some(std::mem::take(&mut self.changes))
    }

    fn apply_delta(&mut self, _now: Instant, delta: Vec<CellChange<P>>) -> bool {
        if delta.len() > MAX_CELL_CHANGES {
            return false;
        }
        // Applied to a copy first: a delta fits whole or not at all (one
        // that does not fit asks the primary for a snapshot).
        let mut members = self.members.clone();
        for change in &delta {
            match change {
                CellChange::Joined(peer)
                    if !members.contains(peer) && members.len() < self.peers_per_cell() =>
                {
                    members.push(peer.clone())
                }
                CellChange::Left(peer) => match members.iter().position(|m| m == peer) {
                    Some(index) => {
                        members.remove(index);
                    }
                    None => return false,
                },
                CellChange::Joined(_) => return false,
            }
        }
        self.members = members;
        true
    }

    fn changes_nothing(delta: &Vec<CellChange<P>>) -> bool {
        delta.is_empty()
    }

    fn clear_primary_state(&mut self) {
        self.changes.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Instant {
        Instant::now()
    }

    #[test]
    fn members_join_in_order_up_to_the_limit() {
        let mut record = CellRecord::<u32>::new(CellId::root(), 2);
        assert!(record.join(5).is_ok());
        assert_eq!(
            record.join(5),
            Err(JoinError::AlreadyMember {
                cell: CellId::root()
            })
        );
        assert!(record.join(3).is_ok());
        assert!(matches!(
            record.join(9),
            Err(JoinError::CellFull { max: 2, .. })
        ));
        assert_eq!(record.members(), [5, 3]);
        // The successor is the first other live member in join order.
        assert_eq!(record.successor(&5, |_| true), Some(&3));
        assert_eq!(record.successor(&3, |_| true), Some(&5));
        assert_eq!(record.successor(&3, |p| *p != 5), None);
        assert!(record.leave(&5).is_some());
        assert!(record.leave(&5).is_none());
        assert_eq!(record.members(), [3]);
    }

    #[test]
    fn a_backup_follows_the_primarys_deltas() {
        let t = now();
        let mut primary = CellRecord::<u32>::new(CellId::root(), 3);
        let mut backup = CellRecord::restore(t, primary.snapshot(t)).unwrap();
        let _ = primary.join(1);
        let _ = primary.join(2);
        let _ = primary.leave(&1);
        let _ = primary.join(4);
        let delta = primary.take_delta(false).unwrap();
        assert!(backup.apply_delta(t, delta));
        assert_eq!(backup.members(), [2, 4]);
        assert_eq!(primary.take_delta(false), None);
        assert_eq!(primary.take_delta(true), Some(Vec::new()));
    }

    #[test]
    fn invalid_snapshots_and_deltas_are_refused() {
        let t = now();
        let cell = CellId::root();
        let bad = [
            CellSnapshot {
                cell: cell.clone(),
                peers_per_cell: 0,
                members: vec![],
            },
            CellSnapshot {
                cell: cell.clone(),
                peers_per_cell: 2,
                members: vec![1u32, 2, 3],
            },
            CellSnapshot {
                cell: cell.clone(),
                peers_per_cell: 3,
                members: vec![1, 1],
            },
            CellSnapshot {
                cell: cell.clone(),
                peers_per_cell: 200,
                members: vec![],
            },
        ];
        for snapshot in bad {
            assert!(
                CellRecord::restore(t, snapshot.clone()).is_none(),
                "{snapshot:?}"
            );
        }
        let mut record = CellRecord::<u32>::new(cell, 2);
        // A snapshot of another cell does not replace this one.
        let other = CellSnapshot {
            cell: "01".parse().unwrap(),
            peers_per_cell: 2,
            members: vec![1],
        };
        assert!(!record.apply_snapshot(t, other));
        // Deltas that do not fit are refused whole.
        assert!(!record.apply_delta(t, vec![CellChange::Left(1)]));
        assert!(!record.apply_delta(t, vec![CellChange::Joined(1), CellChange::Joined(1)]));
        assert!(!record.apply_delta(
            t,
            vec![
                CellChange::Joined(1),
                CellChange::Joined(2),
                CellChange::Joined(3)
            ]
        ));
        assert!(record.members().is_empty());
        assert!(record.apply_delta(t, vec![CellChange::Joined(1), CellChange::Joined(2)]));
        assert_eq!(record.members(), [1, 2]);
    }

    #[test]
    fn snapshot_decodes_with_a_validated_cell_id() {
        let snapshot = CellSnapshot {
            cell: "012".parse::<CellId>().unwrap(),
            peers_per_cell: 2,
            members: vec![7u32],
        };
        let bytes = postcard::to_allocvec(&snapshot).unwrap();
        let back: CellSnapshot<u32> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, snapshot);
        // Corrupt the CellId's first character: '0' → '1'.
        let mut bad = bytes.clone();
        let at = bad.iter().position(|b| *b == b'0').unwrap();
        bad[at] = b'1';
        assert!(postcard::from_bytes::<CellSnapshot<u32>>(&bad).is_err());
        for cut in 0..bytes.len() {
            assert!(postcard::from_bytes::<CellSnapshot<u32>>(&bytes[..cut]).is_err());
        }
    }

    /// The record on the generic home core: three peers keep cell 01's
    /// membership under its key; joins are released once committed, the
    /// backups hold the same order, and a new primary after the first
    /// one's crash still has it.
    #[test]
    fn the_record_lives_on_a_home() {
        use std::collections::BTreeMap;
        use std::time::Duration;

        use crate::home::{Closeness, HomeConfig, HomeOutput, Homes};

        type CellHomes = Homes<[u8; 32], u32, CellRecord<u32>>;
        let key = "01".parse::<CellId>().unwrap().key();
        let mut now = Instant::now();
        let mut homes: BTreeMap<u32, CellHomes> = (0..3u32)
            .map(|id| {
                let closeness: Closeness<[u8; 32], u32> = Box::new(|_key, p| u128::from(*p));
                (
                    id,
                    Homes::new(id, HomeConfig::default(), closeness, u64::from(id)),
                )
            })
            .collect();
        let view = |homes: &mut BTreeMap<u32, CellHomes>, now: Instant| {
            let live: Vec<u32> = homes.keys().copied().collect();
            for (id, h) in homes.iter_mut() {
                h.set_members(now, live.iter().copied().filter(|p| p != id));
            }
        };
        // Moves messages at once and jumps to timers for `for_ms`.
        let run = |homes: &mut BTreeMap<u32, CellHomes>,
                   now: &mut Instant,
                   for_ms: u64,
                   released: &mut Vec<CellEffect<u32>>| {
            let end = *now + Duration::from_millis(for_ms);
            loop {
                let mut queue = Vec::new();
                for (id, h) in homes.iter_mut() {
                    while let Some(out) = h.poll() {
                        match out {
                            HomeOutput::Send { to, msg, .. } => queue.push((*id, to, msg)),
                            HomeOutput::Released { effects, .. } => released.extend(effects),
                            _ => {}
                        }
                    }
                }
                if !queue.is_empty() {
                    for (from, to, msg) in queue {
                        if let Some(h) = homes.get_mut(&to) {
                            h.handle(*now, from, msg);
                        }
                    }
                    continue;
                }
                match homes.values().filter_map(|h| h.poll_timeout()).min() {
                    Some(at) if at <= end => {
                        *now = (*now).max(at);
                        for h in homes.values_mut() {
                            h.handle_timeout(*now);
                        }
                    }
                    _ => break,
                }
            }
            *now = end;
        };
        let mut released = Vec::new();
        view(&mut homes, now);
        let record = CellRecord::new("01".parse().unwrap(), 2);
        homes.get_mut(&0).unwrap().create(now, key, record, 3);
        run(&mut homes, &mut now, 500, &mut released);
        let mut effects = Vec::new();
        for peer in [7, 8] {
            let home = homes.get_mut(&0).unwrap().get_mut(&key).unwrap();
            effects.push(home.state_mut().join(peer).unwrap());
        }
        homes
            .get_mut(&0)
            .unwrap()
            .propose(now, key, effects)
            .unwrap();
        run(&mut homes, &mut now, 500, &mut released);
        assert_eq!(released.len(), 2, "{released:?}");
        for h in homes.values() {
            assert_eq!(h.get(&key).unwrap().state().members(), [7, 8]);
        }
        // The primary crashes: a backup takes the role with the record.
        homes.remove(&0);
        view(&mut homes, now);
        run(&mut homes, &mut now, 5_000, &mut released);
        let primary = homes
            .values()
            .find(|h| h.get(&key).is_some_and(|home| home.is_primary()))
            .expect("a new primary");
        assert_eq!(primary.get(&key).unwrap().state().members(), [7, 8]);
    }
}
