//! Rollup maintenance cost: events per second through `Rollup::apply`, on
//! one core, for
//!  1. a dashboard-like rollup (hourly and daily, two dimensions, count,
//!     avg, distinct users, quantiles), events in time order, batches of
//!     2,000;
//!  2. the three rollups of `bench/rollup.sh` over the events `tally bench`
//!     sends (a week of random times, batches of 5,000): the rollup work
//!     behind each acknowledged batch in that benchmark;
//!  3. the same over an hour of random times (live traffic: few cells,
//!     all in cache).
//!
//!     cargo bench -p tally-rollup --bench apply

use std::time::Instant;
use tally_ingest::{Batch, Column, ColumnData, NumColumn, StrColumn};
use tally_rollup::{Aggregate, Grain, Rollup, RollupDef};

/// A xorshift generator: the same events every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.next() % from.len() as u64) as usize]
    }
}

/// A batch of text columns then number columns, by name.
fn batch(ts: Vec<i64>, dims: Vec<(&str, StrColumn)>, values: Vec<(&str, NumColumn)>) -> Batch {
    let dims = dims.into_iter().map(|(n, c)| (n, ColumnData::Dim(c)));
    let values = values.into_iter().map(|(n, c)| (n, ColumnData::Value(c)));
    Batch {
        ts,
        columns: dims
            .chain(values)
            .map(|(name, data)| Column {
                name: name.into(),
                data,
            })
            .collect(),
    }
}

fn def(
    name: &str,
    intervals: Vec<Grain>,
    group_by: &[&str],
    aggregates: Vec<Aggregate>,
) -> RollupDef {
    RollupDef {
        name: name.into(),
        stream: "pv".into(),
        intervals,
        group_by: group_by.iter().map(|s| s.to_string()).collect(),
        filter: vec![],
        aggregates,
        retention: Default::default(),
    }
}

/// Applies every batch to every rollup, from empty rollups, three times;
/// prints the fastest (the machine is shared: the slower runs are noise).
fn run(label: &str, batches: &[Batch], defs: Vec<RollupDef>) {
    // `cargo bench -p tally-rollup --bench apply -- TEXT`: only the lines
    // whose label contains TEXT.
    let only = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if only.is_some_and(|t| !label.contains(&t)) {
        return;
    }
    let events: usize = batches.iter().map(|b| b.len()).sum();
    let mut best = f64::MAX;
    let mut hours = 0;
    for _ in 0..3 {
        let mut rollups: Vec<Rollup> = defs
            .iter()
            .map(|d| Rollup::new(d.clone()).unwrap())
            .collect();
        let t = Instant::now();
        for b in batches {
            for r in &mut rollups {
                r.apply(b);
            }
        }
        best = best.min(t.elapsed().as_secs_f64());
        hours = rollups[0].bucket_count(Grain::Hour);
    }
    println!(
        "{label}: {:.0} events/s, {:.0} ns/event ({events} events, best of 3; hourly buckets {hours})",
        events as f64 / best,
        best * 1e9 / events as f64,
    );
}

fn ordered_dashboard() {
    let countries = ["NO", "SE", "DE", "BR", "IN", "US", "GB", "FR", "JP", "CN"];
    let paths = ["/", "/docs", "/blog", "/pricing", "/signup", "/login"];
    let mut rng = Rng(0x2545F4914F6CDD1D);
    let per = 2000;
    let batches: Vec<Batch> = (0..500)
        .map(|b| {
            let mut country = StrColumn::new();
            let mut path = StrColumn::new();
            let mut user = StrColumn::new();
            let mut ms = NumColumn::default();
            let mut ts = Vec::with_capacity(per);
            for i in 0..per {
                country.push(rng.pick(&countries));
                path.push(rng.pick(&paths));
                user.push(&format!("u{}", rng.next() % 100_000));
                ms.push((rng.next() % 5000) as f64);
                // A week of events, roughly in time order.
                ts.push(1_700_000_000_000_000 + ((b * per + i) as i64) * 600_000);
            }
            batch(
                ts,
                vec![("country", country), ("path", path), ("user", user)],
                vec![("ms", ms)],
            )
        })
        .collect();
    let dashboard = def(
        "dashboard",
        vec![Grain::Hour, Grain::Day],
        &["country", "path"],
        vec![
            Aggregate::Count,
            Aggregate::Avg("ms".into()),
            Aggregate::Uniq("user".into()),
            Aggregate::Quantiles("ms".into()),
        ],
    );
    run(
        "1. dashboard rollup, ordered events",
        &batches,
        vec![dashboard],
    );
}

fn three_rollups(span_hours: u64, label: &str) {
    let countries = ["US", "DE", "FR", "GB", "IN", "BR", "JP", "NO", "CN", "CA"];
    let browsers = ["Chrome", "Firefox", "Safari", "Edge"];
    let paths = [
        "/",
        "/pricing",
        "/docs",
        "/docs/install",
        "/docs/query",
        "/blog",
        "/blog/launch",
        "/signup",
        "/login",
        "/about",
    ];
    let mut rng = Rng(0x9E3779B97F4A7C15);
    let per = 5000;
    let span_us = span_hours * 3_600_000_000;
    let batches: Vec<Batch> = (0..400)
        .map(|_| {
            let mut country = StrColumn::new();
            let mut path = StrColumn::new();
            let mut browser = StrColumn::new();
            let mut bytes = NumColumn::default();
            let mut duration = NumColumn::default();
            let mut ts = Vec::with_capacity(per);
            for _ in 0..per {
                country.push(rng.pick(&countries));
                path.push(rng.pick(&paths));
                browser.push(rng.pick(&browsers));
                bytes.push((100 + rng.next() % 99_900) as f64);
                duration.push((10 + rng.next() % 4990) as f64);
                ts.push(1_700_000_000_000_000 + (rng.next() % span_us) as i64);
            }
            batch(
                ts,
                vec![("path", path), ("country", country), ("browser", browser)],
                vec![("duration_ms", duration), ("bytes", bytes)],
            )
        })
        .collect();
    let defs = vec![
        def(
            "dashboard",
            vec![Grain::Hour, Grain::Day],
            &["country"],
            vec![
                Aggregate::Count,
                Aggregate::Uniq("bytes".into()),
                Aggregate::Quantiles("duration_ms".into()),
            ],
        ),
        def(
            "paths",
            vec![Grain::Hour],
            &["path"],
            vec![Aggregate::Count, Aggregate::Avg("duration_ms".into())],
        ),
        def(
            "browsers",
            vec![Grain::Hour],
            &["browser", "country"],
            vec![Aggregate::Count, Aggregate::Sum("bytes".into())],
        ),
    ];
    for d in &defs {
        run(&format!("{label}. {}", d.name), &batches, vec![d.clone()]);
    }
    run(&format!("{label}. all three rollups"), &batches, defs);
}

fn main() {
    ordered_dashboard();
    three_rollups(168, "2 (a week of random times)");
    three_rollups(1, "3 (an hour of random times)");
}
