//! Fuzz target `dht_datagram`: see `kappa_discovery::fuzzing::dht_datagram`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kappa_discovery::fuzzing::dht_datagram(data));
