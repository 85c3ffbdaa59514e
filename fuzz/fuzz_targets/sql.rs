//! Fuzz target `sql`: see `tally_fuzzing::sql` for what it feeds and
//! what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tally_fuzzing::sql(data));
