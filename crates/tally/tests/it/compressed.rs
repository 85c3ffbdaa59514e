//! Compressed request bodies (gzip, zstd) on every ingest endpoint, and
//! decompression bombs refused with 413 and nothing written.

use crate::server::{rows, TestServer};
use serde_json::{json, Value};
use std::io::Write;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

/// `len` spaces, compressed a mebibyte at a time.
fn bomb(encoding: &str, len: usize) -> Vec<u8> {
    let chunk = vec![b' '; 1 << 20];
    if encoding == "gzip" {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        for _ in 0..len >> 20 {
            e.write_all(&chunk).unwrap();
        }
        e.finish().unwrap()
    } else {
        let mut e = zstd::Encoder::new(Vec::new(), 3).unwrap();
        for _ in 0..len >> 20 {
            e.write_all(&chunk).unwrap();
        }
        e.finish().unwrap()
    }
}

async fn send(url: &str, content_type: &str, encoding: &str, body: Vec<u8>) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(url)
        .header("content-type", content_type)
        .header("content-encoding", encoding)
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
        )
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn every_ingest_endpoint_reads_gzip_and_zstd() {
    let s = TestServer::builder()
        .args(["--web-site", "shop.test"])
        .start()
        .await;
    let ndjson: String = (0..500)
        .map(|i| format!("{{\"service\":\"api\",\"rtt_ms\":{i}}}\n"))
        .collect();
    let ndjson = ndjson.as_bytes();
    for (enc, pack) in [("gzip", gzip as fn(&[u8]) -> Vec<u8>), ("zstd", zstd)] {
        // Events (Fluent Bit's and Vector's http outputs).
        let (st, v) = send(
            &s.url(&format!("/v1/events/z_{enc}")),
            "application/x-ndjson",
            enc,
            pack(ndjson),
        )
        .await;
        assert_eq!((st, v), (200, json!({"accepted": 500})), "{enc}");
        // Line protocol (Telegraf's content_encoding = "gzip").
        let lp = "z_lp,host=a v=1 1700000000000000000\nz_lp,host=b v=2 1700000000000000001\n";
        for path in ["/write?db=x", "/api/v2/write?bucket=x"] {
            let (st, v) = send(&s.url(path), "text/plain", enc, pack(lp.as_bytes())).await;
            assert_eq!(st, 204, "{enc} {path}: {v}");
        }
        // Import of a compressed file.
        let (st, v) = send(
            &s.url(&format!("/v1/import/z_imp_{enc}?batch_id=b_{enc}")),
            "application/x-ndjson",
            enc,
            pack(ndjson),
        )
        .await;
        assert_eq!(st, 200, "{enc}: {v}");
        assert_eq!(v["rows"], 500, "{v}");
        // The tracker.
        let ev = r#"{"n":"pageview","u":"https://shop.test/a","d":"shop.test"}"#;
        let (st, v) = send(&s.url("/api/event"), "text/plain", enc, pack(ev.as_bytes())).await;
        assert_eq!(st, 202, "{enc}: {v}");
        // The backfill of past tracker events.
        let past = r#"{"n":"pageview","u":"https://shop.test/b","d":"shop.test","timestamp":"2024-05-01T10:00:00Z","user_agent":"Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0","ip":"203.0.113.7"}"#;
        let (st, v) = send(
            &s.url("/v1/web/backfill"),
            "application/x-ndjson",
            enc,
            pack(format!("{past}\n").as_bytes()),
        )
        .await;
        assert_eq!((st, &v["stored"]), (200, &json!(1)), "{enc}: {v}");
        assert_eq!(rows(&s, &format!("z_{enc}")).await, 500);
        assert_eq!(rows(&s, &format!("z_imp_{enc}")).await, 500);
    }
    assert_eq!(rows(&s, "z_lp").await, 8);
    assert_eq!(rows(&s, "web_events").await, 4);
    // Several gzip members are one body, as gunzip reads them.
    let two = [gzip(b"{\"a\":1}\n"), gzip(b"{\"a\":2}\n")].concat();
    let (st, v) = send(
        &s.url("/v1/events/z_members"),
        "application/x-ndjson",
        "gzip",
        two,
    )
    .await;
    assert_eq!((st, v), (200, json!({"accepted": 2})));
}

#[tokio::test]
async fn bombs_and_bad_encodings_are_refused_and_write_nothing() {
    let s = TestServer::builder()
        .args([
            "--web-site",
            "shop.test",
            "--max-body-bytes",
            "1048576",
            "--max-import-bytes",
            "4194304",
        ])
        .start()
        .await;
    // 260 MiB of spaces packs into a few hundred KiB: more than any
    // endpoint's limit (the backfill's is 256 MiB).
    for enc in ["gzip", "zstd"] {
        let bomb = bomb(enc, 260 << 20);
        assert!(bomb.len() < 1 << 20, "{enc}: {}", bomb.len());
        for path in [
            "/v1/events/z_bomb",
            "/v1/import/z_bomb_imp?batch_id=bomb",
            "/write?db=x",
            "/api/v2/write?bucket=x",
            "/v1/web/backfill",
            "/api/event",
        ] {
            let (st, v) = send(&s.url(path), "application/x-ndjson", enc, bomb.clone()).await;
            assert_eq!(st, 413, "{enc} {path}: {v}");
        }
    }
    for stream in ["z_bomb", "z_bomb_imp", "z_bomb_lp", "web_events"] {
        assert_eq!(rows(&s, stream).await, 0, "{stream}");
    }
    // Nothing of the budget stays held.
    let m = crate::server::metrics_text(&s).await;
    assert_eq!(
        crate::server::metric(&m, "tally_http_ingest_budget_bytes_in_use"),
        Some(0)
    );
    // A body that is not what its encoding says, and an encoding tally
    // does not read.
    for path in [
        "/v1/events/z_bad",
        "/write?db=x",
        "/v1/import/z_bad?batch_id=b1",
        "/api/event",
    ] {
        let (st, v) = send(
            &s.url(path),
            "application/x-ndjson",
            "gzip",
            b"not gzip".to_vec(),
        )
        .await;
        assert_eq!(st, 400, "{path}: {v}");
        let (st, v) = send(&s.url(path), "application/x-ndjson", "br", b"{}".to_vec()).await;
        assert_eq!(st, 415, "{path}: {v}");
    }
}
