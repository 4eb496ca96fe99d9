//! Fuzz target `frame_decoder`: see `kappa_protocol::fuzzing::frame_decoder` for the input and oracle.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kappa_protocol::fuzzing::frame_decoder(data));
