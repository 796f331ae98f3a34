//! Guest against native, the same search on the same input:
//!
//! - `guests/nqueens-12/{native,guest}` and `guests/flowshop-ta011/{native,guest}`:
//!   a whole sequential run through the type-erased [`App`], steps of a
//!   budget the runtime would pick (a few milliseconds each), so the guest
//!   pays for every boundary crossing and epoch check it would pay in a
//!   peer. The ratio guest / native is the sandbox's cost (goal ≤ 1.5).
//! - `guests/instantiate/{cold,cached}`: a module's first load (validate,
//!   compile with Cranelift, probe) against a unit's start from the
//!   compiled module (instantiate and `init`; goal ≤ 5 ms).
//!
//! `cargo bench -p colony-wasm --bench guests` (about a minute); under
//! `cargo test --benches` each benchmark runs once.

use std::hint::black_box;
use std::time::Duration;

use colony_core::divisible::{run_sequential, App};
use colony_guest_modules::{FLOWSHOP, NQUEENS};
use colony_wasm::{Sandbox, SandboxLimits};
use criterion::{criterion_group, criterion_main, Criterion};

fn run(app: &dyn App, args: &[&str], budget: u64) -> Vec<u8> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let params = app.parse_args(&args).expect("params");
    run_sequential(app, &params, budget).expect("runs").0
}

fn guest_vs_native(c: &mut Criterion) {
    let sandbox = Sandbox::new(SandboxLimits::default()).expect("sandbox");
    let examples = colony_apps::examples();
    let cases: [(&str, &[u8], &[&str], u64); 2] = [
        ("nqueens-12", NQUEENS, &["12"], 1 << 16),
        ("flowshop-ta011", FLOWSHOP, &["ta011"], 1 << 10),
    ];
    let mut group = c.benchmark_group("guests");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    for (name, module, args, budget) in cases {
        let native = examples.get(args_app(name)).expect("native app");
        let guest = sandbox.load(module).expect("guest loads");
        assert_eq!(
            native
                .output_json(&run(native.as_ref(), args, budget))
                .expect("json"),
            guest
                .output_json(&run(guest.as_ref(), args, budget))
                .expect("json"),
        );
        group.bench_function(format!("{name}/native"), |b| {
            b.iter(|| black_box(run(native.as_ref(), args, budget)))
        });
        group.bench_function(format!("{name}/guest"), |b| {
            b.iter(|| black_box(run(guest.as_ref(), args, budget)))
        });
    }
    group.finish();
}

fn args_app(case: &str) -> &str {
    case.split('-').next().unwrap_or(case)
}

fn instantiate(c: &mut Criterion) {
    let mut group = c.benchmark_group("guests/instantiate");
    group.bench_function("cold", |b| {
        b.iter(|| {
            let sandbox = Sandbox::new(SandboxLimits::default()).expect("sandbox");
            black_box(sandbox.load(FLOWSHOP).expect("loads").id())
        })
    });
    let sandbox = Sandbox::new(SandboxLimits::default()).expect("sandbox");
    let module = sandbox.load(FLOWSHOP).expect("loads");
    let params = module.parse_args(&["ta011".to_string()]).expect("params");
    group.bench_function("cached", |b| {
        b.iter(|| black_box(module.init(&params).expect("a unit")))
    });
    group.finish();
}

criterion_group!(benches, guest_vs_native, instantiate);
criterion_main!(benches);
