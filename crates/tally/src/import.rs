//! `tally import FILE --stream S`: streams a local NDJSON or CSV file into a
//! running server through the same HTTP ingest path clients use.
//!
//! The file is read in constant memory and sent in chunks of `--batch-rows`;
//! each chunk is one atomic batch. A rejected chunk stops the import, and the
//! server's line number is translated back to the file's line. Overload
//! answers (429/503) are retried after their Retry-After.

use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The file to import (NDJSON or CSV with a header row).
    pub file: PathBuf,
    /// The stream to import into.
    #[arg(long)]
    pub stream: String,
    /// The server's base URL.
    #[arg(long, env = "TALLY_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API key with the ingest scope.
    #[arg(long, env = "TALLY_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// `ndjson` or `csv`; by default taken from the file's extension.
    #[arg(long)]
    pub format: Option<String>,
    /// Events per request. Larger batches are faster; each is atomic.
    #[arg(long, default_value_t = 5000)]
    pub batch_rows: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 3)]
    pub concurrency: usize,
}

/// One request's worth of the file, and the file line of each of its lines.
struct Chunk {
    body: Vec<u8>,
    /// `lines[i]` is the file line of the body's line `i + 1`.
    lines: Vec<u64>,
    rows: u64,
}

pub async fn run(args: ImportArgs) -> anyhow::Result<()> {
    let format = match args.format.as_deref() {
        Some(f) => f.to_string(),
        None => match args.file.extension().and_then(|e| e.to_str()) {
            Some("csv") => "csv".into(),
            Some("ndjson" | "jsonl" | "json") => "ndjson".into(),
            _ => bail!(
                "cannot tell the format of {}; pass --format ndjson or --format csv",
                args.file.display()
            ),
        },
    };
    let content_type = match format.as_str() {
        "ndjson" => "application/x-ndjson",
        "csv" => "text/csv",
        other => bail!("--format must be ndjson or csv, not {other:?}"),
    };
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("opening {}", args.file.display()))?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {msg} [{elapsed_precise}, eta {eta}]",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let counter = CountingReader {
        inner: file,
        bar: bar.clone(),
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Chunk>(args.concurrency.max(1));
    let batch_rows = args.batch_rows.max(1);
    let is_csv = format == "csv";
    let reader = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        if is_csv {
            read_csv(counter, batch_rows, &tx)
        } else {
            read_ndjson(counter, batch_rows, &tx)
        }
    });

    let client = reqwest::Client::new();
    let url = format!(
        "{}/v1/events/{}",
        args.url.trim_end_matches('/'),
        args.stream
    );
    let key = args.api_key.map(Arc::new);
    let started = Instant::now();
    let mut rows_done = 0u64;
    let mut inflight: JoinSet<anyhow::Result<u64>> = JoinSet::new();
    let mut failed = None;
    while let Some(chunk) = rx.recv().await {
        while inflight.len() >= args.concurrency.max(1) {
            match inflight.join_next().await {
                Some(r) => match r? {
                    Ok(n) => rows_done += n,
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                },
                None => break,
            }
        }
        if failed.is_some() {
            break;
        }
        let (client, url, key) = (client.clone(), url.clone(), key.clone());
        inflight.spawn(async move {
            send(
                &client,
                &url,
                key.as_deref().map(String::as_str),
                content_type,
                chunk,
            )
            .await
        });
        let secs = started.elapsed().as_secs_f64().max(1e-3);
        bar.set_message(format!(
            "{rows_done} rows, {:.0} rows/s",
            rows_done as f64 / secs
        ));
    }
    drop(rx);
    while let Some(r) = inflight.join_next().await {
        match r? {
            Ok(n) => rows_done += n,
            Err(e) => failed = failed.or(Some(e)),
        }
    }
    if let Some(e) = failed {
        bar.abandon();
        return Err(e);
    }
    reader.await??;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "imported {rows_done} rows into '{}' in {secs:.2} s ({:.0} rows/s)",
        args.stream,
        rows_done as f64 / secs.max(1e-9)
    );
    Ok(())
}

async fn send(
    client: &reqwest::Client,
    url: &str,
    key: Option<&str>,
    ct: &str,
    chunk: Chunk,
) -> anyhow::Result<u64> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut req = client
            .post(url)
            .header("content-type", ct)
            .body(chunk.body.clone());
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("sending to {url}"))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(chunk.rows);
        }
        if (status.as_u16() == 429 || status.as_u16() == 503) && attempt < 30 {
            let wait = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(1);
            tokio::time::sleep(Duration::from_secs(wait)).await;
            continue;
        }
        let text = resp.text().await.unwrap_or_default();
        let mut msg = text.clone();
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
            let error = v.get("error").and_then(|e| e.as_str()).unwrap_or(&text);
            let line = v.get("line").and_then(|l| l.as_u64());
            let file_line = line
                .and_then(|l| chunk.lines.get(l.saturating_sub(1) as usize))
                .copied();
            let field = v.get("field").and_then(|f| f.as_str());
            msg = match (file_line, field) {
                (Some(fl), Some(f)) => format!("file line {fl}, field '{f}': {error}"),
                (Some(fl), None) => format!("file line {fl}: {error}"),
                _ => error.to_string(),
            };
        }
        bail!("server refused a batch ({status}): {msg}");
    }
}

fn read_ndjson(
    r: impl Read,
    batch_rows: usize,
    tx: &tokio::sync::mpsc::Sender<Chunk>,
) -> anyhow::Result<()> {
    let mut reader = BufReader::with_capacity(1 << 20, r);
    let mut chunk = Chunk {
        body: Vec::new(),
        lines: Vec::new(),
        rows: 0,
    };
    let mut lineno = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        lineno += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        chunk.body.extend_from_slice(&line);
        if !line.ends_with(b"\n") {
            chunk.body.push(b'\n');
        }
        chunk.lines.push(lineno);
        chunk.rows += 1;
        if chunk.rows as usize >= batch_rows {
            let full = std::mem::replace(
                &mut chunk,
                Chunk {
                    body: Vec::new(),
                    lines: Vec::new(),
                    rows: 0,
                },
            );
            if tx.blocking_send(full).is_err() {
                return Ok(());
            }
        }
    }
    if chunk.rows > 0 {
        let _ = tx.blocking_send(chunk);
    }
    Ok(())
}

fn read_csv(
    r: impl Read,
    batch_rows: usize,
    tx: &tokio::sync::mpsc::Sender<Chunk>,
) -> anyhow::Result<()> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(BufReader::with_capacity(1 << 20, r));
    let header = rdr.byte_headers()?.clone();
    let new_chunk = || -> anyhow::Result<(csv::Writer<Vec<u8>>, Chunk)> {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_byte_record(&header)?;
        Ok((
            w,
            Chunk {
                body: Vec::new(),
                lines: vec![1],
                rows: 0,
            },
        ))
    };
    let (mut w, mut chunk) = new_chunk()?;
    let mut rec = csv::ByteRecord::new();
    while rdr
        .read_byte_record(&mut rec)
        .with_context(|| "reading CSV")?
    {
        w.write_byte_record(&rec)?;
        chunk.lines.push(rec.position().map_or(0, |p| p.line()));
        chunk.rows += 1;
        if chunk.rows as usize >= batch_rows {
            let (nw, nc) = new_chunk()?;
            let mut full = std::mem::replace(&mut chunk, nc);
            full.body = std::mem::replace(&mut w, nw)
                .into_inner()
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if tx.blocking_send(full).is_err() {
                return Ok(());
            }
        }
    }
    if chunk.rows > 0 {
        chunk.body = w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?;
        let _ = tx.blocking_send(chunk);
    }
    Ok(())
}

struct CountingReader<R> {
    inner: R,
    bar: ProgressBar,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}
