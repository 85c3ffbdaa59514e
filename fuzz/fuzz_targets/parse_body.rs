//! Fuzz target `parse_body`: see `tally_fuzzing::parse_body` for what it feeds and
//! what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tally_fuzzing::parse_body(data));
