//! Which field of an event holds its time, and how it is written. Every
//! stream reads `ts` (RFC 3339 text, or epoch milliseconds as a number or
//! text) unless told otherwise; log shippers name and write it their own
//! way (Fluent Bit's `date` in seconds with a fraction, Vector's
//! `timestamp` in RFC 3339, Fluentd's `time` in whole seconds), and a
//! stream can be set to read theirs.

use crate::{parse_ts_str, MAX_TS_US, MIN_TS_US};

/// How a time field is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeFormat {
    /// RFC 3339 text, or epoch milliseconds (number or text).
    #[default]
    Auto,
    /// RFC 3339 text only (`2024-05-01T10:00:00.123456Z`).
    Rfc3339,
    /// Epoch seconds, possibly with a fraction (`1714557600.123456`).
    EpochSeconds,
    EpochMillis,
    EpochMicros,
    EpochNanos,
}

impl TimeFormat {
    pub const NAMES: &'static str = "auto, rfc3339, epoch_s, epoch_ms, epoch_us or epoch_ns";

    pub fn parse(s: &str) -> Option<TimeFormat> {
        Some(match s {
            "auto" => TimeFormat::Auto,
            "rfc3339" | "iso8601" => TimeFormat::Rfc3339,
            "epoch_s" | "s" => TimeFormat::EpochSeconds,
            "epoch_ms" | "ms" => TimeFormat::EpochMillis,
            "epoch_us" | "us" => TimeFormat::EpochMicros,
            "epoch_ns" | "ns" => TimeFormat::EpochNanos,
            _ => return None,
        })
    }

    /// What a value must look like, for error messages.
    pub fn expected(self) -> &'static str {
        match self {
            TimeFormat::Auto => "RFC 3339 or epoch milliseconds between 1970 and 2200",
            TimeFormat::Rfc3339 => "RFC 3339 between 1970 and 2200",
            TimeFormat::EpochSeconds => "epoch seconds between 1970 and 2200",
            TimeFormat::EpochMillis => "epoch milliseconds between 1970 and 2200",
            TimeFormat::EpochMicros => "epoch microseconds between 1970 and 2200",
            TimeFormat::EpochNanos => "epoch nanoseconds between 1970 and 2200",
        }
    }

    /// Microseconds per unit of an epoch format.
    fn scale(self) -> Option<f64> {
        match self {
            TimeFormat::EpochSeconds => Some(1e6),
            TimeFormat::EpochMillis => Some(1e3),
            TimeFormat::EpochMicros => Some(1.0),
            TimeFormat::EpochNanos => Some(1e-3),
            TimeFormat::Auto | TimeFormat::Rfc3339 => None,
        }
    }
}

/// The field holding an event's time, and its format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeField {
    pub field: String,
    pub format: TimeFormat,
}

impl Default for TimeField {
    fn default() -> Self {
        TimeField {
            field: "ts".into(),
            format: TimeFormat::Auto,
        }
    }
}

fn in_range(us: i64) -> Option<i64> {
    (MIN_TS_US..=MAX_TS_US).contains(&us).then_some(us)
}

impl TimeField {
    /// A time given as text, in µs.
    pub fn from_text(&self, s: &str) -> Option<i64> {
        match self.format {
            TimeFormat::Auto => parse_ts_str(s),
            TimeFormat::Rfc3339 => chrono::DateTime::parse_from_rfc3339(s.trim())
                .ok()
                .and_then(|t| in_range(t.timestamp_micros())),
            _ => {
                let s = s.trim();
                match s.parse::<i64>() {
                    Ok(n) => self.from_int(n),
                    Err(_) => self.from_number(s.parse().ok()?),
                }
            }
        }
    }

    /// A time given as a JSON number, in µs.
    pub fn from_number(&self, v: f64) -> Option<i64> {
        if !v.is_finite() {
            return None;
        }
        match self.format {
            TimeFormat::Auto => crate::ts_from_ms(v),
            TimeFormat::Rfc3339 => None,
            f => {
                let us = (v * f.scale()?).round();
                (us >= MIN_TS_US as f64 && us <= MAX_TS_US as f64).then_some(us as i64)
            }
        }
    }

    /// A time given as a whole number, in µs: exact where a float would
    /// round (nanoseconds since the epoch need 61 bits).
    pub fn from_int(&self, n: i64) -> Option<i64> {
        let us = match self.format {
            TimeFormat::EpochSeconds => n.checked_mul(1_000_000)?,
            TimeFormat::EpochMillis => n.checked_mul(1_000)?,
            TimeFormat::EpochMicros => n,
            TimeFormat::EpochNanos => n.div_euclid(1_000),
            TimeFormat::Auto | TimeFormat::Rfc3339 => return self.from_number(n as f64),
        };
        in_range(us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(format: TimeFormat) -> TimeField {
        TimeField {
            field: "t".into(),
            format,
        }
    }

    #[test]
    fn every_format_reads_the_same_instant() {
        let us = 1_714_557_600_123_456i64;
        let cases: &[(TimeFormat, &str)] = &[
            (TimeFormat::Auto, "2024-05-01T10:00:00.123456Z"),
            (TimeFormat::Rfc3339, "2024-05-01T12:00:00.123456+02:00"),
            (TimeFormat::EpochSeconds, "1714557600.123456"),
            (TimeFormat::EpochMillis, "1714557600123.456"),
            (TimeFormat::EpochMicros, "1714557600123456"),
            (TimeFormat::EpochNanos, "1714557600123456789"),
        ];
        for (f, text) in cases {
            assert_eq!(field(*f).from_text(text), Some(us), "{f:?} {text}");
        }
        assert_eq!(
            field(TimeFormat::EpochSeconds).from_number(1714557600.123456),
            Some(us)
        );
        assert_eq!(
            field(TimeFormat::EpochNanos).from_int(1_714_557_600_123_456_789),
            Some(us)
        );
        assert_eq!(
            field(TimeFormat::EpochSeconds).from_int(1_714_557_600),
            Some(us - 123_456)
        );
        assert_eq!(
            field(TimeFormat::Auto).from_number(1714557600123.456),
            Some(us)
        );
    }

    #[test]
    fn wrong_formats_and_ranges_are_refused() {
        assert_eq!(field(TimeFormat::Rfc3339).from_text("1714557600"), None);
        assert_eq!(field(TimeFormat::Rfc3339).from_number(1714557600.0), None);
        assert_eq!(field(TimeFormat::EpochSeconds).from_text("yesterday"), None);
        assert_eq!(field(TimeFormat::EpochSeconds).from_int(-1), None);
        assert_eq!(field(TimeFormat::EpochSeconds).from_int(i64::MAX), None);
        // Milliseconds read as seconds land past 2200.
        assert_eq!(
            field(TimeFormat::EpochSeconds).from_int(1_714_557_600_123),
            None
        );
        assert_eq!(TimeFormat::parse("epoch_s"), Some(TimeFormat::EpochSeconds));
        assert_eq!(TimeFormat::parse("iso8601"), Some(TimeFormat::Rfc3339));
        assert_eq!(TimeFormat::parse("weeks"), None);
    }
}
