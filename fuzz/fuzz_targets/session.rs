//! Fuzz target `session`: see `kappa_protocol::fuzzing::session` for the input and oracle.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kappa_protocol::fuzzing::session(data));
