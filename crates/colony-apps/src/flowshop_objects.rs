//! The flow-shop master and slaves of seed 000 §6.2 as distributed objects:
//! the deployment of Fig. 5, where only the master is protected by the
//! middleware (`pml` on its virtual node) and the slaves have no fault
//! tolerance at all (`none`), because the master re-dispatches the work of
//! a lost slave itself.
//!
//! - The [`FlowShopMaster`] holds the instance, the best schedule found
//!   (its makespan is the upper bound every slave prunes with), the pool of
//!   open subproblems, and which slave holds which piece, as last reported.
//! - A [`FlowShopSlave`] is pumped by a driver with short
//!   [`SlaveRequest::Work`] calls. It expands a bounded number of nodes of
//!   the piece it holds per call; when it holds none it asks the master
//!   for one. It reports to the master asynchronously, one report in
//!   flight at a time (so they arrive in order): better schedules, nodes
//!   expanded, finished pieces, pieces split off for hungry slaves, and the
//!   state of the piece it still holds. A report is numbered; the master
//!   answers a repeat with its first answer, so a report retried after a
//!   failed call changes nothing twice.
//! - When a slave is lost, the driver tells the master
//!   ([`MasterRequest::SlaveLost`]): the piece it held, as of its last
//!   report, goes back to the pool, and the slave is retired (any later
//!   report of it is told so). Nothing of the search is lost: the answer is
//!   still the optimum.
//!
//! The search itself is the divisible flow-shop unit of
//! [`crate::flowshop`]: a piece is a [`FlowShop`] unit in its guest
//! encoding, expanded by [`Divisible::step`] and split by
//! [`Divisible::divide`]. Both objects are piecewise deterministic: no
//! clock, no randomness, bounded work per message.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use colony_core::object::{
    decode_reply, ActiveObject, CallError, CallId, Guid, ObjectContext, Ref,
};
use colony_guest::{Divisible, Monotone, SharedVar, Step, StepContext};
use serde::{Deserialize, Serialize};

use crate::flowshop::{self, taillard, FlowShop, Instance, SHARED_MAKESPAN};

/// The most nodes one [`SlaveRequest::Work`] call expands: the slave serves
/// nothing else while it works, and a call must end well within its
/// deadline.
pub const MAX_NODES_PER_CALL: u32 = 20_000;

/// The most pieces a slave splits off in one work call.
pub const MAX_SPLITS_PER_CALL: u32 = 4;

/// The most pieces one report carries.
pub const MAX_PIECES_PER_REPORT: usize = 16;

/// The most open pieces the master keeps; a report that would pass it is
/// refused (the slave keeps its work and reports it again later).
pub const MAX_POOL: usize = 100_000;

/// The most slaves the master tracks.
pub const MAX_SLAVES: usize = 4_096;

/// Work calls a slave serves between two reports when it has nothing
/// else to say: how often it hears of a better bound and of hungry slaves.
pub const REPORT_EVERY_CALLS: u32 = 4;

/// A piece of the search: an open subproblem, as a flow-shop unit in the
/// guest encoding, numbered by the master.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    /// Its number, unique in the run.
    pub id: u64,
    /// The [`FlowShop`] unit, encoded.
    pub state: Vec<u8>,
}

/// A schedule: its makespan and its job order (jobs from 0).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// When the last job leaves the last machine.
    pub makespan: u32,
    /// The job order, jobs numbered from 0.
    pub permutation: Vec<u16>,
}

/// What the master is created from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterParams {
    /// Taillard's instance (`ta001` … `ta120`).
    pub instance: String,
}

/// A slave's report: what changed since its previous one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaveReport {
    /// The slave.
    pub slave: Guid,
    /// Its number among the slave's reports, from 1; a repeat is answered
    /// as the first time.
    pub seq: u64,
    /// A better schedule it found, if any.
    pub best: Option<Schedule>,
    /// Nodes expanded since its previous report.
    pub nodes: u64,
    /// The piece it finished, if any.
    pub finished: Option<u64>,
    /// Pieces it split off its own, for the pool.
    pub split_off: Vec<Vec<u8>>,
    /// The piece it still holds, as it stands now (after the splits).
    pub holding: Option<Piece>,
    /// Whether it holds nothing and wants a piece.
    pub want: bool,
}

impl SlaveReport {
    /// Report `seq` of `slave`, saying nothing yet.
    pub fn new(slave: Guid, seq: u64) -> SlaveReport {
        SlaveReport {
            slave,
            seq,
            best: None,
            nodes: 0,
            finished: None,
            split_off: Vec::new(),
            holding: None,
            want: false,
        }
    }
}

/// What the master is asked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MasterRequest {
    /// A slave's report (sent by the slave itself).
    Report(SlaveReport),
    /// The slave is lost (sent by the driver): its piece goes back to the
    /// pool, and it is retired.
    SlaveLost {
        /// The slave.
        slave: Guid,
    },
    /// Where the search stands.
    Status,
}

/// The master's answer to a report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportAnswer {
    /// The best makespan known: prune with it.
    pub bound: u32,
    /// A piece for the slave, if it wanted one and the pool had one.
    pub work: Option<Piece>,
    /// Slaves waiting for work: split some off for them.
    pub hungry: u32,
    /// The search is over: every piece is finished.
    pub over: bool,
    /// This slave was declared lost: it must stop.
    pub retired: bool,
}

/// Where the search stands, as the master knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterStatus {
    /// The instance.
    pub instance: String,
    /// The best schedule found (NEH's to start with).
    pub best: Option<Schedule>,
    /// Whether every piece is finished: the best makespan is optimal.
    pub over: bool,
    /// Pieces waiting in the pool.
    pub pool: u64,
    /// Pieces held by slaves.
    pub held: u64,
    /// Pieces finished.
    pub pieces_done: u64,
    /// Pieces split off by slaves.
    pub pieces_split: u64,
    /// Pieces put back into the pool because their slave was lost.
    pub pieces_returned: u64,
    /// Nodes the slaves reported expanding.
    pub nodes: u64,
    /// Reports served (repeats not counted).
    pub reports: u64,
    /// Slaves that reported at least once.
    pub slaves: u64,
    /// Slaves declared lost.
    pub lost_slaves: u64,
}

/// What the master answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MasterReply {
    /// To [`MasterRequest::Report`].
    Report(ReportAnswer),
    /// To [`MasterRequest::SlaveLost`]: whether it held a piece (now back
    /// in the pool).
    SlaveLost {
        /// Whether a piece went back to the pool.
        returned: bool,
    },
    /// To [`MasterRequest::Status`].
    Status(MasterStatus),
}

/// What the master knows of one slave.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct SlaveRecord {
    /// Its last report's number.
    last_seq: u64,
    /// The answer to it, for a repeat.
    last_answer: Option<ReportAnswer>,
    /// The piece it holds, as of its last report.
    holding: Option<Piece>,
    /// Declared lost.
    retired: bool,
}

/// The master of the flow-shop search. See the module docs.
#[derive(Serialize, Deserialize)]
pub struct FlowShopMaster {
    instance_name: String,
    best: Schedule,
    pool: VecDeque<Piece>,
    next_piece: u64,
    slaves: BTreeMap<Guid, SlaveRecord>,
    hungry: BTreeSet<Guid>,
    status: MasterStatus,
    /// Regenerated from the name where the object runs; never serialised.
    #[serde(skip)]
    instance: Option<Instance>,
}

/// The unit encoded in `state`, if it is a search of `instance`.
fn decode_unit(state: &[u8], instance: &Instance) -> Result<FlowShop, String> {
    let unit: FlowShop =
        colony_guest::codec::decode(state).map_err(|e| format!("a piece does not decode: {e}"))?;
    unit.validate()?;
    if unit.instance() != instance {
        return Err(format!(
            "a piece of another instance than {}",
            instance.name()
        ));
    }
    Ok(unit)
}

impl FlowShopMaster {
    fn instance(&mut self) -> Result<&Instance, String> {
        if self.instance.is_none() {
            self.instance = Some(flowshop::instance(&self.instance_name)?);
        }
        self.instance
            .as_ref()
            .ok_or_else(|| "no instance".to_string())
    }

    fn held(&self) -> u64 {
        self.slaves.values().filter(|s| s.holding.is_some()).count() as u64
    }

    fn over(&self) -> bool {
        self.pool.is_empty() && self.slaves.values().all(|s| s.holding.is_none())
    }

    fn status(&self) -> MasterStatus {
        MasterStatus {
            instance: self.instance_name.clone(),
            best: Some(self.best.clone()),
            over: self.over(),
            pool: self.pool.len() as u64,
            held: self.held(),
            slaves: self.slaves.len() as u64,
            ..self.status.clone()
        }
    }

    fn piece(&mut self, state: Vec<u8>) -> Piece {
        self.next_piece += 1;
        Piece {
            id: self.next_piece,
            state,
        }
    }

    /// Puts `slave`'s piece back into the pool; whether it had one.
    fn return_piece(&mut self, slave: &Guid) -> bool {
        let Some(piece) = self.slaves.get_mut(slave).and_then(|s| s.holding.take()) else {
            return false;
        };
        self.pool.push_back(piece);
        self.status.pieces_returned += 1;
        true
    }

    fn report(&mut self, report: SlaveReport) -> Result<ReportAnswer, String> {
        if report.split_off.len() > MAX_PIECES_PER_REPORT {
            return Err(format!(
                "{} pieces in one report: at most {MAX_PIECES_PER_REPORT}",
                report.split_off.len()
            ));
        }
        if !self.slaves.contains_key(&report.slave) && self.slaves.len() >= MAX_SLAVES {
            return Err(format!("the master tracks at most {MAX_SLAVES} slaves"));
        }
        let (retired, last_seq, last_answer) = match self.slaves.get(&report.slave) {
            Some(record) => (record.retired, record.last_seq, record.last_answer.clone()),
            None => (false, 0, None),
        };
        if retired {
            // Its work is back in the pool already; what it found since
            // is still welcome below, its pieces are not needed.
            let answer = ReportAnswer {
                bound: self.best.makespan,
                work: None,
                hungry: 0,
                over: self.over(),
                retired: true,
            };
            self.accept_best(report.best.as_ref());
            return Ok(answer);
        }
        if report.seq == last_seq {
            if let Some(answer) = last_answer {
                return Ok(answer);
            }
        }
        // Check everything before changing anything: a bad report changes
        // nothing.
        let instance = self.instance()?.clone();
        for state in &report.split_off {
            decode_unit(state, &instance)?;
        }
        if let Some(piece) = &report.holding {
            decode_unit(&piece.state, &instance)?;
        }
        if self.pool.len() + report.split_off.len() > MAX_POOL {
            return Err(format!("the pool holds at most {MAX_POOL} pieces"));
        }
        if let Some(best) = &report.best {
            if !instance.is_permutation(&best.permutation)
                || instance.makespan(&best.permutation) != best.makespan
            {
                return Err(format!(
                    "a schedule claimed to have makespan {} does not",
                    best.makespan
                ));
            }
        }
        if report.seq < last_seq {
            // The slave restarted and lost what it held: back to the pool.
            self.return_piece(&report.slave);
        }
        self.accept_best(report.best.as_ref());
        self.status.reports += 1;
        self.status.nodes = self.status.nodes.saturating_add(report.nodes);
        for state in report.split_off {
            let piece = self.piece(state);
            self.pool.push_back(piece);
            self.status.pieces_split += 1;
        }
        let record = self.slaves.entry(report.slave).or_default();
        record.last_seq = report.seq;
        if let (Some(finished), Some(held)) = (report.finished, &record.holding) {
            if held.id == finished {
                record.holding = None;
                self.status.pieces_done += 1;
            }
        }
        if let (Some(now), Some(held)) = (report.holding, &mut record.holding) {
            if held.id == now.id {
                held.state = now.state;
            }
        }
        let mut work = None;
        if report.want {
            // A slave that wants work holds none: if we think it does, it
            // lost it (restarted), and it goes back to the pool.
            self.return_piece(&report.slave);
            work = self.pool.pop_front();
            if work.is_some() {
                self.hungry.remove(&report.slave);
            } else {
                self.hungry.insert(report.slave);
            }
            if let Some(record) = self.slaves.get_mut(&report.slave) {
                record.holding = work.clone();
            }
        }
        if !self.pool.is_empty() {
            // Pieces wait: nobody needs to split for now.
            self.hungry.clear();
        }
        let answer = ReportAnswer {
            bound: self.best.makespan,
            work,
            hungry: self.hungry.len() as u32,
            over: self.over(),
            retired: false,
        };
        if let Some(record) = self.slaves.get_mut(&report.slave) {
            record.last_answer = Some(answer.clone());
        }
        Ok(answer)
    }

    /// Takes `best` if it is a schedule of the instance better than ours.
    fn accept_best(&mut self, best: Option<&Schedule>) {
        let Some(best) = best else { return };
        let Ok(instance) = self.instance() else {
            return;
        };
        let valid = instance.is_permutation(&best.permutation)
            && instance.makespan(&best.permutation) == best.makespan;
        if valid && best.makespan < self.best.makespan {
            self.best = best.clone();
        }
    }

    fn slave_lost(&mut self, slave: Guid) -> MasterReply {
        let returned = self.return_piece(&slave);
        self.hungry.remove(&slave);
        let record = self.slaves.entry(slave).or_default();
        if !record.retired {
            record.retired = true;
            record.last_answer = None;
            self.status.lost_slaves += 1;
        }
        MasterReply::SlaveLost { returned }
    }
}

impl ActiveObject for FlowShopMaster {
    type Params = MasterParams;
    type Request = MasterRequest;
    type Reply = MasterReply;

    const TYPE: &'static str = "flowshop-master";

    /// The whole search as one piece, with NEH's schedule as the first
    /// bound.
    fn create(_ctx: &mut ObjectContext<'_>, params: MasterParams) -> Result<Self, String> {
        let name = taillard::name(taillard::parse_name(&params.instance)?);
        let instance = flowshop::instance(&name)?;
        let (makespan, permutation) = flowshop::neh(&instance);
        let root = colony_guest::codec::encode(&FlowShop::for_instance(instance.clone()));
        let mut master = FlowShopMaster {
            instance_name: name.clone(),
            best: Schedule {
                makespan,
                permutation,
            },
            pool: VecDeque::new(),
            next_piece: 0,
            slaves: BTreeMap::new(),
            hungry: BTreeSet::new(),
            status: MasterStatus {
                instance: name,
                ..MasterStatus::default()
            },
            instance: Some(instance),
        };
        let root = master.piece(root);
        master.pool.push_back(root);
        Ok(master)
    }

    fn handle(
        &mut self,
        _ctx: &mut ObjectContext<'_>,
        request: MasterRequest,
    ) -> Result<MasterReply, String> {
        match request {
            MasterRequest::Report(report) => self.report(report).map(MasterReply::Report),
            MasterRequest::SlaveLost { slave } => Ok(self.slave_lost(slave)),
            MasterRequest::Status => Ok(MasterReply::Status(self.status())),
        }
    }
}

/// What a slave is created from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaveParams {
    /// The master it works for.
    pub master: Ref<FlowShopMaster>,
    /// Its number among the run's slaves (for reports).
    pub index: u32,
}

/// What a slave is asked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SlaveRequest {
    /// Expand up to this many nodes (1 to [`MAX_NODES_PER_CALL`]) of the
    /// piece held, or ask the master for one.
    Work {
        /// Nodes to expand.
        nodes: u32,
    },
    /// Where the slave stands, changing nothing.
    Progress,
}

/// Where a slave stands.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaveProgress {
    /// Its number.
    pub index: u32,
    /// Whether it holds a piece.
    pub holding: bool,
    /// Whether a report of it awaits the master's answer.
    pub reporting: bool,
    /// The bound it prunes with.
    pub bound: u32,
    /// Nodes it expanded.
    pub nodes: u64,
    /// Pieces it finished.
    pub pieces_done: u64,
    /// Pieces it split off.
    pub pieces_split: u64,
    /// Work calls served.
    pub work_calls: u64,
    /// Reports whose call failed and were sent again.
    pub reports_retried: u64,
    /// The master says the search is over.
    pub over: bool,
    /// The master declared it lost: it does nothing more.
    pub retired: bool,
    /// Why it stopped working, if something went wrong.
    pub error: Option<String>,
}

/// The unit a slave explores, with the number of its piece.
#[derive(Serialize, Deserialize)]
struct Held {
    id: u64,
    /// The unit, in the guest encoding (serialised as bytes).
    #[serde(with = "unit_bytes")]
    unit: FlowShop,
}

/// A [`FlowShop`] unit in an object's state: its guest encoding, checked
/// on the way back.
mod unit_bytes {
    use colony_guest::Divisible;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::flowshop::FlowShop;

    pub(super) fn serialize<S: Serializer>(unit: &FlowShop, s: S) -> Result<S::Ok, S::Error> {
        colony_guest::codec::encode(unit).serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<FlowShop, D::Error> {
        let bytes = Vec::<u8>::deserialize(d)?;
        let unit: FlowShop =
            colony_guest::codec::decode(&bytes).map_err(serde::de::Error::custom)?;
        unit.validate().map_err(serde::de::Error::custom)?;
        Ok(unit)
    }
}

/// A slave of the flow-shop search. See the module docs.
#[derive(Serialize, Deserialize)]
pub struct FlowShopSlave {
    master: Ref<FlowShopMaster>,
    held: Option<Held>,
    /// The report awaiting the master's answer.
    in_flight: Option<(CallId, SlaveReport)>,
    /// A report whose call failed, to send again as it was.
    retry: Option<SlaveReport>,
    seq: u64,
    /// What the next report carries.
    unreported_best: Option<Schedule>,
    unreported_nodes: u64,
    finished: Option<u64>,
    split_off: Vec<Vec<u8>>,
    calls_since_report: u32,
    hungry: u32,
    progress: SlaveProgress,
}

impl FlowShopSlave {
    fn work(&mut self, ctx: &mut ObjectContext<'_>, nodes: u32) -> Result<SlaveProgress, String> {
        if !(1..=MAX_NODES_PER_CALL).contains(&nodes) {
            return Err(format!(
                "nodes must be 1..={MAX_NODES_PER_CALL}, not {nodes}"
            ));
        }
        self.progress.work_calls += 1;
        if self.progress.retired || self.progress.over || self.progress.error.is_some() {
            return Ok(self.progress.clone());
        }
        self.calls_since_report = self.calls_since_report.saturating_add(1);
        self.expand(nodes);
        self.split();
        self.send_report(ctx);
        Ok(self.progress.clone())
    }

    /// Expands up to `nodes` nodes of the piece held.
    fn expand(&mut self, nodes: u32) {
        let Some(held) = &mut self.held else { return };
        let bound = self.progress.bound;
        let shared = vec![SharedVar {
            name: SHARED_MAKESPAN.to_string(),
            kind: Monotone::Min,
            value: i64::from(bound),
        }];
        let mut step_ctx = StepContext::new(u64::from(nodes), shared);
        let step = held.unit.step(&mut step_ctx);
        let expanded = step_ctx.work();
        self.progress.nodes += expanded;
        self.unreported_nodes += expanded;
        let best = held.unit.best();
        if let Some(makespan) = best.makespan.filter(|&m| m < self.progress.bound) {
            self.progress.bound = makespan;
            self.unreported_best = Some(Schedule {
                makespan,
                permutation: best.permutation.clone(),
            });
        }
        if let Step::Done(_) = step {
            self.finished = Some(held.id);
            self.progress.pieces_done += 1;
            self.held = None;
        }
    }

    /// Splits pieces off for the hungry slaves the master told of.
    fn split(&mut self) {
        let Some(held) = &mut self.held else { return };
        let wanted = self.hungry.min(MAX_SPLITS_PER_CALL) as usize;
        while self.split_off.len() < wanted.min(MAX_PIECES_PER_REPORT) {
            let Some(part) = held.unit.divide() else {
                break;
            };
            self.split_off.push(colony_guest::codec::encode(&part));
            self.progress.pieces_split += 1;
        }
        // Told once: the next answer says whether they are still hungry.
        self.hungry = 0;
    }

    /// Sends a report if none awaits an answer and there is something to
    /// say (or it is time to hear the bound).
    fn send_report(&mut self, ctx: &mut ObjectContext<'_>) {
        if self.in_flight.is_some() {
            return;
        }
        let report = match self.retry.take() {
            Some(report) => {
                self.progress.reports_retried += 1;
                report
            }
            None => {
                let want = self.held.is_none();
                let due = want
                    || self.unreported_best.is_some()
                    || self.finished.is_some()
                    || !self.split_off.is_empty()
                    || self.calls_since_report >= REPORT_EVERY_CALLS;
                if !due {
                    return;
                }
                self.seq += 1;
                SlaveReport {
                    slave: ctx.me().guid,
                    seq: self.seq,
                    best: self.unreported_best.take(),
                    nodes: std::mem::take(&mut self.unreported_nodes),
                    finished: self.finished.take(),
                    split_off: std::mem::take(&mut self.split_off),
                    holding: self.held.as_ref().map(|held| Piece {
                        id: held.id,
                        state: colony_guest::codec::encode(&held.unit),
                    }),
                    want,
                }
            }
        };
        self.calls_since_report = 0;
        let id = ctx.call(&self.master, &MasterRequest::Report(report.clone()));
        self.in_flight = Some((id, report));
        self.progress.reporting = true;
    }

    fn answered(&mut self, answer: ReportAnswer) {
        self.progress.bound = self.progress.bound.min(answer.bound);
        self.hungry = answer.hungry;
        self.progress.over = answer.over;
        if answer.retired {
            self.progress.retired = true;
            self.held = None;
            return;
        }
        if let Some(piece) = answer.work {
            let unit: Result<FlowShop, String> = colony_guest::codec::decode(&piece.state)
                .map_err(|e| e.to_string())
                .and_then(|unit: FlowShop| unit.validate().map(|()| unit));
            match unit {
                Ok(unit) => self.held = Some(Held { id: piece.id, unit }),
                Err(error) => {
                    self.progress.error = Some(format!(
                        "the master gave piece {} that is not one: {error}",
                        piece.id
                    ))
                }
            }
        }
    }
}

impl ActiveObject for FlowShopSlave {
    type Params = SlaveParams;
    type Request = SlaveRequest;
    type Reply = SlaveProgress;

    const TYPE: &'static str = "flowshop-slave";

    fn create(_ctx: &mut ObjectContext<'_>, params: SlaveParams) -> Result<Self, String> {
        Ok(FlowShopSlave {
            master: params.master,
            held: None,
            in_flight: None,
            retry: None,
            seq: 0,
            unreported_best: None,
            unreported_nodes: 0,
            finished: None,
            split_off: Vec::new(),
            calls_since_report: 0,
            hungry: 0,
            progress: SlaveProgress {
                index: params.index,
                bound: u32::MAX,
                ..SlaveProgress::default()
            },
        })
    }

    fn handle(
        &mut self,
        ctx: &mut ObjectContext<'_>,
        request: SlaveRequest,
    ) -> Result<SlaveProgress, String> {
        match request {
            SlaveRequest::Work { nodes } => self.work(ctx, nodes),
            SlaveRequest::Progress => Ok(self.progress.clone()),
        }
    }

    /// The master's answer to a report: a failed call is sent again, as
    /// it was, on the next work call (the master answers a repeat as the
    /// first time).
    fn on_reply(
        &mut self,
        _ctx: &mut ObjectContext<'_>,
        call: CallId,
        reply: Result<Vec<u8>, CallError>,
    ) {
        let Some((id, report)) = self.in_flight.take() else {
            return;
        };
        if id != call {
            self.in_flight = Some((id, report));
            return;
        }
        self.progress.reporting = false;
        match reply.and_then(|bytes| decode_reply::<FlowShopMaster>(&bytes)) {
            Ok(MasterReply::Report(answer)) => self.answered(answer),
            Ok(other) => {
                self.progress.error = Some(format!("the master answered {other:?} to a report"));
            }
            Err(CallError::NoSuchObject(uri)) => {
                self.progress.error = Some(format!("the master {uri} is gone"));
            }
            Err(CallError::Handler(error)) => {
                self.progress.error = Some(format!("the master refused a report: {error}"));
            }
            Err(_) => self.retry = Some(report),
        }
    }
}

#[cfg(test)]
mod tests;
