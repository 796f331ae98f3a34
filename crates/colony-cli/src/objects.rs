//! `colony objects` and `colony object …`: distributed objects through a
//! running peer's local API (`/v1/objects`, `/v1/calls`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use colony::deploy::{Descriptor, ServiceRegistry};
use colony::ObjectSummary;

use crate::client::{ApiClient, ApiClientArgs};
use crate::jobs::ApiArgs;

#[derive(Subcommand, Debug)]
pub(crate) enum ObjectCommand {
    /// Create an object of a type the peers host (e.g. `counter 0`) from
    /// JSON parameters, and print its URI. Its fault tolerance comes from
    /// --protocol, or from a descriptor's virtual node (`pml` every 60 s
    /// if neither is given).
    Create(CreateArgs),
    /// Call an object with a JSON request (e.g. '{"add": 5}' or '"get"'
    /// for a counter) and print its JSON reply; --repeat sends the same
    /// request N times at once and prints every reply.
    Call(CallArgs),
    /// Print an object's type and fault tolerance.
    Get(UriArgs),
    /// Delete an object: later calls fail with "no object".
    Rm(UriArgs),
}

#[derive(Args, Debug)]
pub(crate) struct CreateArgs {
    #[command(flatten)]
    api: ApiClientArgs,
    /// The object's type, e.g. counter or tsp-island (`colony apps` lists
    /// what peers run; object types are the example ones built in).
    object_type: String,
    /// Its parameters as JSON, e.g. `0` for a counter.
    #[arg(default_value = "null")]
    params: String,
    /// Fault tolerance: none, checkpoint or pml.
    #[arg(long, conflicts_with = "descriptor")]
    protocol: Option<String>,
    /// Time to checkpoint, in seconds (with --protocol).
    #[arg(long, requires = "protocol")]
    ttc_s: Option<f64>,
    /// Deployment descriptor whose virtual node's fault-tolerance service
    /// protects the object (as Fig. 5 of seed 000 puts pml on the master).
    #[arg(long, value_name = "FILE")]
    descriptor: Option<PathBuf>,
    /// The descriptor's virtual node (default: its only one).
    #[arg(long, value_name = "NAME", requires = "descriptor")]
    virtual_node: Option<String>,
}

#[derive(Args, Debug)]
pub(crate) struct CallArgs {
    #[command(flatten)]
    api: ApiClientArgs,
    /// The object, `colony://<network>/<guid>`.
    uri: String,
    /// The request as JSON.
    request: String,
    /// Send the request this many times at once (1 to 10000).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    repeat: u32,
    /// Give up on a call after this many seconds.
    #[arg(long, default_value_t = 30.0)]
    timeout_s: f64,
    /// Print the API's JSON answer (`{"replies": [...]}`) instead of one
    /// reply per line.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct UriArgs {
    #[command(flatten)]
    api: ApiClientArgs,
    /// The object, `colony://<network>/<guid>`.
    uri: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `colony objects`: the objects whose primary is the peer.
pub(crate) async fn list(args: ApiArgs) -> Result<()> {
    let objects: Vec<ObjectSummary> = args.api.connect()?.get_json("/v1/objects").await?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&objects)?)?;
        return Ok(());
    }
    outln!(
        "{:<58} {:<12} {:<16} {:>8} {:>7} {:>18} {:>9}",
        "OBJECT",
        "TYPE",
        "PROTOCOL",
        "SERVED",
        "LOGGED",
        "LAST_CHECKPOINT",
        "RUNNING"
    )?;
    for o in &objects {
        let protocol = match o.ttc_ms {
            Some(ttc) => format!("{} ttc={}s", o.protocol, ttc as f64 / 1000.0),
            None => o.protocol.clone(),
        };
        let checkpoint = format!(
            "{} calls, {:.1}s ago",
            o.checkpoint_covers,
            o.checkpoint_age_ms as f64 / 1000.0
        );
        let running = o.running_ms.map_or_else(
            || "-".to_string(),
            |ms| format!("{:.1}s", ms as f64 / 1000.0),
        );
        outln!(
            "{:<58} {:<12} {:<16} {:>8} {:>7} {:>18} {:>9}",
            o.uri,
            o.object_type,
            protocol,
            o.served,
            o.logged,
            checkpoint,
            running
        )?;
    }
    Ok(())
}

pub(crate) async fn run(command: ObjectCommand) -> Result<()> {
    match command {
        ObjectCommand::Create(args) => create(args).await,
        ObjectCommand::Call(args) => call(args).await,
        ObjectCommand::Get(args) => get(args).await,
        ObjectCommand::Rm(args) => remove(args).await,
    }
}

fn parse_json(what: &str, text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).with_context(|| {
        format!(
            "{what} must be JSON (a string needs quotes: '\"get\"'), got {:?}",
            text.chars().take(80).collect::<String>()
        )
    })
}

async fn create(args: CreateArgs) -> Result<()> {
    let params = parse_json("the parameters", &args.params)?;
    let fault_tolerance = match (&args.protocol, &args.descriptor) {
        (Some(protocol), _) => {
            let mut ft = serde_json::json!({ "protocol": protocol });
            if let Some(ttc) = args.ttc_s {
                ft["ttc_s"] = serde_json::json!(ttc);
            }
            Some(ft)
        }
        (None, Some(path)) => {
            let descriptor = Descriptor::load(path, &ServiceRegistry::with_builtins())?;
            let node = descriptor.pick_virtual_node(args.virtual_node.as_deref())?;
            let ft = node.settings.fault_tolerance;
            Some(serde_json::json!({
                "protocol": ft.protocol.name(),
                "ttc_s": ft.ttc.as_secs_f64(),
            }))
        }
        (None, None) => None,
    };
    let mut body = serde_json::json!({ "type": args.object_type, "params": params });
    if let Some(ft) = fault_tolerance {
        body["fault_tolerance"] = ft;
    }
    let uri = create_through(&args.api.connect()?, &body).await?;
    outln!("{uri}")?;
    Ok(())
}

/// `POST /v1/objects` of `body` (`type`, `params`, `fault_tolerance`)
/// through `client`: the new object's URI.
pub(crate) async fn create_through(client: &ApiClient, body: &serde_json::Value) -> Result<String> {
    let answer = client
        .json(
            reqwest::Method::POST,
            "/v1/objects",
            Some(body),
            Some(Duration::from_secs(40)),
        )
        .await?;
    let uri = answer["uri"]
        .as_str()
        .context("the peer's answer names no uri")?;
    Ok(uri.to_string())
}

async fn call(args: CallArgs) -> Result<()> {
    if !(args.timeout_s.is_finite() && args.timeout_s > 0.0) {
        bail!("--timeout-s must be a positive number of seconds");
    }
    let request = parse_json("the request", &args.request)?;
    check_uri(&args.uri)?;
    let calls: Vec<serde_json::Value> = (0..args.repeat)
        .map(|_| serde_json::json!({ "uri": args.uri, "request": request }))
        .collect();
    let body = serde_json::json!({ "calls": calls, "timeout_s": args.timeout_s });
    let client = args.api.connect()?;
    let wait = Duration::from_secs_f64(args.timeout_s) + Duration::from_secs(10);
    let answer = client
        .json(reqwest::Method::POST, "/v1/calls", Some(&body), Some(wait))
        .await?;
    if args.json {
        outln!("{answer}")?;
    }
    let replies = answer["replies"]
        .as_array()
        .context("the peer's answer has no replies")?;
    let mut failed = 0usize;
    let mut last_error = String::new();
    for reply in replies {
        match (reply.get("ok"), reply.get("error")) {
            (Some(ok), _) if !args.json => outln!("{ok}")?,
            (Some(_), _) => {}
            (None, error) => {
                failed += 1;
                last_error = error.and_then(|e| e.as_str()).unwrap_or("?").to_string();
            }
        }
    }
    if failed > 0 {
        bail!(
            "{failed} of {} calls failed; the last: {last_error}",
            replies.len()
        );
    }
    Ok(())
}

async fn get(args: UriArgs) -> Result<()> {
    let (client, path) = object_path(&args)?;
    let found = client
        .json(
            reqwest::Method::GET,
            &path,
            None,
            Some(Duration::from_secs(40)),
        )
        .await?;
    if args.json {
        outln!("{found}")?;
    } else {
        let ttc = found["ttc_ms"]
            .as_u64()
            .map(|ms| format!(" ttc={}s", ms as f64 / 1000.0))
            .unwrap_or_default();
        outln!(
            "{} {} {}{ttc}",
            args.uri,
            found["type"].as_str().unwrap_or("?"),
            found["protocol"].as_str().unwrap_or("?")
        )?;
    }
    Ok(())
}

async fn remove(args: UriArgs) -> Result<()> {
    let (client, path) = object_path(&args)?;
    client
        .json(
            reqwest::Method::DELETE,
            &path,
            None,
            Some(Duration::from_secs(40)),
        )
        .await?;
    if !args.json {
        outln!("deleted {}", args.uri)?;
    }
    Ok(())
}

/// The object's URI, parsed: a malformed one is refused before any peer
/// is asked.
fn check_uri(uri: &str) -> Result<colony::ObjectUri> {
    uri.parse().with_context(|| {
        format!(
            "{:?} is not an object URI",
            uri.chars().take(80).collect::<String>()
        )
    })
}

/// The peer to ask and the path of the object (named by its GUID there:
/// the peer's own network is implied).
fn object_path(args: &UriArgs) -> Result<(ApiClient, String)> {
    let uri = check_uri(&args.uri)?;
    Ok((args.api.connect()?, format!("/v1/objects/{}", uri.guid)))
}
