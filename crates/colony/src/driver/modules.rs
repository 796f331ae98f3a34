//! The driver's side of guest modules: reading a module a peer asked for
//! from the module store, and storing one that arrived (after the node
//! checked it hashes to its id; storing checks it is a guest). Both
//! run on blocking threads (a module is megabytes; storing one compiles
//! it), bounded in number; their answers come back to the node through the
//! driver's module channel.

use std::time::Instant;

use colony_core::modules::{merge_signatures, ModuleSignature};
use colony_core::node::{NodeInput, NodeOutput};
use colony_wasm::{GuestApps, ModuleId};
use libp2p::PeerId;
use tokio::sync::oneshot;
use tracing::{debug, info};

use super::Driver;
use crate::trust::{decode_signatures, encode_signatures};

/// Module reads and stores running at once; past it, a request is
/// answered at once ("missing", or "busy" for a store), and the asker
/// tries its next source.
pub(super) const MODULE_TASKS: usize = 4;

/// Modules whose publication (home members that stored them) is
/// remembered.
pub(super) const PUBLISHES_KEPT: usize = 64;

/// Callers that may wait for one module's fetch.
const WAITERS_PER_MODULE: usize = 16;

/// Stores `bytes` (checked to be a guest) with `signatures` merged into
/// those kept for it; returns what is kept now.
pub(crate) fn store_module(
    guests: &GuestApps,
    bytes: &[u8],
    signatures: &[ModuleSignature],
) -> Result<Vec<ModuleSignature>, String> {
    let module = guests.publish(bytes).map_err(|e| e.to_string())?;
    let id = module.id();
    let kept = guests.store().signatures(&id).map_err(|e| e.to_string())?;
    let merged = merge_signatures(decode_signatures(&kept), signatures);
    guests
        .set_signatures(&id, &encode_signatures(&merged))
        .map_err(|e| e.to_string())?;
    Ok(merged)
}

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
                        module: None,
                    };
                    return self.node.handle(std::time::Instant::now(), answer);
                };
                self.module_tasks += 1;
                let tx = self.module_tx.clone();
                tokio::task::spawn_blocking(move || {
                    let module = id.parse::<ModuleId>().ok().and_then(|module| {
                        let bytes = guests.store().get(&module).ok().flatten()?;
                        let kept = guests.store().signatures(&module).unwrap_or_default();
                        Some((bytes, decode_signatures(&kept)))
                    });
                    debug!(peer = %to, module = %id, found = module.is_some(), "module asked for");
                    let _ = tx.blocking_send(NodeInput::SendModule { to, id, module });
                });
            }
            NodeOutput::ModuleReceived {
                from,
                id,
                bytes,
                signatures,
                pushed,
            } => {
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
                    let answer = NodeInput::ModuleStored {
                        id,
                        from,
                        pushed,
                        result,
                    };
                    return self.node.handle(std::time::Instant::now(), answer);
                };
                self.module_tasks += 1;
                let tx = self.module_tx.clone();
                tokio::task::spawn_blocking(move || {
                    // The node checked the bytes hash to `id`.
                    let result = store_module(&guests, &bytes, &signatures).map(|_| ());
                    let how = if pushed {
                        "stored for its home"
                    } else {
                        "fetched"
                    };
                    match &result {
                        Ok(()) => {
                            info!(peer = %from, module = %id, size = bytes.len(), how, "module stored")
                        }
                        Err(error) => info!(peer = %from, module = %id, %error, "module refused"),
                    }
                    let answer = NodeInput::ModuleStored {
                        id,
                        from,
                        pushed,
                        result,
                    };
                    let _ = tx.blocking_send(answer);
                });
            }
            _ => {}
        }
    }

    /// Pushes module `id` (stored here) to its home; returns the members it
    /// went to.
    pub(super) fn publish_module(
        &mut self,
        now: Instant,
        id: String,
        bytes: Vec<u8>,
        signatures: Vec<ModuleSignature>,
    ) -> Vec<PeerId> {
        let me = *self.node.me();
        let home: Vec<PeerId> = self
            .node
            .module_home(&id)
            .into_iter()
            .filter(|p| *p != me)
            .collect();
        if !self.module_holders.contains_key(&id) && self.module_holders.len() >= PUBLISHES_KEPT {
            self.module_holders.pop_first();
        }
        self.module_holders.insert(id.clone(), Vec::new());
        info!(module = %id, home = ?home, "publishing module to its home");
        self.node.handle(
            now,
            NodeInput::PublishModule {
                id,
                bytes,
                signatures,
            },
        );
        home
    }

    /// A home member stored a module this peer published.
    pub(super) fn module_held(&mut self, id: String, by: PeerId) {
        if let Some(holders) = self.module_holders.get_mut(&id) {
            if !holders.contains(&by) {
                debug!(module = %id, peer = %by, "module stored by a home member");
                holders.push(by);
            }
        }
    }

    /// Fetches module `id` from its home for `reply`.
    pub(super) fn fetch_module(
        &mut self,
        now: Instant,
        id: String,
        reply: oneshot::Sender<Result<(), String>>,
    ) {
        let waiting = self.module_waiters.entry(id.clone()).or_default();
        if waiting.len() >= WAITERS_PER_MODULE {
            let _ = reply.send(Err("too many callers wait for this module".into()));
            return;
        }
        waiting.push(reply);
        if waiting.len() == 1 {
            self.node.handle(now, NodeInput::FetchModule { id });
        }
    }

    /// Module `id` arrived here, or could not be fetched: tells whoever
    /// waits for it.
    pub(super) fn module_fetched(&mut self, id: &str, result: Result<(), String>) {
        for reply in self.module_waiters.remove(id).unwrap_or_default() {
            let _ = reply.send(result.clone());
        }
    }

    /// A module task finished: hands its answer to the node.
    pub(super) fn on_module_done(&mut self, answer: NodeInput<PeerId>) {
        self.module_tasks = self.module_tasks.saturating_sub(1);
        self.node.handle(std::time::Instant::now(), answer);
    }
}
