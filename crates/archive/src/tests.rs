//! Tests of the archive against a real store and a local-directory archive:
//! mirroring through flushes and compaction, retention, crash windows.

use super::*;
use std::collections::BTreeMap;
use std::path::Path;
use tally_ingest::{parse, Format};
use tally_store::{batch_from_arrow, StoreOptions};

const NOW: i64 = 1_800_000_000_000_000;

fn batch(body: &str) -> tally_ingest::Batch {
    parse(body.as_bytes(), Format::Ndjson, 0, &|_| None).unwrap()
}

/// Events per (hour, `n`) written in `flushes` flushes.
fn fill(store: &Store, hours: i64, per_flush: usize, flushes: usize, lsn: &mut u64) {
    for f in 0..flushes {
        for h in 0..hours {
            let body: String = (0..per_flush)
                .map(|i| {
                    let ts = (h * 3600 + (f * per_flush + i) as i64 % 3600) * 1000;
                    format!(
                        "{{\"ts\":{ts},\"h\":\"h{h}\",\"n\":{}}}\n",
                        f * per_flush + i
                    )
                })
                .collect();
            let b = batch(&body);
            store.schemas().reserve("s", &b).unwrap();
            *lsn += 1;
            store.apply(*lsn, "s", &b);
        }
        store.flush().unwrap();
    }
}

/// Events per hour, read back from the archive's own copies of the segments
/// the manifest names.
fn archived_counts(archive: &Archive) -> BTreeMap<i64, u64> {
    let mut out = BTreeMap::new();
    for e in &archive.manifest().segments {
        for rb in archive.read(&e.meta).unwrap() {
            let b = batch_from_arrow(&rb).unwrap();
            *out.entry(e.meta.partition).or_default() += b.len() as u64;
        }
    }
    out
}

fn local_counts(store: &Store) -> BTreeMap<i64, u64> {
    let mut out = BTreeMap::new();
    for s in store.segments() {
        *out.entry(s.partition).or_default() += s.rows;
    }
    out
}

fn objects(dir: &Path) -> usize {
    fn walk(p: &Path, n: &mut usize) {
        for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
            if e.file_type().unwrap().is_dir() {
                walk(&e.path(), n);
            } else if e.path().extension().is_some_and(|x| x == "parquet") {
                *n += 1;
            }
        }
    }
    let mut n = 0;
    walk(&dir.join("segments"), &mut n);
    n
}

fn setup() -> (tempfile::TempDir, Store, ArchiveOptions) {
    let dir = tempfile::tempdir().unwrap();
    let mut sopts = StoreOptions::new(dir.path().join("data"));
    sopts.compaction_fanout = 3;
    let store = Store::open(sopts).unwrap();
    let mut aopts = ArchiveOptions::new(dir.path().join("archive").to_string_lossy());
    aopts.settle = Duration::ZERO;
    (dir, store, aopts)
}

#[test]
fn mirrors_flushes_and_compaction_each_event_once() {
    let (dir, store, aopts) = setup();
    let archive = Archive::open(&aopts).unwrap();
    let mut lsn = 0;
    fill(&store, 3, 50, 2, &mut lsn);
    let r = archive.sync(&store, NOW).unwrap();
    assert_eq!(r.uploaded, 6);
    assert_eq!(archived_counts(&archive), local_counts(&store));
    // A third flush makes compaction merge each hour's three segments.
    fill(&store, 3, 50, 1, &mut lsn);
    assert_eq!(store.compact().unwrap(), 3);
    let r = archive.sync(&store, NOW).unwrap();
    assert_eq!((r.uploaded, r.replaced), (3, 6));
    assert_eq!(archive.manifest().segments.len(), 3);
    assert_eq!(objects(&dir.path().join("archive")), 3);
    let counts = archived_counts(&archive);
    assert_eq!(counts, local_counts(&store));
    assert_eq!(counts.values().sum::<u64>(), 3 * 150);
    // Nothing new: nothing changes.
    let r = archive.sync(&store, NOW).unwrap();
    assert_eq!(r, SyncReport::default());
}

#[test]
fn unsettled_partitions_wait() {
    let (_dir, store, mut aopts) = setup();
    aopts.settle = Duration::from_secs(600);
    let archive = Archive::open(&aopts).unwrap();
    let mut lsn = 0;
    fill(&store, 2, 10, 1, &mut lsn);
    // Hour 1 ends at 7200 s; settled at 7800 s.
    let r = archive.sync(&store, 7_799_000_000).unwrap();
    assert_eq!((r.uploaded, r.pending), (1, 1));
    let r = archive.sync(&store, 7_800_000_000).unwrap();
    assert_eq!((r.uploaded, r.pending), (1, 0));
}

#[test]
fn retention_leaves_segments_readable_from_the_archive_only() {
    let (_dir, store, aopts) = setup();
    let archive = Archive::open(&aopts).unwrap();
    let mut lsn = 0;
    fill(&store, 3, 40, 1, &mut lsn);
    archive.sync(&store, NOW).unwrap();
    let before = local_counts(&store);
    let hour0: Vec<u64> = store
        .segments()
        .iter()
        .filter(|s| s.partition == 0)
        .map(|s| s.id)
        .collect();
    assert_eq!(store.drop_segments(&hour0, true).unwrap(), 40);
    // Between the drop and the next pass the store lists them as retired:
    // a reader finds them in the archive already.
    let snap = store.snapshot("s", None, None).unwrap().unwrap();
    assert_eq!(snap.retired.iter().map(|m| m.id).collect::<Vec<_>>(), hour0);
    let local: HashSet<u64> = snap.segments.iter().map(|f| f.meta.id).collect();
    let there = archive.segments_for("s", None, None, &local, &snap.retired);
    assert_eq!(there.iter().map(|m| m.id).collect::<Vec<_>>(), hour0);
    let r = archive.sync(&store, NOW).unwrap();
    assert_eq!(r.retired, 1);
    assert!(store.segment_files().1.is_empty(), "acknowledged");
    let snap = store.snapshot("s", None, None).unwrap().unwrap();
    let local: HashSet<u64> = snap.segments.iter().map(|f| f.meta.id).collect();
    let there = archive.segments_for("s", None, None, &local, &snap.retired);
    assert_eq!(there.iter().map(|m| m.id).collect::<Vec<_>>(), hour0);
    // Only in the archive now, and nothing lost.
    assert!(!local_counts(&store).contains_key(&0));
    assert_eq!(archived_counts(&archive), before);
    // A late event for the dropped hour is a new segment, archived too.
    fill(&store, 1, 5, 1, &mut lsn);
    archive.sync(&store, NOW).unwrap();
    assert_eq!(archived_counts(&archive)[&0], 45);
    // Reopening reads the same manifest.
    let again = Archive::open(&aopts).unwrap();
    assert_eq!(again.manifest().segments, archive.manifest().segments);
}

#[test]
fn a_crash_between_drop_and_record_keeps_retired_segments() {
    let (dir, store, aopts) = setup();
    let archive = Archive::open(&aopts).unwrap();
    let mut lsn = 0;
    fill(&store, 2, 30, 1, &mut lsn);
    archive.sync(&store, NOW).unwrap();
    let ids: Vec<u64> = store.segments().iter().map(|s| s.id).collect();
    store.drop_segments(&ids[..1], true).unwrap();
    drop(store);
    drop(archive);
    // Restart: the catalog still lists the retired segment; the archive
    // records it as archive-only rather than as replaced.
    let store = Store::open(StoreOptions::new(dir.path().join("data"))).unwrap();
    assert_eq!(store.segment_files().1.len(), 1);
    let archive = Archive::open(&aopts).unwrap();
    let r = archive.sync(&store, NOW).unwrap();
    assert_eq!((r.retired, r.replaced), (1, 0));
    assert_eq!(archived_counts(&archive).values().sum::<u64>(), 60);
}

#[test]
fn open_removes_objects_the_manifest_does_not_name() {
    let (dir, store, aopts) = setup();
    let archive = Archive::open(&aopts).unwrap();
    let mut lsn = 0;
    fill(&store, 1, 10, 1, &mut lsn);
    archive.sync(&store, NOW).unwrap();
    // An upload whose pass never committed its manifest.
    let stray = dir
        .path()
        .join("archive/segments/s/1970-01-01/05/000000000999.parquet");
    std::fs::create_dir_all(stray.parent().unwrap()).unwrap();
    std::fs::write(&stray, b"partial").unwrap();
    drop(archive);
    let archive = Archive::open(&aopts).unwrap();
    assert!(!stray.exists());
    assert_eq!(archive.manifest().segments.len(), 1);
}

#[test]
fn bad_urls_are_refused_with_the_reason() {
    let e = Archive::open(&ArchiveOptions::new("gs://bucket")).unwrap_err();
    assert!(
        e.to_string().contains("the scheme \"gs\" is not supported"),
        "{e}"
    );
    let e = Archive::open(&ArchiveOptions::new("relative/dir")).unwrap_err();
    assert!(e.to_string().contains("is a relative directory"), "{e}");
    let e = Archive::open(&ArchiveOptions::new("s3://")).unwrap_err();
    assert!(e.to_string().contains("no bucket"), "{e}");
    let mut o = ArchiveOptions::new("s3://b");
    o.secret_access_key = Some("hunter2".into());
    assert!(!format!("{o:?}").contains("hunter2"));
}

/// An archive written before imports moved into their streams' directories
/// holds such a segment under its old key: the next pass puts it under the
/// key its local file has now and deletes the old one.
#[test]
fn a_segment_whose_local_name_moved_is_archived_again_under_it() {
    let (dir, store, aopts) = setup();
    let mut lsn = 0;
    fill(&store, 1, 20, 1, &mut lsn);
    Archive::open(&aopts).unwrap().sync(&store, NOW).unwrap();
    let root = dir.path().join("archive");
    let seg = store.segments()[0].clone();
    let old = format!("imports/b1/{:012}.parquet", seg.id);
    std::fs::create_dir_all(root.join("imports/b1")).unwrap();
    std::fs::rename(root.join(&seg.path), root.join(&old)).unwrap();
    fn rename(v: &mut serde_json::Value, from: &str, to: &str) {
        match v {
            serde_json::Value::String(s) if s == from => *s = to.to_string(),
            serde_json::Value::Array(a) => a.iter_mut().for_each(|v| rename(v, from, to)),
            serde_json::Value::Object(o) => o.values_mut().for_each(|v| rename(v, from, to)),
            _ => {}
        }
    }
    let manifest = root.join(crate::MANIFEST);
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    rename(&mut m, &seg.path, &old);
    std::fs::write(&manifest, serde_json::to_vec(&m).unwrap()).unwrap();

    let archive = Archive::open(&aopts).unwrap();
    assert_eq!(archive.manifest().segments[0].meta.path, old);
    let r = archive.sync(&store, NOW).unwrap();
    assert_eq!((r.relocated, r.uploaded), (1, 0), "{r:?}");
    assert_eq!(archive.manifest().segments[0].meta.path, seg.path);
    assert!(root.join(&seg.path).is_file());
    assert!(!root.join(&old).exists(), "the old key stays");
    assert_eq!(archived_counts(&archive), local_counts(&store));
    // Nothing moved since: nothing changes.
    assert_eq!(archive.sync(&store, NOW).unwrap(), SyncReport::default());
}

/// Cluster mode: two nodes' stores, fed the same records and cut by the
/// same seals, share one archive. Only the node allowed to write it does;
/// the other reads its manifest; the lease moving makes the other carry the
/// archive on, once its own segments reach the manifest's checkpoint,
/// without uploading anything twice.
#[test]
fn a_shared_archive_has_one_writer_and_the_next_one_carries_it_on() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let open_store = |name: &str| {
        let mut o = StoreOptions::new(dir.path().join(name));
        o.sealed = true;
        o.compaction_fanout = 3;
        Store::open(o).unwrap()
    };
    let (a, b) = (open_store("a"), open_store("b"));
    let mut aopts = ArchiveOptions::new(dir.path().join("archive").to_string_lossy());
    aopts.settle = Duration::ZERO;
    aopts.shared = true;
    let holds = [
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicBool::new(false)),
    ];
    let archives: Vec<Archive> = holds
        .iter()
        .map(|h| {
            let archive = Archive::open(&aopts).unwrap();
            let h = h.clone();
            archive.set_writer(Arc::new(move || h.load(Ordering::SeqCst)));
            archive
        })
        .collect();
    // Records 1..=n: events of two hours, a seal every fourth.
    let feed = |store: &Store, from: u64, to: u64, retire: &[u64]| {
        for lsn in from..=to {
            if lsn % 4 == 0 {
                store.seal(lsn, retire.to_vec()).unwrap();
                continue;
            }
            let body: String = (0..10)
                .map(|i| {
                    format!(
                        "{{\"ts\":{},\"n\":{}}}\n",
                        (lsn as i64 % 2) * 3_600_000 + i,
                        lsn * 100 + i as u64
                    )
                })
                .collect();
            let b = batch(&body);
            store.schemas().reserve("s", &b).unwrap();
            store.apply(lsn, "s", &b);
        }
        store.flush_sealed().unwrap();
    };
    feed(&a, 1, 24, &[]);
    feed(&b, 1, 24, &[]);
    let r = archives[0].sync(&a, NOW).unwrap();
    assert!(r.uploaded > 0 && r.skipped.is_none(), "{r:?}");
    let r = archives[1].sync(&b, NOW).unwrap();
    assert_eq!(r.skipped, Some("another node holds the maintenance lease"));
    assert_eq!(
        archives[1].manifest().segments,
        archives[0].manifest().segments
    );
    let rows = |m: &Manifest| m.segments.iter().map(|e| e.meta.rows).sum::<u64>();
    assert_eq!(rows(&archives[0].manifest()), 18 * 10);

    // a moves on; the lease moves to b, which is behind the manifest.
    feed(&a, 25, 40, &[]);
    archives[0].sync(&a, NOW).unwrap();
    assert_eq!(archives[0].manifest().checkpoint_lsn, 40);
    holds[0].store(false, Ordering::SeqCst);
    holds[1].store(true, Ordering::SeqCst);
    let r = archives[1].sync(&b, NOW).unwrap();
    assert_eq!(
        r.skipped,
        Some("this node's segments are behind the manifest")
    );
    // Caught up, b finds everything a archived under its own ids: nothing
    // to upload but what came after.
    feed(&b, 25, 48, &[]);
    feed(&a, 41, 48, &[]);
    let r = archives[1].sync(&b, NOW).unwrap();
    assert_eq!(r.skipped, None);
    assert_eq!(r.relocated, 0);
    let m = archives[1].manifest();
    assert_eq!(rows(&m), 36 * 10);
    assert_eq!(m.checkpoint_lsn, 48);
    let ids: Vec<u64> = a.segments().iter().map(|s| s.id).collect();
    let mut named: Vec<u64> = m.segments.iter().map(|e| e.meta.id).collect();
    named.sort();
    let mut ids = ids;
    ids.sort();
    assert_eq!(named, ids, "the manifest names a's segments too");
    assert_eq!(objects(&dir.path().join("archive")), m.segments.len());

    // Retention by seal, on both: the writer records them archive-only,
    // the other forgets them once its copy of the manifest says so, and
    // reads them there meanwhile.
    let old: Vec<u64> = m
        .segments
        .iter()
        .filter(|e| e.meta.partition == 0)
        .map(|e| e.meta.id)
        .collect();
    feed(&a, 49, 52, &old);
    feed(&b, 49, 52, &old);
    let (_, retired) = a.segment_files();
    assert_eq!(retired.len(), old.len());
    let snap = a.snapshot("s", None, None).unwrap().unwrap();
    let local: HashSet<u64> = snap.segments.iter().map(|f| f.meta.id).collect();
    let there = archives[0].segments_for("s", None, None, &local, &snap.retired);
    assert_eq!(
        there.len(),
        old.len(),
        "read from the archive before it records them"
    );
    archives[1].sync(&b, NOW).unwrap();
    assert!(
        b.segment_files().1.is_empty(),
        "the writer acknowledged its own"
    );
    archives[0].sync(&a, NOW).unwrap();
    assert!(a.segment_files().1.is_empty(), "the other forgot them");
    assert!(
        archives[0]
            .manifest()
            .segments
            .iter()
            .filter(|e| !e.local)
            .count()
            == old.len()
    );
}
