//! Example applications of Colony's divisible programming model, shipped in
//! the `colony` binary and meant as templates for your own:
//!
//! - [`flowshop`]: permutation flow-shop scheduling by branch-and-bound on
//!   Taillard's instances, with the best makespan shared across peers.
//! - [`nqueens`]: counts the solutions of the N-Queens problem.
//! - [`matmul`]: multiplies seeded random matrices by row blocks.
//! - [`matmul_space`]: the same product through the object space: A and B
//!   stored in the job's namespace, each unit binding the rows it needs.
//! - [`flowshop_objects`]: the same branch-and-bound as a master object
//!   and slave objects (seed 000 §6.2, Fig. 5), driven by
//!   `colony run flowshop taNNN --objects`.
//! - [`counter`]: a counter, the smallest distributed object.
//! - [`tsp`]: the symmetric TSP on TSPLIB instances by an island genetic
//!   algorithm with 2-opt and Or-opt; its islands are distributed objects
//!   ([`tsp::IslandObject`]), driven by `colony run tsp`.
//!
//! `flowshop` and `nqueens` are written once, against the WebAssembly guest
//! SDK ([`colony_guest::Divisible`], the crates in `guests/`): the binary
//! runs them natively through [`native_guest`], and the same sources built
//! for `wasm32` are their sandboxed modules. `matmul` is one type
//! implementing [`colony_core::divisible::Divisible`].

pub mod counter;
pub mod flowshop_objects;
pub mod matmul;
pub mod matmul_space;
pub mod native_guest;
pub mod tsp;

/// The flow-shop branch-and-bound: the guest crate `colony-guest-flowshop`,
/// run natively.
pub use colony_guest_flowshop as flowshop;
/// N-Queens: the guest crate `colony-guest-nqueens`, run natively.
pub use colony_guest_nqueens as nqueens;

use colony_core::divisible::AppRegistry;
use colony_core::object::ObjectTypes;
use native_guest::register_native_guest;

/// Registers every example application.
pub fn register_examples(registry: &mut AppRegistry) {
    register_native_guest::<flowshop::FlowShop>(registry);
    register_native_guest::<nqueens::NQueens>(registry);
    registry.register::<matmul::MatMul>();
    registry.register::<matmul_space::MatMulSpace>();
}

/// A registry holding the examples.
pub fn examples() -> AppRegistry {
    let mut registry = AppRegistry::new();
    register_examples(&mut registry);
    registry
}

/// Registers every example object type (the counter, the TSP islands, the
/// flow-shop master and slaves).
pub fn register_example_objects(types: &mut ObjectTypes) {
    types.register::<counter::Counter>();
    types.register::<flowshop_objects::FlowShopMaster>();
    types.register::<flowshop_objects::FlowShopSlave>();
    types.register::<tsp::IslandObject>();
}

/// A registry holding the example object types.
pub fn example_objects() -> ObjectTypes {
    let mut types = ObjectTypes::new();
    register_example_objects(&mut types);
    types
}
