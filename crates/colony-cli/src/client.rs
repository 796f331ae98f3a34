//! Calling a running peer's local API: where it listens and the token it
//! asks for, found from its data directory or given explicitly.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use colony::PeerInfo;

/// The API address `colony peer` uses unless told otherwise.
pub(crate) const DEFAULT_API: &str = "127.0.0.1:7171";

/// The data directory used when `--data-dir` is not given (and
/// `COLONY_DATA_DIR` is not set): `$XDG_DATA_HOME/colony`, else
/// `~/.local/share/colony`.
pub(crate) fn default_data_dir() -> Option<PathBuf> {
    let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").and_then(absolute) {
        return Some(dir.join("colony"));
    }
    std::env::var_os("HOME")
        .and_then(absolute)
        .map(|home| home.join(".local/share/colony"))
}

/// `--data-dir`, else the default one.
pub(crate) fn data_dir_or_default(given: Option<&Path>) -> Result<PathBuf> {
    match given {
        Some(dir) => Ok(dir.to_path_buf()),
        None => default_data_dir().context(
            "no data directory: pass --data-dir DIR (or set COLONY_DATA_DIR); \
             neither XDG_DATA_HOME nor HOME is set",
        ),
    }
}

/// How to reach a running peer's API; shared by every command that calls
/// it.
#[derive(Args, Debug, Clone)]
pub(crate) struct ApiClientArgs {
    /// API address of the peer to ask [default: the one in DATA_DIR/peer.json,
    /// else 127.0.0.1:7171].
    #[arg(long, value_name = "ADDR")]
    api: Option<SocketAddr>,
    /// Data directory of the peer to ask: its peer.json gives the API
    /// address and its api.token the token [default: $COLONY_DATA_DIR, else
    /// ~/.local/share/colony, as for `colony peer`].
    #[arg(long, value_name = "DIR", env = "COLONY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// File holding the peer's API token [default: DATA_DIR/api.token].
    #[arg(long, value_name = "FILE", env = "COLONY_API_TOKEN_FILE")]
    token_file: Option<PathBuf>,
}

/// A peer's API, ready to be asked.
pub(crate) struct ApiClient {
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    token: String,
    token_file: PathBuf,
    http: reqwest::Client,
}

impl ApiClientArgs {
    /// Finds the address and reads the token; the error says which flag to
    /// pass when either is missing.
    pub(crate) fn connect(&self) -> Result<ApiClient> {
        let data_dir = data_dir_or_default(self.data_dir.as_deref());
        let addr = match (self.api, &data_dir) {
            (Some(addr), _) => addr,
            (None, Ok(dir)) => match read_peer_json(dir) {
                Ok(info) => info
                    .api_addr
                    .with_context(|| format!("the peer in {} serves no API", dir.display()))?,
                // An explicit directory must hold a running peer.
                Err(e) if self.data_dir.is_some() => return Err(e),
                Err(_) => DEFAULT_API.parse()?,
            },
            (None, Err(_)) => DEFAULT_API.parse()?,
        };
        let token_file = match (&self.token_file, data_dir) {
            (Some(file), _) => file.clone(),
            (None, Ok(dir)) => dir.join(colony::API_TOKEN_FILE),
            (None, Err(e)) => {
                return Err(e.context("cannot find the API token: pass --token-file FILE"))
            }
        };
        let token = colony::read_api_token(&token_file).with_context(|| {
            format!(
                "cannot read the API token from {}: is `colony peer` running with that data \
                 directory? Pass --data-dir DIR (the data directory of the peer to ask) or \
                 --token-file FILE",
                token_file.display()
            )
        })?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .no_proxy()
            .build()?;
        Ok(ApiClient {
            addr,
            token,
            token_file,
            http,
        })
    }
}

impl ApiClient {
    /// The client of the peer whose data directory is `dir` (running,
    /// with its peer.json written).
    pub(crate) fn for_peer(dir: &Path, info: &PeerInfo) -> Result<ApiClient> {
        ApiClientArgs {
            api: info.api_addr,
            data_dir: Some(dir.to_path_buf()),
            token_file: None,
        }
        .connect()
    }

    /// GET `path`, parsed as JSON; an error carries the peer's reason.
    pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(reqwest::Method::GET, path).await
    }

    /// POST to `path` (no body), the answer parsed as JSON; an error
    /// carries the peer's reason.
    pub(crate) async fn post_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(reqwest::Method::POST, path).await
    }

    /// POST `body` to `path`, the answer parsed as JSON; an error carries
    /// the peer's reason.
    pub(crate) async fn post_bytes<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: Vec<u8>,
    ) -> Result<T> {
        self.call_with(reqwest::Method::POST, path, Some(body))
            .await
    }

    /// Sends `method` to `path` with `headers` and `body`, and returns the
    /// peer's answer whatever its status; an error if the peer cannot be
    /// reached (within `timeout`, else the client's 15 s) or refuses the
    /// token.
    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, String)],
        body: Option<Vec<u8>>,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response> {
        let mut request = self
            .http
            .request(method, format!("http://{}{path}", self.addr))
            .bearer_auth(&self.token);
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.with_context(|| {
            format!(
                "cannot reach the peer API at {}; is `colony peer` running there?",
                self.addr
            )
        })?;
        if response.status() == reqwest::StatusCode::UNAUTHORIZED {
            bail!(
                "the peer at {} refused the API token from {}: it is another peer's; pass \
                 the --data-dir or --token-file of the peer at that address",
                self.addr,
                self.token_file.display()
            );
        }
        Ok(response)
    }

    /// Sends `method` to `path` with a JSON `body`, waiting up to `timeout`
    /// (else the client's 15 s), the answer parsed as JSON (none for 204);
    /// an error carries the peer's reason.
    pub(crate) async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
        timeout: Option<Duration>,
    ) -> Result<serde_json::Value> {
        let headers = [("content-type", "application/json".to_string())];
        let body = body.map(serde_json::to_vec).transpose()?;
        let response = self.send(method, path, &headers, body, timeout).await?;
        let status = response.status();
        if !status.is_success() {
            let reason = response.text().await.unwrap_or_default();
            bail!("the peer at {} answered {status}: {reason}", self.addr);
        }
        if status == reqwest::StatusCode::NO_CONTENT {
            return Ok(serde_json::Value::Null);
        }
        Ok(response.json().await?)
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> Result<T> {
        self.call_with(method, path, None).await
    }

    async fn call_with<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T> {
        let mut request = self
            .http
            .request(method, format!("http://{}{path}", self.addr))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.with_context(|| {
            format!(
                "cannot reach the peer API at {}; is `colony peer` running there?",
                self.addr
            )
        })?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            bail!(
                "the peer at {} refused the API token from {}: it is another peer's; pass \
                 the --data-dir or --token-file of the peer at that address",
                self.addr,
                self.token_file.display()
            );
        }
        if !status.is_success() {
            let reason = response.text().await.unwrap_or_default();
            bail!("the peer at {} answered {status}: {reason}", self.addr);
        }
        Ok(response.json().await?)
    }
}

/// The `peer.json` of the peer running in `dir`.
pub(crate) fn read_peer_json(dir: &Path) -> Result<PeerInfo> {
    let path = dir.join("peer.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}; is a peer running there?", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a peer.json", path.display()))
}
