//! Bounded encoding of core messages (postcard). Every decode checks the size
//! first and reports malformed input as an error, never a panic: the bytes
//! come from remote peers.
//!
//! What travels between two peers is a [`Frame`] behind a two-byte header
//! ([`FRAME_MAGIC`], then [`PROTOCOL_VERSION`]): a frame of another version
//! is refused as [`WireError::Version`] before anything of it is parsed.
//! The payload of a reliable-pipe message starts with its [`PayloadKind`].

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::membership::MembershipMsg;
use crate::pipe::PipeFrame;
use crate::PeerKey;

/// Why bytes could not be turned into a message or back.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// The frame is larger than the configured limit.
    #[error("frame of {size} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Size of the offending frame.
        size: usize,
        /// The limit in force.
        max: usize,
    },
    /// The bytes are not a valid message.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The message could not be encoded.
    #[error("cannot encode message: {0}")]
    Encode(String),
    /// The frame is a Colony frame of another protocol version.
    #[error("frame of wire protocol version {theirs}; this peer speaks version {ours}")]
    Version {
        /// The version the frame announces.
        theirs: u8,
        /// The version this peer speaks ([`PROTOCOL_VERSION`]).
        ours: u8,
    },
}

/// First byte of every frame: says the bytes are a Colony frame at all.
pub const FRAME_MAGIC: u8 = 0xC0;

/// Version of the wire protocol, second byte of every frame. Raise it with
/// any change to [`Frame`], the pipe frames, the membership, job or space
/// messages (the replicated states they carry included), or
/// [`PayloadKind`]: peers of different versions refuse each other's frames
/// instead of misparsing them.
pub const PROTOCOL_VERSION: u8 = 17;

/// Length of the frame header (magic and version).
pub const FRAME_HEADER_BYTES: usize = 2;

/// Who a reliable-pipe message is for: its first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PayloadKind {
    /// An application message, for the peer's inbox.
    App = 0,
    /// A job protocol message ([`crate::job::JobMsg`]), for the job core.
    Job = 1,
    /// A module message ([`crate::modules::ModuleMsg`]): guest modules
    /// asked for and sent.
    Module = 2,
    /// An object space message ([`crate::space::SpaceMsg`]): requests,
    /// replies and the partitions' replication.
    Space = 3,
    /// Several object space messages to one peer, produced together
    /// ([`encode_batch`]): one pipe message instead of one each.
    SpaceBatch = 4,
    /// A distributed-object message ([`crate::object::ObjectMsg`]):
    /// creations, calls, replies and the objects' homes.
    Object = 5,
    /// A streaming-mesh message ([`crate::mesh::MeshPeerMsg`]): frames,
    /// the join protocol and the cell records. The mesh's bookkeeping
    /// travels outside the pipes ([`Frame::MeshBatch`]).
    Mesh = 6,
}

impl PayloadKind {
    /// The kind a first byte names, if any.
    pub fn from_byte(byte: u8) -> Option<PayloadKind> {
        match byte {
            0 => Some(PayloadKind::App),
            1 => Some(PayloadKind::Job),
            2 => Some(PayloadKind::Module),
            3 => Some(PayloadKind::Space),
            4 => Some(PayloadKind::SpaceBatch),
            5 => Some(PayloadKind::Object),
            6 => Some(PayloadKind::Mesh),
            _ => None,
        }
    }
}

/// Bytes of a pipe payload taken by its kind.
pub const PAYLOAD_HEADER_BYTES: usize = 1;

/// A pipe payload of `kind` carrying `body`.
pub fn encode_payload(kind: PayloadKind, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + PAYLOAD_HEADER_BYTES);
    out.push(kind as u8);
    out.extend_from_slice(body);
    out
}

/// The kind and body of a pipe payload; `None` for an empty payload or an
/// unknown kind.
pub fn decode_payload(payload: &[u8]) -> Option<(PayloadKind, &[u8])> {
    let (&first, body) = payload.split_first()?;
    Some((PayloadKind::from_byte(first)?, body))
}

/// Bytes a batch spends on each message it carries (its length).
pub const BATCH_ENTRY_BYTES: usize = 4;

/// Messages one batch may carry.
pub const MAX_BATCH_MESSAGES: usize = 1024;

/// A batch of encoded messages: each as its length (`u32`, little-endian)
/// and its bytes.
pub fn encode_batch(bodies: &[Vec<u8>]) -> Vec<u8> {
    let total = bodies.iter().map(|b| b.len() + BATCH_ENTRY_BYTES).sum();
    let mut out = Vec::with_capacity(total);
    for body in bodies {
        let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(body);
    }
    out
}

/// The messages of a batch ([`encode_batch`]); an error if a length runs
/// past the end or the batch carries more than [`MAX_BATCH_MESSAGES`].
pub fn decode_batch(mut bytes: &[u8]) -> Result<Vec<&[u8]>, WireError> {
    let mut bodies = Vec::new();
    while !bytes.is_empty() {
        if bodies.len() >= MAX_BATCH_MESSAGES {
            return Err(WireError::Malformed(format!(
                "a batch of more than {MAX_BATCH_MESSAGES} messages"
            )));
        }
        let Some((len, rest)) = bytes.split_first_chunk::<BATCH_ENTRY_BYTES>() else {
            return Err(WireError::Malformed("a batch cut inside a length".into()));
        };
        let len = usize::try_from(u32::from_le_bytes(*len)).unwrap_or(usize::MAX);
        if len > rest.len() {
            return Err(WireError::Malformed(format!(
                "a batch entry of {len} bytes with {} left",
                rest.len()
            )));
        }
        let (body, rest) = rest.split_at(len);
        bodies.push(body);
        bytes = rest;
    }
    Ok(bodies)
}

/// Encodes a frame with its header, refusing results above `max_bytes`.
pub fn encode_frame<P: Serialize>(
    frame: &Frame<P>,
    max_bytes: usize,
) -> Result<Vec<u8>, WireError> {
    let bytes = postcard::to_extend(frame, vec![FRAME_MAGIC, PROTOCOL_VERSION])
        .map_err(|e| WireError::Encode(e.to_string()))?;
    if bytes.len() > max_bytes {
        return Err(WireError::FrameTooLarge {
            size: bytes.len(),
            max: max_bytes,
        });
    }
    Ok(bytes)
}

/// Decodes a frame with its header: refuses inputs above `max_bytes`,
/// bytes that are no Colony frame, and frames of another version.
pub fn decode_frame<P: PeerKey>(bytes: &[u8], max_bytes: usize) -> Result<Frame<P>, WireError> {
    if bytes.len() > max_bytes {
        return Err(WireError::FrameTooLarge {
            size: bytes.len(),
            max: max_bytes,
        });
    }
    match bytes {
        [FRAME_MAGIC, PROTOCOL_VERSION, body @ ..] => decode(body, max_bytes),
        [FRAME_MAGIC, theirs, ..] => Err(WireError::Version {
            theirs: *theirs,
            ours: PROTOCOL_VERSION,
        }),
        _ => Err(WireError::Malformed("not a Colony frame".into())),
    }
}

/// Everything one peer sends another over the datagram service.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound(deserialize = "P: DeserializeOwned"))]
pub enum Frame<P> {
    /// Membership and failure detection traffic.
    Membership(MembershipMsg<P>),
    /// Reliable-pipe data and acknowledgements.
    Pipe(PipeFrame),
    /// Mesh messages that may be lost, batched ([`encode_batch`]):
    /// acknowledgements and FT copies and replies
    /// ([`crate::mesh::MeshMsg::deferrable`]). The mesh sends again what
    /// must arrive, so the pipes' own acknowledgement of each would only
    /// double the frames.
    MeshBatch(#[serde(with = "serde_bytes")] Vec<u8>),
}

/// Encodes `msg`, refusing results above `max_bytes`.
pub fn encode<T: Serialize>(msg: &T, max_bytes: usize) -> Result<Vec<u8>, WireError> {
    let bytes = postcard::to_stdvec(msg).map_err(|e| WireError::Encode(e.to_string()))?;
    if bytes.len() > max_bytes {
        return Err(WireError::FrameTooLarge {
            size: bytes.len(),
            max: max_bytes,
        });
    }
    Ok(bytes)
}

/// Decodes `bytes`, refusing inputs above `max_bytes` and trailing garbage.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], max_bytes: usize) -> Result<T, WireError> {
    if bytes.len() > max_bytes {
        return Err(WireError::FrameTooLarge {
            size: bytes.len(),
            max: max_bytes,
        });
    }
    let (msg, rest) =
        postcard::take_from_bytes(bytes).map_err(|e| WireError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(WireError::Malformed(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn batches_round_trip_and_damaged_ones_are_refused() {
        let bodies = vec![b"one".to_vec(), Vec::new(), vec![7u8; 300]];
        let bytes = encode_batch(&bodies);
        let decoded = decode_batch(&bytes).expect("a well-formed batch");
        assert_eq!(
            decoded,
            bodies.iter().map(Vec::as_slice).collect::<Vec<_>>()
        );
        assert_eq!(decode_batch(&[]).expect("empty"), Vec::<&[u8]>::new());
        // Cut inside a length, and a length past the end.
        assert!(decode_batch(&bytes[..2]).is_err());
        assert!(decode_batch(&bytes[..bytes.len() - 1]).is_err());
        let mut lying = bytes.clone();
        lying[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_batch(&lying).is_err());
        // Too many entries (empty ones cost 4 bytes each).
        let many = encode_batch(&vec![Vec::new(); MAX_BATCH_MESSAGES + 1]);
        assert!(decode_batch(&many).is_err());
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<Frame<u64>>(&bytes, 1 << 20);
        }
    }

    proptest! {
        #[test]
        fn garbage_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_frame::<u64>(&bytes, 1 << 20);
        }
    }

    fn ping() -> Frame<u64> {
        Frame::Pipe(PipeFrame::Ack {
            class: crate::pipe::TrafficClass::EVENTS,
            session: 7,
            cumulative: 3,
            sack: Vec::new(),
        })
    }

    #[test]
    fn a_frame_round_trips_with_its_header() {
        let bytes = encode_frame(&ping(), 1 << 20).unwrap();
        assert_eq!(&bytes[..2], &[FRAME_MAGIC, PROTOCOL_VERSION]);
        assert!(matches!(
            decode_frame::<u64>(&bytes, 1 << 20),
            Ok(Frame::Pipe(PipeFrame::Ack { session: 7, .. }))
        ));
    }

    #[test]
    fn another_version_is_refused_not_parsed() {
        let mut bytes = encode_frame(&ping(), 1 << 20).unwrap();
        bytes[1] = PROTOCOL_VERSION.wrapping_add(1);
        assert_eq!(
            decode_frame::<u64>(&bytes, 1 << 20).unwrap_err(),
            WireError::Version {
                theirs: PROTOCOL_VERSION.wrapping_add(1),
                ours: PROTOCOL_VERSION
            }
        );
        // An unversioned frame (what peers sent before the header) is no
        // Colony frame.
        let bare = encode(&ping(), 1 << 20).unwrap();
        assert!(matches!(
            decode_frame::<u64>(&bare, 1 << 20),
            Err(WireError::Malformed(_))
        ));
    }

    #[test]
    fn payload_kinds_round_trip() {
        for kind in [PayloadKind::App, PayloadKind::Job] {
            let bytes = encode_payload(kind, b"body");
            assert_eq!(decode_payload(&bytes), Some((kind, &b"body"[..])));
        }
        assert_eq!(decode_payload(&[]), None);
        assert_eq!(decode_payload(&[9, 1, 2]), None);
    }

    #[test]
    fn oversized_is_rejected_before_parsing() {
        let bytes = vec![0u8; 2000];
        assert_eq!(
            decode::<Frame<u64>>(&bytes, 1000).unwrap_err(),
            WireError::FrameTooLarge {
                size: 2000,
                max: 1000
            }
        );
    }
}
