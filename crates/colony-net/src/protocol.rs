//! Wire format of a frames stream: each frame is a `u32` big-endian payload
//! length followed by that many bytes of opaque payload.

/// Size of the length prefix.
pub(crate) const HEADER_BYTES: usize = 4;

/// Appends one frame (prefix and payload) to `out`.
///
/// The caller has checked `payload.len() <= u32::MAX`.
pub(crate) fn encode_frame(out: &mut Vec<u8>, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
}

/// What the front of a read buffer holds.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Header {
    /// A complete frame of `total` bytes, prefix included: the payload is
    /// `buf[HEADER_BYTES..total]`.
    Complete { total: usize },
    /// More bytes are needed; `total` is the size of the whole next frame
    /// (prefix included) when already known. It is only what the peer
    /// announced: nothing may be allocated from it.
    Incomplete { total: Option<usize> },
    /// The announced payload length is zero or above the limit.
    Rejected { len: u64 },
}

/// Looks at the frame at the front of `buf` (the bytes received so far).
pub(crate) fn peek_header(buf: &[u8], max_frame_bytes: usize) -> Header {
    let Some(prefix) = buf.first_chunk::<HEADER_BYTES>() else {
        return Header::Incomplete { total: None };
    };
    let len = u32::from_be_bytes(*prefix);
    let len_usize = len as usize;
    if len == 0 || len_usize > max_frame_bytes {
        return Header::Rejected {
            len: u64::from(len),
        };
    }
    let total = HEADER_BYTES + len_usize;
    if buf.len() < total {
        Header::Incomplete { total: Some(total) }
    } else {
        Header::Complete { total }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_partial() {
        let mut out = Vec::new();
        encode_frame(&mut out, b"hello");
        encode_frame(&mut out, b"w");
        assert_eq!(
            peek_header(&out[..7], 100),
            Header::Incomplete { total: Some(9) }
        );
        assert_eq!(
            peek_header(&out[..3], 100),
            Header::Incomplete { total: None }
        );
        assert_eq!(peek_header(&out, 100), Header::Complete { total: 9 });
        assert_eq!(&out[HEADER_BYTES..9], b"hello");
        assert_eq!(peek_header(&out[9..], 100), Header::Complete { total: 5 });
        assert_eq!(&out[9 + HEADER_BYTES..], b"w");
        assert_eq!(peek_header(&[], 100), Header::Incomplete { total: None });
    }

    #[test]
    fn rejects_empty_and_oversized() {
        assert_eq!(
            peek_header(&[0u8, 0, 0, 0], 100),
            Header::Rejected { len: 0 }
        );
        assert_eq!(
            peek_header(&101u32.to_be_bytes(), 100),
            Header::Rejected { len: 101 }
        );
        assert_eq!(
            peek_header(&u32::MAX.to_be_bytes(), usize::MAX),
            Header::Incomplete {
                total: Some(u32::MAX as usize + 4)
            }
        );
    }
}
