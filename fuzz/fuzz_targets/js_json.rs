//! Fuzz target `js_json`: see `kappa_log::fuzzing::js_json` for the input format and oracle.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kappa_log::fuzzing::js_json(data));
