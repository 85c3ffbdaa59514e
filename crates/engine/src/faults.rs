//! Faults: the background parts of the engine (applying records, the
//! rollup worker, the flusher and compaction, the archive and retention
//! pass, rollup builds, scheduled jobs) run their work through
//! [`Faults::run`], which catches a panic instead of letting it take the
//! thread, or the process, down with it.
//!
//! A caught panic is a bug whose damage is unknown, so the engine stops
//! changing anything it derives: the part is recorded (logged, counted in
//! `tally_background_panics_total{part}`, named by `/readyz`), ingest is
//! refused with 503 and `Retry-After`, and the flusher stops, so the log
//! keeps every record past the last good flush. Nothing acknowledged is
//! lost: records are in the log before they are applied, and the next
//! start replays them into fresh state.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};

/// The parts that failed, and how.
#[derive(Default)]
pub(crate) struct Faults {
    failed: Mutex<BTreeMap<&'static str, String>>,
    any: AtomicBool,
    /// Tests make a part panic on its next run.
    #[cfg(test)]
    pub(crate) inject: Mutex<Option<&'static str>>,
}

impl Faults {
    /// Runs `work` as `part`; `None` if it panicked (now recorded).
    pub(crate) fn run<T>(&self, part: &'static str, work: impl FnOnce() -> T) -> Option<T> {
        #[cfg(test)]
        let injected = self.inject.lock().take_if(|p| *p == part).is_some();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            #[cfg(test)]
            if injected {
                panic!("injected fault in {part}");
            }
            work()
        }));
        match outcome {
            Ok(v) => Some(v),
            Err(panic) => {
                self.record(part, panic_message(panic.as_ref()));
                None
            }
        }
    }

    /// Records that `part` failed.
    pub(crate) fn record(&self, part: &'static str, message: String) {
        tracing::error!(
            part,
            panic = %message,
            "a background part of the engine failed; ingest is refused until restart"
        );
        crate::metrics::PANICS.with_label_values(&[part]).inc();
        self.failed.lock().entry(part).or_insert(message);
        self.any.store(true, Ordering::Release);
    }

    /// Whether any part failed (cheap: one atomic load).
    pub(crate) fn any(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    pub(crate) fn list(&self) -> Vec<Fault> {
        self.failed
            .lock()
            .iter()
            .map(|(part, message)| Fault {
                part,
                message: message.clone(),
            })
            .collect()
    }
}

/// A part of the engine that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub part: &'static str,
    pub message: String,
}

/// The text a panic carried.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}
