//! Fuzzes the body parsers (JSON, NDJSON, CSV): no input may panic, and an
//! accepted body must survive the log codec unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tally_ingest::{codec, parse, Format};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let format = match selector % 3 {
        0 => Format::Json,
        1 => Format::Ndjson,
        _ => Format::Csv,
    };
    if let Ok(batch) = parse(body, format, 0, &|_| None) {
        let record = codec::encode("fuzz", &batch);
        let (stream, back) = codec::decode(&record).expect("a record we encoded must decode");
        assert_eq!(stream, "fuzz");
        assert_eq!(back, batch);
    }
});
