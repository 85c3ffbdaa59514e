//! Fuzz target `rollup_def`: see `tally_fuzzing::rollup_def` for what it feeds and
//! what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tally_fuzzing::rollup_def(data));
