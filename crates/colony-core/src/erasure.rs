//! Erasure coding of checkpoints (G2:P2P scenario 3, seed 004 §4.3): a blob
//! is split into `k` data shards and `m` Reed–Solomon parity shards, one per
//! home member, and any `k` of the `k + m` restore it. Tolerating `m` lost
//! holders then costs `(k + m) / k` times the blob instead of the `m + 1`
//! times of whole copies.
//!
//! Pure computation (reed-solomon-simd underneath): no IO, no clock.
//!
//! Layout: every shard of a blob has the same size, `ceil(len / k)` rounded up
//! to an even number of bytes (the codec works on 16-bit symbols) and at least
//! 2. The last data shards are padded with zeros; each shard records the
//! original length so [`decode`] strips the padding. Shards `0..k` are the
//! data, `k..k + m` the parity. `m = 0` just splits the blob.
//!
//! The code corrects erasures, not errors: a shard whose bytes were altered
//! but whose header is consistent decodes to wrong data. Callers that need
//! integrity check a digest of the blob.

use serde::{Deserialize, Serialize};

use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};

/// Most shards (`k + m`) a blob may be coded into: shard indexes are `u8`.
pub const MAX_SHARDS: usize = 255;

/// One shard of an erasure-coded blob.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// Position among the blob's shards: `0..k` data, `k..k + m` parity.
    pub index: u8,
    /// Number of data shards of the blob (any `k` shards restore it).
    pub k: u8,
    /// Number of parity shards of the blob (losses it tolerates).
    pub m: u8,
    /// Length of the original blob in bytes (padding is stripped on decode).
    pub len: u32,
    /// The shard's bytes; every shard of a blob has the same size.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

/// Why a blob could not be coded or restored.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ErasureError {
    /// `k = 0`: a blob needs at least one data shard.
    #[error("k = 0: a blob needs at least one data shard")]
    NoDataShards,
    /// `k + m` exceeds [`MAX_SHARDS`].
    #[error("k + m = {k} + {m} shards exceeds the maximum of {max}", max = MAX_SHARDS)]
    TooManyShards {
        /// Data shards asked for.
        k: u8,
        /// Parity shards asked for.
        m: u8,
    },
    /// The blob is longer than a shard header can record (`u32::MAX`).
    #[error("blob of {len} bytes is too large to erasure-code (max {max} bytes)", max = u32::MAX)]
    BlobTooLarge {
        /// The blob's length.
        len: usize,
    },
    /// `decode` was given no shard at all.
    #[error("no shards to decode")]
    NoShards,
    /// Fewer distinct shards than data shards.
    #[error("{have} distinct shards, need at least {need} to restore the blob")]
    NotEnoughShards {
        /// Distinct shards given.
        have: usize,
        /// Data shards of the blob (`k`).
        need: usize,
    },
    /// A shard's header disagrees with the first shard's: they come from
    /// different blobs or different codings of one.
    #[error("shard {index} has {field} = {found}, the first shard has {expected}")]
    Inconsistent {
        /// Index of the disagreeing shard.
        index: u8,
        /// Which header field differs (`k`, `m` or `len`).
        field: &'static str,
        /// The first shard's value.
        expected: u64,
        /// The disagreeing shard's value.
        found: u64,
    },
    /// A shard index is not below `k + m`.
    #[error("shard index {index} is out of range for {total} shards")]
    IndexOutOfRange {
        /// The index.
        index: u8,
        /// `k + m`.
        total: usize,
    },
    /// A shard's size does not match what its header implies.
    #[error("shard {index} has {found} bytes, expected {expected}")]
    WrongShardSize {
        /// Index of the shard.
        index: u8,
        /// Size implied by `len` and `k`.
        expected: usize,
        /// Its actual size.
        found: usize,
    },
    /// Two shards with the same index but different bytes.
    #[error("two different shards both claim index {index}")]
    ConflictingDuplicate {
        /// The index.
        index: u8,
    },
    /// The Reed–Solomon codec refused (should not happen once the checks
    /// above have passed).
    #[error("reed-solomon codec: {message}")]
    Codec {
        /// What the codec said.
        message: String,
    },
}

fn codec(e: reed_solomon_simd::Error) -> ErasureError {
    ErasureError::Codec {
        message: e.to_string(),
    }
}

fn check_params(k: u8, m: u8) -> Result<(), ErasureError> {
    if k == 0 {
        return Err(ErasureError::NoDataShards);
    }
    if usize::from(k) + usize::from(m) > MAX_SHARDS {
        return Err(ErasureError::TooManyShards { k, m });
    }
    Ok(())
}

/// Size of every shard of a `len`-byte blob split into `k` data shards:
/// `ceil(len / k)` rounded up to even, at least 2.
fn shard_bytes(len: usize, k: u8) -> usize {
    let per = len.div_ceil(usize::from(k.max(1)));
    (per + (per & 1)).max(2)
}

/// Codes `data` into `k` data shards and `m` parity shards (indexes
/// `0..k + m`); any `k` of them restore it with [`decode`].
pub fn encode(data: &[u8], k: u8, m: u8) -> Result<Vec<Shard>, ErasureError> {
    check_params(k, m)?;
    let len =
        u32::try_from(data.len()).map_err(|_| ErasureError::BlobTooLarge { len: data.len() })?;
    let size = shard_bytes(data.len(), k);
    let mut shards = Vec::with_capacity(usize::from(k) + usize::from(m));
    for index in 0..k {
        let start = (usize::from(index) * size).min(data.len());
        let end = (start + size).min(data.len());
        let mut bytes = Vec::with_capacity(size);
        bytes.extend_from_slice(&data[start..end]);
        bytes.resize(size, 0);
        shards.push(Shard {
            index,
            k,
            m,
            len,
            bytes,
        });
    }
    if m > 0 {
        let mut encoder =
            ReedSolomonEncoder::new(usize::from(k), usize::from(m), size).map_err(codec)?;
        for shard in &shards {
            encoder.add_original_shard(&shard.bytes).map_err(codec)?;
        }
        let result = encoder.encode().map_err(codec)?;
        for (j, recovery) in (0..m).zip(result.recovery_iter()) {
            shards.push(Shard {
                index: k + j,
                k,
                m,
                len,
                bytes: recovery.to_vec(),
            });
        }
    }
    Ok(shards)
}

/// Restores a blob from any `k` or more distinct shards of it, in any order.
/// Identical duplicates are ignored; shards that disagree on the blob's
/// layout (`k`, `m`, `len`, size) or claim one index with different bytes
/// are rejected.
pub fn decode(shards: &[Shard]) -> Result<Vec<u8>, ErasureError> {
    let first = shards.first().ok_or(ErasureError::NoShards)?;
    let (k, m, len) = (first.k, first.m, first.len);
    check_params(k, m)?;
    let data_count = usize::from(k);
    let total = data_count + usize::from(m);
    let blob_len = len as usize;
    let size = shard_bytes(blob_len, k);

    let mut slots: Vec<Option<&[u8]>> = vec![None; total];
    for shard in shards {
        for (field, expected, found) in [
            ("k", u64::from(k), u64::from(shard.k)),
            ("m", u64::from(m), u64::from(shard.m)),
            ("len", u64::from(len), u64::from(shard.len)),
        ] {
            if expected != found {
                return Err(ErasureError::Inconsistent {
                    index: shard.index,
                    field,
                    expected,
                    found,
                });
            }
        }
        let slot =
            slots
                .get_mut(usize::from(shard.index))
                .ok_or(ErasureError::IndexOutOfRange {
                    index: shard.index,
                    total,
                })?;
        if shard.bytes.len() != size {
            return Err(ErasureError::WrongShardSize {
                index: shard.index,
                expected: size,
                found: shard.bytes.len(),
            });
        }
        match slot {
            None => *slot = Some(&shard.bytes),
            Some(previous) if *previous == shard.bytes.as_slice() => {}
            Some(_) => return Err(ErasureError::ConflictingDuplicate { index: shard.index }),
        }
    }
    let have = slots.iter().filter(|s| s.is_some()).count();
    if have < data_count {
        return Err(ErasureError::NotEnoughShards {
            have,
            need: data_count,
        });
    }

    let mut out = Vec::with_capacity(data_count * size);
    let (data, parity) = slots.split_at(data_count);
    if data.iter().all(Option::is_some) {
        for bytes in data.iter().flatten() {
            out.extend_from_slice(bytes);
        }
    } else {
        // Some data shard is missing, so m >= 1 and enough parity is here.
        let mut decoder =
            ReedSolomonDecoder::new(data_count, usize::from(m), size).map_err(codec)?;
        let mut added = 0;
        for (i, bytes) in data.iter().enumerate() {
            if let Some(bytes) = bytes {
                decoder.add_original_shard(i, bytes).map_err(codec)?;
                added += 1;
            }
        }
        for (i, bytes) in parity.iter().enumerate() {
            if added == data_count {
                break;
            }
            if let Some(bytes) = bytes {
                decoder.add_recovery_shard(i, bytes).map_err(codec)?;
                added += 1;
            }
        }
        let result = decoder.decode().map_err(codec)?;
        for (i, bytes) in data.iter().enumerate() {
            let bytes = match bytes {
                Some(bytes) => *bytes,
                None => result
                    .restored_original(i)
                    .ok_or_else(|| ErasureError::Codec {
                        message: format!("data shard {i} was not restored"),
                    })?,
            };
            out.extend_from_slice(bytes);
        }
    }
    out.truncate(blob_len);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn blob(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// Decodes `shards` without those whose bit is set in `dropped`.
    fn decode_without(shards: &[Shard], dropped: u32) -> Result<Vec<u8>, ErasureError> {
        let kept: Vec<Shard> = shards
            .iter()
            .filter(|s| dropped & (1 << s.index) == 0)
            .cloned()
            .collect();
        decode(&kept)
    }

    const SIZES: [usize; 7] = [0, 1, 2, 63, 64, 1000, 100_000];
    const PARAMS: [(u8, u8); 5] = [(1, 0), (1, 1), (4, 2), (3, 3), (10, 4)];

    /// Encodes a blob of every size in [`SIZES`] with every (k, m) in
    /// [`PARAMS`], checks the shards' layout, and decodes it with every set of
    /// up to `m` shards dropped for which `keep(k, size_index, ordinal,
    /// dropped)` is true (`ordinal` numbers the patterns of one (k, m)).
    /// Returns how many patterns were decoded per (k, m).
    fn round_trips(keep: impl Fn(u8, usize, usize, u32) -> bool) -> Vec<((u8, u8), usize)> {
        let mut counts: Vec<((u8, u8), usize)> = PARAMS.iter().map(|&p| (p, 0)).collect();
        for (size_index, &len) in SIZES.iter().enumerate() {
            let data = blob(len, size_index as u64);
            for (&(k, m), count) in PARAMS.iter().zip(counts.iter_mut()) {
                let shards = encode(&data, k, m).unwrap();
                let total = usize::from(k) + usize::from(m);
                assert_eq!(shards.len(), total);
                let size = shards[0].bytes.len();
                assert!(size >= 2 && size.is_multiple_of(2), "shard size {size}");
                assert!(size * usize::from(k) >= len);
                for (i, s) in shards.iter().enumerate() {
                    assert_eq!(
                        (usize::from(s.index), s.k, s.m, s.len, s.bytes.len()),
                        (i, k, m, len as u32, size)
                    );
                }
                let patterns = (0u32..(1 << total)).filter(|d| d.count_ones() <= u32::from(m));
                for (ordinal, dropped) in patterns.enumerate() {
                    if !keep(k, size_index, ordinal, dropped) {
                        continue;
                    }
                    count.1 += 1;
                    let restored = decode_without(&shards, dropped).unwrap_or_else(|e| {
                        panic!("len {len} k {k} m {m} dropped {dropped:b}: {e}")
                    });
                    assert_eq!(restored, data, "len {len} k {k} m {m} dropped {dropped:b}");
                }
                // Order does not matter.
                let mut reversed = shards.clone();
                reversed.reverse();
                assert_eq!(decode(&reversed).unwrap(), data);
            }
        }
        counts
    }

    /// Every pattern of up to `m` lost shards, for every (k, m) — the 10 + 4
    /// patterns spread over the sizes so that each of its 1471 patterns is
    /// decoded once, and every single loss at every size. (Each decode that
    /// restores a data shard costs the codec a transform over GF(2^16), ~13
    /// ms in an unoptimised build; `exhaustive_round_trips` does the full
    /// product.)
    #[test]
    fn round_trip_with_every_erasure_pattern_up_to_m() {
        let counts = round_trips(|k, size_index, ordinal, dropped| {
            k != 10 || dropped.count_ones() <= 1 || ordinal % SIZES.len() == size_index
        });
        let n = SIZES.len();
        assert_eq!(counts[0], ((1, 0), n));
        assert_eq!(counts[1], ((1, 1), 3 * n));
        // All six shards, six single losses, C(6, 2) = 15 pairs.
        assert_eq!(counts[2], ((4, 2), (1 + 6 + 15) * n));
        assert_eq!(counts[3], ((3, 3), (1 + 6 + 15 + 20) * n));
        // 1 + 14 + 91 + 364 + 1001 = 1471 patterns: the 15 with at most one
        // loss at every size, each of the other 1456 at exactly one size.
        assert_eq!(counts[4], ((10, 4), 15 * n + 1456));
    }

    /// The full product: every pattern at every size (about 2 minutes in an
    /// unoptimised build, seconds with `--release`).
    #[test]
    #[ignore]
    fn exhaustive_round_trips() {
        let counts = round_trips(|_, _, _, _| true);
        assert_eq!(counts[4], ((10, 4), 1471 * SIZES.len()));
    }

    #[test]
    fn identical_duplicates_are_ignored() {
        let data = blob(500, 7);
        let shards = encode(&data, 4, 2).unwrap();
        // Shards 1, 1, 1, 4, 5, 0: four distinct, duplicates deduped.
        let given = vec![
            shards[1].clone(),
            shards[1].clone(),
            shards[1].clone(),
            shards[4].clone(),
            shards[5].clone(),
            shards[0].clone(),
        ];
        assert_eq!(decode(&given).unwrap(), data);
        // Six shards but only three distinct: not enough.
        let given = vec![
            shards[1].clone(),
            shards[1].clone(),
            shards[4].clone(),
            shards[4].clone(),
            shards[5].clone(),
            shards[5].clone(),
        ];
        assert_eq!(
            decode(&given),
            Err(ErasureError::NotEnoughShards { have: 3, need: 4 })
        );
    }

    #[test]
    fn errors_are_reported_not_panicked() {
        let data = blob(1000, 3);
        let shards = encode(&data, 4, 2).unwrap();

        assert_eq!(encode(&data, 0, 2), Err(ErasureError::NoDataShards));
        assert_eq!(
            encode(&data, 200, 56),
            Err(ErasureError::TooManyShards { k: 200, m: 56 })
        );
        assert!(encode(&data, 200, 55).is_ok());
        assert_eq!(encode(&data, 255, 0).map(|s| s.len()), Ok(255));
        assert_eq!(decode(&[]), Err(ErasureError::NoShards));

        assert_eq!(
            decode(&shards[..3]),
            Err(ErasureError::NotEnoughShards { have: 3, need: 4 })
        );

        let mut bad = shards.clone();
        bad[2].k = 3;
        assert!(matches!(
            decode(&bad),
            Err(ErasureError::Inconsistent {
                index: 2,
                field: "k",
                ..
            })
        ));
        let mut bad = shards.clone();
        bad[3].m = 1;
        assert!(matches!(
            decode(&bad),
            Err(ErasureError::Inconsistent { field: "m", .. })
        ));
        let mut bad = shards.clone();
        bad[5].len = 999;
        assert!(matches!(
            decode(&bad),
            Err(ErasureError::Inconsistent { field: "len", .. })
        ));

        let mut bad = shards.clone();
        bad[1].bytes.pop();
        assert_eq!(
            decode(&bad),
            Err(ErasureError::WrongShardSize {
                index: 1,
                expected: 250,
                found: 249
            })
        );
        let mut bad = shards.clone();
        bad[4].bytes.clear();
        assert!(matches!(
            decode(&bad),
            Err(ErasureError::WrongShardSize { index: 4, .. })
        ));

        let mut bad = shards.clone();
        bad[0].index = 6;
        assert_eq!(
            decode(&bad),
            Err(ErasureError::IndexOutOfRange { index: 6, total: 6 })
        );
        let mut bad = shards.clone();
        bad[0].index = 255;
        assert!(matches!(
            decode(&bad),
            Err(ErasureError::IndexOutOfRange { index: 255, .. })
        ));

        let mut bad = shards.clone();
        bad[1].index = 0;
        assert_eq!(
            decode(&bad),
            Err(ErasureError::ConflictingDuplicate { index: 0 })
        );

        let mut bad = shards.clone();
        for s in &mut bad {
            s.k = 0;
        }
        assert_eq!(decode(&bad), Err(ErasureError::NoDataShards));
        let mut bad = shards.clone();
        for s in &mut bad {
            s.k = 250;
            s.m = 250;
        }
        assert_eq!(
            decode(&bad),
            Err(ErasureError::TooManyShards { k: 250, m: 250 })
        );

        // A forged header claiming a huge blob: rejected by size, no huge
        // allocation.
        let mut bad = shards.clone();
        for s in &mut bad {
            s.len = u32::MAX;
        }
        assert!(matches!(
            decode(&bad),
            Err(ErasureError::WrongShardSize { .. })
        ));
    }

    #[test]
    fn shard_size_is_even_and_padding_is_stripped() {
        for len in [0usize, 1, 2, 3, 5, 7, 8, 9] {
            let data = blob(len, 11);
            for k in 1..=5u8 {
                let shards = encode(&data, k, 1).unwrap();
                let size = shards[0].bytes.len();
                assert!(size.is_multiple_of(2));
                assert!(size >= 2);
                assert_eq!(decode(&shards[1..]).unwrap(), data);
            }
        }
    }

    #[test]
    fn shards_survive_postcard() {
        let shards = encode(&blob(100, 5), 3, 2).unwrap();
        for s in &shards {
            let bytes = postcard::to_stdvec(s).unwrap();
            // serde_bytes: the payload is written as one byte string.
            assert!(bytes.len() <= s.bytes.len() + 12);
            let back: Shard = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(&back, s);
        }
    }

    proptest! {
        #[test]
        fn any_k_shards_restore_the_blob(
            data in proptest::collection::vec(any::<u8>(), 0..3000),
            k in 1u8..=8,
            m in 0u8..=4,
            drops in proptest::collection::vec(any::<u8>(), 0..=4),
            reverse in any::<bool>(),
        ) {
            let shards = encode(&data, k, m).unwrap();
            let total = u32::from(k) + u32::from(m);
            let mut dropped = 0u32;
            for d in drops {
                if dropped.count_ones() < u32::from(m) {
                    dropped |= 1 << (u32::from(d) % total);
                }
            }
            let mut kept: Vec<Shard> = shards
                .iter()
                .filter(|s| dropped & (1 << s.index) == 0)
                .cloned()
                .collect();
            if reverse {
                kept.reverse();
            }
            prop_assert_eq!(decode(&kept).unwrap(), data);
            // One shard fewer than k is always refused.
            kept.truncate(usize::from(k) - 1);
            let refused = matches!(
                decode(&kept),
                Err(ErasureError::NotEnoughShards { .. }) | Err(ErasureError::NoShards)
            );
            prop_assert!(refused);
        }
    }
}
