//! Tests of the local log against real files.

use super::*;
use std::sync::Arc;

fn opts(dir: &Path) -> LocalLogOptions {
    let mut o = LocalLogOptions::new(dir);
    o.segment_bytes = 4096;
    o
}

type Seen = Arc<Mutex<Vec<(Lsn, Vec<u8>)>>>;

fn open(o: LocalLogOptions, after: Lsn) -> (LocalLog<()>, OpenReport, Vec<(Lsn, Vec<u8>)>, Seen) {
    let mut replayed = Vec::new();
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let (log, report) = LocalLog::<()>::open(
        o,
        after,
        &mut |lsn, p| replayed.push((lsn, p.to_vec())),
        Box::new(move |lsn, p, _| s.lock().push((lsn, p.to_vec()))),
    )
    .unwrap();
    (log, report, replayed, seen)
}

#[tokio::test]
async fn concurrent_appends_are_applied_in_lsn_order_and_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _, replayed, seen) = open(opts(dir.path()), 0);
    assert!(replayed.is_empty());
    let log = Arc::new(log);
    let mut tasks = Vec::new();
    for t in 0..8u8 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut lsns = Vec::new();
            for i in 0..50u8 {
                lsns.push(log.append(vec![t, i, 0xAB], None).await.unwrap());
            }
            lsns
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    assert_eq!(all, (1..=400).collect::<Vec<_>>());
    let seen = seen.lock().clone();
    assert_eq!(
        seen.iter().map(|s| s.0).collect::<Vec<_>>(),
        (1..=400).collect::<Vec<_>>()
    );
    assert_eq!(log.last_lsn(), 400);
    assert!(log.file_count() > 1, "small segments should have rotated");
    log.close();
    drop(log);

    let (log2, report, replayed, _) = open(opts(dir.path()), 100);
    assert_eq!(report.replayed, 300);
    assert_eq!(report.skipped, 100);
    assert_eq!(report.torn_bytes, 0);
    assert_eq!(replayed, seen[100..].to_vec());
    assert_eq!(log2.append(vec![1], None).await.unwrap(), 401);
}

#[tokio::test]
async fn torn_tail_is_truncated_to_last_whole_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.segment_bytes = 1 << 20;
    {
        let (log, ..) = open(o.clone(), 0);
        for i in 0..10u8 {
            log.append(vec![i; 100], None).await.unwrap();
        }
        log.close();
    }
    let file = list_files(dir.path()).unwrap().pop_back().unwrap().path;
    let len = fs::metadata(&file).unwrap().len();
    // Cut the last record in half and append garbage.
    let f = OpenOptions::new().write(true).open(&file).unwrap();
    f.set_len(len - 50).unwrap();
    drop(f);
    let mut f = OpenOptions::new().append(true).open(&file).unwrap();
    f.write_all(&[0xFF; 37]).unwrap();
    drop(f);

    let (log, report, replayed, _) = open(o.clone(), 0);
    assert_eq!(report.replayed, 9);
    assert_eq!(report.torn_bytes, 116 - 50 + 37);
    assert_eq!(replayed.last().unwrap().1, vec![8u8; 100]);
    // The log continues after the cut with the next LSN.
    assert_eq!(log.append(vec![42], None).await.unwrap(), 10);
    log.close();
    drop(log);
    let (_, report, replayed, _) = open(o, 0);
    assert_eq!(report.torn_bytes, 0);
    assert_eq!(replayed.len(), 10);
    assert_eq!(replayed[9], (10, vec![42]));
}

#[tokio::test]
async fn flipped_bit_in_last_record_is_caught_by_crc() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.segment_bytes = 1 << 20;
    {
        let (log, ..) = open(o.clone(), 0);
        for i in 0..3u8 {
            log.append(vec![i; 10], None).await.unwrap();
        }
    }
    let file = list_files(dir.path()).unwrap().pop_back().unwrap().path;
    let mut data = fs::read(&file).unwrap();
    let n = data.len();
    data[n - 3] ^= 0x10;
    fs::write(&file, data).unwrap();
    let (_, report, replayed, _) = open(o, 0);
    assert_eq!(replayed.len(), 2);
    assert_eq!(report.torn_bytes, 26);
}

#[tokio::test]
async fn corruption_before_the_last_file_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path());
    {
        let (log, ..) = open(o.clone(), 0);
        for i in 0..100u8 {
            log.append(vec![i; 200], None).await.unwrap();
        }
    }
    let files = list_files(dir.path()).unwrap();
    assert!(files.len() > 2);
    let mut data = fs::read(&files[0].path).unwrap();
    data[20] ^= 1;
    fs::write(&files[0].path, data).unwrap();
    let r = LocalLog::<()>::open(o, 0, &mut |_, _| {}, Box::new(|_, _, _| {}));
    assert!(matches!(r, Err(Error::Corrupt { .. })), "{:?}", r.err());
}

#[tokio::test]
async fn truncate_through_removes_only_fully_covered_files() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path());
    let (log, ..) = open(o.clone(), 0);
    for i in 0..100u8 {
        log.append(vec![i; 200], None).await.unwrap();
    }
    let before = log.file_count();
    log.truncate_through(50).unwrap();
    let after = log.file_count();
    assert!(after < before);
    log.close();
    drop(log);
    // Everything above 50 is still there.
    let (_, _, replayed, _) = open(o, 50);
    assert_eq!(
        replayed.iter().map(|r| r.0).collect::<Vec<_>>(),
        (51..=100).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn full_queue_answers_busy_and_closed_log_answers_closed() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.queue_capacity = 1;
    // A hook that blocks holds the pipeline so the queue fills.
    let gate = Arc::new(std::sync::Barrier::new(2));
    let g = gate.clone();
    let (log, _) = LocalLog::<()>::open(
        o,
        0,
        &mut |_, _| {},
        Box::new(move |lsn, _, _| {
            if lsn == 1 {
                g.wait();
            }
        }),
    )
    .unwrap();
    let first = log.append(vec![1], None);
    let mut busy = false;
    let mut pending = Vec::new();
    for _ in 0..200 {
        let f = log.append(vec![2], None);
        match futures_poll(f) {
            Some(Err(Error::Busy { .. })) => {
                busy = true;
                break;
            }
            Some(other) => panic!("unexpected {other:?}"),
            None => pending.push(()),
        }
    }
    assert!(busy, "queue of 1 never reported Busy");
    gate.wait();
    assert_eq!(first.await.unwrap(), 1);
    log.close();
    assert!(matches!(
        log.append(vec![3], None).await,
        Err(Error::Closed)
    ));
}

/// Polls a future once: `Some` if it is already resolved.
fn futures_poll<T>(
    mut f: std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>,
) -> Option<T> {
    use std::task::{Context, Poll, Waker};
    let mut cx = Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => {
            std::mem::forget(f);
            None
        }
    }
}
