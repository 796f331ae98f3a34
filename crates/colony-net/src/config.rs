//! Configuration of the network layer and the names derived from it.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use libp2p::pnet::PreSharedKey;
use libp2p::StreamProtocol;

use crate::error::NetError;
use crate::faults::FaultConfig;

/// Longest network name accepted by [`validate_network_name`].
pub const MAX_NETWORK_NAME_BYTES: usize = 64;

/// Room a reader needs beyond one largest frame; see
/// [`NetConfig::max_inbound_buffered_bytes`].
pub(crate) const MIN_READER_HEADROOM_BYTES: usize = 8 * 1024;

/// Everything configurable about the network layer.
///
/// The defaults suit a small private network on a LAN or loopback.
/// `Debug` output shows the pre-shared key's fingerprint, never the key.
#[derive(Clone)]
pub struct NetConfig {
    /// Network name; it is part of every protocol name, so peers of different
    /// networks sharing machines never talk. Default `"colony"`.
    pub network: String,
    /// Pre-shared key of a private network (libp2p pnet). When set, only peers
    /// holding the same key can complete a connection. Default `None`.
    pub psk: Option<[u8; 32]>,
    /// Discover peers on the local link with mDNS. Default `false`.
    pub mdns: bool,
    /// Resolve `/dns*` multiaddrs with the system resolver. If the system
    /// resolver configuration cannot be read, the swarm is built without DNS
    /// and a warning is logged. Default `true`.
    pub dns: bool,
    /// A connection with no open streams is closed after this long. Default 60 s.
    pub idle_connection_timeout: Duration,
    /// Time allowed for the pnet, noise and yamux handshakes of one new
    /// connection. A peer with a different pre-shared key is only noticed
    /// when this runs out. A TCP connection that never handshakes holds a
    /// file descriptor and a slot of `max_pending_incoming` this long.
    /// Default 5 s.
    pub handshake_timeout: Duration,
    /// A connected peer that has not identified itself as a peer of this
    /// network (identify with [`identify_protocol_version`]) within this long
    /// is disconnected: foreign libp2p peers and silent ones do not keep
    /// connections open. Default 5 s.
    pub identify_timeout: Duration,
    /// Most incoming connections still handshaking at once; further ones are
    /// closed at once. With `handshake_timeout` this bounds the file
    /// descriptors that half-open TCP connections can take. Default 64.
    pub max_pending_incoming: u32,
    /// Most outgoing connections being dialed at once. Default 64.
    pub max_pending_outgoing: u32,
    /// Most established connections with one peer. Default 4.
    pub max_established_per_peer: u32,
    /// Most established connections in total. Default 512 (with the pending
    /// limits, 640 file descriptors at most, under the usual limit of 1 024).
    pub max_established: u32,
    /// Most yamux streams open at once on one connection (both directions).
    /// Each stream can buffer up to 256 KiB that its reader has not taken
    /// yet, so this bounds the memory one connection can pin (32 MiB at the
    /// default). A peer opening more has its connection closed by yamux.
    /// Default 128.
    pub max_streams_per_connection: usize,
    /// Timeout of one Kademlia query. Default 10 s.
    pub kad_query_timeout: Duration,
    /// Largest frame payload, in bytes. Larger frames are never written
    /// (counted as `oversized_dropped`) and, when received, make the reader
    /// close that stream (counted as `oversized_rejected`).
    /// Default 1 MiB + 4 KiB.
    pub max_frame_bytes: usize,
    /// Bound of each per-peer, per-priority writer queue, in frames. When a
    /// queue is full, further frames for it are dropped (`queue_full_dropped`).
    /// The per-peer queue of delayed frames (fault injection) has the same
    /// bound. Default 16 384.
    pub writer_queue_frames: usize,
    /// How long a writer waits for a stream to a peer to open (including
    /// dialing) before declaring it unreachable. Default 10 s.
    pub open_stream_timeout: Duration,
    /// Most inbound frame streams read at the same time, over all peers.
    /// Further streams are refused (closed). Default 1 024.
    pub max_inbound_streams: usize,
    /// Most inbound frame streams read at the same time from one peer. A
    /// peer opens one long-lived stream per direction (a new one after a
    /// failure), so a few suffice; further streams are refused (closed), so
    /// one peer cannot take the slots of the others. This also bounds what
    /// one peer can make readers hold: this many largest frames (about
    /// 8 MiB at the defaults). Default 8.
    pub max_inbound_streams_per_peer: usize,
    /// Most bytes held by all inbound stream readers together: received but
    /// not yet a whole frame, plus delivered frames larger than 4 KiB that
    /// the receiver of the events has not dropped yet (smaller ones are
    /// bounded by the capacity of the events channel). Readers grow their
    /// buffers as bytes arrive, never by what a length prefix announces; a
    /// reader that needs more than is left waits (and, through flow control,
    /// so does its sender), for at most `inbound_stream_idle_timeout`.
    /// At least `max_frame_bytes` + 8 KiB. Default 64 MiB.
    pub max_inbound_buffered_bytes: usize,
    /// An inbound frames stream is closed when its first frame has not
    /// arrived this long after it opened, or when a frame has started and no
    /// byte of it arrives for this long. A stream idle between frames stays
    /// open. Default 10 s.
    pub inbound_stream_idle_timeout: Duration,
    /// Warnings a remote peer can cause (garbage frames, refused streams)
    /// are logged at most once per peer and cause per this interval, with the
    /// number held back. Default 60 s.
    pub warn_interval: Duration,
    /// Sender-side fault injection. Default: no faults.
    pub faults: FaultConfig,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            network: "colony".to_owned(),
            psk: None,
            mdns: false,
            dns: true,
            idle_connection_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(5),
            identify_timeout: Duration::from_secs(5),
            max_pending_incoming: 64,
            max_pending_outgoing: 64,
            max_established_per_peer: 4,
            max_established: 512,
            max_streams_per_connection: 128,
            kad_query_timeout: Duration::from_secs(10),
            max_frame_bytes: 1024 * 1024 + 4 * 1024,
            writer_queue_frames: 16_384,
            open_stream_timeout: Duration::from_secs(10),
            max_inbound_streams: 1_024,
            max_inbound_streams_per_peer: 8,
            max_inbound_buffered_bytes: 64 * 1024 * 1024,
            inbound_stream_idle_timeout: Duration::from_secs(10),
            warn_interval: crate::ratelimit::DEFAULT_WARN_INTERVAL,
            faults: FaultConfig::default(),
        }
    }
}

impl fmt::Debug for NetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let psk = self
            .psk
            .map(|key| format!("fingerprint {}", PreSharedKey::new(key).fingerprint()));
        f.debug_struct("NetConfig")
            .field("network", &self.network)
            .field("psk", &psk)
            .field("mdns", &self.mdns)
            .field("dns", &self.dns)
            .field("idle_connection_timeout", &self.idle_connection_timeout)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("identify_timeout", &self.identify_timeout)
            .field("max_pending_incoming", &self.max_pending_incoming)
            .field("max_pending_outgoing", &self.max_pending_outgoing)
            .field("max_established_per_peer", &self.max_established_per_peer)
            .field("max_established", &self.max_established)
            .field(
                "max_streams_per_connection",
                &self.max_streams_per_connection,
            )
            .field("kad_query_timeout", &self.kad_query_timeout)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("writer_queue_frames", &self.writer_queue_frames)
            .field("open_stream_timeout", &self.open_stream_timeout)
            .field("max_inbound_streams", &self.max_inbound_streams)
            .field(
                "max_inbound_streams_per_peer",
                &self.max_inbound_streams_per_peer,
            )
            .field(
                "max_inbound_buffered_bytes",
                &self.max_inbound_buffered_bytes,
            )
            .field(
                "inbound_stream_idle_timeout",
                &self.inbound_stream_idle_timeout,
            )
            .field("warn_interval", &self.warn_interval)
            .field("faults", &self.faults)
            .finish()
    }
}

impl NetConfig {
    /// Checks the values that would otherwise fail later in surprising ways.
    pub fn validate(&self) -> Result<(), NetError> {
        validate_network_name(&self.network)?;
        if self.max_frame_bytes == 0 || self.max_frame_bytes > u32::MAX as usize {
            return Err(NetError::InvalidConfig {
                field: "max_frame_bytes",
                reason: format!("must be in 1..={}, got {}", u32::MAX, self.max_frame_bytes),
            });
        }
        if self.writer_queue_frames == 0 {
            return Err(NetError::InvalidConfig {
                field: "writer_queue_frames",
                reason: "must be at least 1".to_owned(),
            });
        }
        for (field, d) in [
            ("handshake_timeout", self.handshake_timeout),
            ("open_stream_timeout", self.open_stream_timeout),
            ("kad_query_timeout", self.kad_query_timeout),
            ("identify_timeout", self.identify_timeout),
            (
                "inbound_stream_idle_timeout",
                self.inbound_stream_idle_timeout,
            ),
        ] {
            if d.is_zero() {
                return Err(NetError::InvalidConfig {
                    field,
                    reason: "must be longer than zero".to_owned(),
                });
            }
        }
        for (field, n) in [
            ("max_inbound_streams", self.max_inbound_streams),
            (
                "max_inbound_streams_per_peer",
                self.max_inbound_streams_per_peer,
            ),
            (
                "max_streams_per_connection",
                self.max_streams_per_connection,
            ),
            ("max_pending_incoming", self.max_pending_incoming as usize),
            ("max_pending_outgoing", self.max_pending_outgoing as usize),
            (
                "max_established_per_peer",
                self.max_established_per_peer as usize,
            ),
            ("max_established", self.max_established as usize),
        ] {
            if n == 0 {
                return Err(NetError::InvalidConfig {
                    field,
                    reason: "must be at least 1".to_owned(),
                });
            }
        }
        for (field, n) in [
            ("max_inbound_streams", self.max_inbound_streams),
            (
                "max_inbound_buffered_bytes",
                self.max_inbound_buffered_bytes,
            ),
        ] {
            // Both are semaphores, which cannot hold more permits.
            if n > tokio::sync::Semaphore::MAX_PERMITS {
                return Err(NetError::InvalidConfig {
                    field,
                    reason: format!(
                        "must be at most {}, got {n}",
                        tokio::sync::Semaphore::MAX_PERMITS
                    ),
                });
            }
        }
        let least = self
            .max_frame_bytes
            .saturating_add(MIN_READER_HEADROOM_BYTES);
        if self.max_inbound_buffered_bytes < least {
            return Err(NetError::InvalidConfig {
                field: "max_inbound_buffered_bytes",
                reason: format!(
                    "must hold at least one largest frame plus 8 KiB ({least} bytes), got {}",
                    self.max_inbound_buffered_bytes
                ),
            });
        }
        self.faults.validate()
    }
}

/// Checks that `network` can be part of a protocol name: 1 to 64 bytes of
/// ASCII letters, digits, `-`, `_` or `.`.
pub fn validate_network_name(network: &str) -> Result<(), NetError> {
    let ok = !network.is_empty()
        && network.len() <= MAX_NETWORK_NAME_BYTES
        && network
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(NetError::InvalidNetworkName {
            name: network.to_owned(),
        })
    }
}

fn protocol(name: String) -> StreamProtocol {
    // Every name built here starts with '/', which is all `try_from_owned` checks.
    StreamProtocol::try_from_owned(name).expect("protocol names built here start with '/'")
}

/// Kademlia protocol name of a network: `/colony/<network>/kad/1.0.0`.
pub fn kad_protocol(network: &str) -> StreamProtocol {
    protocol(format!("/colony/{network}/kad/1.0.0"))
}

/// Frames protocol name of a network: `/colony/<network>/frames/1.0.0`.
pub fn frames_protocol(network: &str) -> StreamProtocol {
    protocol(format!("/colony/{network}/frames/1.0.0"))
}

/// Identify `protocol_version` of a network: `/colony/<network>/1.0.0`.
pub fn identify_protocol_version(network: &str) -> String {
    format!("/colony/{network}/1.0.0")
}

/// Parses a pre-shared key.
///
/// Accepts the go-ipfs `swarm.key` format
/// (`/key/swarm/psk/1.0.0/`, `/base16/`, then 64 hex digits, one per line)
/// and a bare line of 64 hex digits. Surrounding whitespace is ignored.
pub fn parse_psk(text: &str) -> Result<[u8; 32], NetError> {
    let text = text.trim();
    // libp2p-pnet slices the key by byte index, which panics on multi-byte
    // characters: refuse anything that is not ASCII first.
    if !text.is_ascii() {
        return Err(NetError::InvalidPsk {
            reason: "the key contains non-ASCII characters".to_owned(),
        });
    }
    if text.starts_with("/key/") {
        let key = PreSharedKey::from_str(text).map_err(|e| NetError::InvalidPsk {
            reason: format!("not a valid swarm.key file: {e:?}"),
        })?;
        // `PreSharedKey` does not expose its bytes; its key file does.
        let file = key.to_key_file();
        let hex = file.lines().nth(2).unwrap_or_default();
        return parse_bare_hex(hex);
    }
    parse_bare_hex(text)
}

fn parse_bare_hex(hex: &str) -> Result<[u8; 32], NetError> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return Err(NetError::InvalidPsk {
            reason: format!("expected 64 hex digits, got {} characters", hex.len()),
        });
    }
    let mut key = [0u8; 32];
    for (i, pair) in hex.as_bytes().chunks_exact(2).enumerate() {
        let hi = hex_digit(pair[0]);
        let lo = hex_digit(pair[1]);
        match (hi, lo) {
            (Some(hi), Some(lo)) => key[i] = (hi << 4) | lo,
            _ => {
                return Err(NetError::InvalidPsk {
                    reason: format!("invalid hex digit near position {}", i * 2),
                })
            }
        }
    }
    Ok(key)
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";

    fn expected() -> [u8; 32] {
        let mut k = [0u8; 32];
        for (i, b) in k.iter_mut().enumerate() {
            *b = ((i % 16) as u8) * 0x11;
        }
        k
    }

    #[test]
    fn parses_bare_hex() {
        assert_eq!(parse_psk(HEX).unwrap(), expected());
        assert_eq!(parse_psk(&format!("  {HEX}\n")).unwrap(), expected());
    }

    #[test]
    fn parses_swarm_key_file() {
        let file = format!("/key/swarm/psk/1.0.0/\n/base16/\n{}\n", HEX.to_lowercase());
        assert_eq!(parse_psk(&file).unwrap(), expected());
        // Round trip through libp2p's own formatting.
        let key = PreSharedKey::new(expected());
        assert_eq!(parse_psk(&key.to_key_file()).unwrap(), expected());
    }

    #[test]
    fn rejects_bad_keys() {
        assert!(parse_psk("").is_err());
        assert!(parse_psk(&HEX[..62]).is_err());
        assert!(parse_psk(&format!("{HEX}00")).is_err());
        assert!(parse_psk(&HEX.replace('0', "g")).is_err());
        assert!(parse_psk("/key/swarm/psk/1.0.0/\n/base64/\nAAAA").is_err());
        assert!(parse_psk("/key/swarm/psk/1.0.0/\n/base16/\n").is_err());
        // 64 bytes but multi-byte characters: must not panic.
        let tricky = format!("é{}", &HEX[..62]);
        assert_eq!(tricky.len(), 64);
        assert!(parse_psk(&tricky).is_err());
        assert!(parse_psk(&format!("/key/swarm/psk/1.0.0/\n/base16/\n{tricky}")).is_err());
    }

    #[test]
    fn protocol_names_carry_the_network() {
        assert_eq!(kad_protocol("lab").as_ref(), "/colony/lab/kad/1.0.0");
        assert_eq!(frames_protocol("lab").as_ref(), "/colony/lab/frames/1.0.0");
        assert_eq!(identify_protocol_version("lab"), "/colony/lab/1.0.0");
    }

    #[test]
    fn network_names_are_checked() {
        assert!(validate_network_name("colony").is_ok());
        assert!(validate_network_name("lab-2.test_x").is_ok());
        assert!(validate_network_name("").is_err());
        assert!(validate_network_name("a/b").is_err());
        assert!(validate_network_name("a b").is_err());
        assert!(validate_network_name(&"x".repeat(65)).is_err());
    }

    #[test]
    fn debug_never_shows_the_key() {
        let config = NetConfig {
            psk: Some([0xab; 32]),
            ..NetConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(shown.contains("fingerprint"));
        assert!(!shown.contains("abab"), "{shown}");
        assert!(!shown.contains("171, 171"), "{shown}");
    }

    #[test]
    fn limits_are_checked() {
        for bad in [
            NetConfig {
                max_inbound_streams_per_peer: 0,
                ..NetConfig::default()
            },
            NetConfig {
                max_pending_incoming: 0,
                ..NetConfig::default()
            },
            NetConfig {
                max_inbound_buffered_bytes: usize::MAX,
                ..NetConfig::default()
            },
            NetConfig {
                max_inbound_buffered_bytes: 1024 * 1024,
                ..NetConfig::default()
            },
            NetConfig {
                identify_timeout: Duration::ZERO,
                ..NetConfig::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn default_config_is_valid() {
        NetConfig::default().validate().unwrap();
        assert_eq!(NetConfig::default().max_frame_bytes, 1_052_672);
    }
}
