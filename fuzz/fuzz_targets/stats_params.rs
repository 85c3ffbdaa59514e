//! Fuzz target `stats_params`: see `tally_fuzzing::stats_params` for what it feeds and
//! what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tally_fuzzing::stats_params(data));
