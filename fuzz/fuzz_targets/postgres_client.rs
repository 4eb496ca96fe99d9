//! Fuzz target `postgres_client`: see `kappa_view_postgres::fuzzing::client`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kappa_view_postgres::fuzzing::client(data));
