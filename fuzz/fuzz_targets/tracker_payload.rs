//! Fuzz target `tracker_payload`: see `tally_fuzzing::tracker_payload` for what it feeds and
//! what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tally_fuzzing::tracker_payload(data));
