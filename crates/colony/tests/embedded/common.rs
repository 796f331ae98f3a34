//! Shared helpers of the runtime's integration tests: peers on loopback with
//! their own temporary data directories, and deadlines on every wait.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use colony::{MemberState, Multiaddr, Peer, PeerConfig, PeerId};

/// How long two fresh peers may take to see each other alive.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(15);

/// Logs to the test output, filtered by `RUST_LOG` (default: errors only).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_test_writer()
        .try_init();
}

/// A data directory removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh, unique directory name under the system temp dir (not created:
    /// the peer store creates it).
    pub fn new(label: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        TempDir(std::env::temp_dir().join(format!(
            "colony-it-{label}-{}-{nanos}-{n}",
            std::process::id()
        )))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `/ip4/127.0.0.1/tcp/0`.
pub fn loopback() -> Multiaddr {
    "/ip4/127.0.0.1/tcp/0".parse().expect("static multiaddr")
}

/// A config listening on loopback, bootstrapping from `bootstrap`.
pub fn config(dir: &TempDir, bootstrap: &[Multiaddr]) -> PeerConfig {
    let mut config = PeerConfig::new(dir.path());
    config.listen = vec![loopback()];
    config.bootstrap = bootstrap.to_vec();
    config
}

/// A started peer and the directory it lives in (removed on drop, after the
/// peer handle).
pub struct TestPeer {
    pub peer: Peer,
    /// Kept for its drop only.
    _dir: TempDir,
}

impl std::ops::Deref for TestPeer {
    type Target = Peer;
    fn deref(&self) -> &Peer {
        &self.peer
    }
}

/// Starts a peer on loopback; `tune` adjusts its config.
pub async fn start_peer(
    label: &str,
    bootstrap: &[Multiaddr],
    tune: impl FnOnce(&mut PeerConfig),
) -> TestPeer {
    init_tracing();
    let dir = TempDir::new(label);
    let mut config = config(&dir, bootstrap);
    tune(&mut config);
    let peer = within(
        &format!("peer {label} to start"),
        Duration::from_secs(10),
        Peer::start(config),
    )
    .await
    .unwrap_or_else(|e| panic!("peer {label} did not start: {e}"));
    assert!(
        peer.info()
            .listen_addrs
            .iter()
            .all(|a| a.to_string().ends_with(&format!("/p2p/{}", peer.peer_id()))),
        "listen addresses {:?} must end in /p2p/<id>",
        peer.info().listen_addrs
    );
    TestPeer { peer, _dir: dir }
}

/// Waits until `a` and `b` see each other alive.
pub async fn joined(a: &Peer, b: &Peer) {
    a.wait_for_member(b.peer_id(), JOIN_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{} never saw {} alive: {e}", a.peer_id(), b.peer_id()));
    b.wait_for_member(a.peer_id(), JOIN_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{} never saw {} alive: {e}", b.peer_id(), a.peer_id()));
}

/// Runs `fut` within `limit`, failing the test with `what` on timeout.
pub async fn within<T>(what: &str, limit: Duration, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// `of`'s state in `observer`'s membership view, if it is there.
pub async fn state_of(observer: &Peer, of: PeerId) -> Option<MemberState> {
    let wanted = of.to_string();
    observer
        .members()
        .await
        .expect("observer is running")
        .into_iter()
        .find(|m| m.peer_id == wanted)
        .map(|m| m.state)
}

/// Polls `observer`'s view every 5 ms until `of` is in one of `states`;
/// returns the state reached and when. Fails the test after `limit`.
pub async fn wait_for_state(
    observer: &Peer,
    of: PeerId,
    states: &[MemberState],
    limit: Duration,
) -> (MemberState, Instant) {
    within(
        &format!("{of} to be {states:?} at {}", observer.peer_id()),
        limit,
        async {
            loop {
                if let Some(state) = state_of(observer, of).await {
                    if states.contains(&state) {
                        return (state, Instant::now());
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        },
    )
    .await
}

/// The median of `samples` (sorted in place).
pub fn median(samples: &mut [Duration]) -> Duration {
    assert!(!samples.is_empty(), "median of no samples");
    samples.sort();
    samples[samples.len() / 2]
}

/// The `q` quantile of `samples` (sorted in place).
pub fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    assert!(!samples.is_empty(), "quantile of no samples");
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
    samples[i]
}
