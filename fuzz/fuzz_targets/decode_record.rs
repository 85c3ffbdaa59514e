//! Fuzz target `decode_record`: see `tally_fuzzing::decode_record` for what it feeds and
//! what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tally_fuzzing::decode_record(data));
