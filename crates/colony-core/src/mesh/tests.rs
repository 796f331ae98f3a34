//! Mesh tests in virtual time.
