//! Flush cost: one hour-partition of 1 M page views (timestamps random within
//! the hour, as bench/ingest.sh sends them) turned into a Parquet segment.
//! Prints the time per event of each step.
//! Run: cargo bench -p tally-store --bench flush

use std::time::Instant;
use tally_ingest::{parse, Format};
use tally_store::{Store, StoreOptions};

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(StoreOptions::new(dir.path())).expect("open");
    let n = 1_000_000;
    let per = 5000;
    let paths = [
        "/",
        "/pricing",
        "/docs",
        "/docs/api",
        "/blog",
        "/signup",
        "/login",
        "/about",
    ];
    let countries = ["US", "DE", "FR", "GB", "IN", "BR", "JP", "NO"];
    let browsers = ["Chrome", "Firefox", "Safari", "Edge"];
    let mut x: u64 = 42;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let t = Instant::now();
    for lsn in 0..(n / per) {
        let mut body = String::new();
        for _ in 0..per {
            let r = next();
            body.push_str(&format!(
                "{{\"ts\":{},\"path\":\"{}\",\"country\":\"{}\",\"browser\":\"{}\",\"duration_ms\":{},\"bytes\":{}}}\n",
                1_700_000_000_000u64 / 3_600_000 * 3_600_000 + r % 3_600_000,
                paths[(r >> 20) as usize % 8],
                countries[(r >> 24) as usize % 8],
                browsers[(r >> 28) as usize % 4],
                (r >> 32) % 5000,
                (r >> 40) % 100_000
            ));
        }
        let batch = parse(body.as_bytes(), Format::Ndjson, 0, &|_| None).expect("parse");
        store.schemas().reserve("pv", &batch).expect("schema");
        store.apply(lsn as u64 + 1, "pv", &batch);
    }
    let load = t.elapsed();
    // Step by step on a copy of the partition.
    let schema = store.schemas().get("pv").expect("schema");
    let t = Instant::now();
    let rb = store.partition_record_batch("pv").expect("partition");
    let to_arrow = t.elapsed();
    let t = Instant::now();
    let idx = arrow::compute::sort_to_indices(rb.column(0), None, None).expect("sort");
    let sort_indices = t.elapsed();
    let sorted = arrow::compute::take_record_batch(&rb, &idx).expect("take");
    let sort = t.elapsed();
    let t = Instant::now();
    tally_store::write_segment(&dir.path().join("x.parquet"), &sorted, 1 << 20, 1).expect("write");
    let write = t.elapsed();
    let _ = schema;
    let per = |d: std::time::Duration| d.as_secs_f64() * 1e6 / n as f64;
    println!(
        "steps: to arrow {:.3}, sort {:.3} (arrow's sort_to_indices {:.3}), parquet write {:.3} us/event",
        per(to_arrow),
        per(sort),
        per(sort_indices),
        per(write)
    );
    let t = Instant::now();
    let r = store.flush().expect("flush");
    let flush = t.elapsed();
    println!(
        "generate+parse+apply {:.3} us/event; flush {:.3} us/event ({} rows, {} segments, {:.1} bytes/event on disk)",
        load.as_secs_f64() * 1e6 / n as f64,
        flush.as_secs_f64() * 1e6 / n as f64,
        r.rows,
        r.segments,
        r.bytes as f64 / r.rows as f64
    );
}
