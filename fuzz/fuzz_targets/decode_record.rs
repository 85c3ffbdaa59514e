//! Fuzzes the log record decoder with arbitrary bytes: it must return an
//! error, never panic or read out of bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tally_ingest::codec::decode(data);
});
