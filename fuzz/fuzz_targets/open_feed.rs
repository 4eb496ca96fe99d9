//! Fuzz target `open_feed`: see `kappa_log::fuzzing::open_feed` for the input format and oracle.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kappa_log::fuzzing::open_feed(data));
