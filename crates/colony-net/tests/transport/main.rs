//! The transport between real nodes on loopback: frames, bounds, hostile
//! bytes, and (ignored by default) throughput against raw TCP. One test
//! binary, so that the transport is compiled and linked once for all.

mod common;

mod bounds;
mod decoders;
mod frames;
mod perf;
