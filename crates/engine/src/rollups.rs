//! The engine's rollups: defining, rebuilding from stored events in the
//! background while new events count live, and their metrics.

use crate::*;

impl Engine {
    /// Every rollup and its state.
    pub fn rollups(&self) -> &Arc<RollupSet> {
        &self.rollups
    }

    /// Adds or replaces a rollup. Its state is built from the stored
    /// events in the background while new events are counted live; until
    /// the build ends the previous state (or, for a new rollup, none)
    /// answers.
    pub fn define_rollup(&self, def: RollupDef) -> Result<()> {
        def.validate()?;
        let name = def.name.clone();
        self.start_build(&name, None, |at| self.rollups.define(def, at))
    }

    /// Rebuilds a rollup from the stored events, in the background, while
    /// ingest continues (reprocessing): whole, or only its buckets starting
    /// in `range` (µs; whole buckets of its coarsest interval).
    pub fn rebuild_rollup(&self, name: &str, range: Option<(i64, i64)>) -> Result<()> {
        self.start_build(name, range, |at| self.rollups.rebuild(name, at, range))
    }

    /// Sets the rollup gauges (called when metrics are scraped).
    pub fn export_rollup_metrics(&self) {
        let applied = *self.applied.lock();
        ROLLUP_LAG.reset();
        ROLLUP_EVENTS.reset();
        ROLLUP_BUILD_ROWS.reset();
        for name in self.rollups.names() {
            let Some(e) = self.rollups.get(&name) else {
                continue;
            };
            let e = e.read();
            ROLLUP_LAG
                .with_label_values(&[name.as_str()])
                .set(applied.saturating_sub(e.lsn) as i64);
            ROLLUP_EVENTS
                .with_label_values(&[name.as_str()])
                .set(e.rollup.events() as i64);
            if let Some(b) = &e.building {
                ROLLUP_BUILD_ROWS
                    .with_label_values(&[name.as_str(), "done"])
                    .set(b.rows_done as i64);
                ROLLUP_BUILD_ROWS
                    .with_label_values(&[name.as_str(), "total"])
                    .set(b.rows_total as i64);
            }
        }
    }

    /// Whether no rollup build is running.
    pub fn rollups_idle(&self) -> bool {
        let mut b = self.builders.lock();
        b.retain(|h| !h.is_finished());
        b.is_empty()
    }

    /// Starts a build: under the apply gate, so the stored events it feeds
    /// are exactly those applied before it and live records go to it after.
    fn start_build(
        &self,
        name: &str,
        range: Option<(i64, i64)>,
        begin: impl FnOnce(Lsn) -> tally_rollup::Result<u64>,
    ) -> Result<()> {
        let (id, snapshot) = {
            let at = self.applied.lock();
            let id = begin(*at)?;
            let stream = self
                .rollups
                .get(name)
                .map(|e| e.read().rollup.def().stream.clone())
                .unwrap_or_default();
            let (lo, hi) = match range {
                Some((lo, hi)) => (Some(lo), Some(hi - 1)),
                None => (None, None),
            };
            (id, self.stored(&stream, lo, hi)?)
        };
        if let Some((s, archived)) = &snapshot {
            let rows = s.segments.iter().map(|f| f.meta.rows).sum::<u64>()
                + archived.iter().map(|m| m.rows).sum::<u64>()
                + s.memory.iter().map(|m| m.num_rows() as u64).sum::<u64>();
            self.rollups.set_total(name, id, rows);
        }
        let rollups = self.rollups.clone();
        let archive = self.archive.clone();
        let stopping = self.stopping.clone();
        let faults = self.faults.clone();
        let name = name.to_string();
        let h = std::thread::Builder::new()
            .name("tally-rollup-build".into())
            .spawn(move || {
                let t = Instant::now();
                let history = History {
                    snapshot,
                    archive: archive.as_deref(),
                };
                let fed = faults.run("rollup-build", || {
                    feed_history(&rollups, &name, id, history, &stopping)
                });
                let Some(fed) = fed else {
                    ROLLUP_BUILDS.with_label_values(&["failed"]).inc();
                    return;
                };
                let outcome = match fed {
                    Ok(Some(rows)) => match rollups.finish(&name, id) {
                        Ok(true) => {
                            tracing::info!(rollup = %name, rows, took_ms = t.elapsed().as_millis() as u64, "rollup built");
                            "done"
                        }
                        Ok(false) => "replaced",
                        Err(e) => {
                            tracing::error!(rollup = %name, error = %e, "rollup built but not saved; it is rebuilt at the next start");
                            "failed"
                        }
                    },
                    Ok(None) if stopping.load(Ordering::Acquire) => "stopped",
                    Ok(None) => "replaced",
                    Err(e) => {
                        tracing::error!(rollup = %name, error = %e, "rollup build failed");
                        "failed"
                    }
                };
                ROLLUP_BUILDS.with_label_values(&[outcome]).inc();
            })
            .map_err(|e| Error::Io {
                dir: self.opts.data_dir.clone(),
                source: e,
            })?;
        self.builders.lock().push(h);
        Ok(())
    }
}
