//! `colony space`: the object space through a running peer's local API.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use crate::client::{ApiClient, ApiClientArgs};

#[derive(Subcommand, Debug)]
pub(crate) enum SpaceCommand {
    /// List the objects of a namespace: name, version, size and tags.
    Ls(LsArgs),
    /// List the objects of a namespace whose tags match a query.
    ///
    /// The query's terms are separated by spaces and must all hold:
    /// tag=value, tag^=prefix, tag>=v, tag>v, tag<=v, tag<v, or tag?
    /// (present). A whole number compares as a number, anything else as
    /// text ("..." makes a text of anything). Example: 'type=row index>=3
    /// index<6 owner^=al done?'.
    Search(SearchArgs),
    /// Print an object's value (or write it to a file with -o), as it
    /// arrives.
    Get(GetArgs),
    /// Write an object from a file, or from standard input with `-`; up to
    /// the peer's --max-value-mib (1 GiB by default), read whole into
    /// memory first.
    Put(PutArgs),
    /// Delete an object.
    Rm(RmArgs),
    /// Take a read or write lock on an object and print its fencing token.
    /// The peer renews the lease until `colony space unlock` (unless
    /// --no-renew); a peer that stops or is cut off loses it when the
    /// lease runs out.
    Lock(LockArgs),
    /// Release a lock by its token.
    Unlock(UnlockArgs),
    /// Create a namespace.
    NsCreate(NamespaceArgs),
    /// Destroy a namespace and every object in it.
    NsRm(NamespaceArgs),
}

/// What every `colony space` command takes.
#[derive(Args, Debug)]
pub(crate) struct Common {
    #[command(flatten)]
    api: ApiClientArgs,
    /// The namespace of the object.
    #[arg(long, short = 'n', default_value = "global")]
    namespace: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct LsArgs {
    #[command(flatten)]
    common: Common,
}

#[derive(Args, Debug)]
pub(crate) struct SearchArgs {
    #[command(flatten)]
    common: Common,
    /// The query, quoted as one argument, e.g. 'type=row index>=3'.
    query: String,
}

#[derive(Args, Debug)]
pub(crate) struct GetArgs {
    #[command(flatten)]
    common: Common,
    /// The object's name.
    name: String,
    /// Write the value to this file instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
    /// Read the cached way: from the peer's copy, else from any replica.
    /// Cheaper, but may miss the latest writes (never shows one not
    /// made). Default: a linearizable read, answered by the object's
    /// primary once a majority of its home confirms it.
    #[arg(long)]
    cached: bool,
}

#[derive(Args, Debug)]
pub(crate) struct PutArgs {
    #[command(flatten)]
    common: Common,
    /// The object's name.
    name: String,
    /// The file holding the value; `-` reads standard input.
    file: String,
    /// A tag, NAME=VALUE (repeatable); a whole number is stored as an
    /// integer, anything else as text.
    #[arg(long = "tag", value_name = "NAME=VALUE")]
    tags: Vec<String>,
    /// Write only if the object is at this version (compare-and-set; 0:
    /// only if it does not exist).
    #[arg(long, value_name = "V")]
    if_version: Option<u64>,
    /// Write under the write lock this fencing token holds (`colony space
    /// lock`); refused if it no longer holds it.
    #[arg(long, value_name = "T")]
    token: Option<u64>,
    /// Store the value erasure-coded: K data and M parity shards on K + M
    /// distinct peers, any K of which restore it (costs (K + M) / K times
    /// the value instead of a copy per home member). Default: replicated.
    #[arg(long, value_name = "K+M")]
    erasure: Option<colony::Storage>,
}

#[derive(Args, Debug)]
pub(crate) struct RmArgs {
    #[command(flatten)]
    common: Common,
    /// The object's name.
    name: String,
    /// Delete only if the object is at this version.
    #[arg(long, value_name = "V")]
    if_version: Option<u64>,
    /// Delete under the write lock this fencing token holds.
    #[arg(long, value_name = "T")]
    token: Option<u64>,
}

#[derive(Args, Debug)]
pub(crate) struct LockArgs {
    #[command(flatten)]
    common: Common,
    /// The object's name.
    name: String,
    /// An exclusive lock.
    #[arg(long, conflicts_with = "read", required_unless_present = "read")]
    write: bool,
    /// A shared lock.
    #[arg(long)]
    read: bool,
    /// How long, in milliseconds, the lock lasts unless renewed (100 to
    /// 600000).
    #[arg(long, value_name = "MS")]
    lease_ms: u64,
    /// How long, in milliseconds, to wait for the lock if it is held
    /// (at most 60000).
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    wait_ms: u64,
    /// Do not have the peer renew the lease: the lock runs out after
    /// --lease-ms unless unlocked before.
    #[arg(long)]
    no_renew: bool,
}

#[derive(Args, Debug)]
pub(crate) struct UnlockArgs {
    #[command(flatten)]
    common: Common,
    /// The object's name.
    name: String,
    /// The lock's fencing token, as `colony space lock` printed it.
    #[arg(long, value_name = "T")]
    token: u64,
}

#[derive(Args, Debug)]
pub(crate) struct NamespaceArgs {
    #[command(flatten)]
    api: ApiClientArgs,
    /// The namespace.
    namespace: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// A path segment, percent-encoded (every byte but unreserved ones).
fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn object_path(namespace: &str, name: &str) -> String {
    format!("/v1/space/{}/{}", segment(namespace), segment(name))
}

/// The peer's answer if it is a success; else an error saying `what`
/// failed and the peer's reason, in one sentence.
async fn answer(response: reqwest::Response, what: &str) -> Result<reqwest::Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let reason = response.text().await.unwrap_or_default();
    let reason = reason.trim();
    if reason.is_empty() {
        bail!("{what}: the peer answered {status}");
    }
    bail!("{what}: {reason}")
}

async fn json_answer(response: reqwest::Response, what: &str) -> Result<serde_json::Value> {
    answer(response, what)
        .await?
        .json()
        .await
        .with_context(|| format!("{what}: the peer's answer is not JSON"))
}

/// `--tag NAME=VALUE` as the JSON object the API takes.
fn tags_json(tags: &[String]) -> Result<Option<String>> {
    if tags.is_empty() {
        return Ok(None);
    }
    let mut map = serde_json::Map::new();
    for tag in tags {
        let Some((name, value)) = tag.split_once('=') else {
            bail!("--tag {tag:?} is not NAME=VALUE");
        };
        let value = match value.parse::<i64>() {
            Ok(n) => serde_json::Value::from(n),
            Err(_) => serde_json::Value::from(value),
        };
        map.insert(name.to_string(), value);
    }
    Ok(Some(ascii_json(&serde_json::Value::Object(map))))
}

/// JSON with every non-ASCII character escaped, fit for a header.
fn ascii_json(value: &serde_json::Value) -> String {
    let mut out = String::new();
    for c in value.to_string().chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            // Non-ASCII only occurs inside strings, where \u escapes hold.
            for unit in c.encode_utf16(&mut [0; 2]) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// Headers for a write's conditions.
fn conditions(if_version: Option<u64>, tags: Option<String>) -> Vec<(&'static str, String)> {
    let mut headers = Vec::new();
    match if_version {
        Some(0) => headers.push(("if-none-match", "*".to_string())),
        Some(v) => headers.push(("if-match", v.to_string())),
        None => {}
    }
    if let Some(tags) = tags {
        headers.push(("colony-tags", tags));
    }
    headers
}

fn with_token(path: String, token: Option<u64>) -> String {
    match token {
        Some(t) => format!("{path}?token={t}"),
        None => path,
    }
}

/// How long to wait for a peer to take or give a value of `bytes`: the
/// client's usual 15 s, plus the time the peer allows for the value to
/// travel both ways ([`colony::SPACE_MIN_BYTES_PER_SEC`]) and a margin.
fn transfer_timeout(bytes: u64) -> Duration {
    let travel = bytes.saturating_mul(2000) / colony::SPACE_MIN_BYTES_PER_SEC;
    Duration::from_secs(25) + Duration::from_millis(travel)
}

fn print_json(value: &serde_json::Value) -> Result<()> {
    outln!("{value}")?;
    Ok(())
}

pub(crate) async fn run(command: SpaceCommand) -> Result<()> {
    match command {
        SpaceCommand::Ls(args) => ls(args).await,
        SpaceCommand::Search(args) => search(args).await,
        SpaceCommand::Get(args) => get(args).await,
        SpaceCommand::Put(args) => put(args).await,
        SpaceCommand::Rm(args) => rm(args).await,
        SpaceCommand::Lock(args) => lock(args).await,
        SpaceCommand::Unlock(args) => unlock(args).await,
        SpaceCommand::NsCreate(args) => namespace(args, true).await,
        SpaceCommand::NsRm(args) => namespace(args, false).await,
    }
}

async fn ls(args: LsArgs) -> Result<()> {
    let c = args.common;
    let api = c.api.connect()?;
    let what = format!("cannot list namespace {:?}", c.namespace);
    let path = format!("/v1/space/{}", segment(&c.namespace));
    let response = api
        .send(reqwest::Method::GET, &path, &[], None, None)
        .await?;
    let listing = json_answer(response, &what).await?;
    if c.json {
        return print_json(&listing);
    }
    print_listing(&listing)
}

async fn search(args: SearchArgs) -> Result<()> {
    let c = args.common;
    let api = c.api.connect()?;
    let what = format!("cannot search namespace {:?}", c.namespace);
    let path = format!(
        "/v1/space/{}?search={}",
        segment(&c.namespace),
        segment(&args.query)
    );
    let response = api
        .send(reqwest::Method::GET, &path, &[], None, None)
        .await?;
    let listing = json_answer(response, &what).await?;
    if c.json {
        return print_json(&listing);
    }
    print_listing(&listing)
}

/// A listing's entries as a table: name, version, size and tags.
fn print_listing(listing: &serde_json::Value) -> Result<()> {
    outln!("{:<40} {:>8} {:>10}  TAGS", "NAME", "VERSION", "SIZE")?;
    let entries = listing["entries"].as_array().cloned().unwrap_or_default();
    for e in &entries {
        let tags = e["tags"].as_object().filter(|t| !t.is_empty());
        outln!(
            "{:<40} {:>8} {:>10}  {}",
            e["name"].as_str().unwrap_or("?"),
            e["version"].as_u64().unwrap_or_default(),
            e["size"].as_u64().unwrap_or_default(),
            tags.map(|t| serde_json::Value::Object(t.clone()).to_string())
                .unwrap_or_default()
        )?;
    }
    if listing["truncated"].as_bool() == Some(true) {
        eprintln!("(the listing is cut short: some partitions hold more than they list at once)");
    }
    Ok(())
}

async fn get(args: GetArgs) -> Result<()> {
    let c = args.common;
    let api = c.api.connect()?;
    let what = format!("cannot get {}/{}", c.namespace, args.name);
    let mut path = object_path(&c.namespace, &args.name);
    if args.cached {
        path.push_str("?read=cached");
    }
    // The size is not known before the answer: allow for the largest.
    let timeout = transfer_timeout(colony::DEFAULT_MAX_VALUE_BYTES);
    let response = api
        .send(reqwest::Method::GET, &path, &[], None, Some(timeout))
        .await?;
    let mut response = answer(response, &what).await?;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let version: u64 = header("colony-version")
        .and_then(|v| v.parse().ok())
        .unwrap_or_default();
    let tags: serde_json::Value = header("colony-tags")
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| serde_json::json!({}));
    if c.json && args.output.is_none() {
        let value = response
            .bytes()
            .await
            .with_context(|| format!("{what}: the value was cut off"))?;
        return print_json(&serde_json::json!({
            "namespace": c.namespace,
            "name": args.name,
            "version": version,
            "size": value.len(),
            "tags": tags,
            "value_utf8": std::str::from_utf8(&value).ok(),
        }));
    }
    // The value goes out as it arrives, never whole in memory here.
    let mut out: Box<dyn Write> = match &args.output {
        Some(file) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(file)
                .with_context(|| format!("{what}: cannot create {}", file.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut size: u64 = 0;
    while let Some(piece) = response
        .chunk()
        .await
        .with_context(|| format!("{what}: the value was cut off"))?
    {
        out.write_all(&piece)
            .with_context(|| format!("{what}: cannot write the value"))?;
        size += piece.len() as u64;
    }
    out.flush()
        .with_context(|| format!("{what}: cannot write the value"))?;
    drop(out);
    if c.json {
        return print_json(&serde_json::json!({
            "namespace": c.namespace,
            "name": args.name,
            "version": version,
            "size": size,
            "tags": tags,
            "value_utf8": serde_json::Value::Null,
        }));
    }
    if args.output.is_some() {
        eprintln!(
            "{}/{}: version {version}, {size} bytes",
            c.namespace, args.name
        );
    }
    Ok(())
}

async fn put(args: PutArgs) -> Result<()> {
    let c = args.common;
    let what = format!("cannot put {}/{}", c.namespace, args.name);
    let value = if args.file == "-" {
        let mut value = Vec::new();
        std::io::stdin()
            .lock()
            .read_to_end(&mut value)
            .with_context(|| format!("{what}: cannot read standard input"))?;
        value
    } else {
        std::fs::read(&args.file).with_context(|| format!("{what}: cannot read {}", args.file))?
    };
    let headers = conditions(args.if_version, tags_json(&args.tags)?);
    let api = c.api.connect()?;
    // A value the peer would refuse is not sent at all (a peer refusing a
    // body it has not read may close the connection before the client
    // hears why).
    if value.len() > colony::CHUNK_BYTES {
        let status: colony::StatusInfo = api.get_json("/v1/status").await?;
        let max = status.space.max_value_bytes;
        if max > 0 && value.len() as u64 > max {
            bail!(
                "{what}: the value has {} bytes, larger than {max} bytes, the most the peer \
                 at {} takes (its --max-value-mib)",
                value.len(),
                api.addr
            );
        }
    }
    let mut path = with_token(object_path(&c.namespace, &args.name), args.token);
    if let Some(colony::Storage::Coded { k, m }) = args.erasure {
        let sep = if path.contains('?') { '&' } else { '?' };
        path = format!("{path}{sep}erasure={k}%2B{m}");
    }
    let timeout = transfer_timeout(value.len() as u64);
    let response = api
        .send(
            reqwest::Method::PUT,
            &path,
            &headers,
            Some(value),
            Some(timeout),
        )
        .await?;
    let written = json_answer(response, &what).await?;
    if c.json {
        return print_json(&written);
    }
    outln!(
        "{}/{}: version {}",
        c.namespace,
        args.name,
        written["version"]
    )?;
    Ok(())
}

async fn rm(args: RmArgs) -> Result<()> {
    let c = args.common;
    let what = format!("cannot delete {}/{}", c.namespace, args.name);
    let headers = conditions(args.if_version, None);
    let api = c.api.connect()?;
    let path = with_token(object_path(&c.namespace, &args.name), args.token);
    let response = api
        .send(reqwest::Method::DELETE, &path, &headers, None, None)
        .await?;
    let deleted = json_answer(response, &what).await?;
    if c.json {
        return print_json(&deleted);
    }
    outln!("{}/{}: deleted", c.namespace, args.name)?;
    Ok(())
}

async fn lock(args: LockArgs) -> Result<()> {
    let c = args.common;
    let mode = if args.write { "write" } else { "read" };
    let what = format!("cannot {mode}-lock {}/{}", c.namespace, args.name);
    let api = c.api.connect()?;
    let path = format!(
        "{}/lock?mode={mode}&lease_ms={}&wait_ms={}&renew={}",
        object_path(&c.namespace, &args.name),
        args.lease_ms,
        args.wait_ms,
        !args.no_renew
    );
    // The peer answers within the wait; give it that and a margin.
    let timeout = Duration::from_millis(args.wait_ms) + Duration::from_secs(10);
    let response = api
        .send(reqwest::Method::POST, &path, &[], None, Some(timeout))
        .await?;
    let granted = json_answer(response, &what).await?;
    if c.json {
        return print_json(&granted);
    }
    outln!("{}", granted["token"])?;
    Ok(())
}

async fn unlock(args: UnlockArgs) -> Result<()> {
    let c = args.common;
    let what = format!(
        "cannot unlock {}/{} with token {}",
        c.namespace, args.name, args.token
    );
    let api = c.api.connect()?;
    let path = format!(
        "{}/unlock?token={}",
        object_path(&c.namespace, &args.name),
        args.token
    );
    let response = api
        .send(reqwest::Method::POST, &path, &[], None, None)
        .await?;
    let released = json_answer(response, &what).await?;
    if c.json {
        return print_json(&released);
    }
    outln!(
        "{}/{}: lock {} released",
        c.namespace,
        args.name,
        args.token
    )?;
    Ok(())
}

async fn namespace(args: NamespaceArgs, create: bool) -> Result<()> {
    let api: ApiClient = args.api.connect()?;
    let (method, what) = if create {
        (reqwest::Method::POST, "create")
    } else {
        (reqwest::Method::DELETE, "destroy")
    };
    let what_failed = format!("cannot {what} namespace {:?}", args.namespace);
    let path = format!("/v1/space/{}", segment(&args.namespace));
    let response = api.send(method, &path, &[], None, None).await?;
    let done = json_answer(response, &what_failed).await?;
    if args.json {
        return print_json(&done);
    }
    if create {
        outln!("namespace {} created", args.namespace)?;
    } else {
        outln!("namespace {} destroyed", args.namespace)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_percent_encoded_whole() {
        assert_eq!(segment("a-b_c.d~1"), "a-b_c.d~1");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
        assert_eq!(segment("é"), "%C3%A9");
        assert_eq!(segment("?&="), "%3F%26%3D");
    }

    #[test]
    fn tags_are_texts_or_integers() {
        let json = tags_json(&["n=5".into(), "city=Besançon".into()])
            .unwrap()
            .unwrap();
        assert!(json.is_ascii(), "{json}");
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["n"], 5);
        assert_eq!(value["city"], "Besançon");
        assert!(tags_json(&["novalue".into()]).is_err());
        assert_eq!(tags_json(&[]).unwrap(), None);
    }
}
