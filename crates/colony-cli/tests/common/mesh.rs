//! The seed's bench tree of the streaming mesh as real `colony peer
//! --mesh …` processes, shared by the mesh process tests.

use std::collections::BTreeMap;
use std::time::Duration;

use colony::{MemberState, MeshInfo, StatusInfo};

use super::{test_dir, wait_until, PeerProc};

pub const SUPER_PEERS: usize = 14;
pub const CELLS: [&str; 7] = ["0", "01", "02", "011", "012", "021", "022"];

pub fn args(role: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["--mesh".to_string(), role.to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

pub fn with_bootstrap(mut args: Vec<String>, seed: &PeerProc) -> Vec<String> {
    args.extend(["--bootstrap".to_string(), seed.addr()]);
    args
}

/// Every peer's status, in order (`None` for one that does not answer).
pub async fn statuses(peers: &[PeerProc]) -> Vec<Option<StatusInfo>> {
    let mut all = Vec::new();
    for peer in peers {
        all.push(peer.status().await);
    }
    all
}

/// The super-peers by cell, once every one of them is in a cell.
pub async fn cells_formed(supers: &[PeerProc]) -> Option<BTreeMap<String, Vec<usize>>> {
    let mut cells: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, status) in statuses(supers).await.into_iter().enumerate() {
        let cell = status?.mesh.cell?;
        cells.entry(cell).or_default().push(i);
    }
    Some(cells)
}

/// The seed's bench tree as processes: 14 super-peers, two sensors under
/// each of two leaves (cells 011 and 022), one client at the root.
pub struct Mesh {
    pub supers: Vec<PeerProc>,
    pub sensors: Vec<PeerProc>,
    pub client: PeerProc,
    /// Each super-peer's cell, by peer id.
    pub cell_of: BTreeMap<String, String>,
}

impl Mesh {
    pub async fn start(name: &str, policy: &str) -> Mesh {
        let root = test_dir(name);
        let policy = ["--ft-policy", policy];
        let first = PeerProc::spawn(&root.join("s0"), &args("super", &policy));
        let mut supers = vec![first];
        for i in 1..SUPER_PEERS {
            let a = with_bootstrap(args("super", &policy), &supers[0]);
            supers.push(PeerProc::spawn(&root.join(format!("s{i}")), &a));
        }
        let cells = wait_until(
            Duration::from_secs(60),
            "every super-peer in a cell",
            || cells_formed(&supers),
        )
        .await;
        eprintln!("mesh: cells {cells:?}");
        let names: Vec<&str> = cells.keys().map(String::as_str).collect();
        let mut expected = CELLS.to_vec();
        expected.sort();
        assert_eq!(names, expected, "cells: {cells:?}");
        for (cell, members) in &cells {
            assert_eq!(members.len(), 2, "cell {cell}: {members:?}");
        }
        let cell_of: BTreeMap<String, String> = cells
            .iter()
            .flat_map(|(cell, members)| {
                members
                    .iter()
                    .map(|i| (supers[*i].info.peer_id.to_string(), cell.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        // Each super-peer below the root binds to a member of its parent
        // cell (the span rule: the parent of 0ab is 0a).
        wait_until(
            Duration::from_secs(20),
            "every child cell bound",
            || async {
                for (i, status) in statuses(&supers).await.iter().enumerate() {
                    let mesh = &status.as_ref()?.mesh;
                    let cell = mesh.cell.as_ref()?;
                    if cell == "0" {
                        continue;
                    }
                    let parent = mesh.parent.as_ref()?;
                    let parent_cell = &cell_of[parent];
                    assert_eq!(
                        parent_cell.as_str(),
                        &cell[..cell.len() - 1],
                        "super-peer {i} of cell {cell} bound to {parent} of {parent_cell}"
                    );
                }
                Some(())
            },
        )
        .await;
        let mut sensors = Vec::new();
        for (i, cell) in ["011", "011", "022", "022"].iter().enumerate() {
            let preferred = (i % 2).to_string();
            let mut extra = vec!["--cell", cell, "--preferred", &preferred];
            extra.extend(["--rate-divisor", "4"]);
            extra.extend(policy);
            let a = with_bootstrap(args("sensor", &extra), &supers[0]);
            sensors.push(PeerProc::spawn(&root.join(format!("sensor{i}")), &a));
        }
        let client = PeerProc::spawn(
            &root.join("client"),
            &with_bootstrap(args("client", &policy), &supers[0]),
        );
        let mesh = Mesh {
            supers,
            sensors,
            client,
            cell_of,
        };
        mesh.wait_for_streams("every sensor's streams at the client", 10, false)
            .await;
        mesh
    }

    /// The client's view of the streams.
    pub async fn client_mesh(&self) -> Option<MeshInfo> {
        Some(self.client.status().await?.mesh)
    }

    /// Waits until each of the 12 streams has `frames` more than now, and,
    /// with `whole`, none misses a frame below its highest; past 60 s it
    /// fails naming the streams behind and every super-peer's place.
    pub async fn wait_for_streams(&self, what: &str, frames: u64, whole: bool) -> MeshInfo {
        const WITHIN: Duration = Duration::from_secs(60);
        let before = self.client_mesh().await.unwrap_or_default();
        let deadline = std::time::Instant::now() + WITHIN;
        loop {
            let mesh = self.client_mesh().await.unwrap_or_default();
            let mut behind = Vec::new();
            for sensor in &self.sensors {
                for class in ["event", "audio", "video"] {
                    let key = format!("{}/{class}", sensor.info.peer_id);
                    let was = before.streams.get(&key).map_or(0, |s| s.received);
                    let now = mesh.streams.get(&key).cloned().unwrap_or_default();
                    if now.received < was + frames || (whole && now.missing() > 0) {
                        behind.push(format!("{key}: {was} -> {now:?}"));
                    }
                }
            }
            if behind.is_empty() {
                return mesh;
            }
            if std::time::Instant::now() >= deadline {
                let mut places = Vec::new();
                for (i, status) in statuses(&self.supers).await.into_iter().enumerate() {
                    places.push(match status {
                        Some(s) => format!(
                            "s{i} {}: cell {:?} parent {:?} members {:?}",
                            s.peer.peer_id, s.mesh.cell, s.mesh.parent, s.mesh.cell_members
                        ),
                        None => format!("s{i}: no answer"),
                    });
                }
                panic!(
                    "timed out after {WITHIN:?} waiting for {what}; behind: {behind:#?}; \
                     super-peers: {places:#?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The index of a super-peer of `cell` that some child is bound to.
    pub async fn a_parent_in(&self, cell: &str) -> usize {
        let children = statuses(&self.supers)
            .await
            .into_iter()
            .chain(statuses(&self.sensors).await)
            .flatten();
        let parents: Vec<String> = children.filter_map(|s| s.mesh.parent).collect();
        self.supers
            .iter()
            .position(|s| {
                let id = s.info.peer_id.to_string();
                self.cell_of.get(&id).is_some_and(|c| c == cell) && parents.contains(&id)
            })
            .unwrap_or_else(|| panic!("no child bound to a member of cell {cell}"))
    }

    /// The rebinds every live child reported.
    pub async fn rebinds(&self) -> Vec<colony::RebindInfo> {
        let mut all = Vec::new();
        for peer in self.supers.iter().chain(&self.sensors) {
            if let Some(status) = peer.status().await {
                all.extend(status.mesh.rebinds.into_iter().skip(1));
            }
        }
        all
    }

    /// Every peer of the mesh but `victim`.
    pub fn others<'a>(&'a self, victim: &'a PeerProc) -> impl Iterator<Item = &'a PeerProc> {
        self.supers
            .iter()
            .chain(&self.sensors)
            .chain([&self.client])
            .filter(move |p| p.info.peer_id != victim.info.peer_id && p.is_running())
    }

    /// SIGSTOPs `victim` until every other peer declared it dead, then
    /// lets it go on (its membership refutes the declaration).
    pub async fn pause_until_declared_dead(&self, victim: &PeerProc) {
        let paused = std::time::Instant::now();
        victim.signal("STOP");
        wait_until(
            Duration::from_secs(30),
            "every other peer to declare the paused one dead",
            || async {
                for peer in self.others(victim) {
                    let state = peer.state_of(victim).await?.state;
                    if state != MemberState::Dead {
                        return None;
                    }
                }
                Some(())
            },
        )
        .await;
        victim.signal("CONT");
        eprintln!(
            "mesh: {} paused for {:?}, until all declared it dead",
            victim.info.peer_id,
            paused.elapsed()
        );
    }

    /// Waits until super-peer `observer` lists super-peer `member` in its
    /// cell.
    pub async fn wait_listed(&self, observer: usize, member: usize, what: &str) {
        let id = self.supers[member].info.peer_id.to_string();
        wait_until(Duration::from_secs(30), what, || async {
            let members = self.supers[observer].status().await?.mesh.cell_members;
            members.contains(&id).then_some(())
        })
        .await;
    }
}
