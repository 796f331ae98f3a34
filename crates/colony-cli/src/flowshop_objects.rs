//! `colony run flowshop taNNN --objects`: the flow-shop master/slaves of
//! seed 000 §6.2 on distributed objects, deployed as in its Fig. 5. The
//! master object is created with the fault tolerance of the descriptor's
//! `master` virtual node (`pml` in examples/deploy/fig5.toml), the slaves
//! with that of its `slaves` virtual node (`none`). This peer pumps every
//! slave with short work calls (the slaves pull pieces from the master and
//! report to it themselves) and polls the master until the search is over.
//! A slave found lost is reported to the master, which puts its piece back
//! into the pool, and is replaced by a new one.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use colony::deploy::Descriptor;
use colony::{CallError, ColonyError, ObjectProtocol, Peer, Ref};
use colony_apps::flowshop::{self, taillard};
use colony_apps::flowshop_objects::{
    FlowShopMaster, FlowShopSlave, MasterParams, MasterReply, MasterRequest, MasterStatus,
    SlaveParams, SlaveProgress, SlaveRequest, MAX_NODES_PER_CALL,
};
use tokio::task::JoinSet;

/// The application name `colony run` takes for this path, with
/// [`OBJECTS_FLAG`] among its arguments.
pub(crate) const FLOWSHOP: &str = "flowshop";

/// The flag that turns `colony run flowshop` into this driver.
const OBJECTS_FLAG: &str = "--objects";

/// The most slaves a run creates.
const MAX_SLAVES: usize = 256;

/// The most slaves created in all, replacements included.
const MAX_CREATED_FACTOR: usize = 4;

/// The longest one call is waited for: a peer's death is detected and its
/// objects recovered (or found lost) well within it.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest a work call is waited for. A call to a slave that died
/// with its peer (`none`) fails once its deadline passes, so this is also
/// how long a lost slave takes to be noticed; a slow one is called again.
const WORK_CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// Pause before a call that failed is tried again.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Pause before pumping a slave that holds no piece again: it is waiting
/// for the master's answer.
const IDLE_PAUSE: Duration = Duration::from_millis(30);

/// How often the master is asked where the search stands.
const STATUS_EVERY: Duration = Duration::from_millis(300);

/// The arguments after `colony run flowshop`.
#[derive(Parser, Debug)]
#[command(
    name = "colony run flowshop --objects",
    about = "Solve a Taillard flow-shop instance by branch-and-bound with a \
             master object and slave objects (seed 000 §6.2, Fig. 5)"
)]
pub(crate) struct FlowShopObjectsArgs {
    /// Taillard's instance: ta001 … ta120.
    instance: String,
    /// Run as a master object and slave objects instead of a divisible
    /// job.
    #[arg(long)]
    objects: bool,
    /// Slave objects to create, placed over the network's peers.
    #[arg(long, default_value_t = 3, value_parser = slaves)]
    slaves: usize,
    /// Nodes a slave expands per work call: a short call lets the master
    /// hand out work and update bounds often.
    #[arg(long, default_value_t = 500, value_parser = nodes)]
    nodes_per_call: u32,
    /// Fail if the search is not over within this many seconds from the
    /// run's start.
    #[arg(long, default_value_t = 300.0, value_parser = crate::positive_seconds)]
    seconds: f64,
    /// The descriptor's virtual node of the master (its fault-tolerance
    /// service protects the master; without a descriptor: pml).
    #[arg(long, default_value = "master")]
    master_node: String,
    /// The descriptor's virtual node of the slaves (its fault-tolerance
    /// service applies to the slaves; without a descriptor: none). Its
    /// acquisition sets the peers to wait for, unless --virtual-node says.
    #[arg(long, default_value = "slaves")]
    slaves_node: String,
    /// Print one JSON object {instance, makespan, optimum, optimal,
    /// permutation, slaves, lost_slaves, nodes, elapsed_s, ...} instead of
    /// text.
    #[arg(long)]
    json: bool,
}

fn slaves(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=MAX_SLAVES).contains(&n) => Ok(n),
        _ => Err(format!("must be a number of slaves from 1 to {MAX_SLAVES}")),
    }
}

fn nodes(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(n) if (1..=MAX_NODES_PER_CALL).contains(&n) => Ok(n),
        _ => Err(format!(
            "must be a number of nodes from 1 to {MAX_NODES_PER_CALL}"
        )),
    }
}

/// Whether `colony run flowshop ARGS` asks for this driver.
pub(crate) fn wanted(app: Option<&str>, args: &[String]) -> bool {
    app == Some(FLOWSHOP) && args.iter().any(|arg| arg == OBJECTS_FLAG)
}

/// A run checked before this peer joins anything: its arguments, the
/// instance's canonical name and the protocols of master and slaves.
pub(crate) struct FlowShopObjectsRun {
    args: FlowShopObjectsArgs,
    instance: String,
    master_protocol: ObjectProtocol,
    slave_protocol: ObjectProtocol,
}

impl FlowShopObjectsRun {
    /// Parses the arguments and checks the instance; an error says what is
    /// wrong. `--help` is an error carrying the help text.
    pub(crate) fn prepare(app_args: &[String]) -> Result<FlowShopObjectsRun> {
        let args = FlowShopObjectsArgs::try_parse_from(
            std::iter::once(FLOWSHOP.to_string()).chain(app_args.iter().cloned()),
        )
        .map_err(|e| anyhow::anyhow!("{}", e.render().to_string().trim_end()))?;
        let instance = taillard::parse_name(&args.instance)
            .map(taillard::name)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(FlowShopObjectsRun {
            args,
            instance,
            master_protocol: ObjectProtocol::Pml { ttc_ms: 2_000 },
            slave_protocol: ObjectProtocol::None,
        })
    }

    /// The virtual node whose acquisition sets the peers to wait for.
    pub(crate) fn slaves_node(&self) -> &str {
        &self.args.slaves_node
    }

    /// Takes the protocols of master and slaves from the descriptor's two
    /// virtual nodes; an error names the one missing.
    pub(crate) fn deploy(&mut self, descriptor: &Descriptor) -> Result<()> {
        let master = descriptor.pick_virtual_node(Some(&self.args.master_node))?;
        let slaves = descriptor.pick_virtual_node(Some(&self.args.slaves_node))?;
        self.master_protocol = ObjectProtocol::from(&master.settings.fault_tolerance);
        self.slave_protocol = ObjectProtocol::from(&slaves.settings.fault_tolerance);
        Ok(())
    }
}

/// What a run found.
struct Outcome {
    status: MasterStatus,
    elapsed: Duration,
    slaves_created: usize,
    work_calls: u64,
    failed_calls: u64,
}

/// Creates the master and slaves on the network `peer` has joined, drives
/// them until the search is over, prints the best schedule, and deletes
/// the objects. `reported` is set once the outcome is printed (with
/// `--json`, a failure is then not printed twice).
pub(crate) async fn run(peer: &Peer, run: FlowShopObjectsRun, reported: &mut bool) -> Result<()> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(run.args.seconds);
    let mut created: Vec<Ref<FlowShopSlave>> = Vec::new();
    let mut master = None;
    let outcome = drive(peer, &run, started, deadline, &mut master, &mut created).await;
    // Delete the objects whatever happened: they would take room at their
    // homes (a lost slave is gone already).
    let mut deletions = JoinSet::new();
    let uris = master
        .iter()
        .map(|m: &Ref<FlowShopMaster>| m.uri().clone())
        .chain(created.iter().map(|s| s.uri().clone()));
    for uri in uris {
        let peer = peer.clone();
        deletions.spawn(async move {
            let deleted = tokio::time::timeout(CALL_TIMEOUT, peer.delete_object(&uri)).await;
            (deleted, uri)
        });
    }
    while let Some(joined) = deletions.join_next().await {
        match joined {
            Ok((Ok(Ok(())), _))
            | Ok((Ok(Err(ColonyError::Object(CallError::NoSuchObject(_)))), _)) => {}
            Ok((Ok(Err(error)), uri)) => eprintln!("flowshop: object {uri} not deleted: {error}"),
            Ok((Err(_), uri)) => eprintln!("flowshop: object {uri} not deleted in time"),
            Err(_) => {}
        }
    }
    let outcome = outcome?;
    *reported = true;
    print(&run, &outcome)
}

/// Whether a failed call is worth trying again: the object may come back
/// (its peer died and its home is recovering it, or the call timed out).
fn transient(error: &ColonyError) -> bool {
    matches!(
        error,
        ColonyError::Object(CallError::DeadlinePassed { .. } | CallError::RolledBack { .. })
    )
}

/// Whether a failed call says the slave is gone for good (`none`: it died
/// with its peer).
fn lost(error: &ColonyError) -> bool {
    matches!(
        error,
        ColonyError::Object(CallError::NoSuchObject(_) | CallError::ObjectLost { .. })
    )
}

/// What the driver waits for.
enum Event {
    /// A slave answered a work call (its number in `created`).
    Worked(usize, Result<SlaveProgress, ColonyError>),
    /// The master answered a status call.
    Status(Result<MasterReply, ColonyError>),
    /// The master answered that a slave is lost.
    Lost(usize, Result<MasterReply, ColonyError>),
    /// A slave was created.
    Created(usize, Result<Ref<FlowShopSlave>, ColonyError>),
}

/// The time left before `deadline`, at most [`CALL_TIMEOUT`].
fn call_timeout(deadline: Instant) -> Duration {
    CALL_TIMEOUT.min(deadline.saturating_duration_since(Instant::now()))
}

struct Driver<'a> {
    peer: &'a Peer,
    run: &'a FlowShopObjectsRun,
    deadline: Instant,
    master: Ref<FlowShopMaster>,
    events: JoinSet<Event>,
}

impl Driver<'_> {
    fn work(&mut self, index: usize, slave: &Ref<FlowShopSlave>, pause: Duration) {
        let (peer, slave) = (self.peer.clone(), slave.clone());
        let request = SlaveRequest::Work {
            nodes: self.run.args.nodes_per_call,
        };
        let deadline = self.deadline;
        self.events.spawn(async move {
            tokio::time::sleep(pause).await;
            let timeout = WORK_CALL_TIMEOUT.min(call_timeout(deadline));
            let reply = peer.call_object_within(&slave, &request, timeout).await;
            Event::Worked(index, reply)
        });
    }

    fn status(&mut self, pause: Duration) {
        let (peer, master, deadline) = (self.peer.clone(), self.master.clone(), self.deadline);
        self.events.spawn(async move {
            tokio::time::sleep(pause).await;
            let reply = peer
                .call_object_within(&master, &MasterRequest::Status, call_timeout(deadline))
                .await;
            Event::Status(reply)
        });
    }

    fn slave_lost(&mut self, index: usize, slave: &Ref<FlowShopSlave>, pause: Duration) {
        let (peer, master, deadline) = (self.peer.clone(), self.master.clone(), self.deadline);
        let request = MasterRequest::SlaveLost {
            slave: slave.uri().guid,
        };
        self.events.spawn(async move {
            tokio::time::sleep(pause).await;
            let reply = peer
                .call_object_within(&master, &request, call_timeout(deadline))
                .await;
            Event::Lost(index, reply)
        });
    }

    fn create(&mut self, index: usize, pause: Duration) {
        let (peer, protocol, deadline) =
            (self.peer.clone(), self.run.slave_protocol, self.deadline);
        let params = SlaveParams {
            master: self.master.clone(),
            index: index as u32,
        };
        self.events.spawn(async move {
            tokio::time::sleep(pause).await;
            let created = tokio::time::timeout(
                call_timeout(deadline),
                peer.create_object::<FlowShopSlave>(&params, protocol),
            )
            .await
            .unwrap_or(Err(ColonyError::Object(CallError::DeadlinePassed {
                after_ms: CALL_TIMEOUT.as_millis() as u64,
            })));
            Event::Created(index, created)
        });
    }
}

/// Creates the master and the slaves, then pumps the slaves and polls the
/// master until the search is over or `deadline` passes.
async fn drive(
    peer: &Peer,
    run: &FlowShopObjectsRun,
    started: Instant,
    deadline: Instant,
    master_out: &mut Option<Ref<FlowShopMaster>>,
    created: &mut Vec<Ref<FlowShopSlave>>,
) -> Result<Outcome> {
    let params = MasterParams {
        instance: run.instance.clone(),
    };
    let master = tokio::time::timeout(
        call_timeout(deadline),
        peer.create_object::<FlowShopMaster>(&params, run.master_protocol),
    )
    .await
    .map_err(|_| anyhow::anyhow!("the master was not created within {CALL_TIMEOUT:?}"))?
    .context("the master was not created")?;
    *master_out = Some(master.clone());
    let instance = flowshop::instance(&run.instance).map_err(|e| anyhow::anyhow!("{e}"))?;
    eprintln!(
        "flowshop: {} ({} jobs × {} machines): master {} under {:?}, {} slaves under {:?}",
        run.instance,
        instance.jobs(),
        instance.machines(),
        master.uri(),
        run.master_protocol,
        run.args.slaves,
        run.slave_protocol
    );
    let mut driver = Driver {
        peer,
        run,
        deadline,
        master,
        events: JoinSet::new(),
    };
    // Slots in `created` are filled as creations answer; `None` until then.
    let mut slots: Vec<Option<Ref<FlowShopSlave>>> = Vec::new();
    for index in 0..run.args.slaves {
        slots.push(None);
        driver.create(index, Duration::ZERO);
    }
    driver.status(STATUS_EVERY);
    let mut last = MasterStatus::default();
    let mut lost_slaves = 0usize;
    let (mut work_calls, mut failed_calls) = (0u64, 0u64);
    let mut reported_nodes = 0u64;
    let outcome = loop {
        if Instant::now() >= deadline {
            bail!(
                "the search of {} was not over within {} s (--seconds): best makespan so far {}, {} pieces waiting, {} held, {} finished",
                run.instance,
                run.args.seconds,
                last.best.as_ref().map_or("unknown".to_string(), |b| b.makespan.to_string()),
                last.pool,
                last.held,
                last.pieces_done
            );
        }
        let Some(joined) = driver.events.join_next().await else {
            bail!("nothing left to wait for, and the search is not over");
        };
        match joined.context("a call of the driver stopped")? {
            Event::Created(index, Ok(slave)) => {
                eprintln!("flowshop: slave {index} is {}", slave.uri());
                slots[index] = Some(slave.clone());
                created.push(slave.clone());
                driver.work(index, &slave, Duration::ZERO);
            }
            Event::Created(index, Err(error)) => {
                if matches!(error, ColonyError::Stopped) {
                    bail!("this peer stopped");
                }
                eprintln!("flowshop: slave {index} was not created ({error}); trying again");
                driver.create(index, RETRY_PAUSE);
            }
            Event::Worked(index, Ok(progress)) => {
                work_calls += 1;
                if let Some(error) = &progress.error {
                    bail!("slave {index} stopped: {error}");
                }
                if progress.retired || progress.over {
                    continue;
                }
                let pause = if progress.holding {
                    Duration::ZERO
                } else {
                    IDLE_PAUSE
                };
                if let Some(slave) = slots[index].clone() {
                    driver.work(index, &slave, pause);
                }
            }
            Event::Worked(index, Err(error)) => {
                failed_calls += 1;
                let Some(slave) = slots[index].clone() else {
                    continue;
                };
                if matches!(error, ColonyError::Stopped) {
                    bail!("this peer stopped");
                } else if transient(&error) {
                    driver.work(index, &slave, RETRY_PAUSE);
                } else if lost(&error) {
                    eprintln!(
                        "flowshop: {:.2} s: slave {index} ({}) is lost: {error}",
                        started.elapsed().as_secs_f64(),
                        slave.uri()
                    );
                    // Gone with its peer: nothing to delete at the end.
                    created.retain(|other| other.uri() != slave.uri());
                    driver.slave_lost(index, &slave, Duration::ZERO);
                } else {
                    bail!("slave {index} failed: {error}");
                }
            }
            Event::Lost(index, Ok(MasterReply::SlaveLost { returned })) => {
                lost_slaves += 1;
                eprintln!(
                    "flowshop: the master took slave {index}'s work back{}",
                    if returned { "" } else { " (it held none)" }
                );
                if slots.len() >= run.args.slaves * MAX_CREATED_FACTOR {
                    bail!(
                        "{} slaves lost: giving up rather than creating more",
                        lost_slaves
                    );
                }
                slots.push(None);
                driver.create(slots.len() - 1, Duration::ZERO);
            }
            Event::Lost(index, Ok(other)) => {
                bail!("the master answered {other:?} when told slave {index} is lost")
            }
            Event::Lost(index, Err(error)) => {
                failed_calls += 1;
                if !transient(&error) {
                    bail!("the master was not told slave {index} is lost: {error}");
                }
                if let Some(slave) = slots[index].clone() {
                    driver.slave_lost(index, &slave, RETRY_PAUSE);
                }
            }
            Event::Status(Ok(MasterReply::Status(status))) => {
                if status.nodes > reported_nodes || status.over {
                    reported_nodes = status.nodes;
                    eprintln!(
                        "flowshop: {:.2} s: best {}, {} nodes reported, {} pieces finished, {} waiting, {} held, {} returned",
                        started.elapsed().as_secs_f64(),
                        status.best.as_ref().map_or(0, |b| b.makespan),
                        status.nodes,
                        status.pieces_done,
                        status.pool,
                        status.held,
                        status.pieces_returned
                    );
                }
                if status.over {
                    break Outcome {
                        status,
                        elapsed: started.elapsed(),
                        slaves_created: slots.len(),
                        work_calls,
                        failed_calls,
                    };
                }
                last = status;
                driver.status(STATUS_EVERY);
            }
            Event::Status(Ok(other)) => bail!("the master answered {other:?} to a status call"),
            Event::Status(Err(error)) => {
                failed_calls += 1;
                if !transient(&error) {
                    bail!("the master failed: {error}");
                }
                eprintln!("flowshop: the master did not answer ({error}); asking again");
                driver.status(RETRY_PAUSE);
            }
        }
    };
    // Calls still out are answered to nobody.
    driver.events.abort_all();
    Ok(outcome)
}

fn print(run: &FlowShopObjectsRun, outcome: &Outcome) -> Result<()> {
    let status = &outcome.status;
    let instance = flowshop::instance(&run.instance).map_err(|e| anyhow::anyhow!("{e}"))?;
    let number = taillard::parse_name(&run.instance).map_err(|e| anyhow::anyhow!("{e}"))?;
    let optimum = taillard::BEST_KNOWN
        .get(number.wrapping_sub(1))
        .copied()
        .context("no published makespan for this instance")?;
    let Some(best) = &status.best else {
        bail!("the master holds no schedule");
    };
    if !instance.is_permutation(&best.permutation)
        || instance.makespan(&best.permutation) != best.makespan
    {
        bail!(
            "the master's schedule does not have the makespan {} it claims",
            best.makespan
        );
    }
    let optimal = best.makespan == optimum;
    if run.args.json {
        let object = serde_json::json!({
            "instance": run.instance,
            "makespan": best.makespan,
            "optimum": optimum,
            "optimal": optimal,
            "permutation": best.permutation,
            "slaves": run.args.slaves,
            "slaves_created": outcome.slaves_created,
            "lost_slaves": status.lost_slaves,
            "pieces_done": status.pieces_done,
            "pieces_split": status.pieces_split,
            "pieces_returned": status.pieces_returned,
            "nodes": status.nodes,
            "reports": status.reports,
            "work_calls": outcome.work_calls,
            "failed_calls": outcome.failed_calls,
            "elapsed_s": outcome.elapsed.as_secs_f64(),
            "master_protocol": format!("{:?}", run.master_protocol),
            "slave_protocol": format!("{:?}", run.slave_protocol),
        });
        outln!("{object}")?;
    } else {
        let comparison = if optimal {
            format!("equals the published optimum {optimum}")
        } else {
            format!("DOES NOT equal the published optimum {optimum}")
        };
        outln!(
            "{} ({} jobs × {} machines): makespan {}, {comparison}",
            run.instance,
            instance.jobs(),
            instance.machines(),
            best.makespan
        )?;
        outln!(
            "{} slaves ({} lost) · {:.2} s · {} nodes · {} pieces finished, {} split, {} returned · {} work calls ({} failed)",
            run.args.slaves,
            status.lost_slaves,
            outcome.elapsed.as_secs_f64(),
            status.nodes,
            status.pieces_done,
            status.pieces_split,
            status.pieces_returned,
            outcome.work_calls,
            outcome.failed_calls
        )?;
        let jobs: Vec<String> = best
            .permutation
            .iter()
            .map(|j| (u32::from(*j) + 1).to_string())
            .collect();
        outln!("schedule (jobs from 1): {}", jobs.join(" "))?;
    }
    if !optimal {
        bail!(
            "the search ended with makespan {}, not the published optimum {optimum}",
            best.makespan
        );
    }
    Ok(())
}
