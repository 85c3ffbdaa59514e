//! Flushing: the in-memory tail written to Parquet segments, and the
//! catalog committed.

use super::*;

impl Store {
    /// Writes the in-memory tail to Parquet segments and commits the catalog.
    /// On failure the tail is kept in memory (and the log still holds it).
    pub fn flush(&self) -> Result<FlushReport> {
        let _m = self.maintenance.lock();
        // Lock order everywhere: catalog, then frozen, then active. Each
        // hand-over below holds both sides, so a reader holding the three
        // read locks sees every row exactly once.
        let frozen = {
            let mut frozen_slot = self.frozen.write();
            let mut active = self.active.write();
            if active.rows == 0 {
                drop(frozen_slot);
                // Nothing new; the checkpoint may still advance over records
                // that carried no rows.
                let lsn = active.last_lsn;
                drop(active);
                if lsn > self.checkpoint_lsn() {
                    let mut cat = self.catalog.read().clone();
                    cat.checkpoint_lsn = lsn;
                    cat.save(&self.opts.dir)?;
                    *self.catalog.write() = cat;
                }
                return Ok(FlushReport {
                    checkpoint_lsn: self.checkpoint_lsn(),
                    ..Default::default()
                });
            }
            let table = std::mem::take(&mut *active);
            let last = table.last_lsn;
            *active = MemTable {
                last_lsn: last,
                ..MemTable::new()
            };
            let table = Arc::new(table);
            *frozen_slot = Some(table.clone());
            table
        };
        let t = Instant::now();
        match self.write_frozen(&frozen) {
            Ok(report) => {
                FLUSHES.inc();
                FLUSHED_ROWS.inc_by(report.rows as u64);
                FLUSH_SECONDS.observe(t.elapsed().as_secs_f64());
                self.update_segment_gauges();
                tracing::debug!(
                    rows = report.rows,
                    segments = report.segments,
                    bytes = report.bytes,
                    "flushed"
                );
                Ok(report)
            }
            Err(e) => {
                tracing::error!(error = %e, "flush failed; keeping the tail in memory");
                let mut frozen_slot = self.frozen.write();
                self.active.write().absorb(&frozen);
                *frozen_slot = None;
                Err(e)
            }
        }
    }

    pub(super) fn write_frozen(&self, frozen: &MemTable) -> Result<FlushReport> {
        let schemas = self.schemas.all();
        let mut cat = self.catalog.read().clone();
        let mut report = FlushReport::default();
        let mut written = Vec::new();
        let result = (|| {
            for ((stream, partition), part) in &frozen.partitions {
                let empty = StreamSchema::default();
                let schema = schemas.get(stream).unwrap_or(&empty);
                let batch = part.to_segment_batch(schema)?;
                let id = cat.next_segment_id;
                cat.next_segment_id += 1;
                let rel = segment_path(stream, *partition, id);
                let path = self.opts.dir.join(&rel);
                written.push(path.clone());
                let bytes =
                    write_segment(&path, &batch, self.opts.row_group_rows, FLUSH_ZSTD_LEVEL)?;
                let (min_ts, max_ts) = min_max(&part.ts);
                cat.segments.push(SegmentMeta {
                    id,
                    stream: stream.clone(),
                    partition: *partition,
                    path: rel,
                    rows: part.rows() as u64,
                    min_ts,
                    max_ts,
                    bytes,
                });
                report.rows += part.rows();
                report.segments += 1;
                report.bytes += bytes;
            }
            // The new files' directory entries must be durable before the
            // catalog names them.
            let dirs: HashSet<_> = written
                .iter()
                .filter_map(|p| p.parent().map(Path::to_path_buf))
                .collect();
            for d in dirs {
                sync_dir(&d)?;
            }
            cat.checkpoint_lsn = cat.checkpoint_lsn.max(frozen.last_lsn);
            cat.streams = schemas.clone();
            cat.save(&self.opts.dir)
        })();
        if let Err(e) = result {
            for p in written {
                let _ = fs::remove_file(p);
            }
            return Err(e);
        }
        report.checkpoint_lsn = cat.checkpoint_lsn;
        // The segments and the end of the frozen tail swap in one step.
        let mut catalog = self.catalog.write();
        let mut frozen_slot = self.frozen.write();
        self.sync_files(&cat, &[]);
        *catalog = cat;
        *frozen_slot = None;
        Ok(report)
    }
}
