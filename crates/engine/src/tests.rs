//! Engine tests on a real data directory.

use super::*;
use tally_ingest::{parse, Format};

fn batch(body: &str) -> Batch {
    parse(body.as_bytes(), Format::Ndjson, 1_000_000, &|_| None).unwrap()
}

#[tokio::test]
async fn acknowledged_batches_survive_reopen_with_and_without_flush() {
    let dir = tempfile::tempdir().unwrap();
    let opts = EngineOptions::new(dir.path());
    {
        let e = Engine::open(opts.clone()).unwrap();
        let r = e
            .ingest("s", batch("{\"a\":\"x\",\"v\":1}\n{\"a\":\"y\",\"v\":2}"))
            .await
            .unwrap();
        assert_eq!(
            r,
            Receipt {
                accepted: 2,
                lsn: 1
            }
        );
        e.flush().unwrap();
        e.ingest("s", batch("{\"v\":3}")).await.unwrap();
        // No flush at the end: the second batch must come back from the log.
        e.abandon();
    }
    let e = Engine::open(opts).unwrap();
    assert_eq!(e.recovery().checkpoint_lsn, 1);
    assert_eq!(e.recovery().log.replayed, 1);
    assert_eq!(e.store().stream_stats()["s"].rows, 3);
    let err = e.ingest("s", batch("{\"v\":\"text\"}")).await.unwrap_err();
    assert!(
        matches!(err, Error::Schema(SchemaConflict::Type { .. })),
        "{err}"
    );
    assert_eq!(e.store().stream_stats()["s"].rows, 3);
}

// The maintenance lock is held across the refused write on purpose: it
// keeps the flusher (another thread) from making room.
#[allow(clippy::await_holding_lock)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_tail_waits_for_a_flush_and_refuses_when_none_comes() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = EngineOptions::new(dir.path());
    opts.memory_limit_bytes = 1;
    opts.memory_wait = Duration::from_millis(300);
    opts.flush_bytes = usize::MAX;
    opts.flush_interval = Duration::from_secs(3600);
    let e = Engine::open(opts).unwrap();
    e.ingest("s", batch("{\"v\":1}")).await.unwrap();
    // No flush can run while maintenance is held: the write waits its
    // 300 ms, then is refused.
    {
        let _held = e.store().maintenance_lock();
        let t = Instant::now();
        let err = e.ingest("s", batch("{\"v\":2}")).await.unwrap_err();
        assert!(matches!(err, Error::Overloaded { .. }), "{err}");
        assert!(t.elapsed() >= Duration::from_millis(300));
        assert!(e.wait_for_room().await.is_err());
    }
    assert_eq!(e.store().stream_stats()["s"].rows, 1);
    assert!(e.store().segments().is_empty());
    // Now the flusher sees the tail over its limit and flushes, and the
    // waiting write goes in.
    e.ingest("s", batch("{\"v\":3}")).await.unwrap();
    assert_eq!(e.store().segments().len(), 1);
    assert_eq!(e.store().stream_stats()["s"].rows, 2);
}

#[test]
fn a_second_engine_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _e = Engine::open(EngineOptions::new(dir.path())).unwrap();
    let err = Engine::open(EngineOptions::new(dir.path())).err().unwrap();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
}

mod rollups {
    use super::*;
    use std::collections::BTreeMap;
    use tally_rollup::{Aggregate, Condition, Grain, Op, RollupDef};

    fn def(name: &str, filter: Vec<Condition>) -> RollupDef {
        RollupDef {
            name: name.into(),
            stream: "s".into(),
            intervals: vec![Grain::Minute, Grain::Hour],
            group_by: vec!["a".into()],
            filter,
            aggregates: vec![Aggregate::Count, Aggregate::Sum("v".into())],
            retention: Default::default(),
        }
    }

    /// Events per group: the body of batch `i` (5 events over two groups,
    /// spread over hours; `v` = i).
    /// Copies of the five events in batch `i`: every fourth batch is
    /// large enough for its rollups to be counted beside the store.
    fn copies(i: u64) -> u64 {
        match i % 4 {
            0 => 60,
            _ => 1,
        }
    }

    fn body(i: u64) -> String {
        (0..5 * copies(i))
            .map(|k| {
                let k = k % 5;
                let a = if k < 2 { "x" } else { "y" };
                // Some events land in past hours (late data).
                // Epoch milliseconds, 12 minutes apart.
                let ts = 1_700_000_000_000u64 + ((i * 7 + k * 13) % 50) * 720_000;
                format!("{{\"ts\":{ts},\"a\":\"{a}\",\"v\":{i}}}\n")
            })
            .collect()
    }

    /// Counts per group for batches `range` after a filter on `v`.
    fn expected(range: std::ops::Range<u64>, min_v: u64) -> BTreeMap<String, (u64, f64)> {
        let mut m: BTreeMap<String, (u64, f64)> = BTreeMap::new();
        for i in range.filter(|i| *i >= min_v) {
            let n = copies(i);
            let e = m.entry("x".into()).or_default();
            e.0 += 2 * n;
            e.1 += (2 * n) as f64 * i as f64;
            let e = m.entry("y".into()).or_default();
            e.0 += 3 * n;
            e.1 += (3 * n) as f64 * i as f64;
        }
        m
    }

    /// (count, sum) per group of a complete rollup, from the hourly
    /// buckets and, checked equal, from the minute buckets.
    fn totals(e: &Engine, name: &str) -> Option<BTreeMap<String, (u64, f64)>> {
        let entry = e.rollups().get(name)?;
        let entry = entry.read();
        if !entry.complete || entry.building.is_some() {
            return None;
        }
        let r = &entry.rollup;
        let sum = |g: Grain| {
            let mut m: BTreeMap<String, (u64, f64)> = BTreeMap::new();
            for (_, k, c) in r.cells(g, i64::MIN, i64::MAX) {
                let t = m.entry(k[0].clone().unwrap_or_default()).or_default();
                t.0 += c.states[0].value(&r.def().aggregates[0], 0.0).unwrap() as u64;
                t.1 += c.states[1]
                    .value(&r.def().aggregates[1], 0.0)
                    .unwrap_or(0.0);
            }
            m
        };
        let hours = sum(Grain::Hour);
        assert_eq!(hours, sum(Grain::Minute), "intervals disagree");
        Some(hours)
    }

    /// A panic in the rollup worker is caught: the record is durable and
    /// acknowledged, writes after it are refused, nothing is flushed, and
    /// the next start replays the log into rollups that count every event.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panic_in_the_rollup_worker_refuses_writes_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let opts = EngineOptions::new(dir.path());
        {
            let e = Engine::open(opts.clone()).unwrap();
            e.define_rollup(def("r", vec![])).unwrap();
            wait_built(&e).await;
            e.ingest("s", batch(&body(1))).await.unwrap();
            *e.faults.inject.lock() = Some("rollups");
            // 300 events: counted on the rollup worker, which panics.
            e.ingest("s", batch(&body(0))).await.unwrap();
            let faults = e.faults();
            assert_eq!(faults.len(), 1, "{faults:?}");
            assert_eq!(faults[0].part, "rollups");
            let err = e.ingest("s", batch(&body(2))).await.unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Failed {
                        part: "rollups",
                        ..
                    }
                ),
                "{err}"
            );
            assert!(matches!(e.flush(), Err(Error::Failed { .. })));
            e.shutdown().unwrap();
        }
        let e = Engine::open(opts).unwrap();
        assert!(e.faults().is_empty());
        assert_eq!(e.store().stream_stats()["s"].rows, 5 + 300);
        wait_built(&e).await;
        assert_eq!(totals(&e, "r"), Some(expected(0..2, 0)));
    }

    /// A panic while applying a record (the store side) is caught the same
    /// way, and the log replays the record at the next start.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panic_while_applying_is_caught_and_the_record_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let opts = EngineOptions::new(dir.path());
        {
            let e = Engine::open(opts.clone()).unwrap();
            e.ingest("s", batch(&body(1))).await.unwrap();
            *e.faults.inject.lock() = Some("apply");
            e.ingest("s", batch(&body(2))).await.unwrap();
            assert_eq!(e.faults()[0].part, "apply");
            assert!(e.ingest("s", batch(&body(3))).await.is_err());
            e.shutdown().unwrap();
        }
        let e = Engine::open(opts).unwrap();
        assert_eq!(e.store().stream_stats()["s"].rows, 10);
    }

    async fn wait_built(e: &Engine) {
        let t = Instant::now();
        while !e.rollups_idle() {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "rollup build did not end"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn rollups_count_every_acknowledged_event_once_through_crashes_and_rebuilds() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = EngineOptions::new(dir.path());
        opts.flush_interval = Duration::from_secs(3600);
        opts.rollups = vec![def("a", vec![])];
        {
            let e = Engine::open(opts.clone()).unwrap();
            wait_built(&e).await;
            for i in 0..40 {
                e.ingest("s", batch(&body(i))).await.unwrap();
                if i % 15 == 14 {
                    e.flush().unwrap();
                }
            }
            assert_eq!(totals(&e, "a").unwrap(), expected(0..40, 0));
            // A crash: the tail since the last flush is only in the log.
            e.abandon();
        }
        let e = Engine::open(opts.clone()).unwrap();
        // From the snapshot of the last flush plus the log, not rebuilt.
        assert_eq!(e.recovery().rollups["a"], Loaded::Snapshot(30));
        wait_built(&e).await;
        assert_eq!(totals(&e, "a").unwrap(), expected(0..40, 0), "after replay");

        // A new rollup over existing data, built while writers continue.
        let writer = {
            let e = &e;
            async move {
                for i in 40..80 {
                    e.ingest("s", batch(&body(i))).await.unwrap();
                    if i == 60 {
                        e.flush().unwrap();
                    }
                }
            }
        };
        let define = async {
            e.define_rollup(def("b", vec![])).unwrap();
        };
        tokio::join!(writer, define);
        wait_built(&e).await;
        assert_eq!(
            totals(&e, "b").unwrap(),
            expected(0..80, 0),
            "built during ingest"
        );
        assert_eq!(totals(&e, "a").unwrap(), expected(0..80, 0));

        // Reprocessing with a changed definition: the old state answers
        // until the new one is complete, then the new one does.
        let filtered = def(
            "b",
            vec![Condition {
                field: "v".into(),
                op: Op::Ge,
                value: serde_json::json!(30),
            }],
        );
        e.define_rollup(filtered).unwrap();
        wait_built(&e).await;
        assert_eq!(totals(&e, "b").unwrap(), expected(0..80, 30), "redefined");
        // A partial rebuild (whole hours) leaves the answers as they are;
        // a range not on whole hours is refused.
        let hour = 3_600_000_000i64;
        let lo = 1_700_000_000_000_000i64.div_euclid(hour) * hour + hour;
        e.rebuild_rollup("a", Some((lo, lo + 3 * hour))).unwrap();
        wait_built(&e).await;
        assert_eq!(
            totals(&e, "a").unwrap(),
            expected(0..80, 0),
            "partial rebuild"
        );
        let err = e
            .rebuild_rollup("a", Some((lo + 1, lo + hour)))
            .unwrap_err();
        assert!(err.to_string().contains("whole hour"), "{err}");
        e.ingest("s", batch(&body(80))).await.unwrap();
        e.abandon();

        // Both come back from snapshots plus the log.
        let e = Engine::open(opts).unwrap();
        assert!(matches!(e.recovery().rollups["a"], Loaded::Snapshot(_)));
        assert!(matches!(e.recovery().rollups["b"], Loaded::Snapshot(_)));
        wait_built(&e).await;
        assert_eq!(
            totals(&e, "a").unwrap(),
            expected(0..81, 0),
            "a after reopen"
        );
        assert_eq!(
            totals(&e, "b").unwrap(),
            expected(0..81, 30),
            "b after reopen"
        );
        assert!(e.rollups().remove("b").unwrap());
        assert!(e.rollups().get("b").is_none());
    }
}

fn chunk(body: &str, first_line: usize) -> tally_ingest::Chunk {
    let b = batch(body);
    let lines = (first_line..first_line + b.len()).collect();
    tally_ingest::Chunk { batch: b, lines }
}

#[tokio::test]
async fn imports_commit_whole_roll_back_whole_and_are_remembered() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = EngineOptions::new(dir.path());
    opts.import_spill_bytes = 1;
    {
        let e = Engine::open(opts.clone()).unwrap();
        e.ingest("s", batch("{\"v\":1}")).await.unwrap();
        // Rolled back: a chunk whose `v` is text after numbers.
        let mut t = e.begin_import("s", "b1").unwrap();
        t.add(&chunk("{\"v\":2}\n{\"v\":3}", 1)).unwrap();
        let err = t.add(&chunk("{\"w\":4}\n{\"v\":\"x\"}", 3)).unwrap_err();
        match &err {
            Error::Schema(SchemaConflict::Type { line, field, .. }) => {
                assert_eq!((*line, field.as_str()), (4, "v"))
            }
            other => panic!("{other}"),
        }
        drop(t);
        assert!(!dir.path().join("imports/b1").exists());
        assert_eq!(e.store().stream_stats()["s"].rows, 1);
        // The refused id is not used up; one in flight cannot start twice.
        let mut t = e.begin_import("s", "b1").unwrap();
        assert!(matches!(
            e.begin_import("s", "b1"),
            Err(Error::ImportInProgress { .. })
        ));
        t.add(&chunk("{\"v\":2,\"ts\":1}\n{\"v\":3,\"ts\":7200000}", 1))
            .unwrap();
        t.add(&chunk("{\"v\":4,\"k\":\"a\"}", 3)).unwrap();
        let finished = t.finish().unwrap();
        assert_eq!(finished.rows(), 3);
        // Staged, not visible.
        assert_eq!(e.store().stream_stats()["s"].rows, 1);
        let r = e.commit_import(finished).await.unwrap();
        // One file per hour partition (the budget's floor is 1 MiB, so
        // these rows were written once, at the end).
        assert_eq!((r.rows, r.files), (3, 2));
        assert_eq!(e.store().stream_stats()["s"].rows, 4);
        assert!(matches!(
            e.begin_import("s", "b1"),
            Err(Error::AlreadyImported { rows: 3, .. })
        ));
        // A staged import the process dies with.
        let mut t = e.begin_import("s", "b2").unwrap();
        t.add(&chunk("{\"v\":9}", 1)).unwrap();
        std::mem::forget(t.finish().unwrap());
        assert!(e.begin_import("s", "../b").is_err());
        e.abandon();
    }
    let e = Engine::open(opts).unwrap();
    assert_eq!(e.store().stream_stats()["s"].rows, 4);
    // Nothing staged is left: the adopted batch's files are segments of
    // the stream, the unfinished one is gone.
    assert!(!dir.path().join("imports/b2").exists());
    assert!(!dir.path().join("imports/b1").exists());
    let segments: Vec<String> = e
        .store()
        .snapshot("s", None, None)
        .unwrap()
        .expect("stream s")
        .segments
        .iter()
        .map(|f| f.meta.path.clone())
        .collect();
    assert!(
        !segments.is_empty() && segments.iter().all(|p| p.starts_with("segments/s/")),
        "{segments:?}"
    );
    assert!(matches!(
        e.begin_import("s", "b1"),
        Err(Error::AlreadyImported { .. })
    ));
    assert_eq!(e.column_type("s", "k"), Some(tally_ingest::ColumnType::Dim));
}

/// A write to several streams (one line protocol body's measurements) is
/// one log record: refused by the log (here too large, though each
/// stream's part alone would fit, so as two records the first would have
/// been stored), nothing of it is stored; taken, all of it is, and a
/// replay brings all of it back.
#[tokio::test]
async fn a_write_to_several_streams_is_stored_whole_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let small = batch("{\"v\":1}");
    let rows: String = (0..500)
        .map(|i| format!("{{\"v\":{i},\"s\":\"row {i}\"}}\n"))
        .collect();
    let big = batch(&rows);
    let alone = |s: &str, b: &Batch| {
        Record::Events(vec![(s.to_string(), b.clone())])
            .encode()
            .len()
    };
    let both = Record::Events(vec![("a".into(), small.clone()), ("b".into(), big.clone())])
        .encode()
        .len();
    let mut opts = EngineOptions::new(dir.path());
    opts.max_record_bytes = alone("b", &big);
    assert!(alone("a", &small) <= opts.max_record_bytes && both > opts.max_record_bytes);
    {
        let e = Engine::open(opts.clone()).unwrap();
        let err = e
            .ingest_all(vec![("a".into(), small.clone()), ("b".into(), big.clone())])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }), "{err}");
        let stats = e.store().stream_stats();
        assert_eq!(
            stats.get("a").map_or(0, |s| s.rows),
            0,
            "part of the body stored"
        );
        assert_eq!(stats.get("b").map_or(0, |s| s.rows), 0);
        // A stream named twice is refused before anything is written.
        let err = e
            .ingest_all(vec![
                ("a".into(), small.clone()),
                ("a".into(), small.clone()),
            ])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::StreamTwice { .. }), "{err}");
        e.abandon();
    }
    opts.max_record_bytes = both;
    {
        let e = Engine::open(opts.clone()).unwrap();
        let r = e
            .ingest_all(vec![("a".into(), small.clone()), ("b".into(), big.clone())])
            .await
            .unwrap();
        assert_eq!(r.accepted, 501);
        assert_eq!(e.last_lsn(), 1, "one record");
        e.abandon();
    }
    let e = Engine::open(opts).unwrap();
    assert_eq!(e.recovery().log.replayed, 1);
    let stats = e.store().stream_stats();
    assert_eq!((stats["a"].rows, stats["b"].rows), (1, 500));
}

/// A data directory written before records were typed (one stream's batch
/// or an import's commit per record; see its README) opens, and its log
/// replays to exactly what was written.
#[tokio::test]
async fn a_data_directory_of_the_earlier_log_format_replays() {
    fn copy(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                copy(&e.path(), &to.join(e.file_name()));
            } else {
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/datadir-v1");
    copy(&fixture, dir.path());
    let e = Engine::open(EngineOptions::new(dir.path())).unwrap();
    assert_eq!(e.recovery().log.replayed, 4);
    let stats = e.store().stream_stats();
    let rows = |s: &str| stats.get(s).map_or(0, |s| s.rows);
    assert_eq!(
        (rows("a"), rows("cpu"), rows("mem"), rows("b")),
        (2, 2, 1, 3)
    );
    let sum = |stream: &str, field: &str| {
        let mut total = 0.0;
        e.scan(stream, &mut |b| {
            if let Some(tally_ingest::ColumnData::Value(v)) = b.column(field).map(|c| &c.data) {
                total += v
                    .values
                    .iter()
                    .zip(&v.valid)
                    .filter(|(_, ok)| **ok)
                    .map(|(x, _)| x)
                    .sum::<f64>();
            }
            Ok(true)
        })
        .unwrap();
        total
    };
    assert_eq!(sum("a", "v"), 3.0);
    assert_eq!(sum("cpu", "usage"), 0.75);
    assert_eq!(sum("mem", "used"), 1500.0);
    assert_eq!(sum("b", "n"), 60.0);
}

/// The `i` values of a batch's rows.
fn ints(b: &Batch) -> Vec<i64> {
    match &b.column("i").expect("column i").data {
        tally_ingest::ColumnData::Value(c) => {
            (0..b.len()).map(|r| c.get(r).unwrap() as i64).collect()
        }
        other => panic!("i is not a number: {other:?}"),
    }
}

/// A follower registered while writers run is given every event of its
/// stream exactly once, and nothing of other streams: the stored ones
/// (segments and tail) through `stored`, the rest as applied, in order of
/// their sequence, all after the point `follow` returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_is_given_every_event_once_whenever_it_registers() {
    struct Seen(parking_lot::Mutex<Vec<(Lsn, i64)>>);
    impl Follower for Seen {
        fn applied(&self, lsn: Lsn, stream: &str, batch: &Batch) {
            assert_eq!(stream, "f");
            self.0
                .lock()
                .extend(ints(batch).into_iter().map(|i| (lsn, i)));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let e = Arc::new(Engine::open(EngineOptions::new(dir.path())).unwrap());
    let write = |e: Arc<Engine>, from: i64, to: i64| async move {
        for i in from..to {
            e.ingest("f", batch(&format!("{{\"i\":{i}}}")))
                .await
                .unwrap();
            e.ingest("other", batch("{\"x\":1}")).await.unwrap();
        }
    };
    write(e.clone(), 0, 30).await;
    e.flush().unwrap();
    write(e.clone(), 30, 50).await;
    let writer = tokio::spawn(write(e.clone(), 50, 400));
    while e.last_lsn() < 120 {
        tokio::task::yield_now().await;
    }
    let seen = Arc::new(Seen(Default::default()));
    let (at, stored) = {
        let (e, seen) = (e.clone(), seen.clone());
        tokio::task::spawn_blocking(move || {
            let mut stored = Vec::new();
            let at = e
                .follow(&["f"], seen, &mut |stream, b| {
                    assert_eq!(stream, "f");
                    stored.extend(ints(b));
                    Ok(())
                })
                .unwrap();
            (at, stored)
        })
        .await
        .unwrap()
    };
    writer.await.unwrap();
    let live = seen.0.lock().clone();
    assert!(
        !live.is_empty() && stored.len() >= 50,
        "{} {}",
        live.len(),
        stored.len()
    );
    assert!(live.windows(2).all(|w| w[0].0 < w[1].0), "in log order");
    assert!(live.iter().all(|(lsn, _)| *lsn > at), "after the point");
    let mut all: Vec<i64> = stored.into_iter().chain(live.iter().map(|x| x.1)).collect();
    all.sort_unstable();
    assert_eq!(all, (0..400).collect::<Vec<_>>());
}
