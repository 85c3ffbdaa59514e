//! Fuzz target `line_protocol_vs_influxdb`: see
//! `tally_fuzzing::line_protocol_vs_influxdb` for what it compares.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tally_fuzzing::line_protocol_vs_influxdb(data));
