//! Bounded encoding of core messages (postcard). Every decode checks the size
//! first and reports malformed input as an error, never a panic: the bytes
//! come from remote peers.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::membership::MembershipMsg;
use crate::pipe::PipeFrame;

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
}

/// Everything one peer sends another over the datagram service.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound(deserialize = "P: DeserializeOwned"))]
pub enum Frame<P> {
    /// Membership and failure detection traffic.
    Membership(MembershipMsg<P>),
    /// Reliable-pipe data and acknowledgements.
    Pipe(PipeFrame),
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

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<Frame<u64>>(&bytes, 1 << 20);
        }
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
