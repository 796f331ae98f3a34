//! The guest applications of `guests/`, compiled to WebAssembly by this
//! crate's build script: their bytes, and the paths of their `.wasm` files
//! for process tests that pass them to `colony run --wasm`.
//!
//! - `nqueens`, `flowshop`: the examples of `colony-apps`, written once
//!   against the guest SDK (`colony-apps` runs the same crates natively);
//! - `hostile`: misbehaves on request (spins, hogs memory, panics), for
//!   the sandbox's tests.

/// Declares a module's bytes and path.
macro_rules! guest_module {
    ($bytes:ident, $path:ident, $file:literal) => {
        #[doc = concat!("The bytes of `", $file, "`.")]
        pub const $bytes: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/", $file));
        #[doc = concat!("Where `", $file, "` was built.")]
        pub const $path: &str = concat!(env!("OUT_DIR"), "/", $file);
    };
}

guest_module!(NQUEENS, NQUEENS_PATH, "nqueens.wasm");
guest_module!(FLOWSHOP, FLOWSHOP_PATH, "flowshop.wasm");
guest_module!(HOSTILE, HOSTILE_PATH, "hostile.wasm");
