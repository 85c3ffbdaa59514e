//! `POST /v1/import/{stream}`: a file of any size, all of it or none of it.
//!
//! The body (CSV, TSV or NDJSON) is parsed as it arrives, a chunk of rows at
//! a time, on a blocking thread; each chunk is checked and staged by the
//! engine (see `tally_engine::ImportTxn`), so memory stays bounded whatever
//! the size. Once the last byte is in and parsed, one commit record makes
//! the whole import visible. A bad row anywhere, an upload cut short or a
//! server shutting down before the end rolls it back: nothing of it is
//! stored, and the answer says so (`"outcome": "rolled_back"`, with the line
//! and field of a bad row). The batch id (`Idempotency-Key` header or
//! `batch_id` parameter) makes a retry safe: a batch already imported is
//! answered `"outcome": "already_imported"` and not imported again.

use crate::auth::Scope;
use crate::error::ApiError;
use crate::state::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::io::Read;
use std::sync::Arc;
use std::time::Instant;
use tally_engine::FinishedImport;
use tally_ingest::{validate_public_stream_name, ChunkReader, FileFormat};

/// Rows parsed, checked and staged at a time.
const CHUNK_ROWS: usize = 64 * 1024;

#[derive(Debug, Deserialize)]
pub(crate) struct ImportParams {
    batch_id: Option<String>,
    format: Option<String>,
    #[serde(flatten)]
    time: crate::state::TimeParams,
}

pub(crate) async fn post_import(
    State(state): State<Arc<AppState>>,
    Path(stream): Path<String>,
    Query(params): Query<ImportParams>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let batch_id = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or(params.batch_id.clone())
        .unwrap_or_else(|| format!("import-{}", hex::encode(rand::random::<[u8; 12]>())));
    let mut about = Map::new();
    about.insert("batch_id".into(), json!(batch_id));
    about.insert("stream".into(), json!(stream));
    // The body is read to its end whatever the answer (up to the import
    // limit), so a client still sending reads the answer, not a reset.
    let (body_tx, body_rx) = tokio::sync::mpsc::channel(8);
    let limit = state.max_import_bytes;
    let timeout = state.body_read_timeout;
    let reader = tokio::spawn(read_body(body, body_tx, limit, timeout));
    let answer = import(&state, &stream, &batch_id, &params, &headers, body_rx).await;
    drain(reader, &state).await;
    match answer {
        Ok(mut answer) => {
            answer.extend(about);
            axum::Json(Value::Object(answer)).into_response()
        }
        Err((e, outcome)) => {
            about.insert("outcome".into(), json!(outcome));
            e.into_response_with(about)
        }
    }
}

/// Whether a failed request left anything behind: `"rolled_back"` (nothing
/// of the batch is stored) or `"not_started"` (it was refused first).
type Failure = (ApiError, &'static str);

async fn import(
    state: &Arc<AppState>,
    stream: &str,
    batch_id: &str,
    params: &ImportParams,
    headers: &HeaderMap,
    mut body: tokio::sync::mpsc::Receiver<Frame>,
) -> Result<Map<String, Value>, Failure> {
    let refused = |e: ApiError| (e, "not_started");
    state
        .keys()
        .authorize(headers, Scope::Ingest)
        .map_err(refused)?;
    validate_public_stream_name(stream)
        .map_err(|message| ApiError::BadRequest {
            message,
            stream: None,
        })
        .map_err(refused)?;
    state.check_writable(stream).map_err(refused)?;
    let format = file_format(params, headers).map_err(refused)?;
    let time = state.time_field(stream, &params.time).map_err(refused)?;
    let limit = state.max_import_bytes;
    let encoding = crate::encoding::content_encoding(headers).map_err(refused)?;
    crate::ingest::check_body_headers(headers, limit).map_err(refused)?;
    let engine = state.engine().map_err(refused)?.clone();
    let Ok(_slot) = state.import_slots.clone().try_acquire_owned() else {
        return Err(refused(ApiError::Overloaded {
            reason: "as many imports as the server runs at once are in progress".into(),
            retry_after: std::time::Duration::from_secs(5),
        }));
    };
    let started = Instant::now();
    let txn = match engine.begin_import(stream, batch_id) {
        Ok(t) => t,
        Err(tally_engine::Error::AlreadyImported { rows, stream, .. }) => {
            return Ok(already_imported(rows, &stream));
        }
        Err(e) => return Err(refused(e.into())),
    };

    // The parser reads the body through a channel; `None` marks its end,
    // so a body cut short is an error, never a shorter import.
    let (tx, rx) = tokio::sync::mpsc::channel::<Option<Bytes>>(8);
    let parser = tokio::task::spawn_blocking(move || -> Result<FinishedImport, ApiError> {
        let mut txn = txn;
        let source = ChannelReader {
            rx,
            current: Bytes::new(),
            ended: false,
        };
        // A compressed file is inflated as it arrives, to at most the
        // import limit (a decompression bomb is a 413).
        let (source, overflow) = tally_ingest::compression::decoder(encoding, source, limit)
            .map_err(|e| ApiError::BadRequest {
                message: format!("the body is not valid {}: {e}", encoding.name()),
                stream: None,
            })?;
        let now_us = chrono::Utc::now().timestamp_micros();
        let stream = txn_stream(&txn);
        let parse_error = |source| match overflow.happened() {
            true => ApiError::PayloadTooLarge {
                limit: limit.min(usize::MAX as u64) as usize,
            },
            false => ApiError::Parse {
                stream: stream.clone(),
                source,
            },
        };
        let mut chunks =
            ChunkReader::with_time(source, format, now_us, &time).map_err(parse_error)?;
        while let Some(chunk) = chunks
            .next_chunk(CHUNK_ROWS, &|f| txn.column_type(f))
            .map_err(parse_error)?
        {
            txn.add(&chunk)?;
        }
        Ok(txn.finish()?)
    });

    let rolled_back = |e: ApiError| (e, "rolled_back");
    let mut stopping = state.stopping.subscribe();
    let mut received: u64 = 0;
    let upload: Result<(), ApiError> = loop {
        let next = tokio::select! {
            next = body.recv() => next,
            _ = stopping.wait_for(|s| *s) => break Err(ApiError::Overloaded {
                reason: "the server is shutting down; the import was rolled back before its end arrived (nothing of it is stored): retry it with the same batch id".into(),
                retry_after: crate::DEFAULT_RETRY_AFTER,
            }),
        };
        match next {
            Some(Frame::Data(bytes)) => {
                received += bytes.len() as u64;
                if tx.send(Some(bytes)).await.is_err() {
                    // The parser stopped (a bad row): its error is the answer.
                    break Ok(());
                }
            }
            Some(Frame::End) => {
                // The parser may have stopped at a bad row already.
                let _ = tx.send(None).await;
                break Ok(());
            }
            Some(Frame::Failed(e)) => break Err(e),
            None => break Err(ApiError::Internal("the request body reader stopped".into())),
        }
    };
    drop(tx);
    let parsed = parser
        .await
        .map_err(|e| rolled_back(ApiError::Internal(e.to_string())))?;
    // An upload that failed wins over the parse error it caused.
    upload.map_err(rolled_back)?;
    let finished = parsed.map_err(rolled_back)?;
    let receipt = match engine.commit_import(finished).await {
        // In cluster mode another node may have committed this batch id
        // meanwhile (a client's retry): the log kept that one.
        Err(tally_engine::Error::AlreadyImported { rows, stream, .. }) => {
            return Ok(already_imported(rows, &stream));
        }
        r => r.map_err(|e| {
            let outcome = if matches!(e, tally_engine::Error::ImportNotApplied { .. }) {
                "not_applied"
            } else {
                "rolled_back"
            };
            (ApiError::from(e), outcome)
        })?,
    };
    let secs = started.elapsed().as_secs_f64();
    let mut m = Map::new();
    m.insert("outcome".into(), json!("committed"));
    m.insert("rows".into(), json!(receipt.rows));
    // The log position of its commit: a read elsewhere in a cluster may
    // ask for it (`min_seq`).
    m.insert("seq".into(), json!(receipt.lsn));
    m.insert("files".into(), json!(receipt.files));
    m.insert("bytes".into(), json!(received));
    m.insert("seconds".into(), json!((secs * 1000.0).round() / 1000.0));
    m.insert(
        "rows_per_second".into(),
        json!((receipt.rows as f64 / secs.max(1e-9)).round()),
    );
    Ok(m)
}

/// The answer to a batch id imported before: what it imported.
fn already_imported(rows: u64, stream: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("outcome".into(), json!("already_imported"));
    m.insert("rows".into(), json!(rows));
    m.insert("imported_into".into(), json!(stream));
    m
}

fn txn_stream(txn: &tally_engine::ImportTxn) -> String {
    txn.stream().to_string()
}

fn file_format(params: &ImportParams, headers: &HeaderMap) -> Result<FileFormat, ApiError> {
    if let Some(f) = &params.format {
        return FileFormat::from_name(f).ok_or_else(|| ApiError::BadRequest {
            message: format!("parameter 'format': {f:?} is not csv, tsv or ndjson"),
            stream: None,
        });
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    FileFormat::from_content_type(ct).ok_or_else(|| ApiError::UnsupportedMediaType {
        what: "content type",
        value: ct.to_string(),
        expected: "send text/csv, text/tab-separated-values or application/x-ndjson (or pass format=csv|tsv|ndjson)",
    })
}

/// What the body reader hands on.
enum Frame {
    Data(Bytes),
    End,
    Failed(ApiError),
}

/// Reads the request body into `to`, a frame at a time; once `to` is gone
/// (the answer is decided), reads on and drops the rest, so the client
/// finishes sending and reads the answer. Stops at the import limit, or when
/// a frame takes longer than `timeout`.
async fn read_body(
    body: Body,
    to: tokio::sync::mpsc::Sender<Frame>,
    limit: u64,
    timeout: std::time::Duration,
) {
    let mut data = body.into_data_stream();
    let mut received: u64 = 0;
    loop {
        let frame = match tokio::time::timeout(timeout, data.next()).await {
            Err(_) => Frame::Failed(ApiError::Timeout {
                what: "waiting for the next part of the file",
                after: timeout,
            }),
            Ok(None) => Frame::End,
            Ok(Some(Err(e))) => Frame::Failed(ApiError::BadRequest {
                message: format!("the upload failed before its end: {e}"),
                stream: None,
            }),
            Ok(Some(Ok(bytes))) => {
                received += bytes.len() as u64;
                if received > limit {
                    Frame::Failed(ApiError::PayloadTooLarge {
                        limit: limit as usize,
                    })
                } else {
                    Frame::Data(bytes)
                }
            }
        };
        let last = !matches!(frame, Frame::Data(_));
        if !to.is_closed() {
            let _ = to.send(frame).await;
        }
        if last {
            return;
        }
    }
}

/// Lets the body reader drain what the client still sends, for at most
/// [`DRAIN_FOR`], and not at all once the server is shutting down.
async fn drain(mut reader: tokio::task::JoinHandle<()>, state: &AppState) {
    let mut stopping = state.stopping.subscribe();
    tokio::select! {
        _ = &mut reader => {}
        _ = tokio::time::sleep(DRAIN_FOR) => {}
        _ = stopping.wait_for(|s| *s) => {}
    }
    reader.abort();
}

/// How long an answer decided before the end of the upload waits for the
/// rest of it (see [`drain`]).
const DRAIN_FOR: std::time::Duration = std::time::Duration::from_secs(10);

/// The request body as a `Read` for the blocking parser.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Option<Bytes>>,
    current: Bytes,
    ended: bool,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Some(b)) => self.current = b,
                Some(None) => self.ended = true,
                None => return Err(std::io::Error::other("the upload stopped before its end")),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}
