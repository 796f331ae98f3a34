//! Deployment descriptors: where a computation runs and which technical
//! services protect it, chosen by the deployer in a TOML file without
//! touching the application (seed 000 §5, ProActive's descriptors with
//! virtual nodes and technical services).
//!
//! ```toml
//! network = "flowshop"
//! bootstrap = ["/ip4/10.0.0.5/tcp/7070/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"]
//!
//! [virtual_nodes.master]
//! acquire = "local"           # this peer
//! service = "ft-master"
//!
//! [virtual_nodes.slaves]
//! acquire = "network"         # best effort, like `colony run --peers 1000`
//! nodes_asked = 1000
//!
//! [services.ft-master]
//! kind = "fault-tolerance"
//! protocol = "checkpoint"
//! ttc = 60
//! ```
//!
//! - A **virtual node** is the application's abstraction of where it runs;
//!   the descriptor maps it to nodes: this peer (`acquire = "local"`),
//!   peers acquired from the network, best effort (`acquire = "network"`
//!   with `nodes_asked = N`), or given hosts (`acquire = "hosts"` with
//!   `hosts = ["multiaddr", ...]`).
//! - A **technical service** (`[services.<id>]`, `kind = "<kind>"`, the
//!   kind's arguments as the other keys) configures every node of the
//!   virtual nodes that name it with `service = "<id>"`. A virtual node has
//!   at most one service: two services written independently may clash, so
//!   combining them is the job of a service that merges both (seed 000
//!   §5.2). The built-in kind is `fault-tolerance` ([`FaultToleranceService`]);
//!   an expert adds kinds with [`ServiceRegistry::register`].
//!
//! [`Descriptor::parse`] and [`Descriptor::load`] check everything at once
//! and report the first problem with its line (and file) and key, so a bad
//! descriptor stops a deployment before anything starts.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use libp2p::Multiaddr;
use serde::Deserialize;
use toml::Spanned;

pub use colony_core::ft::{CheckpointStorage, FaultTolerance, FtError, FtProtocol};
/// The `toml` crate, for [`TechnicalService::init`]'s argument table.
pub use toml;

/// The kind name of the built-in fault-tolerance service.
pub const FAULT_TOLERANCE_KIND: &str = "fault-tolerance";

/// What the runtime reads from a node once its technical service has been
/// applied: the settings every job or object placed there gets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeSettings {
    /// Rollback-recovery protocol, TTC, checkpoint storage and home size.
    pub fault_tolerance: FaultTolerance,
    /// Free-form settings left by third-party services, by name; the
    /// runtime passes them on untouched. Prefix names with the service's
    /// kind (`load-balancing.metric`) to keep them apart.
    pub extensions: BTreeMap<String, String>,
}

/// Why a technical service rejected its arguments.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ServiceError {
    key: Option<String>,
    message: String,
}

impl ServiceError {
    /// An error about the arguments as a whole.
    pub fn new(message: impl Into<String>) -> Self {
        ServiceError {
            key: None,
            message: message.into(),
        }
    }

    /// An error about the argument `key`; the descriptor error then points
    /// at that argument's line.
    pub fn for_key(key: impl Into<String>, message: impl Into<String>) -> Self {
        ServiceError {
            key: Some(key.into()),
            message: message.into(),
        }
    }

    /// The argument at fault, if one is.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// What is wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// A non-functional requirement fulfilled by configuring nodes at deployment
/// (seed 000 §5.2). One instance is created per `[services.<id>]` section,
/// initialised once with its arguments, then applied to each node of every
/// virtual node that names it, before the node is used.
///
/// An expert adds a service without touching Colony:
///
/// ```
/// use colony::deploy::{
///     toml, Descriptor, NodeSettings, ServiceError, ServiceRegistry, TechnicalService,
/// };
///
/// /// Spreads work by a chosen metric (seed 000 Fig. 4).
/// #[derive(Default)]
/// struct LoadBalancing {
///     metric: String,
/// }
///
/// impl TechnicalService for LoadBalancing {
///     fn init(&mut self, args: &toml::Table) -> Result<(), ServiceError> {
///         match args.get("metric") {
///             Some(toml::Value::String(metric)) => self.metric = metric.clone(),
///             _ => return Err(ServiceError::for_key("metric", "metric must be a string")),
///         }
///         Ok(())
///     }
///
///     fn apply(&self, node: &mut NodeSettings) {
///         node.extensions
///             .insert("load-balancing.metric".into(), self.metric.clone());
///     }
/// }
///
/// let mut registry = ServiceRegistry::with_builtins();
/// registry.register("load-balancing", || Box::new(LoadBalancing::default()));
/// let descriptor = Descriptor::parse(
///     r#"
///     [virtual_nodes.workers]
///     acquire = "network"
///     nodes_asked = 8
///     service = "lb"
///
///     [services.lb]
///     kind = "load-balancing"
///     metric = "cpu-load"
///     "#,
///     &registry,
/// )?;
/// let workers = descriptor.pick_virtual_node(None)?;
/// assert_eq!(workers.settings.extensions["load-balancing.metric"], "cpu-load");
/// # Ok::<(), colony::deploy::DescriptorError>(())
/// ```
pub trait TechnicalService: Send + Sync {
    /// Reads the service's arguments: everything in `[services.<id>]` but
    /// `kind`. Called once, before any [`apply`](Self::apply).
    fn init(&mut self, args: &toml::Table) -> Result<(), ServiceError>;

    /// Applies the service to one node of a virtual node it is attached to.
    fn apply(&self, node: &mut NodeSettings);
}

/// Creates a fresh, uninitialised instance of a service kind.
pub type ServiceFactory = Arc<dyn Fn() -> Box<dyn TechnicalService> + Send + Sync>;

/// The technical service kinds a descriptor may name, by kind.
#[derive(Clone, Default)]
pub struct ServiceRegistry {
    factories: BTreeMap<String, ServiceFactory>,
}

impl fmt::Debug for ServiceRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceRegistry")
            .field("kinds", &self.factories.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ServiceRegistry {
    /// A registry with no kinds at all.
    pub fn new() -> Self {
        ServiceRegistry::default()
    }

    /// A registry with the built-in kinds: `fault-tolerance`.
    pub fn with_builtins() -> Self {
        let mut registry = ServiceRegistry::new();
        registry.register(FAULT_TOLERANCE_KIND, || {
            Box::new(FaultToleranceService::default())
        });
        registry
    }

    /// Makes `kind` available to descriptors; `factory` creates one instance
    /// per `[services.<id>]` of that kind. Registering a kind again replaces
    /// it (a built-in included).
    pub fn register<F>(&mut self, kind: impl Into<String>, factory: F) -> &mut Self
    where
        F: Fn() -> Box<dyn TechnicalService> + Send + Sync + 'static,
    {
        self.factories.insert(kind.into(), Arc::new(factory));
        self
    }

    /// The registered kinds, sorted.
    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.factories.keys().map(String::as_str)
    }

    /// A fresh instance of `kind`, if it is registered.
    pub fn create(&self, kind: &str) -> Option<Box<dyn TechnicalService>> {
        self.factories.get(kind).map(|factory| factory())
    }
}

/// The built-in `fault-tolerance` service (seed 000 §6.1.1): sets the
/// fault-tolerance settings of every node it is applied to.
///
/// Arguments, each optional (defaults from [`FaultTolerance::default`]):
/// `protocol` (`"none"` or `"checkpoint"`), `ttc` (seconds, integer or
/// float, > 0), `storage` (`"local"`, `"copies:R"` or `"shards:K+M"`),
/// `home_size` (integer, 1 to 16) and `durable` (boolean).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultToleranceService {
    settings: FaultTolerance,
}

impl FaultToleranceService {
    /// The settings read by [`TechnicalService::init`].
    pub fn settings(&self) -> FaultTolerance {
        self.settings
    }
}

const FT_ARGS: &str = "protocol, ttc, storage, home_size and durable";

impl TechnicalService for FaultToleranceService {
    fn init(&mut self, args: &toml::Table) -> Result<(), ServiceError> {
        let mut ft = FaultTolerance::default();
        for (key, value) in args {
            match key.as_str() {
                "protocol" => ft.protocol = parse_protocol(value)?,
                "ttc" => ft.ttc = parse_ttc(value)?,
                "storage" => {
                    let text = string_arg(key, value, "\"local\", \"copies:R\" or \"shards:K+M\"")?;
                    ft.storage = text
                        .parse()
                        .map_err(|e: FtError| ServiceError::for_key(key, e.to_string()))?;
                }
                "home_size" => {
                    let n = match value {
                        toml::Value::Integer(n) => *n,
                        other => {
                            return Err(ServiceError::for_key(
                                key,
                                format!("home_size must be an integer, got {}", a_type(other)),
                            ))
                        }
                    };
                    ft.home_size = FaultTolerance::home_size_from(n)
                        .map_err(|e| ServiceError::for_key(key, e.to_string()))?;
                }
                "durable" => match value {
                    toml::Value::Boolean(b) => ft.durable = *b,
                    other => {
                        return Err(ServiceError::for_key(
                            key,
                            format!("durable must be true or false, got {}", a_type(other)),
                        ))
                    }
                },
                other => {
                    return Err(ServiceError::for_key(
                        other,
                        format!(
                            "unknown argument `{other}`; {FAULT_TOLERANCE_KIND} takes {FT_ARGS}"
                        ),
                    ))
                }
            }
        }
        ft.validate().map_err(|e| {
            let candidates: &[&str] = match e {
                FtError::ZeroTtc
                | FtError::TtcNotPositive(_)
                | FtError::TtcTooSmall { .. }
                | FtError::TtcTooLarge(_) => &["ttc"],
                FtError::HomeSize(_) => &["home_size"],
                FtError::Copies { .. } | FtError::Shards { .. } => &["storage", "home_size"],
                FtError::BadStorage(_) => &["storage"],
                FtError::BadProtocol(_) | FtError::ObjectsOnly(_) => &["protocol"],
            };
            let mut message = e.to_string();
            if matches!(e, FtError::Copies { .. }) && !args.contains_key("storage") {
                message.push_str(&format!(
                    " (storage defaults to {}; set storage)",
                    FaultTolerance::default().storage
                ));
            }
            match candidates.iter().find(|k| args.contains_key(**k)) {
                Some(key) => ServiceError::for_key(*key, message),
                None => ServiceError::new(message),
            }
        })?;
        self.settings = ft;
        Ok(())
    }

    fn apply(&self, node: &mut NodeSettings) {
        node.fault_tolerance = self.settings;
    }
}

/// "a string", "an integer"...: a TOML value's type with its article.
fn a_type(value: &toml::Value) -> String {
    let name = value.type_str();
    let article = if name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {name}")
}

fn string_arg<'a>(
    key: &str,
    value: &'a toml::Value,
    expected: &str,
) -> Result<&'a str, ServiceError> {
    match value {
        toml::Value::String(s) => Ok(s),
        other => Err(ServiceError::for_key(
            key,
            format!("{key} must be {expected}, got {}", a_type(other)),
        )),
    }
}

fn parse_protocol(value: &toml::Value) -> Result<FtProtocol, ServiceError> {
    const EXPECTED: &str = "\"none\", \"checkpoint\", \"pml\" or \"cic\"";
    let text = string_arg("protocol", value, EXPECTED)?;
    match FtProtocol::from_name(text) {
        Some(protocol) => Ok(protocol),
        None if text.eq_ignore_ascii_case("replicate") => Err(ServiceError::for_key(
            "protocol",
            format!("protocol {text:?} is not supported yet: use {EXPECTED}"),
        )),
        None => Err(ServiceError::for_key(
            "protocol",
            FtError::BadProtocol(text.to_string()).to_string(),
        )),
    }
}

fn parse_ttc(value: &toml::Value) -> Result<Duration, ServiceError> {
    // Integers and floats go through the one conversion the API uses too.
    let secs = match value {
        toml::Value::Integer(n) => *n as f64,
        toml::Value::Float(f) => *f,
        other => {
            return Err(ServiceError::for_key(
                "ttc",
                format!(
                    "ttc must be a number of seconds (e.g. ttc = 1 or ttc = 0.5), got {}",
                    a_type(other)
                ),
            ))
        }
    };
    FaultTolerance::ttc_from_secs(secs).map_err(|e| ServiceError::for_key("ttc", e.to_string()))
}

/// How the nodes of a virtual node are obtained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Acquisition {
    /// This peer only (`acquire = "local"`).
    Local,
    /// Peers acquired from the network, best effort: up to `nodes_asked`
    /// peers, this one included, like `colony run --peers N`
    /// (`acquire = "network"`).
    Network {
        /// Peers asked for, this one included.
        nodes_asked: usize,
    },
    /// The given peers, joined through their addresses
    /// (`acquire = "hosts"`).
    Hosts {
        /// Their addresses, e.g. `/ip4/10.0.0.7/tcp/7070/p2p/12D3…`.
        hosts: Vec<Multiaddr>,
    },
}

impl Acquisition {
    /// How many peers, this one included, to wait for before starting
    /// (best effort): 1 for local, `nodes_asked` for the network, one per
    /// host plus this one for hosts.
    pub fn peers_wanted(&self) -> usize {
        match self {
            Acquisition::Local => 1,
            Acquisition::Network { nodes_asked } => *nodes_asked,
            Acquisition::Hosts { hosts } => hosts.len() + 1,
        }
    }

    /// Addresses to join through in addition to the descriptor's
    /// `bootstrap`: the hosts, if any.
    pub fn extra_bootstrap(&self) -> &[Multiaddr] {
        match self {
            Acquisition::Hosts { hosts } => hosts,
            _ => &[],
        }
    }
}

impl fmt::Display for Acquisition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Acquisition::Local => write!(f, "local"),
            Acquisition::Network { nodes_asked } => write!(f, "network, {nodes_asked} asked"),
            Acquisition::Hosts { hosts } => write!(f, "{} hosts", hosts.len()),
        }
    }
}

/// A virtual node of a descriptor, with its service applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualNode {
    /// Its name, as the application and `colony run --virtual-node` know it.
    pub name: String,
    /// How its nodes are obtained.
    pub acquisition: Acquisition,
    /// The id of its technical service, if it has one.
    pub service: Option<String>,
    /// What each of its nodes runs with: [`NodeSettings::default`] with the
    /// service applied.
    pub settings: NodeSettings,
    /// The line of its `[virtual_nodes.<name>]` section.
    pub line: usize,
}

/// A parsed, checked deployment descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// The file it was loaded from (`None` when parsed from text).
    pub file: Option<PathBuf>,
    /// Network name (`network = "..."`), like `--network`; `None` if unset.
    pub network: Option<String>,
    /// Peers to join through, tried in order (`bootstrap = [...]`), like
    /// `--bootstrap`.
    pub bootstrap: Vec<Multiaddr>,
    /// The virtual nodes, in the order of the file.
    pub virtual_nodes: Vec<VirtualNode>,
}

// The file as written: every value the checks below may complain about keeps
// its byte span, for the line number.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDescriptor {
    network: Option<Spanned<String>>,
    bootstrap: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    virtual_nodes: BTreeMap<Spanned<String>, Spanned<RawVirtualNode>>,
    #[serde(default)]
    services: BTreeMap<Spanned<String>, Spanned<RawService>>,
}

/// A `[services.<id>]` section: `kind` and the arguments, with their spans.
type RawService = BTreeMap<Spanned<String>, Spanned<toml::Value>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVirtualNode {
    acquire: Spanned<String>,
    nodes_asked: Option<Spanned<i64>>,
    hosts: Option<Spanned<Vec<Spanned<String>>>>,
    service: Option<Spanned<String>>,
}

impl Descriptor {
    /// Parses and checks a descriptor; `registry` holds the service kinds it
    /// may name. Errors name the line and key.
    pub fn parse(text: &str, registry: &ServiceRegistry) -> Result<Descriptor, DescriptorError> {
        // Syntax first, so "malformed" and "wrong shape" read differently.
        if let Err(e) = toml::from_str::<toml::Table>(text) {
            return Err(DescriptorError::new(
                None,
                e.span().map(|s| line_of(text, s.start)),
                None,
                DescriptorErrorKind::Malformed(e.message().to_string()),
            ));
        }
        let raw: RawDescriptor = toml::from_str(text).map_err(|e| {
            let message = e
                .message()
                .replacen("unknown field", "unknown key", 1)
                .replacen("missing field", "missing key", 1)
                .replace("expected a map", "expected a table")
                .replace("expected a sequence", "expected an array");
            DescriptorError::new(
                None,
                e.span().map(|s| line_of(text, s.start)),
                None,
                DescriptorErrorKind::Invalid(message),
            )
        })?;
        let checker = Checker { text, registry };

        let network = match raw.network {
            Some(name) => {
                colony_net::validate_network_name(name.get_ref()).map_err(|e| {
                    checker.at(
                        name.span(),
                        "network".into(),
                        DescriptorErrorKind::BadNetwork(e.to_string()),
                    )
                })?;
                Some(name.into_inner())
            }
            None => None,
        };
        let bootstrap = raw
            .bootstrap
            .unwrap_or_default()
            .into_iter()
            .map(|addr| checker.addr(addr, "bootstrap".into()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut services = BTreeMap::new();
        for (id, section) in raw.services {
            let (id, service) = checker.service(id, section)?;
            services.insert(id, service);
        }
        let mut virtual_nodes = raw
            .virtual_nodes
            .into_iter()
            .map(|(name, node)| checker.virtual_node(name, node, &services))
            .collect::<Result<Vec<_>, _>>()?;
        virtual_nodes.sort_by_key(|node| node.line);

        Ok(Descriptor {
            file: None,
            network,
            bootstrap,
            virtual_nodes,
        })
    }

    /// Reads and parses the descriptor at `path`; errors name the file too.
    pub fn load(
        path: impl AsRef<Path>,
        registry: &ServiceRegistry,
    ) -> Result<Descriptor, DescriptorError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            DescriptorError::new(
                Some(path.to_path_buf()),
                None,
                None,
                DescriptorErrorKind::Read(e.to_string()),
            )
        })?;
        match Descriptor::parse(&text, registry) {
            Ok(mut descriptor) => {
                descriptor.file = Some(path.to_path_buf());
                Ok(descriptor)
            }
            Err(mut e) => {
                e.inner.file = Some(path.to_path_buf());
                Err(e)
            }
        }
    }

    /// The virtual node called `name`.
    pub fn virtual_node(&self, name: &str) -> Option<&VirtualNode> {
        self.virtual_nodes.iter().find(|node| node.name == name)
    }

    /// The virtual node a single job runs on: the one called `name` if
    /// given, else the only one. Errors list the names to choose from.
    pub fn pick_virtual_node(&self, name: Option<&str>) -> Result<&VirtualNode, DescriptorError> {
        let names = || self.virtual_nodes.iter().map(|n| n.name.clone()).collect();
        let error = |kind| DescriptorError::new(self.file.clone(), None, None, kind);
        match (name, self.virtual_nodes.as_slice()) {
            (Some(name), _) => self.virtual_node(name).ok_or_else(|| {
                error(DescriptorErrorKind::UnknownVirtualNode {
                    name: name.to_string(),
                    known: names(),
                })
            }),
            (None, []) => Err(error(DescriptorErrorKind::NoVirtualNode)),
            (None, [only]) => Ok(only),
            (None, _) => Err(error(DescriptorErrorKind::AmbiguousVirtualNode {
                known: names(),
            })),
        }
    }
}

/// Checks the parts of a descriptor, locating errors in its text.
struct Checker<'a> {
    text: &'a str,
    registry: &'a ServiceRegistry,
}

impl Checker<'_> {
    /// An error at the line of `span`, about `key`.
    fn at(&self, span: Range<usize>, key: String, kind: DescriptorErrorKind) -> DescriptorError {
        DescriptorError::new(None, Some(line_of(self.text, span.start)), Some(key), kind)
    }

    fn addr(&self, addr: Spanned<String>, key: String) -> Result<Multiaddr, DescriptorError> {
        addr.get_ref()
            .parse()
            .map_err(|e: libp2p::multiaddr::Error| {
                self.at(
                    addr.span(),
                    key,
                    DescriptorErrorKind::BadAddress {
                        addr: addr.get_ref().clone(),
                        reason: e.to_string(),
                    },
                )
            })
    }

    /// Creates and initialises the service of a `[services.<id>]` section.
    fn service(
        &self,
        id: Spanned<String>,
        section: Spanned<RawService>,
    ) -> Result<(String, Box<dyn TechnicalService>), DescriptorError> {
        let header = first(id.span(), section.span());
        let id = id.into_inner();
        let known = || self.registry.kinds().map(String::from).collect::<Vec<_>>();
        let mut kind = None;
        let mut args = toml::Table::new();
        let mut arg_spans = BTreeMap::new();
        for (key, value) in section.into_inner() {
            let key_span = key.span();
            let key = key.into_inner();
            if key == "kind" {
                let span = value.span();
                match value.into_inner() {
                    toml::Value::String(k) => kind = Some((k, span)),
                    other => {
                        return Err(self.at(
                            span,
                            format!("services.{id}.kind"),
                            DescriptorErrorKind::Invalid(format!(
                                "kind must be a string naming the service kind, got {}",
                                a_type(&other)
                            )),
                        ))
                    }
                }
            } else {
                arg_spans.insert(key.clone(), key_span);
                args.insert(key, value.into_inner());
            }
        }
        let Some((kind, kind_span)) = kind else {
            return Err(self.at(
                header,
                format!("services.{id}"),
                DescriptorErrorKind::MissingServiceKind { known: known() },
            ));
        };
        let Some(mut service) = self.registry.create(&kind) else {
            return Err(self.at(
                kind_span,
                format!("services.{id}.kind"),
                DescriptorErrorKind::UnknownServiceKind {
                    kind,
                    known: known(),
                },
            ));
        };
        if let Err(e) = service.init(&args) {
            let (span, key) = match e.key().and_then(|k| Some((k, arg_spans.get(k)?))) {
                Some((k, span)) => (span.clone(), format!("services.{id}.{k}")),
                None => (header, format!("services.{id}")),
            };
            return Err(self.at(
                span,
                key,
                DescriptorErrorKind::BadArgument {
                    service: id,
                    message: e.message().to_string(),
                },
            ));
        }
        Ok((id, service))
    }

    /// Checks a `[virtual_nodes.<name>]` section and applies its service.
    fn virtual_node(
        &self,
        name: Spanned<String>,
        node: Spanned<RawVirtualNode>,
        services: &BTreeMap<String, Box<dyn TechnicalService>>,
    ) -> Result<VirtualNode, DescriptorError> {
        let line = line_of(self.text, first(name.span(), node.span()).start);
        let name = name.into_inner();
        let node = node.into_inner();
        let key = |k: &str| format!("virtual_nodes.{name}.{k}");
        let bad = |span: Range<usize>, k: &str, message: String| {
            self.at(
                span,
                key(k),
                DescriptorErrorKind::BadAcquisition {
                    virtual_node: name.clone(),
                    message,
                },
            )
        };
        let mode = node.acquire.get_ref().as_str();
        let acquisition = match mode {
            "local" => Acquisition::Local,
            "network" => {
                let Some(asked) = &node.nodes_asked else {
                    return Err(bad(
                        node.acquire.span(),
                        "nodes_asked",
                        "acquire = \"network\" needs nodes_asked = N, the peers to \
                         acquire (this one included)"
                            .into(),
                    ));
                };
                let n = *asked.get_ref();
                let nodes_asked = usize::try_from(n).ok().filter(|n| *n >= 1).ok_or_else(|| {
                    bad(
                        asked.span(),
                        "nodes_asked",
                        format!("nodes_asked must be at least 1, got {n}"),
                    )
                })?;
                Acquisition::Network { nodes_asked }
            }
            "hosts" => {
                let Some(hosts) = node.hosts.clone() else {
                    return Err(bad(
                        node.acquire.span(),
                        "hosts",
                        "acquire = \"hosts\" needs hosts = [\"/ip4/…/tcp/…/p2p/…\", …]".into(),
                    ));
                };
                let hosts_span = hosts.span();
                let hosts = hosts
                    .into_inner()
                    .into_iter()
                    .map(|addr| self.addr(addr, key("hosts")))
                    .collect::<Result<Vec<_>, _>>()?;
                if hosts.is_empty() {
                    return Err(bad(
                        hosts_span,
                        "hosts",
                        "hosts is empty; list at least one address".into(),
                    ));
                }
                Acquisition::Hosts { hosts }
            }
            other => {
                return Err(bad(
                    node.acquire.span(),
                    "acquire",
                    format!("acquire must be \"local\", \"network\" or \"hosts\", got {other:?}"),
                ))
            }
        };
        if let (Some(asked), false) = (&node.nodes_asked, mode == "network") {
            return Err(bad(
                asked.span(),
                "nodes_asked",
                format!("nodes_asked only applies to acquire = \"network\", not {mode:?}"),
            ));
        }
        if let (Some(hosts), false) = (&node.hosts, mode == "hosts") {
            return Err(bad(
                hosts.span(),
                "hosts",
                format!("hosts only applies to acquire = \"hosts\", not {mode:?}"),
            ));
        }

        let mut settings = NodeSettings::default();
        let service = match node.service {
            Some(id) => {
                let Some(service) = services.get(id.get_ref()) else {
                    return Err(self.at(
                        id.span(),
                        key("service"),
                        DescriptorErrorKind::UndefinedService {
                            service: id.into_inner(),
                            defined: services.keys().cloned().collect(),
                        },
                    ));
                };
                service.apply(&mut settings);
                // A third-party service must not leave what the runtime
                // would refuse.
                if let Err(e) = settings.fault_tolerance.validate() {
                    return Err(self.at(
                        id.span(),
                        key("service"),
                        DescriptorErrorKind::BadArgument {
                            service: id.into_inner(),
                            message: format!(
                                "the service left invalid fault-tolerance settings: {e}"
                            ),
                        },
                    ));
                }
                Some(id.into_inner())
            }
            None => None,
        };
        Ok(VirtualNode {
            name,
            acquisition,
            service,
            settings,
            line,
        })
    }
}

/// Whichever span starts first: a section's header, whether toml spans the
/// section from its key or from its table.
fn first(a: Range<usize>, b: Range<usize>) -> Range<usize> {
    if a.start <= b.start {
        a
    } else {
        b
    }
}

/// The 1-based line holding byte `offset` of `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// A descriptor that cannot be used: what is wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescriptorError {
    inner: Box<ErrorInner>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ErrorInner {
    file: Option<PathBuf>,
    line: Option<usize>,
    key: Option<String>,
    kind: DescriptorErrorKind,
}

impl DescriptorError {
    fn new(
        file: Option<PathBuf>,
        line: Option<usize>,
        key: Option<String>,
        kind: DescriptorErrorKind,
    ) -> Self {
        DescriptorError {
            inner: Box::new(ErrorInner {
                file,
                line,
                key,
                kind,
            }),
        }
    }

    /// The descriptor file, if it was loaded from one.
    pub fn file(&self) -> Option<&Path> {
        self.inner.file.as_deref()
    }

    /// The 1-based line at fault, when the problem is at one place.
    pub fn line(&self) -> Option<usize> {
        self.inner.line
    }

    /// The dotted key at fault, e.g. `services.ft-master.ttc`.
    pub fn key(&self) -> Option<&str> {
        self.inner.key.as_deref()
    }

    /// What is wrong.
    pub fn kind(&self) -> &DescriptorErrorKind {
        &self.inner.kind
    }
}

impl fmt::Display for DescriptorError {
    /// `FILE, line N, at KEY: what is wrong` (parts that are unknown are
    /// left out).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut place = Vec::new();
        if let Some(file) = &self.inner.file {
            place.push(format!("{}", file.display()));
        }
        if let Some(line) = self.inner.line {
            place.push(format!("line {line}"));
        }
        if let Some(key) = &self.inner.key {
            place.push(format!("at `{key}`"));
        }
        if place.is_empty() {
            write!(f, "{}", self.inner.kind)
        } else {
            write!(f, "{}: {}", place.join(", "), self.inner.kind)
        }
    }
}

impl std::error::Error for DescriptorError {}

/// What is wrong with a descriptor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DescriptorErrorKind {
    /// The file could not be read.
    #[error("cannot read the descriptor: {0}")]
    Read(String),
    /// Not TOML.
    #[error("malformed TOML: {0}")]
    Malformed(String),
    /// TOML, but not a descriptor: an unknown or missing key, or a value of
    /// the wrong type.
    #[error("{0}")]
    Invalid(String),
    /// The network name cannot be used.
    #[error("{0}")]
    BadNetwork(String),
    /// An address is not a multiaddr.
    #[error(
        "{addr:?} is not a multiaddr{}; write e.g. /ip4/10.0.0.5/tcp/7070/p2p/12D3…",
        detail(reason)
    )]
    BadAddress {
        /// The address as written.
        addr: String,
        /// Why it does not parse.
        reason: String,
    },
    /// A service has no `kind`.
    #[error("the service has no `kind`; known kinds: {}", list(known))]
    MissingServiceKind {
        /// The registered kinds.
        known: Vec<String>,
    },
    /// A service's kind is not registered.
    #[error("unknown service kind {kind:?}; known kinds: {}", list(known))]
    UnknownServiceKind {
        /// The kind as written.
        kind: String,
        /// The registered kinds.
        known: Vec<String>,
    },
    /// A service rejected its arguments.
    #[error("{message}")]
    BadArgument {
        /// The service id.
        service: String,
        /// What the service said.
        message: String,
    },
    /// A virtual node names a service id that is not defined.
    #[error("service {service:?} is not defined (defined services: {}); add a [services.{service}] section", list(defined))]
    UndefinedService {
        /// The id as written.
        service: String,
        /// The ids defined in the file.
        defined: Vec<String>,
    },
    /// A virtual node's acquisition is incoherent.
    #[error("{message}")]
    BadAcquisition {
        /// The virtual node.
        virtual_node: String,
        /// What is wrong.
        message: String,
    },
    /// No virtual node to run on.
    #[error("the descriptor declares no virtual node; add a [virtual_nodes.<name>] section")]
    NoVirtualNode,
    /// The virtual node asked for does not exist.
    #[error(
        "no virtual node named {name:?}; the descriptor declares: {}",
        list(known)
    )]
    UnknownVirtualNode {
        /// The name asked for.
        name: String,
        /// The names declared.
        known: Vec<String>,
    },
    /// Several virtual nodes and none chosen.
    #[error("the descriptor declares several virtual nodes ({}); choose one by name (colony run --virtual-node NAME)", list(known))]
    AmbiguousVirtualNode {
        /// The names declared.
        known: Vec<String>,
    },
}

/// ` (reason)`, unless the reason only says the address is invalid.
fn detail(reason: &str) -> String {
    if reason == "invalid multiaddr" {
        String::new()
    } else {
        format!(" ({reason})")
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use colony_core::object::ObjectProtocol;
    use proptest::prelude::*;

    const FLOWSHOP: &str = include_str!("../../../examples/deploy/flowshop.toml");
    const SHARDS: &str = include_str!("../../../examples/deploy/shards.toml");
    const OBJECTS: &str = include_str!("../../../examples/deploy/objects.toml");
    const PEER: &str = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";

    fn parse(text: &str) -> Result<Descriptor, DescriptorError> {
        Descriptor::parse(text, &ServiceRegistry::with_builtins())
    }

    #[test]
    fn the_flowshop_example_maps_fig_5() {
        let d = parse(FLOWSHOP).expect("flowshop.toml parses");
        assert_eq!(d.network.as_deref(), Some("flowshop"));
        assert_eq!(
            d.bootstrap,
            vec![format!("/ip4/10.0.0.5/tcp/7070/p2p/{PEER}")
                .parse::<Multiaddr>()
                .unwrap()]
        );
        let names: Vec<&str> = d.virtual_nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["master", "slaves"], "in the order of the file");

        let master = d.virtual_node("master").expect("master");
        assert_eq!(master.acquisition, Acquisition::Local);
        assert_eq!(master.acquisition.peers_wanted(), 1);
        assert_eq!(master.service.as_deref(), Some("ft-master"));
        assert_eq!(
            master.settings.fault_tolerance,
            FaultTolerance {
                protocol: FtProtocol::Checkpoint,
                ttc: Duration::from_secs(60),
                storage: CheckpointStorage::Copies { r: 2 },
                home_size: 3,
                durable: false,
            }
        );
        assert!(master.settings.extensions.is_empty());

        let slaves = d.virtual_node("slaves").expect("slaves");
        assert_eq!(
            slaves.acquisition,
            Acquisition::Network { nodes_asked: 1000 }
        );
        assert_eq!(slaves.acquisition.peers_wanted(), 1000);
        assert!(slaves.acquisition.extra_bootstrap().is_empty());
        assert_eq!(slaves.settings.fault_tolerance, FaultTolerance::none());
        assert_eq!(
            (master.line, slaves.line),
            (
                FLOWSHOP
                    .lines()
                    .position(|l| l == "[virtual_nodes.master]")
                    .unwrap()
                    + 1,
                FLOWSHOP
                    .lines()
                    .position(|l| l == "[virtual_nodes.slaves]")
                    .unwrap()
                    + 1
            )
        );

        assert_eq!(d.pick_virtual_node(Some("slaves")).unwrap().name, "slaves");
        let two = d.pick_virtual_node(None).unwrap_err().to_string();
        assert!(
            two.contains("several virtual nodes (master, slaves)"),
            "{two}"
        );
        let unknown = d
            .pick_virtual_node(Some("workers"))
            .unwrap_err()
            .to_string();
        assert!(
            unknown.contains(
                "no virtual node named \"workers\"; the descriptor declares: master, slaves"
            ),
            "{unknown}"
        );
    }

    #[test]
    fn the_shards_example_codes_checkpoints_on_known_hosts() {
        let d = parse(SHARDS).expect("shards.toml parses");
        assert_eq!(d.network.as_deref(), Some("lab"));
        assert!(d.bootstrap.is_empty());
        let cluster = d.pick_virtual_node(None).expect("the only virtual node");
        assert_eq!(cluster.name, "cluster");
        let hosts: Vec<Multiaddr> = [
            format!("/ip4/10.0.0.11/tcp/7070/p2p/{PEER}"),
            "/ip4/10.0.0.12/tcp/7070".into(),
            "/dns4/node3.lab.example/tcp/7070".into(),
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        assert_eq!(cluster.acquisition.extra_bootstrap(), hosts.as_slice());
        assert_eq!(
            cluster.acquisition.peers_wanted(),
            4,
            "three hosts and this peer"
        );
        assert_eq!(
            cluster.settings.fault_tolerance,
            FaultTolerance {
                protocol: FtProtocol::Checkpoint,
                ttc: Duration::from_millis(500),
                storage: CheckpointStorage::Shards { k: 4, m: 2 },
                home_size: 6,
                durable: true,
            }
        );
    }

    #[test]
    fn a_node_without_a_service_gets_the_defaults_and_missing_arguments_too() {
        let d = parse(
            "[virtual_nodes.plain]\nacquire = \"local\"\n\n\
             [virtual_nodes.short]\nacquire = \"local\"\nservice = \"ft\"\n\n\
             [services.ft]\nkind = \"fault-tolerance\"\nttc = 2\n",
        )
        .unwrap();
        assert_eq!(d.network, None);
        let plain = d.virtual_node("plain").unwrap();
        assert_eq!(plain.service, None);
        assert_eq!(plain.settings, NodeSettings::default());
        assert_eq!(plain.settings.fault_tolerance, FaultTolerance::default());
        assert_eq!(
            d.virtual_node("short").unwrap().settings.fault_tolerance,
            FaultTolerance {
                ttc: Duration::from_secs(2),
                ..FaultTolerance::default()
            }
        );
        let empty = parse("network = \"solo\"\n").unwrap();
        assert!(empty.virtual_nodes.is_empty());
        let none = empty.pick_virtual_node(None).unwrap_err().to_string();
        assert!(none.contains("declares no virtual node"), "{none}");
    }

    /// A node and a service around `args` (the service's lines start at 5).
    #[test]
    fn the_objects_example_logs_the_master_and_checkpoints_the_islands() {
        let d = parse(OBJECTS).expect("objects.toml parses");
        let master = d.virtual_node("master").unwrap().settings.fault_tolerance;
        assert_eq!(
            ObjectProtocol::from(&master),
            ObjectProtocol::Pml { ttc_ms: 30_000 }
        );
        let islands = d.virtual_node("islands").unwrap().settings.fault_tolerance;
        assert_eq!(
            ObjectProtocol::from(&islands),
            ObjectProtocol::Checkpoint { ttc_ms: 2_000 }
        );
    }

    #[test]
    fn pml_and_cic_protect_the_objects_of_their_virtual_node_and_jobs_refuse_them() {
        let d = parse(&with_ft("protocol = \"pml\"\nttc = 2.5\n")).unwrap();
        let ft = d.virtual_node("master").unwrap().settings.fault_tolerance;
        assert_eq!(ft.protocol, FtProtocol::Pml);
        assert_eq!(
            ObjectProtocol::from(&ft),
            ObjectProtocol::Pml { ttc_ms: 2_500 }
        );
        let refused = ft.validate_for_job().unwrap_err().to_string();
        assert!(refused.contains("not jobs"), "{refused}");
        let checkpoint = parse(&with_ft("protocol = \"checkpoint\"\nttc = 1\n")).unwrap();
        let ft = checkpoint
            .virtual_node("master")
            .unwrap()
            .settings
            .fault_tolerance;
        assert_eq!(ft.validate_for_job(), Ok(()));
        assert_eq!(
            ObjectProtocol::from(&ft),
            ObjectProtocol::Checkpoint { ttc_ms: 1_000 }
        );
        let none = parse(&with_ft("protocol = \"none\"\n")).unwrap();
        let ft = none
            .virtual_node("master")
            .unwrap()
            .settings
            .fault_tolerance;
        assert_eq!(ObjectProtocol::from(&ft), ObjectProtocol::None);
        let cic = parse(&with_ft("protocol = \"cic\"\nttc = 3\n")).unwrap();
        let ft = cic.virtual_node("master").unwrap().settings.fault_tolerance;
        assert_eq!(
            ObjectProtocol::from(&ft),
            ObjectProtocol::Cic { ttc_ms: 3_000 }
        );
        let refused = ft.validate_for_job().unwrap_err().to_string();
        assert!(refused.contains("protocol cic"), "{refused}");
    }

    fn with_ft(args: &str) -> String {
        format!(
            "[virtual_nodes.master]\nacquire = \"local\"\nservice = \"ft\"\n\n\
             [services.ft]\nkind = \"fault-tolerance\"\n{args}"
        )
    }

    #[test]
    fn every_error_names_its_line_and_says_what_is_wrong() {
        let cases: Vec<(String, usize, &str)> = vec![
            // Malformed TOML.
            (
                "network = \"x\"\n\n[virtual_nodes.master\nacquire = \"local\"\n".into(),
                3,
                "malformed TOML",
            ),
            ("network = \"x\"\nbootstrap = [\"a\",\n".into(), 2, "malformed TOML"),
            ("[services.a]\nkind = \"x\"\n[services.a]\n".into(), 3, "malformed TOML"),
            // Unknown keys.
            ("network = \"x\"\nnetwrok = \"y\"\n".into(), 2, "unknown key `netwrok`"),
            (
                "[virtual_nodes.m]\nacquire = \"local\"\nnodesasked = 3\n".into(),
                3,
                "unknown key `nodesasked`",
            ),
            (with_ft("ttc = 1\nserver = \"rmi://host/FTServer1\"\n"), 8, "unknown argument `server`"),
            // Wrong shapes and types.
            ("network = 3\n".into(), 1, "invalid type: integer `3`, expected a string"),
            ("\n\nservices = 3\n".into(), 3, "invalid type"),
            ("[virtual_nodes.m]\nservice = \"x\"\n".into(), 1, "missing key `acquire`"),
            ("[virtual_nodes.m]\nacquire = \"local\"\nservice = 7\n".into(), 3, "invalid type"),
            (with_ft("ttc = \"60\"\n"), 7, "ttc must be a number of seconds"),
            (with_ft("durable = \"yes\"\n"), 7, "durable must be true or false, got a string"),
            (with_ft("home_size = 2.5\n"), 7, "home_size must be an integer"),
            (with_ft("storage = 2\n"), 7, "storage must be"),
            // Services.
            (
                "[virtual_nodes.a]\nacquire = \"local\"\nservice = \"lb\"\n\n\
                 [services.lb]\nkind = \"load-balancing\"\n"
                    .into(),
                6,
                "unknown service kind \"load-balancing\"; known kinds: fault-tolerance",
            ),
            (
                "[virtual_nodes.master]\nacquire = \"local\"\nservice = \"master\"\n\n\
                 [services.ft-master]\nkind = \"fault-tolerance\"\n"
                    .into(),
                3,
                "service \"master\" is not defined (defined services: ft-master)",
            ),
            ("\n[services.ft]\nttc = 1\n".into(), 2, "the service has no `kind`"),
            ("[services.ft]\nkind = 3\n".into(), 2, "kind must be a string"),
            // Bad arguments of the fault-tolerance service.
            (with_ft("ttc = 0\n"), 7, "ttc must be greater than zero"),
            (with_ft("ttc = 0.0\n"), 7, "ttc must be greater than zero"),
            (with_ft("ttc = -1\n"), 7, "ttc must be a positive number of seconds, got -1"),
            (with_ft("ttc = nan\n"), 7, "ttc must be a positive number of seconds"),
            (with_ft("ttc = 1e300\n"), 7, "too large"),
            (with_ft("ttc = 1e-12\n"), 7, "ttc must be at least 10ms"),
            (with_ft("ttc = 1e-9\n"), 7, "ttc must be at least 10ms, got 0.000000001 s"),
            (with_ft("home_size = 3\nstorage = \"copies:9\"\n"), 8, "copies r = 9 must be between 1 and home_size = 3"),
            (with_ft("storage = \"shards:4+2\"\n"), 7, "k + m <= home_size"),
            (with_ft("home_size = 1\n"), 7, "storage defaults to copies:2"),
            (with_ft("home_size = 300\n"), 7, "home_size must be between 1 and 16, got 300"),
            (with_ft("home_size = 0\n"), 7, "home_size must be between 1 and 16, got 0"),
            (with_ft("storage = \"copies\"\n"), 7, "storage must be \"local\""),
            (with_ft("\nprotocol = \"replicate\"\n"), 8, "not supported yet"),
            (with_ft("protocol = \"optimistic\"\n"), 7, "protocol must be \"none\", \"checkpoint\", \"pml\" or \"cic\""),
            // Acquisition.
            ("[virtual_nodes.m]\nacquire = \"cloud\"\n".into(), 2, "acquire must be \"local\", \"network\" or \"hosts\""),
            ("[virtual_nodes.m]\nacquire = \"network\"\n".into(), 2, "needs nodes_asked"),
            ("[virtual_nodes.m]\nacquire = \"network\"\nnodes_asked = 0\n".into(), 3, "nodes_asked must be at least 1, got 0"),
            ("[virtual_nodes.m]\nacquire = \"network\"\nnodes_asked = -5\n".into(), 3, "at least 1, got -5"),
            ("[virtual_nodes.m]\nacquire = \"local\"\nnodes_asked = 4\n".into(), 3, "nodes_asked only applies"),
            ("[virtual_nodes.m]\nacquire = \"hosts\"\n".into(), 2, "needs hosts"),
            ("[virtual_nodes.m]\nacquire = \"hosts\"\nhosts = []\n".into(), 3, "hosts is empty"),
            ("[virtual_nodes.m]\nacquire = \"network\"\nnodes_asked = 2\nhosts = [\"/ip4/1.2.3.4/tcp/1\"]\n".into(), 4, "hosts only applies"),
            (
                "[virtual_nodes.m]\nacquire = \"hosts\"\nhosts = [\n  \"/ip4/1.2.3.4/tcp/1\",\n  \"10.0.0.1:7070\",\n]\n".into(),
                5,
                "\"10.0.0.1:7070\" is not a multiaddr",
            ),
            // Network and bootstrap.
            ("\nnetwork = \"has spaces/and slashes\"\n".into(), 2, "invalid network name"),
            ("bootstrap = [\n  \"/ip4/1.2.3.4/tcp/1\",\n  \"rmi://registry1:3000\",\n]\n".into(), 3, "\"rmi://registry1:3000\" is not a multiaddr"),
        ];
        for (text, line, needle) in cases {
            let error = match parse(&text) {
                Ok(d) => panic!("must fail:\n{text}\nparsed: {d:?}"),
                Err(e) => e,
            };
            let message = error.to_string();
            assert_eq!(error.line(), Some(line), "{message}\n---\n{text}");
            assert!(message.contains(&format!("line {line}")), "{message}");
            assert!(
                message.contains(needle),
                "expected {needle:?} in: {message}\n---\n{text}"
            );
        }
    }

    #[test]
    fn errors_name_the_key_and_the_file() {
        let e = parse(&with_ft("ttc = 0\n")).unwrap_err();
        assert_eq!(e.key(), Some("services.ft.ttc"));
        assert_eq!(
            e.to_string(),
            "line 7, at `services.ft.ttc`: ttc must be greater than zero"
        );
        assert!(
            matches!(e.kind(), DescriptorErrorKind::BadArgument { service, .. } if service == "ft")
        );

        let dir = std::env::temp_dir().join(format!("colony-deploy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.toml");
        std::fs::write(&path, with_ft("storage = \"copies:9\"\n")).unwrap();
        let e = Descriptor::load(&path, &ServiceRegistry::with_builtins()).unwrap_err();
        assert_eq!(e.file(), Some(path.as_path()));
        assert!(
            e.to_string().starts_with(&format!(
                "{}, line 7, at `services.ft.storage`: copies r = 9",
                path.display()
            )),
            "{e}"
        );
        let missing = Descriptor::load(dir.join("none.toml"), &ServiceRegistry::with_builtins())
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("none.toml: cannot read the descriptor"),
            "{missing}"
        );
        let good = dir.join("good.toml");
        std::fs::write(&good, SHARDS).unwrap();
        let d = Descriptor::load(&good, &ServiceRegistry::with_builtins()).unwrap();
        assert_eq!(d.file.as_deref(), Some(good.as_path()));
        let e = d.pick_virtual_node(Some("nope")).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}: no virtual node named", good.display())),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A third-party service: records a metric, and misbehaves on demand.
    #[derive(Default)]
    struct LoadBalancing {
        metric: String,
        break_ft: bool,
    }

    impl TechnicalService for LoadBalancing {
        fn init(&mut self, args: &toml::Table) -> Result<(), ServiceError> {
            for (key, value) in args {
                match (key.as_str(), value) {
                    ("metric", toml::Value::String(m)) => self.metric = m.clone(),
                    ("break_ft", toml::Value::Boolean(b)) => self.break_ft = *b,
                    (k, _) => return Err(ServiceError::for_key(k, format!("no argument {k}"))),
                }
            }
            if self.metric.is_empty() {
                return Err(ServiceError::new("metric is required"));
            }
            Ok(())
        }

        fn apply(&self, node: &mut NodeSettings) {
            node.extensions
                .insert("load-balancing.metric".into(), self.metric.clone());
            if self.break_ft {
                node.fault_tolerance.home_size = 0;
            }
        }
    }

    #[test]
    fn an_expert_adds_a_service_kind_without_touching_colony() {
        let mut registry = ServiceRegistry::with_builtins();
        registry.register("load-balancing", || Box::<LoadBalancing>::default());
        assert_eq!(
            registry.kinds().collect::<Vec<_>>(),
            ["fault-tolerance", "load-balancing"]
        );
        let text = |args: &str| {
            format!(
                "[virtual_nodes.workers]\nacquire = \"network\"\nnodes_asked = 8\nservice = \"lb\"\n\n\
                 [services.lb]\nkind = \"load-balancing\"\n{args}"
            )
        };
        let d = Descriptor::parse(&text("metric = \"cpu\"\n"), &registry).unwrap();
        let workers = d.pick_virtual_node(None).unwrap();
        assert_eq!(workers.settings.extensions["load-balancing.metric"], "cpu");
        assert_eq!(workers.settings.fault_tolerance, FaultTolerance::default());

        // Its errors are located like the built-in's.
        let e = Descriptor::parse(&text("metric = \"cpu\"\nweight = 2\n"), &registry).unwrap_err();
        assert_eq!((e.line(), e.key()), (Some(9), Some("services.lb.weight")));
        let e = Descriptor::parse(&text(""), &registry).unwrap_err();
        assert_eq!((e.line(), e.key()), (Some(6), Some("services.lb")));
        assert!(e.to_string().contains("metric is required"), "{e}");
        // A service cannot leave settings the runtime would refuse.
        let e =
            Descriptor::parse(&text("metric = \"cpu\"\nbreak_ft = true\n"), &registry).unwrap_err();
        assert_eq!(e.line(), Some(4));
        assert!(
            e.to_string().contains("invalid fault-tolerance settings"),
            "{e}"
        );
        // Without registering, the kind is unknown.
        let e = parse(&text("metric = \"cpu\"\n")).unwrap_err();
        assert!(
            matches!(e.kind(), DescriptorErrorKind::UnknownServiceKind { .. }),
            "{e}"
        );
    }

    /// Deletes, inserts or replaces bytes of `text` at the given places.
    fn garble(text: &str, edits: &[(usize, u8, u8)]) -> String {
        let mut bytes = text.as_bytes().to_vec();
        for &(at, op, byte) in edits {
            let at = at % (bytes.len() + 1);
            let alphabet = b" \n\t\"'[]{}=.,#-+0123456789abcdeflnrtuxz:/\\";
            let byte = alphabet[usize::from(byte) % alphabet.len()];
            match op % 3 {
                0 if at < bytes.len() => {
                    bytes.remove(at);
                }
                1 => bytes.insert(at, byte),
                _ if at < bytes.len() => bytes[at] = byte,
                _ => {}
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn random_text_never_panics(text in ".{0,400}") {
            let _ = parse(&text);
        }

        #[test]
        fn garbled_examples_never_panic(
            shards in any::<bool>(),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..8),
        ) {
            let text = garble(if shards { SHARDS } else { FLOWSHOP }, &edits);
            match parse(&text) {
                Ok(d) => {
                    for node in &d.virtual_nodes {
                        prop_assert!(node.settings.fault_tolerance.validate().is_ok());
                    }
                }
                Err(e) => {
                    let lines = text.lines().count().max(1) + 1;
                    prop_assert!(e.line().is_none_or(|l| (1..=lines).contains(&l)), "{e}");
                    prop_assert!(!e.to_string().is_empty());
                }
            }
        }
    }
}
