//! `tally import FILE --stream S`: sends a CSV, TSV or NDJSON file of any
//! size to a running server as one atomic batch (`POST /v1/import/{stream}`).
//!
//! The file is streamed (read in 1 MiB blocks, never held whole) while a
//! progress bar follows the bytes sent; the server parses it as it arrives
//! and commits it only once the last row is in. Either every row is
//! imported or none is: a bad row names its line and column and leaves
//! nothing behind. The batch id (by default derived from the file's path,
//! size and modification time) makes a rerun safe: a batch already imported
//! is not imported twice.
//!
//! `-` reads standard input (with `--format`): it is kept in a temporary
//! file first, so a retry can send it again, and its default batch id is a
//! hash of its bytes, so piping the same input twice imports it once.

use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The file to import: CSV or TSV with a header row, or NDJSON; `-`
    /// reads standard input (then --format is needed).
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
    /// `csv`, `tsv` or `ndjson`; by default taken from the file's extension.
    #[arg(long)]
    pub format: Option<String>,
    /// The batch's id: a second import with the same id is not imported
    /// again. By default derived from the file's path, size and
    /// modification time, so rerunning the same command is safe.
    #[arg(long)]
    pub batch_id: Option<String>,
}

pub async fn run(mut args: ImportArgs) -> anyhow::Result<()> {
    let stdin = args.file.as_os_str() == "-";
    if stdin && args.format.is_none() {
        bail!("importing standard input (-) needs --format csv, tsv or ndjson");
    }
    // Standard input, kept whole in a temporary file (removed on return).
    let spooled = match stdin {
        true => Some(spool_stdin()?),
        false => None,
    };
    if let Some((tmp, id)) = &spooled {
        args.file = tmp.path().to_path_buf();
        args.batch_id.get_or_insert_with(|| id.clone());
    }
    let format = match args.format.as_deref() {
        Some(f) => f.to_ascii_lowercase(),
        None => match args.file.extension().and_then(|e| e.to_str()) {
            Some("csv") => "csv".into(),
            Some("tsv" | "tab") => "tsv".into(),
            Some("ndjson" | "jsonl" | "json") => "ndjson".into(),
            _ => bail!(
                "cannot tell the format of {}; pass --format csv, tsv or ndjson",
                args.file.display()
            ),
        },
    };
    let content_type = match format.as_str() {
        "csv" => "text/csv",
        "tsv" => "text/tab-separated-values",
        "ndjson" => "application/x-ndjson",
        other => bail!("--format must be csv, tsv or ndjson, not {other:?}"),
    };
    let batch_id = match &args.batch_id {
        Some(id) => id.clone(),
        None => default_batch_id(&args.file)?,
    };
    let url = format!(
        "{}/v1/import/{}",
        args.url.trim_end_matches('/'),
        args.stream
    );
    let source = match stdin {
        true => "standard input".to_string(),
        false => args.file.display().to_string(),
    };
    eprintln!(
        "importing {source} into '{}' as batch {batch_id}",
        args.stream
    );
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (body, bar) = file_body(&args.file)?;
        let mut req = client
            .post(&url)
            .query(&[("batch_id", batch_id.as_str())])
            .header("content-type", content_type)
            .body(body);
        if let Some(k) = &args.api_key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await;
        bar.finish_and_clear();
        let resp = resp.with_context(|| format!("sending to {url}"))?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let text = resp.text().await.unwrap_or_default();
        let answer: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let outcome = answer["outcome"].as_str().unwrap_or_default();
        let rows = answer["rows"].as_u64().unwrap_or(0);
        if status.is_success() && outcome == "already_imported" {
            println!(
                "batch {batch_id} was already imported ({rows} rows into '{}'); nothing was imported again",
                answer["imported_into"].as_str().unwrap_or(&args.stream)
            );
            return Ok(());
        }
        if status.is_success() {
            let secs = started.elapsed().as_secs_f64();
            println!(
                "imported {rows} rows into '{}' in {secs:.2} s ({:.0} rows/s), batch {batch_id}",
                args.stream,
                rows as f64 / secs.max(1e-9)
            );
            return Ok(());
        }
        // Busy, or shutting down before the file was in: nothing was
        // imported, so sending it again is safe.
        if matches!(status.as_u16(), 429 | 503) && attempt < 20 {
            let wait = retry_after.unwrap_or(2).clamp(1, 60);
            eprintln!(
                "server busy ({}); retrying in {wait} s",
                answer["error"].as_str().unwrap_or(status.as_str())
            );
            tokio::time::sleep(Duration::from_secs(wait)).await;
            continue;
        }
        let error = answer["error"].as_str().unwrap_or(&text);
        let fate = match outcome {
            "rolled_back" | "not_started" => "; nothing of the file was imported",
            _ => "",
        };
        bail!("the server refused the import ({status}): {error}{fate}");
    }
}

/// Copies standard input into a temporary file; returns it and the batch
/// id it gets by default, `stdin-<hash of its bytes>`.
fn spool_stdin() -> anyhow::Result<(tempfile::NamedTempFile, String)> {
    let mut tmp = tempfile::Builder::new()
        .prefix("tally-import-")
        .tempfile()
        .context("making a temporary file for standard input")?;
    let mut h = Sha256::new();
    let mut input = std::io::stdin().lock();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("reading standard input"),
        };
        h.update(&buf[..n]);
        std::io::Write::write_all(&mut tmp, &buf[..n])
            .with_context(|| format!("writing {}", tmp.path().display()))?;
    }
    Ok((tmp, format!("stdin-{}", &hex::encode(h.finalize())[..16])))
}

/// `<file stem>-<hash of path, size and modification time>`.
fn default_batch_id(file: &Path) -> anyhow::Result<String> {
    let path =
        std::fs::canonicalize(file).with_context(|| format!("opening {}", file.display()))?;
    let meta = std::fs::metadata(&path)?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let mut h = Sha256::new();
    h.update(path.to_string_lossy().as_bytes());
    h.update(meta.len().to_le_bytes());
    h.update(mtime.to_le_bytes());
    let stem: String = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    Ok(format!("{stem}-{}", &hex::encode(h.finalize())[..16]))
}

/// The file as a streamed request body, read on its own thread, and a
/// progress bar that follows the bytes read.
fn file_body(file: &Path) -> anyhow::Result<(reqwest::Body, ProgressBar)> {
    let mut f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let total = f.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} [{elapsed_precise}, eta {eta}]",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(4);
    let progress = bar.clone();
    std::thread::Builder::new()
        .name("tally-import-read".into())
        .spawn(move || loop {
            let mut buf = vec![0u8; 1 << 20];
            let item = match f.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    progress.inc(n as u64);
                    Ok(bytes::Bytes::from(buf))
                }
                Err(e) => Err(e),
            };
            let failed = item.is_err();
            if tx.blocking_send(item).is_err() || failed {
                return;
            }
        })?;
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok((reqwest::Body::wrap_stream(stream), bar))
}
