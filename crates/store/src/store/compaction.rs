//! Compaction: a partition's segments of similar size merged into one, by
//! tiers, so that each event is rewritten O(log n) times.

use super::*;

impl Store {
    /// Merges the segments of every partition that has more than the limit.
    /// Returns the number of partitions compacted.
    pub fn compact(&self) -> Result<usize> {
        let mut done = 0;
        loop {
            let _m = self.maintenance.lock();
            if !self.compact_one()? {
                return Ok(done);
            }
            done += 1;
        }
    }

    /// Merges segments until no partition needs it, with the maintenance
    /// lock held. Where that ends is a function of the catalog alone, which
    /// is what makes segments come out the same on every node in cluster
    /// mode (see [`Store::flush_sealed`]).
    pub(super) fn compact_locked(&self) -> Result<usize> {
        let mut done = 0;
        while self.compact_one()? {
            done += 1;
        }
        Ok(done)
    }

    /// One merge, if a partition needs one.
    fn compact_one(&self) -> Result<bool> {
        let candidate = {
            let cat = self.catalog.read();
            compaction_candidate(
                &cat.segments,
                self.opts.compaction_fanout,
                self.opts.compaction_max_rows,
            )
        };
        let Some(segs) = candidate else {
            return Ok(false);
        };
        self.compact_partition(&segs)?;
        Ok(true)
    }

    pub(super) fn compact_partition(&self, segs: &[SegmentMeta]) -> Result<()> {
        let t = Instant::now();
        let stream = segs[0].stream.clone();
        let partition = segs[0].partition;
        let schema = self.schemas.get(&stream).unwrap_or_default();
        let mut batches = Vec::new();
        for s in segs {
            batches.extend(read_segment(&self.opts.dir.join(&s.path))?);
        }
        // Keep only the columns some input segment has, in schema order.
        let present: HashSet<String> = batches
            .iter()
            .flat_map(|b| {
                b.schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect::<Vec<_>>()
            })
            .collect();
        let full = arrow_schema(&schema);
        let fields: Vec<Field> = full
            .fields()
            .iter()
            .filter(|f| present.contains(f.name()))
            .map(|f| f.as_ref().clone())
            .collect();
        let target = Arc::new(Schema::new(fields));
        let merged = concat_aligned(&target, &batches)?;
        let mut cat = self.catalog.read().clone();
        let id = if self.opts.sealed {
            merged_segment_id(segs)?
        } else {
            cat.next_segment_id
        };
        cat.next_segment_id = cat.next_segment_id.max(id + 1);
        let rel = segment_path(&stream, partition, id);
        let path = self.opts.dir.join(&rel);
        let bytes =
            match write_segment(&path, &merged, self.opts.row_group_rows, COMPACT_ZSTD_LEVEL) {
                Ok(b) => b,
                Err(e) => {
                    let _ = fs::remove_file(&path);
                    return Err(e);
                }
            };
        if let Some(parent) = path.parent() {
            sync_dir(parent)?;
        }
        let ids: HashSet<u64> = segs.iter().map(|s| s.id).collect();
        cat.segments.retain(|s| !ids.contains(&s.id));
        cat.segments.push(SegmentMeta {
            id,
            stream: stream.clone(),
            partition,
            path: rel,
            rows: segs.iter().map(|s| s.rows).sum(),
            min_ts: segs.iter().map(|s| s.min_ts).min().unwrap_or(partition),
            max_ts: segs.iter().map(|s| s.max_ts).max().unwrap_or(partition),
            bytes,
        });
        cat.save(&self.opts.dir)?;
        let replaced: Vec<u64> = segs.iter().map(|s| s.id).collect();
        let mut catalog = self.catalog.write();
        self.sync_files(&cat, &replaced);
        *catalog = cat;
        drop(catalog);
        COMPACTIONS.inc();
        COMPACTED_SEGMENTS.inc_by(segs.len() as u64);
        COMPACTION_SECONDS.observe(t.elapsed().as_secs_f64());
        self.update_segment_gauges();
        tracing::debug!(
            stream,
            partition,
            merged = segs.len(),
            "compacted partition"
        );
        Ok(())
    }
}

/// Size-tiered compaction: a segment's tier is log4 of its row count. When
/// one tier of a partition holds `fanout` segments, they are merged into one
/// segment of a higher tier. Each event is thus rewritten O(log n) times, not
/// once per flush as "merge everything" would, and a partition holds at most
/// (fanout - 1) segments per tier below the cap, plus one segment per
/// `max_rows` rows above it. A merge holds its input in memory, so the cap
/// bounds compaction's memory.
pub(super) fn compaction_candidate(
    segments: &[SegmentMeta],
    fanout: usize,
    max_rows: u64,
) -> Option<Vec<SegmentMeta>> {
    let fanout = fanout.max(2);
    // Ordered, so that ties go the same way on every node (cluster mode).
    let mut tiers: BTreeMap<(&str, i64, u32), Vec<&SegmentMeta>> = BTreeMap::new();
    for s in segments {
        // Segments at the size cap are final: merging them would need more
        // memory than compaction may use.
        if s.rows >= max_rows {
            continue;
        }
        let tier = s.rows.max(1).ilog(4);
        tiers
            .entry((s.stream.as_str(), s.partition, tier))
            .or_default()
            .push(s);
    }
    let mut best: Option<Vec<&SegmentMeta>> = None;
    for (_, mut segs) in tiers {
        if segs.len() < fanout {
            continue;
        }
        // Smallest first, as many as fit under the row cap.
        segs.sort_by_key(|s| (s.rows, s.id));
        let mut total = 0;
        let take = segs.iter().take_while(|s| {
            total += s.rows;
            total <= max_rows
        });
        let picked: Vec<&SegmentMeta> = take.copied().collect();
        if picked.len() >= 2 && best.as_ref().is_none_or(|b| picked.len() > b.len()) {
            best = Some(picked);
        }
    }
    best.map(|mut segs| {
        segs.sort_by_key(|s| s.id);
        segs.into_iter().cloned().collect()
    })
}
