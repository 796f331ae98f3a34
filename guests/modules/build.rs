//! Compiles the SDK and every guest in `guests/` to `wasm32-unknown-unknown`
//! with the rustc named by `COLONY_GUEST_RUSTC` (default `/usr/bin/rustc`,
//! Debian's, which has the wasm32 standard library the rustup toolchain
//! here lacks). The modules land in `OUT_DIR` as `<guest>.wasm`.

use std::path::{Path, PathBuf};
use std::process::{exit, Command};

/// The guests built, each from `guests/<name>/src/lib.rs`.
const GUESTS: [&str; 3] = ["nqueens", "flowshop", "hostile"];

const TARGET: &str = "wasm32-unknown-unknown";
const INSTALL: &str = "apt-get install rustc libstd-rust-dev-wasm32 lld";

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let guests = manifest.parent().unwrap_or(&manifest).to_path_buf();
    let sdk = guests.join("../crates/colony-guest/src");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default());
    let rustc = std::env::var("COLONY_GUEST_RUSTC").unwrap_or_else(|_| "/usr/bin/rustc".into());
    println!("cargo:rerun-if-env-changed=COLONY_GUEST_RUSTC");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={}", sdk.display());

    check_toolchain(&rustc);
    let sdk_rlib = out.join("libcolony_guest.rlib");
    compile(
        &rustc,
        &[
            "--crate-type=rlib",
            "--crate-name=colony_guest",
            "-o",
            &sdk_rlib.display().to_string(),
            &sdk.join("lib.rs").display().to_string(),
        ],
    );
    for guest in GUESTS {
        let src = guests.join(guest).join("src");
        println!("cargo:rerun-if-changed={}", src.display());
        compile(
            &rustc,
            &[
                "--crate-type=cdylib",
                &format!("--crate-name={guest}"),
                "-Cstrip=symbols",
                "-Clto",
                "--extern",
                &format!("colony_guest={}", sdk_rlib.display()),
                "-L",
                &out.display().to_string(),
                "-o",
                &out.join(format!("{guest}.wasm")).display().to_string(),
                &src.join("lib.rs").display().to_string(),
            ],
        );
    }
}

/// Fails the build with the packages to install if `rustc` cannot build
/// for wasm32.
fn check_toolchain(rustc: &str) {
    let sysroot = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let has_std = sysroot
        .as_deref()
        .map(|s| Path::new(s).join("lib/rustlib").join(TARGET).exists())
        .unwrap_or(false);
    if !has_std {
        eprintln!(
            "error: the WebAssembly guests need a rustc with the {TARGET} standard library; \
             {rustc} has none. On Debian: `{INSTALL}` (or set COLONY_GUEST_RUSTC to such a rustc)."
        );
        exit(1);
    }
}

fn compile(rustc: &str, args: &[&str]) {
    let status = Command::new(rustc)
        .args([
            "--edition=2021",
            &format!("--target={TARGET}"),
            "-Copt-level=3",
            "-Cpanic=abort",
            "-Ccodegen-units=1",
        ])
        .args(args)
        .status();
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => {
            eprintln!(
                "error: {rustc} {} failed ({status}); if it could not link, `{INSTALL}`",
                args.join(" ")
            );
            exit(1);
        }
        Err(e) => {
            eprintln!("error: cannot run {rustc}: {e}; `{INSTALL}`");
            exit(1);
        }
    }
}
