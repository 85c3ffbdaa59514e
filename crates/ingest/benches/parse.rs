//! Parser throughput: NDJSON, JSON array, CSV and line protocol bodies of
//! page-view events, the shape `bench/ingest.sh` sends. Prints events/s and
//! MB/s per format, the best of 5 rounds.
//! Run: cargo bench -p tally-ingest --bench parse

use std::time::Instant;
use tally_ingest::{codec, parse, parse_line_protocol, Format, Precision};

/// Parses `body` 300 times in each of 5 rounds and prints the best round's
/// rate (the machines are shared).
fn report(name: &str, body: &str, parse: &dyn Fn(&[u8]) -> usize) {
    let iters = 300;
    let best = (0..5)
        .map(|_| {
            let t = Instant::now();
            let rows: usize = (0..iters).map(|_| parse(body.as_bytes())).sum();
            (t.elapsed().as_secs_f64(), rows)
        })
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .expect("rounds");
    let (secs, rows) = best;
    println!(
        "parse {name:<10} {:>12.0} events/s {:>8.1} MB/s",
        rows as f64 / secs,
        (body.len() * iters) as f64 / secs / 1e6
    );
}

fn main() {
    let n = 2000;
    let mut nd = String::new();
    let mut csv = String::from("ts,path,country,browser,duration_ms,bytes\n");
    let mut lp = String::new();
    for i in 0..n {
        let ts = 1_700_000_000_000i64 + i * 1000;
        let (p, c, b) = (
            ["/", "/pricing", "/docs"][i as usize % 3],
            ["NO", "DE", "US", "FR"][i as usize % 4],
            ["Chrome", "Firefox"][i as usize % 2],
        );
        nd.push_str(&format!(
            "{{\"ts\":{ts},\"path\":\"{p}\",\"country\":\"{c}\",\"browser\":\"{b}\",\"duration_ms\":{},\"bytes\":{}}}\n",
            i % 5000,
            i * 37 % 100_000
        ));
        csv.push_str(&format!(
            "{ts},{p},{c},{b},{},{}\n",
            i % 5000,
            i * 37 % 100_000
        ));
        lp.push_str(&format!(
            "pv,path={p},country={c},browser={b} duration_ms={},bytes={} {ts}\n",
            i % 5000,
            i * 37 % 100_000
        ));
    }
    let arr = format!("[{}]", nd.trim_end().replace('\n', ","));
    for (name, body, format) in [
        ("ndjson", &nd, Format::Ndjson),
        ("json array", &arr, Format::Json),
        ("csv", &csv, Format::Csv),
    ] {
        report(name, body, &|b| {
            parse(b, format, 0, &|_| None).map_or(0, |b| b.len())
        });
    }
    report("line proto", &lp, &|b| {
        parse_line_protocol(b, Precision::Milliseconds, 0)
            .map_or(0, |m| m.iter().map(|m| m.batch.len()).sum())
    });
    let batch = parse(nd.as_bytes(), Format::Ndjson, 0, &|_| None).unwrap();
    let t = Instant::now();
    let mut bytes = 0;
    for _ in 0..1000 {
        bytes += codec::encode("bench", &batch).len();
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "encode            {:>12.0} events/s {:>8.1} MB/s",
        (n as f64 * 1000.0) / secs,
        bytes as f64 / secs / 1e6
    );
    let rec = codec::encode("bench", &batch);
    let t = Instant::now();
    for _ in 0..1000 {
        let _ = codec::decode(&rec).unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "decode            {:>12.0} events/s",
        (n as f64 * 1000.0) / secs
    );
}
