//! Time buckets: calendar-aware bucket starts in any IANA time zone, and
//! the times a request may name.
//!
//! A day is local midnight to local midnight (23 or 25 hours across a DST
//! change), a week starts on Monday, a month on the 1st. Fixed widths
//! (minutes, hours) are aligned to local clock time with the instant's own
//! offset, so the two 01:00 hours of a DST fall-back are two buckets. UTC
//! takes an arithmetic fast path.

use crate::{QueryError, Result};
use arrow::array::{Array, AsArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, TimeUnit};
use chrono::{DateTime, Datelike, NaiveDate, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{create_udf, ColumnarValue, ScalarUDF, Volatility};
use std::sync::Arc;
use tally_rollup::{Span, Unit};

/// A bucket width.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Interval {
    Minutes(i64),
    Hours(i64),
    Day,
    Week,
    Month,
}

impl Interval {
    pub fn parse(s: &str) -> Result<Interval> {
        let bad = || {
            QueryError::Invalid {
            message: format!(
                "interval {s:?}: use 1m, 2m, 5m, 10m, 15m, 20m, 30m, 1h, 2h, 3h, 4h, 6h, 8h, 12h, 1d, 1w or 1mo"
            ),
        }
        };
        let Span { n, unit } = Span::parse(s).ok_or_else(bad)?;
        match (unit, n) {
            (Unit::Minute, 1 | 2 | 5 | 10 | 15 | 20 | 30) => Ok(Interval::Minutes(n)),
            (Unit::Hour, 1 | 2 | 3 | 4 | 6 | 8 | 12) => Ok(Interval::Hours(n)),
            (Unit::Minute, 60) => Ok(Interval::Hours(1)),
            (Unit::Day, 1) | (Unit::Hour, 24) => Ok(Interval::Day),
            (Unit::Week, 1) | (Unit::Day, 7) => Ok(Interval::Week),
            (Unit::Month, 1) => Ok(Interval::Month),
            _ => Err(bad()),
        }
    }

    pub(crate) fn fixed_us(self) -> Option<i64> {
        match self {
            Interval::Minutes(n) => Some(n * 60_000_000),
            Interval::Hours(n) => Some(n * 3_600_000_000),
            _ => None,
        }
    }
}

/// The start (µs since the epoch) of the bucket `ts` falls in.
pub fn bucket_start(ts: i64, interval: Interval, tz: Option<&Tz>) -> i64 {
    const DAY: i64 = 86_400_000_000;
    let Some(tz) = tz else {
        return match (interval, interval.fixed_us()) {
            (_, Some(w)) => ts.div_euclid(w) * w,
            (Interval::Day, _) => ts.div_euclid(DAY) * DAY,
            // 1970-01-01 was a Thursday: 3 days after a Monday.
            (Interval::Week, _) => {
                let day = ts.div_euclid(DAY);
                (day - (day + 3).rem_euclid(7)) * DAY
            }
            _ => calendar_start(ts, interval, &Tz::UTC),
        };
    };
    match interval.fixed_us() {
        Some(w) => {
            let offset = offset_us(ts, tz);
            let local = (ts + offset).div_euclid(w) * w;
            let start = local - offset;
            if offset_us(start, tz) == offset {
                // Also the case of the two 01:00 hours of a fall-back: each
                // keeps its own offset, so each is a bucket.
                return start;
            }
            // The floor crossed an offset change (a 12h bucket on a DST
            // day): the bucket starts at that local time's own instant.
            let naive = DateTime::from_timestamp_micros(local)
                .unwrap_or_default()
                .naive_utc();
            local_instant(naive, tz)
        }
        None => calendar_start(ts, interval, tz),
    }
}

/// Bucket starts for many instants: remembers the last bucket's bounds, so
/// a run of instants in one bucket (segments are in time order) costs a
/// comparison each instead of a time-zone conversion.
pub(crate) struct Buckets<'a> {
    interval: Interval,
    tz: Option<&'a Tz>,
    /// The last bucket: [start, end).
    start: i64,
    end: i64,
}

impl<'a> Buckets<'a> {
    pub(crate) fn new(interval: Interval, tz: Option<&'a Tz>) -> Self {
        Buckets {
            interval,
            tz,
            start: 0,
            end: 0,
        }
    }

    pub(crate) fn start(&mut self, ts: i64) -> i64 {
        if ts < self.start || ts >= self.end {
            self.start = bucket_start(ts, self.interval, self.tz);
            self.end = next_bucket(self.start, self.interval, self.tz);
            if ts >= self.end {
                // Not expected (buckets tile time); never remember a bucket
                // that does not hold `ts`.
                self.end = self.start;
                return bucket_start(ts, self.interval, self.tz);
            }
        }
        self.start
    }
}

fn calendar_start(ts: i64, interval: Interval, tz: &Tz) -> i64 {
    let instant = DateTime::from_timestamp_micros(ts).unwrap_or_default();
    let date = instant.with_timezone(tz).date_naive();
    let first = match interval {
        Interval::Week => {
            date - chrono::Duration::days(date.weekday().num_days_from_monday() as i64)
        }
        Interval::Month => date.with_day(1).unwrap_or(date),
        _ => date,
    };
    local_midnight(first, tz)
}

/// `tz`'s offset from UTC at instant `ts`, in µs.
fn offset_us(ts: i64, tz: &Tz) -> i64 {
    let instant = DateTime::from_timestamp_micros(ts).unwrap_or_default();
    tz.offset_from_utc_datetime(&instant.naive_utc())
        .fix()
        .local_minus_utc() as i64
        * 1_000_000
}

/// The first instant of `date` in `tz` (the earlier one if midnight repeats,
/// the first valid one if midnight is skipped).
pub(crate) fn local_midnight(date: NaiveDate, tz: &Tz) -> i64 {
    local_instant(date.and_hms_opt(0, 0, 0).unwrap_or_default(), tz)
}

/// The instant of local time `t` in `tz` (the earlier one if it repeats,
/// the first valid one after it if it is skipped).
fn local_instant(mut t: chrono::NaiveDateTime, tz: &Tz) -> i64 {
    for _ in 0..4 {
        if let Some(dt) = tz.from_local_datetime(&t).earliest() {
            return dt.timestamp_micros();
        }
        t += chrono::Duration::minutes(30);
    }
    Utc.from_utc_datetime(&t).timestamp_micros()
}

/// The start of the bucket after the one starting at `b`.
pub(crate) fn next_bucket(b: i64, interval: Interval, tz: Option<&Tz>) -> i64 {
    const H: i64 = 3_600_000_000;
    let step = match interval {
        Interval::Minutes(_) | Interval::Hours(_) => {
            let w = interval.fixed_us().unwrap_or(H);
            // A DST change can make a local bucket shorter; step until the
            // bucket changes.
            let mut n = bucket_start(b + w, interval, tz);
            if n <= b {
                n = bucket_start(b + 2 * w, interval, tz);
            }
            return n;
        }
        Interval::Day => 26 * H,
        Interval::Week => 7 * 24 * H + 2 * H,
        Interval::Month => 32 * 24 * H,
    };
    bucket_start(b + step, interval, tz)
}

/// `tally_bucket(ts, '1h', 'Europe/Berlin')`: the bucket start of each `ts`,
/// for SQL users who want the API's buckets.
pub fn bucket_udf() -> ScalarUDF {
    let ts_type = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    create_udf(
        "tally_bucket",
        vec![ts_type.clone(), DataType::Utf8, DataType::Utf8],
        ts_type,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let text = |v: &ColumnarValue| {
                match v {
                ColumnarValue::Scalar(ScalarValue::Utf8(Some(s))) => Ok(s.clone()),
                _ => Err(datafusion::error::DataFusionError::Plan(
                    "tally_bucket(ts, interval, timezone): interval and timezone must be text literals"
                        .into(),
                )),
            }
            };
            let interval = Interval::parse(&text(&args[1])?)
                .map_err(|e| datafusion::error::DataFusionError::Plan(e.to_string()))?;
            let tz = parse_tz(&text(&args[2])?)
                .map_err(|e| datafusion::error::DataFusionError::Plan(e.to_string()))?;
            let f = |t: i64| bucket_start(t, interval, tz.as_ref());
            Ok(match &args[0] {
                ColumnarValue::Array(a) => {
                    let ts = a.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
                    let mut memo = Buckets::new(interval, tz.as_ref());
                    let out = TimestampMicrosecondArray::from_iter_values_with_nulls(
                        ts.values().iter().map(|t| memo.start(*t)),
                        ts.nulls().cloned(),
                    );
                    ColumnarValue::Array(Arc::new(out.with_timezone("UTC")))
                }
                ColumnarValue::Scalar(ScalarValue::TimestampMicrosecond(v, _)) => {
                    ColumnarValue::Scalar(ScalarValue::TimestampMicrosecond(
                        v.map(f),
                        Some("UTC".into()),
                    ))
                }
                other => {
                    return Err(datafusion::error::DataFusionError::Plan(format!(
                        "tally_bucket: unexpected argument {other:?}"
                    )))
                }
            })
        }),
    )
}

/// `None` for UTC (the fast path).
pub(crate) fn parse_tz(name: &str) -> Result<Option<Tz>> {
    if name.eq_ignore_ascii_case("utc") || name == "Z" {
        return Ok(None);
    }
    name.parse::<Tz>()
        .map(Some)
        .map_err(|_| QueryError::Invalid {
            message: format!("unknown time zone {name:?} (use an IANA name like Europe/Berlin)"),
        })
}

/// A time in a request: RFC 3339, a date, `now`, `now-15m`, `now+1d`.
pub fn parse_time(s: &str, now_us: i64, tz: Option<&Tz>) -> Result<i64> {
    let bad = || {
        QueryError::Invalid {
        message: format!(
            "time {s:?}: use RFC 3339 (2024-05-01T00:00:00Z), a date (2024-05-01), or now / now-24h / now-7d"
        ),
    }
    };
    let s = s.trim();
    if let Some(rest) = s.strip_prefix("now") {
        if rest.is_empty() {
            return Ok(now_us);
        }
        let (sign, amount) = match rest.as_bytes()[0] {
            b'-' => (-1, &rest[1..]),
            b'+' => (1, &rest[1..]),
            _ => return Err(bad()),
        };
        // Months have no fixed length: not taken here.
        return Span::parse(amount)
            .and_then(Span::micros)
            .and_then(|d| now_us.checked_add(sign * d))
            .ok_or_else(bad);
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Ok(dt.timestamp_micros());
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(local_midnight(d, tz.unwrap_or(&Tz::UTC)));
    }
    Err(bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_micros()
    }

    #[test]
    fn utc_buckets_are_floors() {
        let t = us("2024-03-05T13:47:12Z");
        assert_eq!(
            bucket_start(t, Interval::Minutes(15), None),
            us("2024-03-05T13:45:00Z")
        );
        assert_eq!(
            bucket_start(t, Interval::Hours(6), None),
            us("2024-03-05T12:00:00Z")
        );
        assert_eq!(
            bucket_start(t, Interval::Day, None),
            us("2024-03-05T00:00:00Z")
        );
        assert_eq!(
            bucket_start(t, Interval::Week, None),
            us("2024-03-04T00:00:00Z")
        );
        assert_eq!(
            bucket_start(t, Interval::Month, None),
            us("2024-03-01T00:00:00Z")
        );
        assert_eq!(bucket_start(-1, Interval::Hours(1), None), -3_600_000_000);
    }

    #[test]
    fn days_follow_local_midnight_across_dst() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        // Spring forward on 2024-03-31: that local day has 23 hours.
        let day = bucket_start(us("2024-03-31T12:00:00Z"), Interval::Day, Some(&tz));
        assert_eq!(day, us("2024-03-30T23:00:00Z"));
        let next = next_bucket(day, Interval::Day, Some(&tz));
        assert_eq!(next, us("2024-03-31T22:00:00Z"));
        // Fall back on 2024-10-27: two 02:00 local hours are two buckets.
        let a = bucket_start(us("2024-10-27T00:30:00Z"), Interval::Hours(1), Some(&tz));
        let b = bucket_start(us("2024-10-27T01:30:00Z"), Interval::Hours(1), Some(&tz));
        assert_eq!(a, us("2024-10-27T00:00:00Z"));
        assert_eq!(b, us("2024-10-27T01:00:00Z"));
        assert_eq!(next_bucket(a, Interval::Hours(1), Some(&tz)), b);
        // Half-hour offsets: hours align to local clock hours.
        let india: Tz = "Asia/Kolkata".parse().unwrap();
        assert_eq!(
            bucket_start(us("2024-01-01T10:10:00Z"), Interval::Hours(1), Some(&india)),
            us("2024-01-01T09:30:00Z")
        );
        let month = bucket_start(us("2024-03-01T00:30:00Z"), Interval::Month, Some(&tz));
        assert_eq!(month, us("2024-02-29T23:00:00Z"));
    }

    /// Buckets tile time, and the memo answers what `bucket_start` does, for every interval, in
    /// UTC and in zones with DST changes and odd offsets, for instants in
    /// time order (runs) and in random order.
    #[test]
    fn memoized_buckets_equal_direct_ones() {
        let zones: Vec<Option<Tz>> = vec![
            None,
            Some("Europe/Berlin".parse().unwrap()),
            Some("America/New_York".parse().unwrap()),
            Some("Asia/Kathmandu".parse().unwrap()),
            Some("Australia/Lord_Howe".parse().unwrap()),
        ];
        let intervals = ["1m", "15m", "1h", "3h", "12h", "1d", "1w", "1mo"];
        let mut x: u64 = 0x9E3779B97F4A7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        // 2024-01-01 .. 2025-01-01: both DST changes of every zone above.
        let (lo, span) = (us("2024-01-01T00:00:00Z"), 366 * 86_400_000_000i64);
        for tz in &zones {
            for i in intervals {
                let interval = Interval::parse(i).unwrap();
                let mut sorted: Vec<i64> = (0..3000)
                    .map(|_| lo + (next() % span as u64) as i64)
                    .collect();
                sorted.sort();
                let random: Vec<i64> = (0..500)
                    .map(|_| lo + (next() % span as u64) as i64)
                    .collect();
                // Buckets tile time: each instant lies in its own bucket,
                // and bucket starts never go back as time goes forward.
                let mut last = i64::MIN;
                for t in &sorted {
                    let b = bucket_start(*t, interval, tz.as_ref());
                    let end = next_bucket(b, interval, tz.as_ref());
                    assert!(b <= *t && *t < end, "{i} {tz:?} {t}: [{b}, {end})");
                    assert!(b >= last, "{i} {tz:?} {t}: {b} after {last}");
                    last = b;
                }
                let mut memo = Buckets::new(interval, tz.as_ref());
                for t in sorted.iter().chain(&random) {
                    assert_eq!(
                        memo.start(*t),
                        bucket_start(*t, interval, tz.as_ref()),
                        "{i} {tz:?} {t}"
                    );
                }
            }
        }
    }

    #[test]
    fn times_parse_in_every_form() {
        let now = us("2024-05-10T12:00:00Z");
        assert_eq!(parse_time("now", now, None).unwrap(), now);
        assert_eq!(
            parse_time("now-24h", now, None).unwrap(),
            us("2024-05-09T12:00:00Z")
        );
        assert_eq!(
            parse_time("now+15m", now, None).unwrap(),
            us("2024-05-10T12:15:00Z")
        );
        assert_eq!(
            parse_time("2024-05-01", now, None).unwrap(),
            us("2024-05-01T00:00:00Z")
        );
        assert_eq!(
            parse_time("2024-05-01T02:00:00+02:00", now, None).unwrap(),
            us("2024-05-01T00:00:00Z")
        );
        assert!(parse_time("yesterday", now, None).is_err());
        assert!(parse_time("now-5y", now, None).is_err());
    }

    #[test]
    fn intervals_parse_or_say_why_not() {
        assert_eq!(Interval::parse("5m").unwrap(), Interval::Minutes(5));
        assert_eq!(Interval::parse("1d").unwrap(), Interval::Day);
        assert!(Interval::parse("7m").is_err());
    }
}
