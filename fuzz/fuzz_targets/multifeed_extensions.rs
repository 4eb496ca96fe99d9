//! Fuzz target `multifeed_extensions`: see `kappa_multifeed::fuzzing::extensions`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kappa_multifeed::fuzzing::extensions(data));
