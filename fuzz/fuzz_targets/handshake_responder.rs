//! Fuzz target `handshake_responder`: see `kappa_protocol::fuzzing::handshake_responder` for the input and oracle.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kappa_protocol::fuzzing::handshake_responder(data));
