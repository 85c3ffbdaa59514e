//! Spans of time as the APIs write them: a whole number and a unit (`90s`,
//! `5m` or `5min`, `36h`, `30d`, `2w`, `1mo`). One reader serves every
//! place a span is written: a request's bucket width (`interval`), its
//! relative times (`now-24h`), and how long a rollup's buckets or a
//! stream's raw events are kept (`retention`); each then says which spans
//! it takes. (Settings and job schedules are durations, read by
//! `humantime`: `"1h 30m"`.)

/// A unit of a [`Span`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Unit {
    Second,
    Minute,
    Hour,
    Day,
    Week,
    /// A calendar month: no fixed length.
    Month,
}

impl Unit {
    /// Its length in µs (`None` for a month).
    pub fn micros(self) -> Option<i64> {
        Some(match self {
            Unit::Second => 1_000_000,
            Unit::Minute => 60_000_000,
            Unit::Hour => 3_600_000_000,
            Unit::Day => 86_400_000_000,
            Unit::Week => 7 * 86_400_000_000,
            Unit::Month => return None,
        })
    }
}

/// `n` units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    pub n: i64,
    pub unit: Unit,
}

impl Span {
    /// Reads digits then a unit: `s`, `m` or `min`, `h`, `d`, `w`, `mo`.
    pub fn parse(text: &str) -> Option<Span> {
        let i = text.find(|c: char| !c.is_ascii_digit())?;
        if i == 0 {
            return None;
        }
        let n: i64 = text[..i].parse().ok()?;
        let unit = match &text[i..] {
            "s" => Unit::Second,
            "m" | "min" => Unit::Minute,
            "h" => Unit::Hour,
            "d" => Unit::Day,
            "w" => Unit::Week,
            "mo" => Unit::Month,
            _ => return None,
        };
        Some(Span { n, unit })
    }

    /// Its length in µs: `None` for months, or past i64.
    pub fn micros(self) -> Option<i64> {
        self.unit.micros()?.checked_mul(self.n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_a_number_and_a_unit() {
        let span = |n, unit| Some(Span { n, unit });
        assert_eq!(Span::parse("90s"), span(90, Unit::Second));
        assert_eq!(Span::parse("5m"), span(5, Unit::Minute));
        assert_eq!(Span::parse("5min"), span(5, Unit::Minute));
        assert_eq!(Span::parse("36h"), span(36, Unit::Hour));
        assert_eq!(Span::parse("2w"), span(2, Unit::Week));
        assert_eq!(Span::parse("1mo"), span(1, Unit::Month));
        for bad in [
            "",
            "h",
            "5",
            "+5d",
            "-5d",
            "5 d",
            "5y",
            "5dd",
            "99999999999999999999d",
        ] {
            assert_eq!(Span::parse(bad), None, "{bad:?}");
        }
        assert_eq!(
            Span::parse("36h").unwrap().micros(),
            Some(36 * 3_600_000_000)
        );
        assert_eq!(Span::parse("1mo").unwrap().micros(), None);
        assert_eq!(Span::parse("9223372036854775807w").unwrap().micros(), None);
    }
}
