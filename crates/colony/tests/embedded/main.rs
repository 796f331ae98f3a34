//! The runtime through the public API of `colony`: embedded peers on
//! loopback, real libp2p connections between them. One test binary, so
//! that the driver's code is compiled and linked once for all of them.

mod common;

mod api;
mod decoders;
mod objects;
mod pipes;
mod space;
