//! Fuzz target `bitfield`: see `kappa_log::fuzzing::bitfield` for the input format and oracle.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kappa_log::fuzzing::bitfield(data));
