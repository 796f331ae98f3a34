//! Hot objects (P³'s second cache level): a partition's primary counts the
//! reads it serves per object; an object read more than a threshold per
//! second is copied to a few more peers beyond its home, which answer
//! cached reads of it, and readers are told where those copies are. The
//! copies are refreshed every second while the object stays hot (new
//! holders replace those that left) and lapse on their own once it cools.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::ObjectKey;

/// When an object counts as hot, and what is done about it.
#[derive(Clone, Debug)]
pub struct HotConfig {
    /// Reads per second (served by the primary) above which an object is
    /// hot.
    pub reads_per_s: u32,
    /// Peers beyond the home that get a copy of a hot object.
    pub copies: usize,
    /// How long a copy answers reads after its last refresh, and an object
    /// stays hot after its rate last passed the threshold.
    pub hold_for: Duration,
    /// Objects whose reads are counted per second; more are not counted.
    pub max_tracked: usize,
    /// Hot objects at once.
    pub max_hot: usize,
}

impl Default for HotConfig {
    fn default() -> Self {
        HotConfig {
            reads_per_s: 200,
            copies: 3,
            hold_for: Duration::from_secs(5),
            max_tracked: 4096,
            max_hot: 64,
        }
    }
}

/// The read counts and hot objects of one peer's primaries.
pub(super) struct HotTracker<P> {
    config: HotConfig,
    window_end: Option<Instant>,
    reads: BTreeMap<ObjectKey, u32>,
    /// Hot objects: their holders, and until when they stay hot.
    hot: BTreeMap<ObjectKey, (Vec<P>, Instant)>,
    /// Readers already told where a hot object's copies are, this window.
    announced: BTreeSet<(ObjectKey, P)>,
}

impl<P: Clone + Ord> HotTracker<P> {
    pub(super) fn new(config: HotConfig) -> Self {
        HotTracker {
            config,
            window_end: None,
            reads: BTreeMap::new(),
            hot: BTreeMap::new(),
            announced: BTreeSet::new(),
        }
    }

    pub(super) fn config(&self) -> &HotConfig {
        &self.config
    }

    /// A read of `key` served by its primary here.
    pub(super) fn count(&mut self, now: Instant, key: &ObjectKey) {
        if self.window_end.is_none() {
            self.window_end = Some(now + Duration::from_secs(1));
        }
        if let Some(n) = self.reads.get_mut(key) {
            *n = n.saturating_add(1);
        } else if self.reads.len() < self.config.max_tracked {
            self.reads.insert(key.clone(), 1);
        }
    }

    /// When the current counting window ends (nothing while idle).
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.window_end
    }

    /// Ends the window if it is over: the objects hot now (to copy or
    /// refresh), whether newly hot or still.
    pub(super) fn tick(&mut self, now: Instant) -> Vec<ObjectKey> {
        let Some(end) = self.window_end else {
            return Vec::new();
        };
        if now < end {
            return Vec::new();
        }
        let reads = std::mem::take(&mut self.reads);
        self.announced.clear();
        let until = now + self.config.hold_for;
        for (key, n) in reads {
            if n < self.config.reads_per_s {
                continue;
            }
            if let Some(hot) = self.hot.get_mut(&key) {
                hot.1 = until;
            } else if self.hot.len() < self.config.max_hot {
                self.hot.insert(key, (Vec::new(), until));
            }
        }
        self.hot.retain(|_, (_, until)| *until > now);
        self.window_end = (!self.hot.is_empty()).then(|| now + Duration::from_secs(1));
        self.hot.keys().cloned().collect()
    }

    /// The hot objects and who holds their copies.
    pub(super) fn hot(&self) -> impl Iterator<Item = (&ObjectKey, &[P])> {
        self.hot.iter().map(|(k, (h, _))| (k, h.as_slice()))
    }

    pub(super) fn set_holders(&mut self, key: &ObjectKey, holders: Vec<P>) {
        if let Some(hot) = self.hot.get_mut(key) {
            hot.0 = holders;
        }
    }

    /// The holders to tell `reader` about, once per window.
    pub(super) fn announce(&mut self, key: &ObjectKey, reader: &P) -> Option<Vec<P>> {
        let holders = self
            .hot
            .get(key)
            .map(|(h, _)| h)
            .filter(|h| !h.is_empty())?;
        let first = self.announced.insert((key.clone(), reader.clone()));
        first.then(|| holders.clone())
    }

    /// Forgets the hot objects of a partition this peer no longer leads.
    pub(super) fn forget(&mut self, partition: super::PartitionId) {
        self.hot.retain(|k, _| k.partition() != partition);
        self.reads.retain(|k, _| k.partition() != partition);
    }
}
