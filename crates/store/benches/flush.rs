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
    // Step by step on a copy of the partition, each step's best of 5 (the
    // machines are shared).
    let best = |f: &mut dyn FnMut()| {
        (0..5)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .min()
            .expect("rounds")
    };
    let rb = store.partition_record_batch("pv").expect("partition");
    let to_arrow = best(&mut || drop(store.partition_record_batch("pv")));
    let idx = arrow::compute::sort_to_indices(rb.column(0), None, None).expect("sort");
    let sort_indices =
        best(&mut || drop(arrow::compute::sort_to_indices(rb.column(0), None, None)));
    let take = best(&mut || drop(arrow::compute::take_record_batch(&rb, &idx)));
    let sorted = arrow::compute::take_record_batch(&rb, &idx).expect("take");
    let path = dir.path().join("x.parquet");
    let write = best(&mut || {
        tally_store::write_segment(&path, &sorted, 1 << 20, 1).expect("write");
    });
    // What a flush does instead: sorted while converted, text as dictionaries.
    let to_segment = best(&mut || drop(store.partition_segment_batch("pv")));
    let segment = store.partition_segment_batch("pv").expect("partition");
    let write_segment = best(&mut || {
        tally_store::write_segment(&path, &segment, 1 << 20, 1).expect("write");
    });
    let per = |d: std::time::Duration| d.as_secs_f64() * 1e6 / n as f64;
    println!(
        "record batch, then sorted: to arrow {:.3}, arrow's sort_to_indices {:.3}, take {:.3}, parquet write {:.3} us/event",
        per(to_arrow),
        per(sort_indices),
        per(take),
        per(write)
    );
    println!(
        "as a flush does it: sorted with dictionaries {:.3}, parquet write {:.3} us/event",
        per(to_segment),
        per(write_segment)
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
