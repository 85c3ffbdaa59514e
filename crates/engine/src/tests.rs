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

#[tokio::test]
async fn memory_limit_refuses_with_overloaded() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = EngineOptions::new(dir.path());
    opts.memory_limit_bytes = 1;
    opts.flush_bytes = usize::MAX;
    opts.flush_interval = Duration::from_secs(3600);
    let e = Engine::open(opts).unwrap();
    e.ingest("s", batch("{\"v\":1}")).await.unwrap();
    let err = e.ingest("s", batch("{\"v\":1}")).await.unwrap_err();
    assert!(matches!(err, Error::Overloaded { .. }));
    e.flush().unwrap();
    e.ingest("s", batch("{\"v\":1}")).await.unwrap();
}

#[test]
fn a_second_engine_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _e = Engine::open(EngineOptions::new(dir.path())).unwrap();
    let err = Engine::open(EngineOptions::new(dir.path())).err().unwrap();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
}
