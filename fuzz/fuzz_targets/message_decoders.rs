//! Fuzz target `message_decoders`: see `kappa_protocol::fuzzing::message_decoders` for the input and oracle.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kappa_protocol::fuzzing::message_decoders(data));
