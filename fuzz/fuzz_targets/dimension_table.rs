//! Fuzz target `dimension_table`: see `tally_fuzzing::dimension_table` for what it feeds and
//! what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tally_fuzzing::dimension_table(data));
