//! Fuzz target `line_protocol`: see `tally_fuzzing::line_protocol` for what it feeds and
//! what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tally_fuzzing::line_protocol(data));
