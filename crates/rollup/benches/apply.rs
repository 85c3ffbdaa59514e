//! Rollup maintenance cost: events per second through `Rollup::apply` for
//! a dashboard-like rollup (hourly and daily, two dimensions, count, avg,
//! distinct users, quantiles), in batches of 2,000.
//!
//!     cargo bench -p tally-rollup --bench apply

use std::time::Instant;
use tally_ingest::{Batch, Column, ColumnData, NumColumn, StrColumn};
use tally_rollup::{Aggregate, Grain, Rollup, RollupDef};

fn main() {
    let n_batches = 500;
    let per = 2000;
    let countries = ["NO", "SE", "DE", "BR", "IN", "US", "GB", "FR", "JP", "CN"];
    let paths = ["/", "/docs", "/blog", "/pricing", "/signup", "/login"];
    let mut x: u64 = 0x2545F4914F6CDD1D;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let batches: Vec<Batch> = (0..n_batches)
        .map(|b| {
            let mut country = StrColumn::new();
            let mut path = StrColumn::new();
            let mut user = StrColumn::new();
            let mut ms = NumColumn::default();
            let mut ts = Vec::with_capacity(per);
            for i in 0..per {
                country.push(countries[(next() % 10) as usize]);
                path.push(paths[(next() % 6) as usize]);
                user.push(&format!("u{}", next() % 100_000));
                ms.push((next() % 5000) as f64);
                // A week of events, roughly in time order.
                ts.push(1_700_000_000_000_000 + ((b * per + i) as i64) * 600_000);
            }
            let col = |name: &str, data| Column {
                name: name.into(),
                data,
            };
            Batch {
                ts,
                columns: vec![
                    col("country", ColumnData::Dim(country)),
                    col("path", ColumnData::Dim(path)),
                    col("user", ColumnData::Dim(user)),
                    col("ms", ColumnData::Value(ms)),
                ],
            }
        })
        .collect();
    let def = RollupDef {
        name: "dashboard".into(),
        stream: "pv".into(),
        intervals: vec![Grain::Hour, Grain::Day],
        group_by: vec!["country".into(), "path".into()],
        filter: vec![],
        aggregates: vec![
            Aggregate::Count,
            Aggregate::Avg("ms".into()),
            Aggregate::Uniq("user".into()),
            Aggregate::Quantiles("ms".into()),
        ],
        retention: Default::default(),
    };
    let mut r = Rollup::new(def).unwrap();
    let t = Instant::now();
    for b in &batches {
        r.apply(b);
    }
    let secs = t.elapsed().as_secs_f64();
    let events = (n_batches * per) as f64;
    println!(
        "rollup apply: {:.0} events/s ({} events, {:.2} s; {} hourly buckets)",
        events / secs,
        events,
        secs,
        r.buckets(Grain::Hour).map_or(0, |b| b.len())
    );
}
