//! Fuzz target `inflate`: see `tally_fuzzing::inflate` for what it feeds and
//! what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tally_fuzzing::inflate(data));
