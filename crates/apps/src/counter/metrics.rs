//! The counter's Prometheus metrics.

use prometheus::{
    register_int_counter, register_int_counter_vec, register_int_gauge, IntCounter, IntCounterVec,
    IntGauge,
};
use std::sync::LazyLock;

pub(crate) static INCREMENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tally_increments_total",
        "Increment requests by outcome: accepted, refused (too soon), failed (not written)",
        &["outcome"]
    )
    .unwrap()
});
pub(crate) static ACCOUNTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "tally_account_operations_total",
        "Account operations by outcome: registered, register_taken, login, login_failed, login_limited, logout",
        &["outcome"]
    )
    .unwrap()
});
pub(crate) static LIVE_CLIENTS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "tally_live_viewers",
        "Open live-update streams (Server-Sent Events)"
    )
    .unwrap()
});

/// Registers the metrics so they are exported from the start.
pub(crate) fn init() {
    LazyLock::force(&INCREMENTS);
    LazyLock::force(&APPEND_RETRIES);
    LazyLock::force(&ACCOUNTS);
    LazyLock::force(&LIVE_CLIENTS);
}

pub(crate) static APPEND_RETRIES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "tally_increment_append_retries_total",
        "Cluster mode: increments' appends tried again under their id after a failure that may have stored them (NATS failing over)"
    )
    .unwrap()
});
