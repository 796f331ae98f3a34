//! The byte encoding of parameters, states and results: fixed-width
//! little-endian integers, lengths as `u32`, strings as UTF-8. Written by
//! hand because the guest builds with no dependencies; a [`Decode`] of
//! bytes from elsewhere (a checkpoint, a divided part) checks every length
//! against what is left, so hostile bytes give an error, never a huge
//! allocation or a panic.
//!
//! ```
//! use colony_guest::codec::{decode, encode};
//! use colony_guest::codec_struct;
//!
//! #[derive(Debug, PartialEq)]
//! struct Range { next: u64, end: u64, names: Vec<String> }
//! codec_struct!(Range { next, end, names });
//!
//! let range = Range { next: 1, end: 10, names: vec!["a".into()] };
//! assert_eq!(decode::<Range>(&encode(&range)).unwrap(), range);
//! assert!(decode::<Range>(&[1, 2, 3]).is_err());
//! ```

use std::fmt;

/// Bytes that did not decode: what was expected and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Appends encoded values to a buffer.
#[derive(Default)]
pub struct Writer {
    bytes: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Writer {
        Writer::default()
    }

    /// Appends raw bytes.
    pub fn put(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }

    /// Appends a length prefix.
    pub fn put_len(&mut self, len: usize) {
        // Lengths past u32 cannot be produced by a 32-bit guest.
        self.put(&(len as u32).to_le_bytes());
    }

    /// The bytes written.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// Reads encoded values from a slice.
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }

    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let left = self.bytes.len() - self.at;
        if n > left {
            return Err(DecodeError(format!(
                "{n} bytes wanted at offset {}, {left} left",
                self.at
            )));
        }
        let taken = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(taken)
    }

    /// Reads a length prefix for items of at least `min_item` bytes each,
    /// refusing one that could not fit in what is left.
    pub fn take_len(&mut self, min_item: usize) -> Result<usize, DecodeError> {
        let len = u32::decode(self)? as usize;
        let left = self.bytes.len() - self.at;
        if len.saturating_mul(min_item.max(1)) > left {
            return Err(DecodeError(format!(
                "a length of {len} at offset {} with {left} bytes left",
                self.at
            )));
        }
        Ok(len)
    }

    /// Succeeds if every byte was read.
    pub fn finish(self) -> Result<(), DecodeError> {
        let left = self.bytes.len() - self.at;
        if left == 0 {
            Ok(())
        } else {
            Err(DecodeError(format!("{left} bytes left over")))
        }
    }
}

/// A value that can be written as bytes.
pub trait Encode {
    /// Appends the value to `w`.
    fn encode(&self, w: &mut Writer);
}

/// A value that can be read back from bytes.
pub trait Decode: Sized {
    /// Reads one value from `r`.
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError>;
}

/// The bytes of `value`.
pub fn encode<T: Encode + ?Sized>(value: &T) -> Vec<u8> {
    let mut w = Writer::new();
    value.encode(&mut w);
    w.into_bytes()
}

/// Decodes a whole buffer as one `T`; bytes left over are an error.
pub fn decode<T: Decode>(bytes: &[u8]) -> Result<T, DecodeError> {
    let mut r = Reader::new(bytes);
    let value = T::decode(&mut r)?;
    r.finish()?;
    Ok(value)
}

macro_rules! int_codec {
    ($($t:ty),*) => {$(
        impl Encode for $t {
            fn encode(&self, w: &mut Writer) {
                w.put(&self.to_le_bytes());
            }
        }
        impl Decode for $t {
            fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                let mut raw = [0u8; std::mem::size_of::<$t>()];
                let taken = r.take(raw.len())?;
                raw.copy_from_slice(taken);
                Ok(<$t>::from_le_bytes(raw))
            }
        }
    )*};
}

int_codec!(u8, u16, u32, u64, i8, i16, i32, i64);

impl Encode for bool {
    fn encode(&self, w: &mut Writer) {
        u8::from(*self).encode(w);
    }
}

impl Decode for bool {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match u8::decode(r)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(DecodeError(format!("{other} is not a bool"))),
        }
    }
}

impl Encode for str {
    fn encode(&self, w: &mut Writer) {
        w.put_len(self.len());
        w.put(self.as_bytes());
    }
}

impl Encode for String {
    fn encode(&self, w: &mut Writer) {
        self.as_str().encode(w);
    }
}

impl Decode for String {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let len = r.take_len(1)?;
        let bytes = r.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError("a string is not UTF-8".into()))
    }
}

impl<T: Encode> Encode for [T] {
    fn encode(&self, w: &mut Writer) {
        w.put_len(self.len());
        for item in self {
            item.encode(w);
        }
    }
}

impl<T: Encode> Encode for Vec<T> {
    fn encode(&self, w: &mut Writer) {
        self.as_slice().encode(w);
    }
}

impl<T: Decode> Decode for Vec<T> {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let len = r.take_len(1)?;
        let mut items = Vec::with_capacity(len);
        for _ in 0..len {
            items.push(T::decode(r)?);
        }
        Ok(items)
    }
}

impl<T: Encode> Encode for Option<T> {
    fn encode(&self, w: &mut Writer) {
        match self {
            None => w.put(&[0]),
            Some(value) => {
                w.put(&[1]);
                value.encode(w);
            }
        }
    }
}

impl<T: Decode> Decode for Option<T> {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        if bool::decode(r)? {
            Ok(Some(T::decode(r)?))
        } else {
            Ok(None)
        }
    }
}

macro_rules! tuple_codec {
    ($(($($name:ident . $index:tt),+))*) => {$(
        impl<$($name: Encode),+> Encode for ($($name,)+) {
            fn encode(&self, w: &mut Writer) {
                $(self.$index.encode(w);)+
            }
        }
        impl<$($name: Decode),+> Decode for ($($name,)+) {
            fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                Ok(($($name::decode(r)?,)+))
            }
        }
    )*};
}

tuple_codec! {
    (A.0, B.1)
    (A.0, B.1, C.2)
    (A.0, B.1, C.2, D.3)
}

/// Implements [`Encode`] and [`Decode`] for a struct, field by field in
/// the order listed (list every field).
#[macro_export]
macro_rules! codec_struct {
    ($type:ident { $($field:ident),* $(,)? }) => {
        impl $crate::codec::Encode for $type {
            fn encode(&self, w: &mut $crate::codec::Writer) {
                $($crate::codec::Encode::encode(&self.$field, w);)*
            }
        }
        impl $crate::codec::Decode for $type {
            fn decode(
                r: &mut $crate::codec::Reader<'_>,
            ) -> Result<Self, $crate::codec::DecodeError> {
                Ok($type {
                    $($field: $crate::codec::Decode::decode(r)?,)*
                })
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let value = (
            7u64,
            -3i64,
            (String::from("ta001"), vec![1u16, 2, 3]),
            Some(vec![Some(true), None]),
        );
        assert_eq!(
            decode::<(u64, i64, (String, Vec<u16>), Option<Vec<Option<bool>>>)>(&encode(&value)),
            Ok(value)
        );
    }

    #[test]
    fn hostile_bytes_are_errors() {
        // A length far past the buffer is refused before allocating.
        let mut huge = encode(&u32::MAX);
        huge.extend_from_slice(&[0; 8]);
        assert!(decode::<Vec<u64>>(&huge).is_err());
        assert!(decode::<String>(&[2, 0, 0, 0, 0xff, 0xfe]).is_err());
        assert!(decode::<bool>(&[2]).is_err());
        assert!(decode::<u32>(&[1, 2, 3]).is_err());
        assert!(decode::<u8>(&[1, 2]).is_err(), "trailing bytes");
    }
}
