//! Fuzz target `job_def`: see `tally_fuzzing::job_def` for what it feeds and
//! what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tally_fuzzing::job_def(data));
