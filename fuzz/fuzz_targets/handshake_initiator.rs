//! Fuzz target `handshake_initiator`: see `kappa_protocol::fuzzing::handshake_initiator` for the input and oracle.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kappa_protocol::fuzzing::handshake_initiator(data));
