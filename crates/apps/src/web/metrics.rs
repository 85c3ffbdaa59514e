//! Metrics of the web analytics app.

use prometheus::{
    register_int_counter, register_int_counter_vec, register_int_gauge, IntCounter, IntCounterVec,
    IntGauge,
};
use std::sync::LazyLock;

pub(crate) static STORED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "tally_web_events_stored_total",
        "Tracker events stored (one per site of a request)"
    )
    .unwrap()
});
pub(crate) static DROPPED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tally_web_events_dropped_total",
        "Tracker events dropped, by reason (bot, unknown_site, invalid)",
        &["reason"]
    )
    .unwrap()
});

pub(crate) static LIVE_VISITS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "tally_web_visits_live",
        "Visits kept in memory (an event within the last 30 minutes)"
    )
    .unwrap()
});

pub(crate) static STATS_READS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tally_web_stats_reads_total",
        "Time-series reads of the Stats API, by what answered: a rollup (rollup) or the raw events (raw)",
        &["source"]
    )
    .unwrap()
});

pub(crate) fn init() {
    for s in ["rollup", "raw"] {
        STATS_READS.with_label_values(&[s]);
    }
    LazyLock::force(&STORED);
    LazyLock::force(&LIVE_VISITS);
    LazyLock::force(&VISIT_WRITER);
    for r in ["bot", "unknown_site", "invalid"] {
        DROPPED.with_label_values(&[r]);
    }
}

pub(crate) static VISIT_WRITER: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "tally_web_visit_writer",
        "1 while this node attributes tracker events to visits: a single node always, in a cluster the maintenance lease's holder"
    )
    .unwrap()
});
