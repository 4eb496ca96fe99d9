//! Fuzz target `mdns_packet`: see `kappa_discovery::fuzzing::packet`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kappa_discovery::fuzzing::packet(data));
