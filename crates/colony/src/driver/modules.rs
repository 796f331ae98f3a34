//! The driver's side of guest modules: reading a module a peer asked for
//! from the module store, and storing one that arrived (after the node
//! checked it hashes to its id; storing checks it is a guest). Both
//! run on blocking threads (a module is megabytes; storing one compiles
//! it), bounded in number; their answers come back to the node through the
//! driver's module channel.

use colony_core::node::{NodeInput, NodeOutput};
use colony_wasm::ModuleId;
use libp2p::PeerId;
use tracing::{debug, info};

use super::Driver;

/// Module reads and stores running at once; past it, a request is
/// answered at once ("missing", or "busy" for a store), and the asker
/// tries its next source.
pub(super) const MODULE_TASKS: usize = 4;

impl Driver {
    /// Executes a module output of the node.
    pub(super) fn on_module_output(&mut self, out: NodeOutput<PeerId>) {
        match out {
            NodeOutput::ServeModule { to, id } => {
                let Some(guests) = self
                    .guests
                    .clone()
                    .filter(|_| self.module_tasks < MODULE_TASKS)
                else {
                    let answer = NodeInput::SendModule {
                        to,
                        id,
                        bytes: None,
                    };
                    return self.node.handle(std::time::Instant::now(), answer);
                };
                self.module_tasks += 1;
                let tx = self.module_tx.clone();
                tokio::task::spawn_blocking(move || {
                    let bytes = id
                        .parse::<ModuleId>()
                        .ok()
                        .and_then(|module| guests.store().get(&module).ok().flatten());
                    debug!(peer = %to, module = %id, found = bytes.is_some(), "module asked for");
                    let _ = tx.blocking_send(NodeInput::SendModule { to, id, bytes });
                });
            }
            NodeOutput::ModuleReceived { from, id, bytes } => {
                let Some(guests) = self
                    .guests
                    .clone()
                    .filter(|_| self.module_tasks < MODULE_TASKS)
                else {
                    let why = match self.guests {
                        None => "this peer runs native applications only",
                        Some(_) => "this peer is busy storing other modules",
                    };
                    let result = Err(why.to_string());
                    let answer = NodeInput::ModuleStored { id, from, result };
                    return self.node.handle(std::time::Instant::now(), answer);
                };
                self.module_tasks += 1;
                let tx = self.module_tx.clone();
                tokio::task::spawn_blocking(move || {
                    // The node checked the bytes hash to `id`.
                    let result = guests
                        .publish(&bytes)
                        .map(|_| ())
                        .map_err(|e| e.to_string());
                    match &result {
                        Ok(()) => {
                            info!(peer = %from, module = %id, size = bytes.len(), "module fetched")
                        }
                        Err(error) => info!(peer = %from, module = %id, %error, "module refused"),
                    }
                    let _ = tx.blocking_send(NodeInput::ModuleStored { id, from, result });
                });
            }
            _ => {}
        }
    }

    /// A module task finished: hands its answer to the node.
    pub(super) fn on_module_done(&mut self, answer: NodeInput<PeerId>) {
        self.module_tasks = self.module_tasks.saturating_sub(1);
        self.node.handle(std::time::Instant::now(), answer);
    }
}
