//! Fuzz target `query_request`: see `tally_fuzzing::query_request` for what it feeds and
//! what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tally_fuzzing::query_request(data));
