//! Starting a peer: opens its stores, builds the swarm, the protocol cores
//! and the node, spawns the driver and serves the local API. This is the
//! top of the runtime: it depends on the handle ([`crate::Peer`]), the
//! driver and the API, and none of them depends on it.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use colony_core::acquaintance::Acquaintances;
use colony_core::job::Jobs;
use colony_core::membership::{Membership, PeerStats};
use colony_core::node::{Node, NodeConfig, NodeInput};
use colony_core::pipe::Pipes;
use colony_core::space::Space;
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId};
use rand::SeedableRng;
use tokio::sync::mpsc;
use tracing::info;

use crate::config::PeerConfig;
use crate::driver::Driver;
use crate::error::ColonyError;
use crate::host;
use crate::info::PeerInfo;
use crate::peer::Peer;

/// Where a peer keeps the guest modules it holds, in its data directory.
pub const MODULES_DIR: &str = "modules";

impl Peer {
    /// Opens the data directory, starts listening, joins through the
    /// bootstrap list and serves the local API. Returns once listening, with
    /// `peer.json` written.
    pub async fn start(mut config: PeerConfig) -> Result<Peer, ColonyError> {
        // Refuse an exposed API before anything starts.
        if let Some(addr) = config.api {
            crate::api::check_bind_addr(addr, config.api_allow_remote)?;
        }
        let store = colony_store::PeerStore::open(&config.data_dir)?;
        let key_bytes = store.load_or_create_identity(|| {
            Keypair::generate_ed25519()
                .to_protobuf_encoding()
                .unwrap_or_default()
        })?;
        let keypair =
            Keypair::from_protobuf_encoding(&key_bytes).map_err(|e| ColonyError::BadIdentity {
                dir: config.data_dir.clone(),
                reason: e.to_string(),
            })?;
        let peer_id = keypair.public().to_peer_id();
        // Others name this peer in --trust by this file; a failure to write
        // it only means they must use the peer id.
        if let Err(error) = crate::trust::write_public_key(&config.data_dir, &keypair) {
            tracing::warn!(%error, "cannot write the public key file");
        }
        let signer = keypair.clone();
        // Opened before anything is announced, so a damaged file stops the
        // start with its error.
        let checkpoints = colony_store::CheckpointStore::open(
            &config.data_dir.join(colony_store::CHECKPOINTS_FILE),
        )?;
        let incarnation = store.next_incarnation()?;

        let mut swarm = colony_net::build_swarm(keypair, &config.net)?;
        for addr in &config.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| ColonyError::Listen {
                    addr: addr.to_string(),
                    reason: e.to_string(),
                })?;
        }
        let listen_addrs = wait_for_listeners(&mut swarm, &config, peer_id).await?;

        let (net_tx, net_rx) = mpsc::channel(8192);
        let control = swarm.behaviour().stream.new_control();
        let frames = colony_net::start_frames(control, &config.net, net_tx)?;

        let (api_listener, api_token) = match config.api {
            Some(addr) => {
                let token = crate::api::load_or_create_token(&config.data_dir)?;
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| ColonyError::Api { addr, source })?;
                (Some(listener), Some(token))
            }
            None => (None, None),
        };
        let api_addr = match &api_listener {
            Some(listener) => Some(listener.local_addr().map_err(|source| ColonyError::Api {
                addr: config.api.unwrap_or_else(|| ([127, 0, 0, 1], 0).into()),
                source,
            })?),
            None => None,
        };

        let info = Arc::new(PeerInfo {
            peer_id: peer_id.to_string(),
            network: config.net.network.clone(),
            listen_addrs: listen_addrs.clone(),
            api_addr,
            pid: std::process::id(),
        });

        let now = Instant::now();
        let mut stats = PeerStats {
            session_start_unix_s: host::unix_now_s(),
            units_done_total: store.counter("units_done_total")?,
            jobs_done_total: store.counter("jobs_done_total")?,
            runs_guests: config.guests.is_some(),
            guest_signers: config
                .guests
                .as_ref()
                .map(|g| g.trust.gossiped())
                .unwrap_or_default(),
            when: config.volunteer.when,
            // Published from the first record on, so that the peers it
            // joins count it among the space's holders at once: a home
            // created while its creator believes it is alone is committed
            // by one copy only.
            space_free_bytes: config.space.capacity_bytes,
            ..PeerStats::default()
        };
        let volunteer = crate::driver::Volunteer::start(&config.volunteer, &store, now)?;
        stats.paused = volunteer
            .as_ref()
            .and_then(crate::driver::Volunteer::paused);
        host::sample(&mut stats, config.cores_offered);
        let membership = Membership::new(
            peer_id,
            incarnation,
            listen_addrs.iter().map(|a| a.to_string()).collect(),
            stats,
            config.membership.clone(),
            rand::Rng::random(&mut rand::rngs::StdRng::from_os_rng()),
            now,
        );
        // Sessions rise across restarts: start time in microseconds.
        let pipes = Pipes::new(
            config.pipes.clone(),
            host::unix_now_ms() * 1000 + u64::from(now.elapsed().subsec_micros()),
        );
        let acquaintances =
            Acquaintances::new(config.acquaintances.clone(), config.bootstrap.len(), now);
        let guests = match &config.guests {
            Some(guests) => {
                let sandbox = colony_wasm::Sandbox::new(guests.limits.clone())?;
                let store = colony_wasm::ModuleStore::open(
                    config.data_dir.join(MODULES_DIR),
                    guests.store_bytes,
                )
                .map_err(|e| colony_core::divisible::AppError::Guest(e.to_string()))?;
                let admission = crate::trust::admission(guests.trust.clone());
                let apps = Arc::new(colony_wasm::GuestApps::new(sandbox, store, admission));
                config.apps.add_source(apps.clone());
                Some(apps)
            }
            None => None,
        };
        let mut job_config = config.jobs.clone();
        job_config.cores = membership.local().stats.cores_offered.max(1);
        let mut jobs = Jobs::new(
            peer_id,
            job_config,
            config.apps.clone(),
            now,
            rand::Rng::random(&mut rand::rngs::StdRng::from_os_rng()),
            crate::driver::overlay_key,
        );
        jobs.set_submit_policy(config.accept_jobs_from.clone());

        let (cmd_tx, cmd_rx) = mpsc::channel(config.command_capacity);
        let (inbox_tx, inbox_rx) = mpsc::channel(config.inbox_capacity);
        let peer = Peer {
            commands: cmd_tx,
            info: info.clone(),
            peer_id,
            inbox: Arc::new(Mutex::new(Some(inbox_rx))),
            apps: config.apps.clone(),
            object_types: config.object_types.clone(),
            guests: guests.clone(),
            signer: Arc::new(signer),
            api_token: api_token.as_ref().map(|t| Arc::from(t.as_str())),
            values: Arc::new(crate::space::Values::new(
                config.max_value_bytes,
                config.space.max_object_bytes,
            )),
        };

        write_peer_json(&config, &info)?;
        if let (Some(listener), Some(bound), Some(token)) = (api_listener, api_addr, api_token) {
            crate::api::serve(
                listener,
                bound,
                peer.clone(),
                token,
                config.api_limits.clone(),
                usize::try_from(config.max_value_bytes).unwrap_or(usize::MAX),
            );
        }
        info!(
            peer_id = %peer_id,
            network = %config.net.network,
            incarnation,
            listen = ?listen_addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            api = ?api_addr,
            "peer started"
        );

        crate::driver::restore_checkpoints(&mut jobs, &checkpoints, Instant::now());
        let node_config = NodeConfig {
            send_timeout: config.send_timeout,
            max_frame_bytes: config.net.max_frame_bytes,
            stats_interval: config.stats_interval,
            job_limits: config.jobs.limits,
            trace_job_messages: false,
            module_fetch: Default::default(),
        };
        let space = Space::new(
            peer_id,
            config.space.clone(),
            crate::driver::overlay_key,
            rand::Rng::random(&mut rand::rngs::StdRng::from_os_rng()),
            rand::Rng::random(&mut rand::rngs::StdRng::from_os_rng()),
        );
        let objects = colony_core::object::Objects::new(
            peer_id,
            &config.net.network,
            config.objects.clone(),
            config.object_types.clone(),
            crate::driver::overlay_key,
            rand::Rng::random(&mut rand::rngs::StdRng::from_os_rng()),
        );
        let mesh = colony_core::mesh::MeshPeer::new(
            peer_id,
            config.mesh.clone(),
            crate::driver::overlay_key,
            rand::Rng::random(&mut rand::rngs::StdRng::from_os_rng()),
        );
        let mut node = Node::new(
            node_config,
            membership,
            pipes,
            acquaintances,
            jobs,
            space,
            objects,
            mesh,
            now,
        );
        // The partitions held before a restart rejoin their homes.
        crate::driver::restore_space(&mut node, &checkpoints, Instant::now());
        crate::driver::restore_shards(&mut node, &checkpoints);
        crate::driver::restore_objects(&mut node, &checkpoints);
        if let Some(reason) = volunteer
            .as_ref()
            .and_then(crate::driver::Volunteer::paused)
        {
            // `--when idle` waits for the host to be idle; a daily limit
            // may be used up already.
            info!(%reason, "not computing yet");
            node.handle(Instant::now(), NodeInput::Pause);
        }
        let shard_keeping = config.shard_keeping.clone();
        let driver = Driver::builder(config, swarm, frames, net_rx, node, info)
            .store(store)
            .checkpoints(checkpoints)
            .guests(guests)
            .volunteer(volunteer)
            .handles(cmd_rx, inbox_tx)
            .build()
            .ok_or(ColonyError::Stopped)?;
        tokio::spawn(driver.run());
        tokio::spawn(crate::space::keep_shards(peer.downgrade(), shard_keeping));
        Ok(peer)
    }

    /// `colony peer --repair`: repairs the stores of `data_dir` before a
    /// start, with redb's own repair (which may roll back a damaged latest
    /// commit), or by moving a damaged file aside and keeping what can still
    /// be read from it. Says what it did to each file. Fails, leaving the
    /// file in place, if the identity cannot be read back: then restore
    /// `peer.redb` from a backup, or use a new data directory.
    pub fn repair(
        data_dir: &std::path::Path,
    ) -> Result<Vec<colony_store::RepairReport>, ColonyError> {
        let checkpoints = data_dir.join(colony_store::CHECKPOINTS_FILE);
        Ok(vec![
            colony_store::PeerStore::repair(data_dir, find_keypair)?,
            colony_store::CheckpointStore::repair(&checkpoints)?,
        ])
    }
}

/// Polls the swarm until every listener reports an address; returns them
/// with `/p2p/<id>` appended.
async fn wait_for_listeners(
    swarm: &mut libp2p::Swarm<colony_net::Behaviour>,
    config: &PeerConfig,
    peer_id: PeerId,
) -> Result<Vec<Multiaddr>, ColonyError> {
    let mut addrs: Vec<Multiaddr> = Vec::new();
    let mut listeners_up = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + config.listen_timeout;
    while listeners_up.len() < config.listen.len() {
        let event = tokio::time::timeout_at(deadline, swarm.select_next_some())
            .await
            .map_err(|_| ColonyError::Listen {
                addr: format!("{:?}", config.listen),
                reason: "no listener came up in time".into(),
            })?;
        match event {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                listeners_up.insert(listener_id);
                addrs.push(address.with(Protocol::P2p(peer_id)));
            }
            SwarmEvent::ListenerError { error, .. }
            | SwarmEvent::ListenerClosed {
                reason: Err(error), ..
            } => {
                return Err(ColonyError::Listen {
                    addr: format!("{:?}", config.listen),
                    reason: error.to_string(),
                })
            }
            _ => {}
        }
    }
    Ok(addrs)
}

/// An ed25519 identity key in the raw bytes of a damaged `peer.redb`: its
/// protobuf encoding (key type 1, 64 bytes of secret and public key) whose
/// public half matches its secret, so a damaged copy is never taken for it.
fn find_keypair(bytes: &[u8]) -> Option<Vec<u8>> {
    const PREFIX: [u8; 4] = [0x08, 0x01, 0x12, 0x40];
    bytes
        .windows(PREFIX.len() + 64)
        .filter(|w| w.starts_with(&PREFIX))
        .find(|w| Keypair::from_protobuf_encoding(w).is_ok())
        .map(<[u8]>::to_vec)
}

fn write_peer_json(config: &PeerConfig, info: &PeerInfo) -> Result<(), ColonyError> {
    let path = config.data_dir.join("peer.json");
    let tmp = config.data_dir.join("peer.json.tmp");
    let text = serde_json::to_string_pretty(info).unwrap_or_default();
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|source| ColonyError::Io { path, source })
}
