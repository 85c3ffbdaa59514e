//! Flushing: the in-memory tail written to Parquet segments, and the
//! catalog committed.

use super::*;

impl Store {
    /// Writes the in-memory tail to Parquet segments and commits the catalog.
    /// On failure the tail is kept in memory (and the log still holds it).
    /// In cluster mode ([`StoreOptions::sealed`]) only what a seal record
    /// cut off is written ([`Self::flush_sealed`]).
    pub fn flush(&self) -> Result<FlushReport> {
        if self.opts.sealed {
            return self.flush_sealed();
        }
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

    /// Cluster mode: cuts the tail at seal record `lsn` (applied in log
    /// order, so the cut table holds exactly the records up to it on every
    /// node) for [`Self::flush_sealed`] to write. A cut table not written
    /// yet is written first. `retire` names segments to remove by
    /// retention in the same catalog commit.
    pub fn seal(&self, lsn: u64, retire: Vec<u64>) -> Result<()> {
        if self.frozen.read().is_some() {
            self.flush_sealed()?;
        }
        let mut frozen_slot = self.frozen.write();
        let mut active = self.active.write();
        let mut table = std::mem::take(&mut *active);
        table.last_lsn = table.last_lsn.max(lsn);
        table.seal = Some(Seal { lsn, retire });
        *active = MemTable {
            last_lsn: table.last_lsn,
            ..MemTable::new()
        };
        *frozen_slot = Some(Arc::new(table));
        *self.last_seal.lock() = Some(Instant::now());
        Ok(())
    }

    /// How long ago this store applied its last seal; `None` before the
    /// first since it opened.
    pub fn since_last_seal(&self) -> Option<std::time::Duration> {
        self.last_seal.lock().map(|t| t.elapsed())
    }

    /// Whether a table cut by a seal waits to be written.
    pub fn sealed_pending(&self) -> bool {
        self.frozen.read().is_some()
    }

    /// Cluster mode: writes the table a seal cut, if any. On failure it
    /// stays cut, to be written again: the cut is the log's, not this
    /// node's, and segments must come out the same on every node.
    ///
    /// Merges run before and after, each to where none is left to do: the
    /// segments of one seal meet those of the one before only once those
    /// are merged, on every node, even one that stopped halfway.
    pub fn flush_sealed(&self) -> Result<FlushReport> {
        let _m = self.maintenance.lock();
        self.compact_locked()?;
        let Some(frozen) = self.frozen.read().clone() else {
            return Ok(FlushReport {
                checkpoint_lsn: self.checkpoint_lsn(),
                ..Default::default()
            });
        };
        let t = Instant::now();
        let report = self.write_frozen(&frozen).inspect_err(|e| {
            tracing::error!(error = %e, "writing a sealed tail failed; will retry");
        })?;
        FLUSHES.inc();
        FLUSHED_ROWS.inc_by(report.rows as u64);
        FLUSH_SECONDS.observe(t.elapsed().as_secs_f64());
        self.update_segment_gauges();
        self.compact_locked()?;
        Ok(report)
    }

    pub(super) fn write_frozen(&self, frozen: &MemTable) -> Result<FlushReport> {
        let schemas = self.schemas.all();
        let mut cat = self.catalog.read().clone();
        let mut report = FlushReport::default();
        let mut written = Vec::new();
        // A seal's segments take ids in (stream, partition) order.
        let mut parts: Vec<_> = frozen.partitions.iter().collect();
        parts.sort_by(|a, b| a.0.cmp(b.0));
        let mut gone = Vec::new();
        let result = (|| {
            for (index, ((stream, partition), part)) in parts.into_iter().enumerate() {
                let empty = StreamSchema::default();
                let schema = schemas.get(stream).unwrap_or(&empty);
                let batch = part.to_segment_batch(schema)?;
                let id = match &frozen.seal {
                    Some(seal) => sealed_segment_id(seal.lsn, index)?,
                    None => cat.next_segment_id,
                };
                cat.next_segment_id = cat.next_segment_id.max(id + 1);
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
            if let Some(seal) = &frozen.seal {
                gone = take_segments(&mut cat, &seal.retire, true);
            }
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
        let replaced: Vec<u64> = gone.iter().map(|s| s.id).collect();
        self.sync_files(&cat, &replaced);
        *catalog = cat;
        *frozen_slot = None;
        drop(frozen_slot);
        drop(catalog);
        if !gone.is_empty() {
            self.retired(&gone);
        }
        Ok(report)
    }
}
