//! Wire format of a frames stream: each frame is a `u32` big-endian payload
//! length followed by that many bytes of opaque payload.

use bytes::{Buf, Bytes, BytesMut};

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

/// Outcome of trying to take one frame off the front of a read buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// A complete frame.
    Frame(Bytes),
    /// More bytes are needed; `total` is the size of the whole next frame
    /// (prefix included) when already known.
    Incomplete { total: Option<usize> },
    /// The announced payload length is zero or above the limit.
    Rejected { len: u64 },
}

/// Takes one frame off the front of `buf[..filled]`. On success the frame
/// is split off `buf` (no copy) and `filled` is reduced accordingly.
pub(crate) fn decode_frame(
    buf: &mut BytesMut,
    filled: &mut usize,
    max_frame_bytes: usize,
) -> Decoded {
    if *filled < HEADER_BYTES {
        return Decoded::Incomplete { total: None };
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let len_usize = len as usize;
    if len == 0 || len_usize > max_frame_bytes {
        return Decoded::Rejected {
            len: u64::from(len),
        };
    }
    let total = HEADER_BYTES + len_usize;
    if *filled < total {
        return Decoded::Incomplete { total: Some(total) };
    }
    let mut frame = buf.split_to(total);
    frame.advance(HEADER_BYTES);
    *filled -= total;
    Decoded::Frame(frame.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_partial() {
        let mut out = Vec::new();
        encode_frame(&mut out, b"hello");
        encode_frame(&mut out, b"w");
        let mut buf = BytesMut::from(&out[..]);
        // Pretend only 7 bytes arrived.
        let mut filled = 7;
        assert_eq!(
            decode_frame(&mut buf, &mut filled, 100),
            Decoded::Incomplete { total: Some(9) }
        );
        filled = out.len();
        assert_eq!(
            decode_frame(&mut buf, &mut filled, 100),
            Decoded::Frame(Bytes::from_static(b"hello"))
        );
        assert_eq!(
            decode_frame(&mut buf, &mut filled, 100),
            Decoded::Frame(Bytes::from_static(b"w"))
        );
        assert_eq!(filled, 0);
        assert_eq!(
            decode_frame(&mut buf, &mut filled, 100),
            Decoded::Incomplete { total: None }
        );
    }

    #[test]
    fn rejects_empty_and_oversized() {
        let mut buf = BytesMut::from(&[0u8, 0, 0, 0][..]);
        let mut filled = 4;
        assert_eq!(
            decode_frame(&mut buf, &mut filled, 100),
            Decoded::Rejected { len: 0 }
        );
        let mut buf = BytesMut::from(&101u32.to_be_bytes()[..]);
        let mut filled = 4;
        assert_eq!(
            decode_frame(&mut buf, &mut filled, 100),
            Decoded::Rejected { len: 101 }
        );
        let mut buf = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
        let mut filled = 4;
        assert_eq!(
            decode_frame(&mut buf, &mut filled, usize::MAX),
            Decoded::Incomplete {
                total: Some(u32::MAX as usize + 4)
            }
        );
    }
}
