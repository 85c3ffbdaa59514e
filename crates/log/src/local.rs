//! The local write-ahead log: append-only files with CRC32C-framed records
//! and group commit.
//!
//! Layout: `DIR/<first lsn, 20 digits>.log`, each starting with an 8-byte
//! magic, then records framed as
//!
//! ```text
//! u32 payload length | u32 crc32c(lsn ++ payload) | u64 lsn | payload
//! ```
//!
//! One writer thread drains the bounded queue, writes everything waiting as
//! one `write`, and makes it durable with one `fdatasync` (group commit: any
//! number of concurrent requests share one fsync). A second thread hands the
//! durable records to the apply hook in LSN order and then acknowledges them,
//! so the next group's fsync overlaps this group's apply.
//!
//! Recovery: at open every file is scanned and every CRC checked. A bad or
//! short record in the *last* file is a torn write from a crash (it was never
//! acknowledged); the file is truncated to the last whole record and the event
//! is logged and counted. A bad record in any earlier file is reported as
//! corruption and the log refuses to open rather than drop data.

use crate::metrics::*;
use crate::{AppendFuture, ApplyHook, Error, Log, Lsn, Result};
use parking_lot::{Mutex, RwLock};
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

const MAGIC: &[u8; 8] = b"TALLYLG1";
const FRAME: usize = 16;

/// When an append becomes durable, relative to its acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// `fdatasync` before acknowledging (the default). Survives process
    /// crashes and power loss.
    Always,
    /// Acknowledge once written to the OS; `fdatasync` at most this often.
    /// Survives a killed process (the data is in the page cache) but a power
    /// loss can drop the last interval of acknowledged writes.
    Interval(Duration),
    /// Never `fdatasync` (tests and throwaway data only).
    Never,
}

#[derive(Debug, Clone)]
pub struct LocalLogOptions {
    pub dir: PathBuf,
    pub sync: SyncMode,
    /// A file is closed and a new one started past this size.
    pub segment_bytes: u64,
    /// Records that may wait for the writer before appends fail with `Busy`.
    pub queue_capacity: usize,
    /// Largest single record accepted.
    pub max_record_bytes: usize,
    /// Most bytes written in one group commit.
    pub max_group_bytes: usize,
}

impl LocalLogOptions {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LocalLogOptions {
            dir: dir.into(),
            sync: SyncMode::Always,
            segment_bytes: 64 << 20,
            queue_capacity: 4096,
            max_record_bytes: 256 << 20,
            max_group_bytes: 32 << 20,
        }
    }
}

/// What [`LocalLog::open`] found and did.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    /// Records passed to the replay function (LSN above `after`).
    pub replayed: u64,
    /// Records found at or below `after` and skipped.
    pub skipped: u64,
    /// Last LSN in the log after recovery.
    pub last_lsn: Lsn,
    /// First LSN the log still holds (`None` when it holds no record):
    /// records below it were dropped by truncation.
    pub first_lsn: Option<Lsn>,
    /// Bytes cut from a torn tail (0 when the log was clean).
    pub torn_bytes: u64,
    pub files: usize,
}

struct LogFile {
    first_lsn: Lsn,
    path: PathBuf,
}

struct Shared {
    dir: PathBuf,
    files: Mutex<VecDeque<LogFile>>,
    applied: AtomicU64,
    depth: AtomicUsize,
    failed: Mutex<Option<String>>,
}

struct Request<A> {
    payload: Vec<u8>,
    attachment: Option<A>,
    ack: oneshot::Sender<Result<Lsn>>,
}

struct Group<A> {
    first_lsn: Lsn,
    requests: Vec<Request<A>>,
}

/// A log of records that travel in process as `A` (see [`ApplyHook`]).
pub struct LocalLog<A> {
    tx: RwLock<Option<SyncSender<Request<A>>>>,
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    opts: LocalLogOptions,
}

impl<A: Send + 'static> LocalLog<A> {
    /// Opens (or creates) the log in `opts.dir`, recovers a torn tail, calls
    /// `replay` for every record above `after` in LSN order, then starts the
    /// writer and apply threads with `hook`.
    pub fn open(
        opts: LocalLogOptions,
        after: Lsn,
        replay: &mut dyn FnMut(Lsn, &[u8]),
        hook: ApplyHook<A>,
    ) -> Result<(LocalLog<A>, OpenReport)> {
        fs::create_dir_all(&opts.dir).map_err(|e| Error::io(&opts.dir, e))?;
        let mut report = OpenReport::default();
        let mut files = list_files(&opts.dir)?;
        let mut last: Option<Lsn> = None;
        let n = files.len();
        for (i, f) in files.iter().enumerate() {
            let is_last = i + 1 == n;
            let scan = scan_file(
                &f.path,
                f.first_lsn,
                last,
                is_last,
                opts.max_record_bytes,
                &mut |lsn, p| {
                    if report.first_lsn.is_none() {
                        report.first_lsn = Some(lsn);
                    }
                    if lsn > after {
                        report.replayed += 1;
                        replay(lsn, p);
                    } else {
                        report.skipped += 1;
                    }
                },
            )?;
            if let Some(l) = scan.last_lsn {
                last = Some(l);
            }
            report.torn_bytes += scan.torn_bytes;
        }
        REPLAYED.inc_by(report.replayed);
        let last_lsn = last.unwrap_or(0).max(after);
        report.last_lsn = last_lsn;

        // Append to the last file, or start the first one.
        let current = match files.back() {
            Some(f) => {
                let file = OpenOptions::new()
                    .write(true)
                    .open(&f.path)
                    .map_err(|e| Error::io(&f.path, e))?;
                let mut file = file;
                file.seek(SeekFrom::End(0))
                    .map_err(|e| Error::io(&f.path, e))?;
                file
            }
            None => {
                let (file, path) = create_file(&opts.dir, last_lsn + 1)?;
                files.push_back(LogFile {
                    first_lsn: last_lsn + 1,
                    path,
                });
                file
            }
        };
        report.files = files.len();
        FILES.set(files.len() as i64);

        let shared = Arc::new(Shared {
            dir: opts.dir.clone(),
            files: Mutex::new(files),
            applied: AtomicU64::new(last_lsn),
            depth: AtomicUsize::new(0),
            failed: Mutex::new(None),
        });
        let (tx, rx) = mpsc::sync_channel::<Request<A>>(opts.queue_capacity);
        let (gtx, grx) = mpsc::sync_channel::<Group<A>>(64);
        let writer = Writer {
            shared: shared.clone(),
            opts: opts.clone(),
            file: current,
            next_lsn: last_lsn + 1,
        };
        let w = std::thread::Builder::new()
            .name("tally-log-writer".into())
            .spawn(move || writer.run(rx, gtx))
            .map_err(|e| Error::io(&opts.dir, e))?;
        let applier = shared.clone();
        let a = std::thread::Builder::new()
            .name("tally-log-apply".into())
            .spawn(move || apply_loop(applier, grx, hook))
            .map_err(|e| Error::io(&opts.dir, e))?;
        let log = LocalLog {
            tx: RwLock::new(Some(tx)),
            shared,
            threads: Mutex::new(vec![w, a]),
            opts,
        };
        Ok((log, report))
    }

    pub fn dir(&self) -> &Path {
        &self.opts.dir
    }

    /// Number of log files currently on disk.
    pub fn file_count(&self) -> usize {
        self.shared.files.lock().len()
    }
}

impl<A: Send + 'static> Log<A> for LocalLog<A> {
    fn append(&self, payload: Vec<u8>, attachment: Option<A>) -> AppendFuture {
        let size = payload.len();
        if size > self.opts.max_record_bytes {
            return Box::pin(std::future::ready(Err(Error::TooLarge {
                size,
                limit: self.opts.max_record_bytes,
            })));
        }
        if let Some(why) = self.shared.failed.lock().clone() {
            return Box::pin(std::future::ready(Err(Error::Failed(why))));
        }
        let (ack, rx) = oneshot::channel();
        // Counted before the send so the writer's decrement never runs first.
        let d = self.shared.depth.fetch_add(1, Ordering::Relaxed) + 1;
        QUEUE_DEPTH.set(d as i64);
        let sent = match self.tx.read().as_ref() {
            None => Err(Error::Closed),
            Some(tx) => match tx.try_send(Request {
                payload,
                attachment,
                ack,
            }) {
                Ok(()) => Ok(()),
                Err(TrySendError::Full(_)) => Err(Error::Busy {
                    capacity: self.opts.queue_capacity,
                }),
                Err(TrySendError::Disconnected(_)) => Err(Error::Closed),
            },
        };
        if let Err(e) = sent {
            self.shared.depth.fetch_sub(1, Ordering::Relaxed);
            return Box::pin(std::future::ready(Err(e)));
        }
        Box::pin(async move { rx.await.unwrap_or(Err(Error::Closed)) })
    }

    fn truncate_through(&self, lsn: Lsn) -> Result<()> {
        let mut files = self.shared.files.lock();
        let mut removed = false;
        // A file can go when the next one starts at or below lsn + 1: all of
        // its records are then at or below lsn. The newest file always stays.
        while files.len() > 1 && files[1].first_lsn <= lsn + 1 {
            if let Some(f) = files.pop_front() {
                fs::remove_file(&f.path).map_err(|e| Error::io(&f.path, e))?;
                removed = true;
            }
        }
        if removed {
            sync_dir(&self.shared.dir)?;
        }
        FILES.set(files.len() as i64);
        Ok(())
    }

    fn last_lsn(&self) -> Lsn {
        self.shared.applied.load(Ordering::Acquire)
    }

    fn queue_depth(&self) -> usize {
        self.shared.depth.load(Ordering::Relaxed)
    }

    fn close(&self) {
        self.stop();
    }
}

impl<A> LocalLog<A> {
    fn stop(&self) {
        self.tx.write().take();
        let threads: Vec<_> = self.threads.lock().drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

impl<A> Drop for LocalLog<A> {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Writer {
    shared: Arc<Shared>,
    opts: LocalLogOptions,
    file: File,
    next_lsn: Lsn,
}

impl Writer {
    fn run<A>(mut self, rx: mpsc::Receiver<Request<A>>, gtx: SyncSender<Group<A>>) {
        let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
        let mut dirty = false;
        let mut last_sync = Instant::now();
        loop {
            let first = match self.opts.sync {
                SyncMode::Interval(every) if dirty => {
                    match rx.recv_timeout(every.saturating_sub(last_sync.elapsed())) {
                        Ok(r) => r,
                        Err(RecvTimeoutError::Timeout) => {
                            self.sync_data();
                            dirty = false;
                            last_sync = Instant::now();
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                _ => match rx.recv() {
                    Ok(r) => r,
                    Err(_) => break,
                },
            };
            let mut requests = vec![first];
            let mut bytes = requests[0].payload.len();
            while bytes < self.opts.max_group_bytes {
                match rx.try_recv() {
                    Ok(r) => {
                        bytes += r.payload.len();
                        requests.push(r);
                    }
                    Err(_) => break,
                }
            }
            let d = self
                .shared
                .depth
                .fetch_sub(requests.len(), Ordering::Relaxed)
                - requests.len();
            QUEUE_DEPTH.set(d as i64);

            if let Some(why) = self.shared.failed.lock().clone() {
                for r in requests {
                    let _ = r.ack.send(Err(Error::Failed(why.clone())));
                }
                continue;
            }

            let first_lsn = self.next_lsn;
            match self.write_group(&mut buf, &requests) {
                Ok(()) => {}
                Err(e) => {
                    let why = e.to_string();
                    tracing::error!(error = %why, "log write failed; refusing further writes");
                    *self.shared.failed.lock() = Some(why.clone());
                    for r in requests {
                        let _ = r.ack.send(Err(Error::Failed(why.clone())));
                    }
                    continue;
                }
            }
            match self.opts.sync {
                SyncMode::Always => self.sync_data(),
                SyncMode::Interval(every) => {
                    dirty = true;
                    if last_sync.elapsed() >= every {
                        self.sync_data();
                        dirty = false;
                        last_sync = Instant::now();
                    }
                }
                SyncMode::Never => {}
            }
            if self.shared.failed.lock().is_some() {
                let why = self.shared.failed.lock().clone().unwrap_or_default();
                for r in requests {
                    let _ = r.ack.send(Err(Error::Failed(why.clone())));
                }
                continue;
            }
            self.next_lsn += requests.len() as u64;
            APPEND_RECORDS.inc_by(requests.len() as u64);
            APPEND_BYTES.inc_by(bytes as u64);
            GROUP_RECORDS.observe(requests.len() as f64);
            if gtx
                .send(Group {
                    first_lsn,
                    requests,
                })
                .is_err()
            {
                break;
            }
        }
        if !matches!(self.opts.sync, SyncMode::Never) {
            self.sync_data();
        }
    }

    fn write_group<A>(&mut self, buf: &mut Vec<u8>, requests: &[Request<A>]) -> Result<()> {
        buf.clear();
        for (lsn, r) in (self.next_lsn..).zip(requests) {
            frame(buf, lsn, &r.payload);
        }
        let path = self.current_path();
        let len = self
            .file
            .stream_position()
            .map_err(|e| Error::io(&path, e))?;
        if len > MAGIC.len() as u64 && len + buf.len() as u64 > self.opts.segment_bytes {
            self.rotate()?;
        }
        let t = Instant::now();
        let path = self.current_path();
        self.file.write_all(buf).map_err(|e| Error::io(&path, e))?;
        WRITE_SECONDS.observe(t.elapsed().as_secs_f64());
        Ok(())
    }

    fn current_path(&self) -> PathBuf {
        self.shared
            .files
            .lock()
            .back()
            .map(|f| f.path.clone())
            .unwrap_or_default()
    }

    fn sync_data(&mut self) {
        let t = Instant::now();
        if let Err(e) = self.file.sync_data() {
            // After a failed fsync the kernel may have dropped the dirty
            // pages; nothing written since the last good fsync can be trusted.
            let why = format!("fsync of the log failed: {e}");
            tracing::error!(error = %why, "log fsync failed; refusing further writes");
            *self.shared.failed.lock() = Some(why);
        }
        FSYNC_SECONDS.observe(t.elapsed().as_secs_f64());
    }

    fn rotate(&mut self) -> Result<()> {
        let old = self.current_path();
        self.file.sync_data().map_err(|e| Error::io(&old, e))?;
        let (file, path) = create_file(&self.shared.dir, self.next_lsn)?;
        self.file = file;
        let mut files = self.shared.files.lock();
        files.push_back(LogFile {
            first_lsn: self.next_lsn,
            path,
        });
        FILES.set(files.len() as i64);
        Ok(())
    }
}

fn apply_loop<A>(shared: Arc<Shared>, grx: mpsc::Receiver<Group<A>>, mut hook: ApplyHook<A>) {
    while let Ok(group) = grx.recv() {
        let mut lsn = group.first_lsn;
        let mut acks = Vec::with_capacity(group.requests.len());
        for r in group.requests {
            hook(lsn, &r.payload, r.attachment);
            acks.push((lsn, r.ack));
            lsn += 1;
        }
        shared.applied.store(lsn - 1, Ordering::Release);
        for (lsn, ack) in acks {
            let _ = ack.send(Ok(lsn));
        }
    }
}

fn frame(buf: &mut Vec<u8>, lsn: Lsn, payload: &[u8]) {
    let lsn_bytes = lsn.to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&lsn_bytes), payload);
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc.to_le_bytes());
    buf.extend_from_slice(&lsn_bytes);
    buf.extend_from_slice(payload);
}

fn file_name(first_lsn: Lsn) -> String {
    format!("{first_lsn:020}.log")
}

fn list_files(dir: &Path) -> Result<VecDeque<LogFile>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(".log") else {
            continue;
        };
        let Ok(first_lsn) = stem.parse::<Lsn>() else {
            continue;
        };
        files.push(LogFile {
            first_lsn,
            path: entry.path(),
        });
    }
    files.sort_by_key(|f| f.first_lsn);
    Ok(files.into())
}

fn create_file(dir: &Path, first_lsn: Lsn) -> Result<(File, PathBuf)> {
    let path = dir.join(file_name(first_lsn));
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    file.write_all(MAGIC).map_err(|e| Error::io(&path, e))?;
    file.sync_all().map_err(|e| Error::io(&path, e))?;
    sync_dir(dir)?;
    Ok((file, path))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

struct Scan {
    last_lsn: Option<Lsn>,
    torn_bytes: u64,
}

/// Reads every record of one file, checking framing, CRC and LSN order.
fn scan_file(
    path: &Path,
    first_lsn: Lsn,
    prev: Option<Lsn>,
    is_last: bool,
    max_record: usize,
    visit: &mut dyn FnMut(Lsn, &[u8]),
) -> Result<Scan> {
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(|e| Error::io(path, e))?;
    let mut last = None;
    let mut pos = 0usize;
    let bad: Option<String> = 'scan: {
        if data.len() < MAGIC.len() || &data[..MAGIC.len()] != MAGIC {
            break 'scan Some("missing file header".into());
        }
        pos = MAGIC.len();
        let mut expect = prev.map(|p| p + 1);
        while pos < data.len() {
            if data.len() - pos < FRAME {
                break 'scan Some("short record header".into());
            }
            let len =
                u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap_or_default()) as usize;
            let crc = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().unwrap_or_default());
            let lsn_bytes: [u8; 8] = data[pos + 8..pos + 16].try_into().unwrap_or_default();
            let lsn = u64::from_le_bytes(lsn_bytes);
            if len > max_record || data.len() - pos - FRAME < len {
                break 'scan Some(format!("record length {len} runs past the end of the file"));
            }
            let payload = &data[pos + FRAME..pos + FRAME + len];
            if crc32c::crc32c_append(crc32c::crc32c(&lsn_bytes), payload) != crc {
                break 'scan Some("CRC mismatch".into());
            }
            let want = expect.unwrap_or(first_lsn);
            if lsn != want {
                break 'scan Some(format!("LSN {lsn} where {want} was expected"));
            }
            visit(lsn, payload);
            last = Some(lsn);
            expect = Some(lsn + 1);
            pos += FRAME + len;
        }
        None
    };
    let mut torn_bytes = 0;
    if let Some(reason) = bad {
        if !is_last {
            return Err(Error::Corrupt {
                path: path.to_path_buf(),
                offset: pos as u64,
                reason,
            });
        }
        // A torn tail of the newest file: cut it back to the last whole record.
        let keep = pos.max(MAGIC.len());
        torn_bytes = (data.len() as u64).saturating_sub(keep as u64);
        tracing::warn!(path = %path.display(), offset = pos, cut_bytes = torn_bytes, %reason, "truncating torn log tail");
        TORN_TAILS.inc();
        TORN_BYTES.inc_by(torn_bytes);
        let mut f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        if pos < MAGIC.len() {
            f.set_len(0).map_err(|e| Error::io(path, e))?;
            f.write_all(MAGIC).map_err(|e| Error::io(path, e))?;
        } else {
            f.set_len(pos as u64).map_err(|e| Error::io(path, e))?;
        }
        f.sync_all().map_err(|e| Error::io(path, e))?;
    }
    Ok(Scan {
        last_lsn: last,
        torn_bytes,
    })
}

#[cfg(test)]
mod tests;
