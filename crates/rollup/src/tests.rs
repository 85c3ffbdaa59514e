//! Rollups against a direct computation over the same events: exact for
//! count/sum/min/max/avg, within the sketches' bounds for distinct counts
//! and quantiles; events applied in any order (late events) give the same
//! state; snapshots round-trip and refuse damage.

use super::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;
use tally_ingest::{Batch, Column, ColumnData, NumColumn, StrColumn};

const HOUR: i64 = 3_600_000_000;

/// One generated event.
#[derive(Clone)]
struct Ev {
    ts: i64,
    country: Option<String>,
    device: Option<String>,
    ms: Option<f64>,
    user: Option<String>,
}

fn events(rng: &mut StdRng, n: usize) -> Vec<Ev> {
    let countries = ["NO", "SE", "DE", "BR", "IN"];
    let devices = ["phone", "desktop"];
    (0..n)
        .map(|_| Ev {
            ts: 1_700_000_000_000_000 + rng.random_range(0..72 * HOUR),
            country: (rng.random_range(0..20) > 0)
                .then(|| countries[rng.random_range(0..countries.len())].to_string()),
            device: (rng.random_range(0..10) > 0)
                .then(|| devices[rng.random_range(0..devices.len())].to_string()),
            ms: (rng.random_range(0..8) > 0).then(|| (rng.random_range(0..100_000) as f64) / 7.0),
            user: (rng.random_range(0..5) > 0).then(|| format!("u{}", rng.random_range(0..3000))),
        })
        .collect()
}

fn batch(evs: &[Ev]) -> Batch {
    let mut country = StrColumn::new();
    let mut device = StrColumn::new();
    let mut user = StrColumn::new();
    let mut ms = NumColumn::default();
    for e in evs {
        match &e.country {
            Some(s) => country.push(s),
            None => country.push_null(),
        }
        match &e.device {
            Some(s) => device.push(s),
            None => device.push_null(),
        }
        match &e.user {
            Some(s) => user.push(s),
            None => user.push_null(),
        }
        match e.ms {
            Some(v) => ms.push(v),
            None => ms.push_null(),
        }
    }
    Batch {
        ts: evs.iter().map(|e| e.ts).collect(),
        columns: vec![
            Column {
                name: "country".into(),
                data: ColumnData::Dim(country),
            },
            Column {
                name: "device".into(),
                data: ColumnData::Dim(device),
            },
            Column {
                name: "user".into(),
                data: ColumnData::Dim(user),
            },
            Column {
                name: "ms".into(),
                data: ColumnData::Value(ms),
            },
        ],
    }
}

fn dim<'a>(e: &'a Ev, name: &str) -> Option<&'a str> {
    match name {
        "country" => e.country.as_deref(),
        "device" => e.device.as_deref(),
        "user" => e.user.as_deref(),
        _ => None,
    }
}

fn random_def(rng: &mut StdRng, i: usize) -> RollupDef {
    let dims = ["country", "device"];
    let mut group_by: Vec<String> = dims
        .iter()
        .filter(|_| rng.random_range(0..2) == 0)
        .map(|s| s.to_string())
        .collect();
    group_by.dedup();
    let filter = match rng.random_range(0..3) {
        0 => vec![],
        1 => vec![Condition {
            field: "ms".into(),
            op: Op::Ge,
            value: json!(3000),
        }],
        _ => vec![Condition {
            field: "country".into(),
            op: Op::Ne,
            value: json!("NO"),
        }],
    };
    RollupDef {
        name: format!("r{i}"),
        stream: "web".into(),
        intervals: match rng.random_range(0..3) {
            0 => vec![Grain::Hour],
            1 => vec![Grain::Minute, Grain::Hour, Grain::Day],
            _ => vec![Grain::Hour, Grain::Day],
        },
        group_by,
        filter,
        aggregates: vec![
            Aggregate::Count,
            Aggregate::CountOf("ms".into()),
            Aggregate::Sum("ms".into()),
            Aggregate::Min("ms".into()),
            Aggregate::Max("ms".into()),
            Aggregate::Avg("ms".into()),
            Aggregate::Uniq("user".into()),
            Aggregate::Quantiles("ms".into()),
        ],
        retention: Default::default(),
    }
}

fn passes(def: &RollupDef, e: &Ev) -> bool {
    def.filter.iter().all(|c| match (c.field.as_str(), c.op) {
        ("ms", Op::Ge) => e.ms.is_some_and(|v| v >= 3000.0),
        ("country", Op::Ne) => e.country.as_deref() != Some("NO"),
        _ => unreachable!(),
    })
}

/// The events of each (bucket, group) of `grain`.
fn direct<'a>(
    def: &RollupDef,
    grain: Grain,
    evs: &'a [Ev],
) -> BTreeMap<(i64, GroupKey), Vec<&'a Ev>> {
    let mut out: BTreeMap<(i64, GroupKey), Vec<&Ev>> = BTreeMap::new();
    for e in evs.iter().filter(|e| passes(def, e)) {
        let key = def
            .group_by
            .iter()
            .map(|g| dim(e, g).map(str::to_string))
            .collect();
        out.entry((grain.start(e.ts), key)).or_default().push(e);
    }
    out
}

/// Checks every cell of `rollup` against the direct answer.
fn check(rollup: &Rollup, evs: &[Ev]) {
    let def = rollup.def().clone();
    for grain in def.grains() {
        let want = direct(&def, grain, evs);
        let got: BTreeMap<(i64, GroupKey), std::borrow::Cow<'_, Cell>> = rollup
            .cells(grain, i64::MIN, i64::MAX)
            .map(|(b, k, c)| ((b, k.clone()), c))
            .collect();
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{} {:?}: the same cells",
            def.name,
            grain
        );
        for (k, evs) in &want {
            let cell = &got[k];
            let ms: Vec<f64> = evs.iter().filter_map(|e| e.ms).collect();
            let v = |i: usize, q: f64| cell.states[i].value(&def.aggregates[i], q);
            assert_eq!(v(0, 0.0), Some(evs.len() as f64));
            assert_eq!(v(1, 0.0), Some(ms.len() as f64));
            let sum: f64 = ms.iter().sum();
            let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * b.abs().max(1.0),
                (a, b) => a == b,
            };
            let nonempty = |x: f64| (!ms.is_empty()).then_some(x);
            assert!(close(v(2, 0.0), nonempty(sum)), "sum {k:?}");
            assert_eq!(v(3, 0.0), ms.iter().copied().reduce(f64::min));
            assert_eq!(v(4, 0.0), ms.iter().copied().reduce(f64::max));
            assert!(
                close(v(5, 0.0), nonempty(sum / ms.len() as f64)),
                "avg {k:?}"
            );
            // Distinct users: HLL with 4096 registers, standard error 1.6 %;
            // allow 5 standard errors.
            let users: HashSet<&str> = evs.iter().filter_map(|e| e.user.as_deref()).collect();
            let est = v(6, 0.0).unwrap();
            let exact = users.len() as f64;
            assert!(
                (est - exact).abs() <= 0.08 * exact + 1.0,
                "uniq {k:?}: {est} vs {exact}"
            );
            // Quantiles: DDSketch, within 1 % of the exact value at rank
            // floor(q (n - 1)), and within the values' range.
            if ms.is_empty() {
                assert_eq!(v(7, 0.5), None);
                continue;
            }
            let mut sorted = ms.clone();
            sorted.sort_by(f64::total_cmp);
            for q in [0.0, 0.5, 0.9, 0.95, 0.99, 1.0] {
                let est = v(7, q).unwrap();
                let exact = sorted[(q * (sorted.len() - 1) as f64) as usize];
                assert!(
                    (est - exact).abs() <= QUANTILE_ALPHA * exact.abs() + 1e-9,
                    "p{q} {k:?}: {est} vs {exact}"
                );
                assert!(sorted[0] <= est && est <= sorted[sorted.len() - 1]);
            }
        }
    }
}

#[test]
fn rollups_equal_direct_answers_for_any_order_of_events() {
    let mut rng = StdRng::seed_from_u64(7);
    let evs = events(&mut rng, 30_000);
    for i in 0..6 {
        let def = random_def(&mut rng, i);
        // In time order, in batches.
        let mut sorted = evs.clone();
        sorted.sort_by_key(|e| e.ts);
        let mut a = Rollup::new(def.clone()).unwrap();
        for chunk in sorted.chunks(1000) {
            a.apply(&batch(chunk));
        }
        check(&a, &evs);
        // Late and backfilled: random order, random batch sizes.
        let mut b = Rollup::new(def.clone()).unwrap();
        let mut at = 0;
        while at < evs.len() {
            let n = rng.random_range(1..3000).min(evs.len() - at);
            b.apply(&batch(&evs[at..at + n]));
            at += n;
        }
        check(&b, &evs);
        assert_eq!(a.events(), b.events());
    }
}

#[test]
fn merged_halves_equal_the_whole() {
    let mut rng = StdRng::seed_from_u64(11);
    let evs = events(&mut rng, 8000);
    let def = random_def(&mut rng, 0);
    let mut left = Rollup::new(def.clone()).unwrap();
    let mut right = Rollup::new(def.clone()).unwrap();
    left.apply(&batch(&evs[..4000]));
    right.apply(&batch(&evs[4000..]));
    for grain in def.grains() {
        let mut merged: BTreeMap<(i64, GroupKey), Cell> = BTreeMap::new();
        for (b, k, c) in
            left.cells(grain, i64::MIN, i64::MAX)
                .chain(right.cells(grain, i64::MIN, i64::MAX))
        {
            match merged.get_mut(&(b, k.clone())) {
                Some(m) => m.merge(&c),
                None => {
                    merged.insert((b, k.clone()), c.into_owned());
                }
            }
        }
        let want = direct(&def, grain, &evs);
        assert_eq!(merged.len(), want.len());
        for (k, evs) in want {
            let c = &merged[&k];
            assert_eq!(
                c.states[0].value(&def.aggregates[0], 0.0),
                Some(evs.len() as f64)
            );
        }
    }
}

#[test]
fn snapshots_round_trip_and_refuse_damage() {
    let mut rng = StdRng::seed_from_u64(3);
    let evs = events(&mut rng, 5000);
    let def = random_def(&mut rng, 1);
    let mut r = Rollup::new(def).unwrap();
    r.apply(&batch(&evs));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.snap");
    snapshot::write(&path, &r, 42).unwrap();
    let (back, lsn) = snapshot::read(&path).unwrap().unwrap();
    assert_eq!(lsn, 42);
    assert_eq!(back.events(), r.events());
    check(&back, &evs);
    // Every value of every cell is what it was (sketches included: a
    // hash set's bytes may come out in another order, its estimate may not
    // change).
    for grain in r.def().grains() {
        let values = |x: &Rollup| -> Vec<(i64, GroupKey, Vec<Option<f64>>)> {
            let mut v: Vec<_> = x
                .cells(grain, i64::MIN, i64::MAX)
                .map(|(b, k, c)| {
                    let vals = c
                        .states
                        .iter()
                        .zip(&x.def().aggregates)
                        .flat_map(|(s, a)| [s.value(a, 0.5), s.value(a, 0.99)])
                        .collect();
                    (b, k.clone(), vals)
                })
                .collect();
            v.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
            v
        };
        assert!(values(&back) == values(&r), "{grain:?}");
    }

    let bytes = std::fs::read(&path).unwrap();
    for at in [5, bytes.len() / 2, bytes.len() - 1] {
        let mut bad = bytes.clone();
        bad[at] ^= 0x40;
        assert!(snapshot::decode(&bad).is_err(), "flipped byte {at}");
    }
    assert!(snapshot::decode(&bytes[..bytes.len() - 9]).is_err());
    assert!(snapshot::read(&dir.path().join("none.snap"))
        .unwrap()
        .is_none());
}

#[test]
fn groups_are_renumbered_when_retention_leaves_few() {
    let mut rng = StdRng::seed_from_u64(11);
    // Users as groups: each is in few hours.
    let evs = events(&mut rng, 6000);
    let def = RollupDef {
        name: "by_user".into(),
        stream: "web".into(),
        intervals: vec![Grain::Hour],
        group_by: vec!["user".into(), "country".into()],
        filter: vec![],
        aggregates: vec![
            Aggregate::Count,
            Aggregate::Sum("ms".into()),
            Aggregate::Uniq("device".into()),
            Aggregate::Quantiles("ms".into()),
        ],
        retention: Default::default(),
    };
    let mut r = Rollup::new(def.clone()).unwrap();
    r.apply(&batch(&evs));
    let before = r.group_count();
    let cutoff = Grain::Hour.start(1_700_000_000_000_000 + 64 * HOUR);
    assert!(r.drop_before(Grain::Hour, cutoff) > 0);
    let kept: Vec<Ev> = evs.iter().filter(|e| e.ts >= cutoff).cloned().collect();
    let mut fresh = Rollup::new(def.clone()).unwrap();
    fresh.apply(&batch(&kept));
    assert!(
        r.group_count() < before / 2 && r.group_count() == fresh.group_count(),
        "groups {before} -> {} (fresh {})",
        r.group_count(),
        fresh.group_count()
    );
    // The renumbered rollup answers as one built from the kept events,
    // and goes on counting (new groups, old groups) as that one does.
    let more = events(&mut rng, 2000);
    r.apply(&batch(&more));
    fresh.apply(&batch(&more));
    let all = |x: &Rollup| -> Vec<(i64, GroupKey, Vec<Option<f64>>)> {
        let mut v: Vec<_> = x
            .cells(Grain::Hour, cutoff, i64::MAX)
            .map(|(b, k, c)| {
                let vals = c
                    .states
                    .iter()
                    .zip(&x.def().aggregates)
                    .map(|(s, a)| s.value(a, 0.9))
                    .collect();
                (b, k.clone(), vals)
            })
            .collect();
        v.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        v
    };
    assert!(all(&r) == all(&fresh));
    let (back, _) = snapshot::decode(&snapshot::encode(&r, 1)).unwrap();
    assert!(all(&back) == all(&r));
}

#[test]
fn a_number_and_its_text_are_one_group() {
    let def = RollupDef {
        name: "codes".into(),
        stream: "web".into(),
        intervals: vec![Grain::Hour],
        group_by: vec!["code".into()],
        filter: vec![],
        aggregates: vec![Aggregate::Count],
        retention: Default::default(),
    };
    let mut r = Rollup::new(def).unwrap();
    let mut text = StrColumn::new();
    text.push("200");
    let mut num = NumColumn::default();
    num.push(200.0);
    for data in [ColumnData::Dim(text), ColumnData::Value(num)] {
        r.apply(&Batch {
            ts: vec![1_700_000_000_000_000],
            columns: vec![Column {
                name: "code".into(),
                data,
            }],
        });
    }
    let cells: Vec<_> = r.cells(Grain::Hour, i64::MIN, i64::MAX).collect();
    assert_eq!(cells.len(), 1);
    assert_eq!(cells[0].1, &vec![Some("200".to_string())]);
    assert_eq!(
        cells[0].2.states[0].value(&Aggregate::Count, 0.0),
        Some(2.0)
    );
}

#[test]
fn retention_drops_old_buckets_only() {
    let mut rng = StdRng::seed_from_u64(5);
    let evs = events(&mut rng, 3000);
    let mut def = random_def(&mut rng, 2);
    def.intervals = vec![Grain::Hour];
    let mut r = Rollup::new(def).unwrap();
    r.apply(&batch(&evs));
    let cutoff = 1_700_000_000_000_000 + 24 * HOUR;
    let before = r.bucket_count(Grain::Hour);
    let dropped = r.drop_before(Grain::Hour, cutoff);
    let left = r.buckets(Grain::Hour).unwrap();
    assert_eq!(dropped + left.len(), before);
    assert!(left.keys().all(|b| *b >= cutoff));
    assert!(dropped > 0 && !left.is_empty());
}

fn count_def(name: &str) -> RollupDef {
    RollupDef {
        name: name.into(),
        stream: "web".into(),
        intervals: vec![Grain::Hour],
        group_by: vec!["country".into()],
        filter: vec![],
        aggregates: vec![Aggregate::Count, Aggregate::Uniq("user".into())],
        retention: Default::default(),
    }
}

/// Total `count` over all cells of a complete rollup.
fn total(set: &RollupSet, name: &str) -> Option<u64> {
    let e = set.get(name)?;
    let e = e.read();
    e.complete.then(|| {
        e.rollup
            .cells(Grain::Hour, i64::MIN, i64::MAX)
            .map(|(_, _, c)| c.states[0].value(&Aggregate::Count, 0.0).unwrap() as u64)
            .sum()
    })
}

#[test]
fn a_set_counts_each_record_once_across_snapshots_and_replays() {
    let mut rng = StdRng::seed_from_u64(21);
    let dir = tempfile::tempdir().unwrap();
    let evs = events(&mut rng, 4000);
    let batches: Vec<Batch> = evs.chunks(100).map(batch).collect();
    let (set, loaded) = RollupSet::open(dir.path(), &[count_def("a")]).unwrap();
    assert!(matches!(loaded["a"], Loaded::NeedsRebuild(_)));
    // A new rollup on an empty stream: its build has no history to feed.
    let id = set.rebuild("a", 0, None).unwrap();
    assert!(set.finish("a", id).unwrap());
    for (i, b) in batches[..20].iter().enumerate() {
        set.apply(i as u64 + 1, "web", b);
    }
    // Another stream's records move the position without counting.
    set.apply(21, "api", &batches[20]);
    assert_eq!(set.snapshot_all().unwrap(), Some(21));
    // Records after the snapshot, then a "crash": the new set reopens at
    // the snapshot and the log replays from an earlier point.
    for (i, b) in batches[21..30].iter().enumerate() {
        set.apply(i as u64 + 22, "web", b);
    }
    drop(set);
    let (set, loaded) = RollupSet::open(dir.path(), &[]).unwrap();
    assert_eq!(loaded["a"], Loaded::Snapshot(21));
    assert_eq!(set.min_lsn(), Some(21));
    for (i, b) in batches[..30].iter().enumerate() {
        if i != 20 {
            set.apply(i as u64 + 1, "web", b);
        }
    }
    let want = (batches[..20].iter().chain(&batches[21..30]))
        .map(|b| b.len() as u64)
        .sum::<u64>();
    assert_eq!(total(&set, "a"), Some(want));
}

/// One record holding two streams' events: each stream's rollups count
/// their part, though the record's position is one (a rollup of the stream
/// applied second must not take the first part's position as its own).
#[test]
fn a_record_of_several_streams_counts_in_each_streams_rollups() {
    let mut rng = StdRng::seed_from_u64(23);
    let dir = tempfile::tempdir().unwrap();
    let evs = events(&mut rng, 300);
    let (web, api) = (batch(&evs[..100]), batch(&evs[100..]));
    let api_def = RollupDef {
        stream: "api".into(),
        ..count_def("api_count")
    };
    let (set, _) = RollupSet::open(dir.path(), &[count_def("web_count"), api_def]).unwrap();
    for name in ["web_count", "api_count"] {
        let id = set.rebuild(name, 0, None).unwrap();
        assert!(set.finish(name, id).unwrap());
    }
    for parts in [
        [("web", &web), ("api", &api)],
        [("api", &api), ("web", &web)],
    ] {
        let before = (
            total(&set, "web_count").unwrap(),
            total(&set, "api_count").unwrap(),
        );
        let lsn = set.min_lsn().unwrap_or(0) + 1;
        set.apply_parts(lsn, &parts);
        assert_eq!(total(&set, "web_count"), Some(before.0 + 100));
        assert_eq!(total(&set, "api_count"), Some(before.1 + 200));
        // Applied again (a replay): counted once.
        set.apply_parts(lsn, &parts);
        assert_eq!(total(&set, "web_count"), Some(before.0 + 100));
    }
}

#[test]
fn a_rebuild_is_invisible_until_done_and_exact_after() {
    let mut rng = StdRng::seed_from_u64(22);
    let dir = tempfile::tempdir().unwrap();
    let evs = events(&mut rng, 3000);
    let batches: Vec<Batch> = evs.chunks(100).map(batch).collect();
    let (set, _) = RollupSet::open(dir.path(), &[]).unwrap();
    // History: records 1..=10 exist before the rollup is defined.
    let id = set.define(count_def("b"), 10).unwrap();
    assert_eq!(total(&set, "b"), None, "incomplete: answers nothing");
    assert_eq!(set.snapshot_all().unwrap(), None, "incomplete: no snapshot");
    // Live records arrive while the builder feeds history in pieces.
    for (i, b) in batches[10..20].iter().enumerate() {
        set.apply(i as u64 + 11, "web", b);
        assert!(set.feed("b", id, &batches[i]));
    }
    assert_eq!(total(&set, "b"), None);
    // A stale build cannot finish or feed after a newer one starts.
    let newer = set.rebuild("b", 20, None).unwrap();
    assert!(!set.feed("b", id, &batches[0]));
    assert!(!set.finish("b", id).unwrap());
    for b in &batches[..20] {
        assert!(set.feed("b", newer, b));
    }
    assert!(set.finish("b", newer).unwrap());
    let want: u64 = batches[..20].iter().map(|b| b.len() as u64).sum();
    assert_eq!(total(&set, "b"), Some(want));
    // The finished state was written: a reopen finds it complete.
    drop(set);
    let (set, loaded) = RollupSet::open(dir.path(), &[]).unwrap();
    assert_eq!(loaded["b"], Loaded::Snapshot(20));
    assert_eq!(total(&set, "b"), Some(want));
    // A changed definition in the config needs a rebuild.
    let mut changed = count_def("b");
    changed.group_by = vec![];
    drop(set);
    let (_set, loaded) = RollupSet::open(dir.path(), &[changed]).unwrap();
    assert!(matches!(loaded["b"], Loaded::NeedsRebuild(_)));
}

#[test]
fn a_range_is_replaced_whole_and_nothing_outside_it() {
    let mut rng = StdRng::seed_from_u64(31);
    let evs = events(&mut rng, 6000);
    let mut def = random_def(&mut rng, 3);
    def.intervals = vec![Grain::Minute, Grain::Hour];
    def.filter = vec![];
    let mut live = Rollup::new(def.clone()).unwrap();
    live.apply(&batch(&evs));
    // A "fixed" computation: the same events without the odd ones.
    let fixed: Vec<Ev> = evs.iter().step_by(2).cloned().collect();
    let lo = 1_700_000_000_000_000i64.div_euclid(HOUR) * HOUR + 5 * HOUR;
    let hi = lo + 7 * HOUR;
    let mut part = Rollup::new(def.clone()).unwrap();
    part.apply_in(&batch(&fixed), Some((lo, hi)));
    live.replace_range(part, lo, hi);
    // Inside: the fixed events; outside: all of them.
    let expect: Vec<Ev> = evs
        .iter()
        .enumerate()
        .filter(|(i, e)| !(lo..hi).contains(&e.ts) || i % 2 == 0)
        .map(|(_, e)| e.clone())
        .collect();
    check(&live, &expect);
    let n = expect.iter().filter(|e| passes(&def, e)).count() as u64;
    assert_eq!(live.events(), n);
}

#[test]
fn retention_drops_whole_buckets_persists_and_ignores_late_events_for_them() {
    let mut rng = StdRng::seed_from_u64(41);
    let evs = events(&mut rng, 4000);
    let mut def = random_def(&mut rng, 4);
    def.filter = vec![];
    def.intervals = vec![Grain::Minute, Grain::Hour];
    def.retention = [(Grain::Minute, "12h".to_string())].into_iter().collect();
    let mut r = Rollup::new(def.clone()).unwrap();
    r.apply(&batch(&evs));
    // "Now" is 36 hours into the events: minutes older than 24 h of data go.
    let now = 1_700_000_000_000_000 + 36 * HOUR;
    let dropped = r.retain(now);
    assert!(dropped > 0);
    let cutoff = Grain::Minute.start(now - 12 * HOUR);
    assert_eq!(r.kept_from(Grain::Minute), cutoff);
    assert!(r
        .buckets(Grain::Minute)
        .unwrap()
        .keys()
        .all(|b| *b >= cutoff));
    assert_eq!(
        r.kept_from(Grain::Hour),
        i64::MIN,
        "hours are kept for ever"
    );
    // Late events for dropped minutes do not recreate them; hours count them.
    let hours_before = r.bucket_count(Grain::Hour);
    let late: Vec<Ev> = evs
        .iter()
        .filter(|e| e.ts < cutoff)
        .take(50)
        .cloned()
        .collect();
    r.apply(&batch(&late));
    assert!(r
        .buckets(Grain::Minute)
        .unwrap()
        .keys()
        .all(|b| *b >= cutoff));
    assert_eq!(r.bucket_count(Grain::Hour), hours_before);
    // Hours count every event, late ones included: merged from minutes
    // where minutes are kept, counted directly where they were dropped.
    let more = events(&mut rng, 600);
    r.apply(&batch(&more));
    let all: Vec<Ev> = evs.iter().chain(&late).chain(&more).cloned().collect();
    let kept: Vec<Ev> = all.iter().filter(|e| e.ts >= cutoff).cloned().collect();
    let counts = |x: &Rollup, g: Grain| -> BTreeMap<(i64, GroupKey), f64> {
        x.cells(g, i64::MIN, i64::MAX)
            .map(|(b, k, c)| {
                let n = c.states[0].value(&x.def().aggregates[0], 0.0).unwrap();
                ((b, k.clone()), n)
            })
            .collect()
    };
    let want = |g: Grain, evs: &[Ev]| -> BTreeMap<(i64, GroupKey), f64> {
        direct(&def, g, evs)
            .into_iter()
            .map(|(k, v)| (k, v.len() as f64))
            .collect()
    };
    assert_eq!(counts(&r, Grain::Hour), want(Grain::Hour, &all));
    assert_eq!(counts(&r, Grain::Minute), want(Grain::Minute, &kept));
    // The same once the merged hours are stored, and from a snapshot.
    let mut settled = r.clone();
    settled.settle();
    assert_eq!(counts(&settled, Grain::Hour), want(Grain::Hour, &all));
    // The kept range survives a snapshot.
    let (back, _) = snapshot::decode(&snapshot::encode(&r, 9)).unwrap();
    assert_eq!(back.kept_from(Grain::Minute), cutoff);
    assert_eq!(counts(&back, Grain::Hour), want(Grain::Hour, &all));
    // Bad retention settings are refused.
    let mut bad = def.clone();
    bad.retention = [(Grain::Day, "90d".to_string())].into_iter().collect();
    assert!(bad.validate().is_err(), "not an interval of the rollup");
    bad.retention = [(Grain::Hour, "30m".to_string())].into_iter().collect();
    assert!(bad.validate().is_err(), "not a period");
    bad.retention = [(Grain::Hour, "2w".to_string())].into_iter().collect();
    bad.validate().unwrap();
}

#[test]
fn snapshots_due_by_age_bound_what_the_log_may_drop() {
    let mut rng = StdRng::seed_from_u64(23);
    let dir = tempfile::tempdir().unwrap();
    let evs = events(&mut rng, 3000);
    let batches: Vec<Batch> = evs.chunks(100).map(batch).collect();
    let (set, _) = RollupSet::open(dir.path(), &[count_def("a")]).unwrap();
    let id = set.rebuild("a", 0, None).unwrap();
    assert!(set.finish("a", id).unwrap());
    for (i, b) in batches[..10].iter().enumerate() {
        set.apply(i as u64 + 1, "web", b);
    }
    assert_eq!(set.snapshot_due(Duration::ZERO).unwrap(), Some(10));
    // Newer records, but the snapshot is younger than asked: it is kept,
    // and only what it covers may leave the log.
    for (i, b) in batches[10..20].iter().enumerate() {
        set.apply(i as u64 + 11, "web", b);
    }
    let hour = Duration::from_secs(3600);
    assert_eq!(set.snapshot_due(hour).unwrap(), Some(10));
    drop(set);
    let (set, loaded) = RollupSet::open(dir.path(), &[]).unwrap();
    assert_eq!(loaded["a"], Loaded::Snapshot(10));
    // The log replays what the kept snapshot lacks: every record counted once.
    for (i, b) in batches[..20].iter().enumerate() {
        set.apply(i as u64 + 1, "web", b);
    }
    let want: u64 = batches[..20].iter().map(|b| b.len() as u64).sum();
    assert_eq!(total(&set, "a"), Some(want));
    // Found at open counts as young; a zero age writes it, and an unchanged
    // rollup is not written again.
    assert_eq!(set.snapshot_due(hour).unwrap(), Some(10));
    assert_eq!(set.snapshot_due(Duration::ZERO).unwrap(), Some(20));
    let written = std::fs::metadata(dir.path().join("a.snap"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(set.snapshot_all().unwrap(), Some(20));
    let again = std::fs::metadata(dir.path().join("a.snap"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(written, again, "an unchanged rollup is not rewritten");
}

/// Every kind of aggregate is one definition used three ways: rows added to
/// a rollup's state, cell states merged (`State::merge`, as coarser
/// buckets are), and states folded by a query's accumulator (`Acc`). For
/// each kind, over random events cut into random parts, all three give the
/// value of one state that took every row, and every state reads back from
/// its snapshot bytes with the same value.
#[test]
fn every_kind_updates_merges_and_folds_to_one_answer() {
    use crate::aggregate::{update_rows, State};
    use crate::snapshot::Reader;
    let aggs: Vec<Aggregate> = [
        "count",
        "count(ms)",
        "count(user)",
        "sum(ms)",
        "avg(ms)",
        "min(ms)",
        "max(ms)",
        "uniq(user)",
        "uniq(ms)",
        "quantiles(ms)",
        "sum(user)",
        "count(absent)",
    ]
    .iter()
    .map(|a| Aggregate::parse(a).unwrap())
    .collect();
    let mut rng = StdRng::seed_from_u64(29);
    for case in 0..40 {
        let n = rng.random_range(0..3000);
        let evs = events(&mut rng, n);
        let b = batch(&evs);
        // Random cut points: some parts empty.
        let mut cuts: Vec<u32> = (0..rng.random_range(0..6))
            .map(|_| rng.random_range(0..=evs.len() as u32))
            .collect();
        cuts.extend([0, evs.len() as u32]);
        cuts.sort_unstable();
        for agg in &aggs {
            let col = agg.field().and_then(|f| b.column(f));
            let coupons = match (agg, col) {
                (Aggregate::Uniq(_), Some(c)) => {
                    let all: Vec<u32> = (0..evs.len() as u32).collect();
                    crate::aggregate::coupons_of(c, &all, evs.len())
                }
                _ => Vec::new(),
            };
            let state_of = |rows: &[u32]| {
                let mut s = State::new(agg);
                update_rows(&mut s, agg, col, rows, &coupons);
                s
            };
            let all: Vec<u32> = (0..evs.len() as u32).collect();
            let whole = state_of(&all);
            let parts: Vec<State> = cuts
                .windows(2)
                .map(|w| state_of(&(w[0]..w[1]).collect::<Vec<u32>>()))
                .collect();
            let mut merged = State::new(agg);
            let mut acc = Acc::new(agg);
            for p in &parts {
                merged.merge(p);
                acc.add(p);
            }
            let q = rng.random_range(0.0..=1.0);
            let want = whole.value(agg, q);
            let close = |got: Option<f64>, how: &str| match (got, want) {
                (Some(g), Some(w)) => {
                    // Sums add in another order; distinct counts estimate
                    // the same registers two ways (within the sketch's
                    // error); the rest are exact.
                    let tol = match agg {
                        Aggregate::Uniq(_) => 0.02 * w.max(50.0),
                        _ => 1e-9 * w.abs().max(1.0),
                    };
                    assert!((g - w).abs() <= tol, "case {case} {agg} {how}: {g} vs {w}");
                }
                (g, w) => assert_eq!(g, w, "case {case} {agg} {how}"),
            };
            close(merged.value(agg, q), "merged");
            close(acc.value(agg, q), "folded");
            close(acc.clone().into_state().value(agg, q), "folded state");
            for s in [&whole, &merged] {
                let mut bytes = Vec::new();
                s.encode(&mut bytes);
                let back = State::decode(&mut Reader::new(&bytes)).unwrap();
                assert_eq!(back.value(agg, q), s.value(agg, q), "case {case} {agg}");
            }
            // Each aggregate's own meaning, against the events themselves.
            let numbers = || evs.iter().filter_map(|e| e.ms);
            let exact = match agg {
                Aggregate::Count => Some(evs.len() as f64),
                Aggregate::CountOf(f) if f == "ms" => Some(numbers().count() as f64),
                Aggregate::CountOf(f) if f == "user" => {
                    Some(evs.iter().filter(|e| e.user.is_some()).count() as f64)
                }
                Aggregate::CountOf(_) => None,
                Aggregate::Min(_) => numbers().reduce(f64::min),
                Aggregate::Max(_) => numbers().reduce(f64::max),
                _ => None,
            };
            if let Some(x) = exact {
                assert_eq!(want, Some(x), "case {case} {agg}");
            }
            if matches!(agg, Aggregate::CountOf(f) if f == "absent") {
                assert_eq!(want, Some(0.0), "case {case} {agg}");
            }
            let n = numbers().count() as f64;
            let sum = (n > 0.0).then(|| numbers().sum::<f64>());
            let mean = sum.map(|s| s / n);
            let near = match agg {
                Aggregate::Sum(f) if f == "ms" => Some(sum),
                Aggregate::Avg(_) => Some(mean),
                _ => None,
            };
            if let Some(x) = near {
                match (want, x) {
                    (Some(w), Some(x)) => assert!((w - x).abs() <= 1e-9 * x.abs().max(1.0)),
                    (w, x) => assert_eq!(w, x, "case {case} {agg}"),
                }
            }
        }
    }
}
