//! Fuzz target `verify_proof`: see `kappa_log::fuzzing::verify_proof` for the input format and oracle.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kappa_log::fuzzing::verify_proof(data));
