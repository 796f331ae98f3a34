//! Micro-benchmarks of checkpoint erasure coding (`colony_core::erasure`) at
//! k = 4 data and m = 2 parity shards:
//!
//! - `erasure/encode/*`: a blob into its six shards.
//! - `erasure/decode/*`: the blob back from four shards, with two data shards
//!   missing (the worst case: both lost shards must be rebuilt).
//!
//! Blobs of 1 KiB, 64 KiB and 1 MiB; throughput is counted in blob bytes.
//! `cargo bench -p colony-core --bench erasure` (about 15 s of measurement);
//! under `cargo test --benches` each benchmark runs once.

use std::hint::black_box;
use std::time::Duration;

use colony_core::erasure::{decode, encode, Shard};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const K: u8 = 4;
const M: u8 = 2;
const SIZES: [(usize, &str); 3] = [(1 << 10, "1KiB"), (64 << 10, "64KiB"), (1 << 20, "1MiB")];

fn blob(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn erasure(c: &mut Criterion) {
    let mut group = c.benchmark_group("erasure");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for (len, name) in SIZES {
        let data = blob(len);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(BenchmarkId::new("encode", name), &data, |b, data| {
            b.iter(|| encode(black_box(data), K, M).expect("encode"))
        });

        let shards = encode(&data, K, M).expect("encode");
        // Data shards 0 and 1 lost: restore from data 2, 3 and parity 4, 5.
        let survivors: Vec<Shard> = shards.into_iter().skip(2).collect();
        assert_eq!(decode(&survivors).expect("decode"), data);
        group.bench_with_input(
            BenchmarkId::new("decode_2_missing", name),
            &survivors,
            |b, survivors| b.iter(|| decode(black_box(survivors)).expect("decode")),
        );
    }
    group.finish();
}

criterion_group!(benches, erasure);
criterion_main!(benches);
