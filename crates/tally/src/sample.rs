//! Synthetic page views, shared by the demo's sample data and the benchmark
//! load generator so both describe the same kind of traffic.

use rand::Rng;

const PATHS: &[&str] = &[
    "/",
    "/pricing",
    "/docs",
    "/docs/api",
    "/blog",
    "/blog/launch",
    "/signup",
    "/login",
];
const COUNTRIES: &[&str] = &["US", "DE", "FR", "GB", "IN", "BR", "JP", "NO", "CN", "CA"];
const BROWSERS: &[&str] = &["Chrome", "Firefox", "Safari", "Edge"];

/// One page view: three dimensions and two values.
pub struct PageView {
    pub ts_ms: i64,
    pub path: &'static str,
    pub country: &'static str,
    pub browser: &'static str,
    pub duration_ms: u32,
    pub bytes: u32,
}

impl PageView {
    /// A random page view at a random time in `[from_ms, from_ms + span_ms)`.
    pub fn random(rng: &mut impl Rng, from_ms: i64, span_ms: i64) -> PageView {
        PageView {
            ts_ms: from_ms + rng.random_range(0..span_ms.max(1)),
            path: PATHS[rng.random_range(0..PATHS.len())],
            country: COUNTRIES[rng.random_range(0..COUNTRIES.len())],
            browser: BROWSERS[rng.random_range(0..BROWSERS.len())],
            duration_ms: rng.random_range(10..5000),
            bytes: rng.random_range(100..100_000),
        }
    }

    /// One NDJSON line.
    pub fn push_ndjson(&self, out: &mut String) {
        let PageView {
            ts_ms,
            path,
            country,
            browser,
            duration_ms,
            bytes,
        } = self;
        out.push_str(&format!(
            "{{\"ts\":{ts_ms},\"path\":\"{path}\",\"country\":\"{country}\",\"browser\":\"{browser}\",\"duration_ms\":{duration_ms},\"bytes\":{bytes}}}\n"
        ));
    }

    /// One InfluxDB line-protocol line (millisecond precision).
    pub fn push_line_protocol(&self, measurement: &str, out: &mut String) {
        let PageView {
            ts_ms,
            path,
            country,
            browser,
            duration_ms,
            bytes,
        } = self;
        out.push_str(&format!(
            "{measurement},path={path},country={country},browser={browser} duration_ms={duration_ms},bytes={bytes} {ts_ms}\n"
        ));
    }
}
