//! Example applications of Colony's divisible programming model, shipped in
//! the `colony` binary and meant as templates for your own:
//!
//! - [`flowshop`]: permutation flow-shop scheduling by branch-and-bound on
//!   Taillard's instances, with the best makespan shared across peers.
//! - [`nqueens`]: counts the solutions of the N-Queens problem.
//! - [`matmul`]: multiplies seeded random matrices by row blocks.
//!
//! Each is one type implementing [`colony_core::divisible::Divisible`].

pub mod flowshop;
pub mod matmul;
pub mod nqueens;

use colony_core::divisible::AppRegistry;

/// Registers every example application.
pub fn register_examples(registry: &mut AppRegistry) {
    registry
        .register::<flowshop::FlowShop>()
        .register::<nqueens::NQueens>()
        .register::<matmul::MatMul>();
}

/// A registry holding the examples.
pub fn examples() -> AppRegistry {
    let mut registry = AppRegistry::new();
    register_examples(&mut registry);
    registry
}
