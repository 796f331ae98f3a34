//! The local API of an embedded peer: its token is in memory
//! ([`Peer::api_token`]) and in its data directory, and an exposed address
//! needs consent.

use std::time::Duration;

use colony::{ColonyError, LocalNetwork, Peer, PeerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The status line of a GET to `addr` with an optional token.
async fn get_status_line(addr: std::net::SocketAddr, token: Option<&str>) -> String {
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{auth}Connection: close\r\n\r\n",
        addr.port()
    );
    socket.write_all(request.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer))
        .await
        .expect("answered in time")
        .expect("read");
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_peer_exposes_its_api_token() {
    let network = LocalNetwork::start(1, |_, config| {
        config.api = Some(([127, 0, 0, 1], 0).into());
    })
    .await
    .expect("start");
    let peer = &network.peers()[0];
    let token = peer.api_token().expect("a token when the API is served");
    let addr = peer.info().api_addr.expect("API address");
    assert!(get_status_line(addr, None).await.contains("401"));
    assert!(get_status_line(addr, Some(&"0".repeat(64)))
        .await
        .contains("401"));
    assert!(get_status_line(addr, Some(token)).await.contains("200"));
    network.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_api_no_token_and_an_exposed_api_needs_consent() {
    let dir = std::env::temp_dir().join(format!(
        "colony-it-api-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    let mut config = PeerConfig::new(dir.join("a"));
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr")];
    config.api = Some(([0, 0, 0, 0], 0).into());
    let refused = Peer::start(config.clone()).await;
    assert!(
        matches!(refused, Err(ColonyError::ApiNotLoopback { .. })),
        "refused without consent"
    );
    config.api = None;
    let peer = Peer::start(config).await.expect("start without an API");
    assert!(peer.api_token().is_none());
    assert!(!dir.join("a").join(colony::API_TOKEN_FILE).exists());
    peer.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
