//! Tests of the store: compaction tiers, flush and reopen, concurrent
//! readers and flushes, reading stored events back.

mod tiers {
    use super::super::*;

    fn seg(id: u64, partition: i64, rows: u64) -> SegmentMeta {
        SegmentMeta {
            id,
            stream: "s".into(),
            partition,
            path: String::new(),
            rows,
            min_ts: 0,
            max_ts: 0,
            bytes: 0,
        }
    }

    #[test]
    fn tiers_merge_similar_sizes_and_bound_the_count() {
        // Simulate many equal flushes into one partition, compacting after each.
        let mut segs: Vec<SegmentMeta> = Vec::new();
        let mut rewritten = 0u64;
        let mut next = 1;
        for _ in 0..1000 {
            segs.push(seg(next, 0, 1000));
            next += 1;
            while let Some(c) = compaction_candidate(&segs, 4, u64::MAX) {
                let ids: HashSet<u64> = c.iter().map(|s| s.id).collect();
                let rows: u64 = c.iter().map(|s| s.rows).sum();
                rewritten += rows;
                segs.retain(|s| !ids.contains(&s.id));
                segs.push(seg(next, 0, rows));
                next += 1;
            }
            // log4 of the partition's size, times (fanout - 1), bounds the count.
            let total: u64 = segs.iter().map(|s| s.rows).sum();
            assert!(
                segs.len() as u32 <= 3 * (total.ilog(4) + 1),
                "{} segments",
                segs.len()
            );
        }
        assert_eq!(segs.iter().map(|s| s.rows).sum::<u64>(), 1_000_000);
        // Each row rewritten about log4(1000) times, not 1000/2.
        assert!(
            rewritten < 1_000_000 * 6,
            "write amplification {}",
            rewritten / 1_000_000
        );
        // Other partitions never merge together.
        let mixed = vec![seg(1, 0, 10), seg(2, 3_600_000_000, 10), seg(3, 0, 10)];
        assert!(compaction_candidate(&mixed, 3, u64::MAX).is_none());
        // The row cap: segments at it stay, and a merge never exceeds it.
        let big = vec![
            seg(1, 0, 600),
            seg(2, 0, 600),
            seg(3, 0, 600),
            seg(4, 0, 1000),
        ];
        assert!(
            compaction_candidate(&big, 2, 1000).is_none(),
            "600+600 > 1000"
        );
        let small = vec![
            seg(1, 0, 300),
            seg(2, 0, 300),
            seg(3, 0, 300),
            seg(4, 0, 300),
        ];
        let c = compaction_candidate(&small, 2, 1000).unwrap();
        assert_eq!(c.len(), 3);
    }
    use tally_ingest::{parse, Format};

    fn batch(body: &str) -> Batch {
        parse(body.as_bytes(), Format::Ndjson, 0, &|_| None).unwrap()
    }

    #[test]
    fn readers_flushes_and_compaction_run_together_without_deadlock() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = StoreOptions::new(dir.path());
        opts.compaction_fanout = 2;
        let store = Arc::new(Store::open(opts).unwrap());
        let b = batch("{\"ts\":1000,\"a\":\"x\",\"v\":1}\n{\"ts\":7200000,\"v\":2}\n");
        store.schemas().reserve("s", &b).unwrap();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // A deadlock would hang the test; the watchdog fails it instead.
        let watchdog = {
            let done = done.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                while !done.load(Ordering::Relaxed) {
                    assert!(t.elapsed() < Duration::from_secs(60), "store deadlocked");
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        let writer = {
            let (store, b) = (store.clone(), b.clone());
            std::thread::spawn(move || {
                for lsn in 1..=3000u64 {
                    store.apply(lsn, "s", &b);
                    let _ = store.memory_bytes();
                }
            })
        };
        let reader = {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut rows = 0;
                for _ in 0..300 {
                    let snap = store.snapshot("s", None, None).unwrap().unwrap();
                    let n: u64 = snap.segments.iter().map(|s| s.meta.rows).sum::<u64>()
                        + snap.memory.iter().map(|m| m.num_rows() as u64).sum::<u64>();
                    // Each row exactly once, and never fewer than before.
                    assert!(n >= rows && n.is_multiple_of(2), "{n} after {rows}");
                    rows = n;
                    let _ = store.stream_stats();
                }
            })
        };
        for _ in 0..100 {
            store.flush().unwrap();
            store.compact().unwrap();
        }
        writer.join().unwrap();
        reader.join().unwrap();
        store.flush().unwrap();
        done.store(true, Ordering::Relaxed);
        watchdog.join().unwrap();
        let total: u64 = store.segments().iter().map(|s| s.rows).sum();
        assert_eq!(total, 6000);
    }

    #[test]
    fn flush_compact_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = StoreOptions::new(dir.path());
        opts.compaction_fanout = 2;
        let store = Store::open(opts.clone()).unwrap();
        let mut lsn = 0;
        for i in 0..5 {
            lsn += 1;
            let b = batch(&format!(
                "{{\"ts\":{},\"a\":\"x{i}\",\"v\":{i}}}\n{{\"ts\":{},\"b\":\"y\"}}\n",
                1000 * i,
                1000 * i + 1
            ));
            store.schemas().reserve("s", &b).unwrap();
            store.apply(lsn, "s", &b);
            let r = store.flush().unwrap();
            assert_eq!(r.rows, 2);
            assert_eq!(r.checkpoint_lsn, lsn);
        }
        assert_eq!(store.segments().len(), 5);
        // Five 2-row segments (tier 0): merged into one 10-row segment.
        assert_eq!(store.compact().unwrap(), 1);
        let segs = store.segments();
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[0].rows, 10);
        let batches = read_segment(&dir.path().join(&segs[0].path)).unwrap();
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows, 10);
        assert_eq!(batches[0].schema().field(0).name(), "ts");
        drop(store);

        // A stray file from a crash mid-flush disappears at open.
        let stray = dir.path().join("segments/s/stray.parquet");
        fs::write(&stray, b"junk").unwrap();
        let store = Store::open(opts).unwrap();
        assert!(!stray.exists());
        assert_eq!(store.checkpoint_lsn(), 5);
        assert_eq!(store.stream_stats()["s"].rows, 10);
        assert_eq!(store.schemas().get("s").unwrap().columns.len(), 3);
    }
}

mod replay {
    use super::super::*;
    use crate::segment::batch_from_arrow;
    use tally_ingest::{parse, Format};

    /// Rows as comparable text: ts, then each field's value or "-".
    fn rows(b: &Batch, fields: &[&str]) -> Vec<String> {
        let mut out: Vec<String> = (0..b.len())
            .map(|r| {
                let mut s = b.ts[r].to_string();
                for f in fields {
                    let v = match b.column(f).map(|c| &c.data) {
                        Some(tally_ingest::ColumnData::Dim(d)) => d.get(r).map(str::to_string),
                        Some(tally_ingest::ColumnData::Value(n)) => n.get(r).map(|v| v.to_string()),
                        None => None,
                    };
                    s.push_str(&format!("|{}", v.unwrap_or_else(|| "-".into())));
                }
                s
            })
            .collect();
        out.sort();
        out
    }

    /// Stored events read back as ingest batches (segments and tail) are
    /// the events that were applied.
    #[test]
    fn stored_events_read_back_as_the_batches_applied() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreOptions::new(dir.path())).unwrap();
        let body = (0..500)
            .map(|i| match i % 3 {
                0 => format!(
                    "{{\"ts\":{},\"a\":\"x{}\",\"v\":{}}}\n",
                    i as i64 * 7_000_000,
                    i % 11,
                    i
                ),
                1 => format!("{{\"ts\":{},\"v\":{}.5}}\n", i as i64 * 7_000_000, i),
                _ => format!("{{\"ts\":{},\"a\":\"é{}\"}}\n", i as i64 * 7_000_000, i),
            })
            .collect::<String>();
        let b = parse(body.as_bytes(), Format::Ndjson, 0, &|_| None).unwrap();
        store.schemas().reserve("s", &b).unwrap();
        store.apply(1, "s", &b);
        store.flush().unwrap();
        let tail = parse(b"{\"ts\":5,\"a\":\"late\"}\n", Format::Ndjson, 0, &|_| None).unwrap();
        store.apply(2, "s", &tail);
        let snap = store.snapshot("s", None, None).unwrap().unwrap();
        let mut back = Vec::new();
        for s in &snap.segments {
            for rb in read_segment(&s.path).unwrap() {
                back.extend(rows(&batch_from_arrow(&rb).unwrap(), &["a", "v"]));
            }
        }
        for rb in &snap.memory {
            back.extend(rows(&batch_from_arrow(rb).unwrap(), &["a", "v"]));
        }
        back.sort();
        let mut want = rows(&b, &["a", "v"]);
        want.extend(rows(&tail, &["a", "v"]));
        want.sort();
        assert_eq!(back, want);
    }
}

mod imports {
    use super::super::*;
    use crate::import::ImportStage;
    use tally_ingest::{parse, Format};

    /// A data directory an older version left, with an adopted import's
    /// segment still under `imports/<batch id>/`, is moved into the
    /// stream's directory at open: the catalog names the new place, the
    /// old name goes, the rows stay, and a replay still finds the file.
    #[test]
    fn imports_adopted_in_place_move_into_their_stream_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let b = parse(
            b"{\"ts\":1000,\"v\":1}\n{\"ts\":2000,\"v\":2}\n",
            Format::Ndjson,
            0,
            &|_| None,
        )
        .unwrap();
        let staged = {
            let store = Store::open(StoreOptions::new(dir.path())).unwrap();
            let mut stage = ImportStage::new(dir.path(), "s", "b1", 1 << 20).unwrap();
            stage.add(&b).unwrap();
            let staged = stage.finish().unwrap();
            assert!(store.adopt(7, &staged).unwrap());
            staged
        };
        // Make it the old layout: the file where it was staged, the
        // catalog naming it there, no first segment recorded.
        let old = staged.files[0].path.clone();
        let mut cat = Catalog::load(dir.path()).unwrap();
        let seg = &mut cat.segments[0];
        std::fs::create_dir_all(dir.path().join(&old).parent().unwrap()).unwrap();
        std::fs::rename(dir.path().join(&seg.path), dir.path().join(&old)).unwrap();
        seg.path = old.clone();
        cat.imports.get_mut("b1").unwrap().first_segment = None;
        cat.save(dir.path()).unwrap();

        let store = Store::open(StoreOptions::new(dir.path())).unwrap();
        store.remove_unadopted_imports().unwrap();
        let segs = store.segments();
        assert_eq!(segs.len(), 1);
        assert!(segs[0].path.starts_with("segments/s/"), "{}", segs[0].path);
        assert!(dir.path().join(&segs[0].path).is_file());
        assert!(!dir.path().join(&old).exists(), "the old name stays");
        assert_eq!(segs[0].rows, 2);
        assert_eq!(
            store.import_file(&staged, 0),
            Some(dir.path().join(&segs[0].path))
        );
        // Opening again changes nothing.
        drop(store);
        let store = Store::open(StoreOptions::new(dir.path())).unwrap();
        assert_eq!(store.segments()[0].path, segs[0].path);
    }
}

/// Cluster mode: the log cuts the tail (seal records), and every store that
/// applies the same records holds the same segments under the same ids,
/// however its flushes were timed and wherever it stopped and restarted.
mod sealed {
    use super::super::*;
    use tally_ingest::{parse, Format};

    enum Rec {
        Events(&'static str, Batch),
        Seal,
    }

    /// Records over two streams and three hours, a seal every few.
    fn records() -> Vec<Rec> {
        let mut out = Vec::new();
        let mut x: u64 = 7;
        for i in 0..240u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if i % 9 == 8 {
                out.push(Rec::Seal);
                continue;
            }
            let stream = if x >> 60 & 1 == 0 { "a" } else { "b" };
            let rows = 1 + (x >> 40) % 40;
            let body: String = (0..rows)
                .map(|r| {
                    let ts = ((x >> 20) % 3) * 3_600_000 + r * 1000 + i;
                    format!("{{\"ts\":{ts},\"v\":{r},\"k\":\"k{}\"}}\n", (x >> 8) % 5)
                })
                .collect();
            let b = parse(body.as_bytes(), Format::Ndjson, 0, &|_| None).unwrap();
            out.push(Rec::Events(stream, b));
        }
        out
    }

    fn open(dir: &Path) -> Store {
        let mut opts = StoreOptions::new(dir);
        opts.sealed = true;
        opts.compaction_fanout = 3;
        Store::open(opts).unwrap()
    }

    /// Applies the records at positions `from + 1 ..= upto`; the retire
    /// list of the seal at position `lsn` is what `retire` says. `eager`
    /// writes each cut at once, else a cut waits for the next seal.
    fn apply(
        store: &Store,
        recs: &[Rec],
        (from, upto): (u64, u64),
        retire: &dyn Fn(u64) -> Vec<u64>,
        eager: bool,
    ) {
        for (i, r) in recs.iter().enumerate().take(upto as usize) {
            let lsn = i as u64 + 1;
            if lsn <= from {
                continue;
            }
            match r {
                Rec::Events(s, b) => {
                    store.schemas().reserve(s, b).unwrap();
                    store.apply(lsn, s, b);
                }
                Rec::Seal => {
                    store.seal(lsn, retire(lsn)).unwrap();
                    if eager {
                        store.flush_sealed().unwrap();
                    }
                }
            }
        }
    }

    /// Segments (sizes aside: a segment written later may carry, all
    /// null, a column a record after its seal added), retired ones, and
    /// the checkpoint.
    fn catalog(store: &Store) -> (Vec<SegmentMeta>, Vec<SegmentMeta>, u64) {
        let c = store.catalog_read();
        let mut segs: Vec<SegmentMeta> = c
            .segments
            .iter()
            .map(|s| SegmentMeta {
                bytes: 0,
                ..s.clone()
            })
            .collect();
        segs.sort_by_key(|s| s.id);
        (segs, c.retired.clone(), c.checkpoint_lsn)
    }

    #[test]
    fn every_store_that_applies_the_same_records_holds_the_same_segments() {
        let recs = records();
        let n = recs.len() as u64;
        // The "holder" decides retirement: the seal at 90 retires the
        // lowest segment id then present, as the eager store sees it.
        let eager_dir = tempfile::tempdir().unwrap();
        let eager = open(eager_dir.path());
        apply(&eager, &recs, (0, 89), &|_| vec![], true);
        let victim = catalog(&eager).0[0].id;
        let retire = move |lsn: u64| if lsn == 90 { vec![victim] } else { vec![] };
        apply(&eager, &recs, (89, n), &retire, true);
        eager.flush_sealed().unwrap();

        // One that writes a cut tail only when the next seal comes.
        let lazy_dir = tempfile::tempdir().unwrap();
        let lazy = open(lazy_dir.path());
        apply(&lazy, &recs, (0, n), &retire, false);
        lazy.flush_sealed().unwrap();

        // One that stops (its cut tail unwritten, its merges not run) and
        // starts again from its checkpoint, twice.
        let crash_dir = tempfile::tempdir().unwrap();
        for upto in [60, 151] {
            let s = open(crash_dir.path());
            apply(&s, &recs, (s.checkpoint_lsn(), upto), &retire, false);
            drop(s);
        }
        let crashed = open(crash_dir.path());
        apply(
            &crashed,
            &recs,
            (crashed.checkpoint_lsn(), n),
            &retire,
            false,
        );
        crashed.flush_sealed().unwrap();

        let want = catalog(&eager);
        assert!(want.0.len() > 3, "{:?}", want.0);
        assert!(
            want.0.iter().any(|s| (s.id >> 16) & 0xff > 0),
            "some segments are merges"
        );
        assert_eq!(
            want.1.iter().map(|s| s.id).collect::<Vec<_>>(),
            vec![victim]
        );
        assert_eq!(catalog(&lazy), want);
        assert_eq!(catalog(&crashed), want);
        // Every event is in exactly one segment, bar the retired ones.
        let applied: u64 = recs
            .iter()
            .map(|r| match r {
                Rec::Events(_, b) => b.len() as u64,
                Rec::Seal => 0,
            })
            .sum();
        let kept: u64 = want.0.iter().map(|s| s.rows).sum();
        let retired: u64 = want.1.iter().map(|s| s.rows).sum();
        let last_seal = recs.iter().rposition(|r| matches!(r, Rec::Seal)).unwrap();
        let after: u64 = recs[last_seal..]
            .iter()
            .map(|r| match r {
                Rec::Events(_, b) => b.len() as u64,
                Rec::Seal => 0,
            })
            .sum();
        assert_eq!(kept + retired + after, applied);
        assert_eq!(want.2, last_seal as u64 + 1);
    }

    #[test]
    fn segment_ids_follow_the_log() {
        assert_eq!(sealed_segment_id(5, 2).unwrap(), 5 << 24 | 2);
        assert!(sealed_segment_id(1 << 40, 0).is_err());
        assert!(sealed_segment_id(1, 1 << 16).is_err());
        let seg = |id| SegmentMeta {
            id,
            stream: "s".into(),
            partition: 0,
            path: String::new(),
            rows: 1,
            min_ts: 0,
            max_ts: 0,
            bytes: 0,
        };
        let merged = merged_segment_id(&[seg(5 << 24 | 2), seg(9 << 24 | 1)]).unwrap();
        assert_eq!(merged, 9 << 24 | 1 << 16 | 1);
        let again = merged_segment_id(&[seg(merged), seg(3 << 24)]).unwrap();
        assert_eq!(again, 9 << 24 | 2 << 16 | 1);
        assert!(merged_segment_id(&[seg(0xff << 16)]).is_err());
    }
}
