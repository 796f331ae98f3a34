//! The object space as a running unit sees it ([`UnitSpace`]): reads and
//! writes of the job's namespace started from the unit's thread, carried
//! to the driver, answered later. The namespace is created on the unit's
//! first use (a write that finds none creates it and is made again).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use colony_core::divisible::{Binding, BindingOutcome, UnitSpace};
use colony_core::space::{Condition, ObjectKey, SpaceError, SpaceOp, SpaceReply, Tags};
use tokio::sync::{mpsc, oneshot};

use crate::command::{Command, SpaceAnswer};

/// How long one request of a unit may take before it fails with a
/// timeout (the unit decides whether to try again).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Bindings a unit may have in flight; more fail at once with `Busy`.
const MAX_IN_FLIGHT: usize = 8192;

/// A binding in flight: its operation (to make again after creating the
/// namespace) and the driver's answer to come.
struct InFlight {
    op: SpaceOp,
    answer: oneshot::Receiver<SpaceAnswer>,
    created_namespace: bool,
}

/// One unit's view of the object space.
pub(crate) struct RuntimeUnitSpace {
    namespace: String,
    /// Where requests go: the driver's channel for unit requests.
    driver: mpsc::Sender<Command>,
    next: u64,
    in_flight: BTreeMap<Binding, InFlight>,
    /// Outcomes known before they were polled (refused at once).
    ready: BTreeMap<Binding, BindingOutcome>,
}

impl RuntimeUnitSpace {
    /// The space of a unit of a job whose namespace is `namespace`,
    /// asking the driver through `driver`.
    pub(crate) fn new(namespace: String, driver: mpsc::Sender<Command>) -> Self {
        RuntimeUnitSpace {
            namespace,
            driver,
            next: 0,
            in_flight: BTreeMap::new(),
            ready: BTreeMap::new(),
        }
    }

    fn start(&mut self, op: SpaceOp) -> Binding {
        self.next += 1;
        let binding = Binding(self.next);
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            let busy = SpaceError::Busy { max: MAX_IN_FLIGHT };
            self.ready.insert(binding, Err(busy));
            return binding;
        }
        self.ask_for(binding, op, false);
        binding
    }

    /// Hands `op` to the driver; `None` if it cannot take it now.
    fn ask(&self, op: SpaceOp) -> Option<oneshot::Receiver<SpaceAnswer>> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Space {
            op,
            timeout: REQUEST_TIMEOUT,
            keep: None,
            to: None,
            reply,
        };
        self.driver.try_send(command).ok()?;
        Some(answer)
    }

    fn ask_for(&mut self, binding: Binding, op: SpaceOp, created_namespace: bool) {
        match self.ask(op.clone()) {
            Some(answer) => {
                self.in_flight.insert(
                    binding,
                    InFlight {
                        op,
                        answer,
                        created_namespace,
                    },
                );
            }
            None => {
                let why = "the peer is shutting down or its space requests are backlogged";
                self.ready
                    .insert(binding, Err(SpaceError::Unavailable(why.into())));
            }
        }
    }

    /// Creates the job's namespace (answered once it exists, whoever made
    /// it), waiting at most the request timeout.
    fn create_namespace(&mut self) -> Result<(), SpaceError> {
        let op = SpaceOp::CreateNamespace {
            name: self.namespace.clone(),
        };
        let Some(answer) = self.ask(op) else {
            return Err(SpaceError::Unavailable(
                "the peer is shutting down or its space requests are backlogged".into(),
            ));
        };
        match answer.blocking_recv().map(|a| a.result) {
            Ok(Ok(_)) | Ok(Err(SpaceError::NamespaceExists(_))) => Ok(()),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(SpaceError::Unavailable("the peer stopped".into())),
        }
    }

    /// The outcome of a binding whose answer arrived.
    fn settle(
        &mut self,
        binding: Binding,
        flight: InFlight,
        answer: Result<SpaceReply, SpaceError>,
    ) -> Option<BindingOutcome> {
        match answer {
            Err(SpaceError::UnknownNamespace(_)) if !flight.created_namespace => {
                if let Err(error) = self.create_namespace() {
                    return Some(Err(error));
                }
                self.ask_for(binding, flight.op, true);
                None
            }
            Ok(SpaceReply::Value(object)) => Some(Ok(object.map(|o| o.value))),
            Ok(_) => Some(Ok(None)),
            Err(error) => Some(Err(error)),
        }
    }
}

impl UnitSpace for RuntimeUnitSpace {
    fn namespace(&self) -> &str {
        &self.namespace
    }

    fn bind(&mut self, name: &str) -> Binding {
        let key = ObjectKey::new(self.namespace.clone(), name);
        self.start(SpaceOp::Get { key })
    }

    fn send(&mut self, name: &str, value: Vec<u8>) -> Binding {
        let key = ObjectKey::new(self.namespace.clone(), name);
        self.start(SpaceOp::Put {
            key,
            value,
            tags: Tags::new(),
            condition: Condition::Always,
            token: None,
        })
    }

    fn poll(&mut self, binding: Binding, patience: Duration) -> Option<BindingOutcome> {
        if let Some(outcome) = self.ready.remove(&binding) {
            return Some(outcome);
        }
        let until = Instant::now() + patience;
        loop {
            let flight = self.in_flight.get_mut(&binding)?;
            match flight.answer.try_recv() {
                Ok(answer) => {
                    let flight = self.in_flight.remove(&binding)?;
                    match self.settle(binding, flight, answer.result) {
                        Some(outcome) => return Some(outcome),
                        // Made again after creating the namespace.
                        None => continue,
                    }
                }
                Err(oneshot::error::TryRecvError::Closed) => {
                    self.in_flight.remove(&binding);
                    return Some(Err(SpaceError::Unavailable("the peer stopped".into())));
                }
                Err(oneshot::error::TryRecvError::Empty) => {
                    if Instant::now() >= until {
                        return None;
                    }
                    // A unit thread waiting for its inputs: a short nap,
                    // bounded by the caller's patience.
                    std::thread::sleep(Duration::from_millis(1).min(patience));
                }
            }
        }
    }
}
