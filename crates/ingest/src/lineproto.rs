//! InfluxDB line protocol bodies, as Telegraf and the InfluxDB clients send
//! them to `/write` and `/api/v2/write`.
//!
//! ```text
//! measurement[,tag=value...] field=value[,field=value...] [timestamp]
//! ```
//!
//! Each point becomes one event of the stream named by its measurement:
//! tags and string fields become dimensions, numeric fields (floats, `i`
//! integers, `u` unsigned) become values, booleans become the dimensions
//! `"true"` and `"false"`. The timestamp is an integer in the request's
//! [`Precision`] (nanoseconds by default) and is kept to the microsecond;
//! a point without one gets the arrival time.
//!
//! Escaping follows InfluxDB: in a measurement `\,`, `\ ` and `\\`; in tag
//! keys, tag values and field keys also `\=`; in a string field value `\"`
//! and `\\`, and a string value may span lines. Any other backslash is kept
//! as it is (`c\d` is `c\d`, `c\\d` is also `c\d`). Blank lines and lines starting with `#` are skipped.
//!
//! Parsing is all-or-nothing, like every body: the first bad point fails
//! the whole body with an error naming its line (1-based, in the body) and
//! field.

use std::borrow::Cow;

use crate::{
    validate_public_stream_name, Batch, BatchBuilder, Error, Location, Result, MAX_TS_US, MIN_TS_US,
};

const FORMAT: &str = "line protocol";

/// The unit of line protocol timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    Nanoseconds,
    Microseconds,
    Milliseconds,
    Seconds,
    Minutes,
    Hours,
}

impl Precision {
    /// Parses a `precision` parameter as InfluxDB 1.x (`n`, `u`, `ms`, `s`,
    /// `m`, `h`) and 2.x (`ns`, `us`, `ms`, `s`) name it.
    pub fn parse(s: &str) -> Option<Precision> {
        Some(match s {
            "n" | "ns" => Precision::Nanoseconds,
            "u" | "us" | "µ" | "µs" => Precision::Microseconds,
            "ms" => Precision::Milliseconds,
            "s" => Precision::Seconds,
            "m" => Precision::Minutes,
            "h" => Precision::Hours,
            _ => return None,
        })
    }

    /// A timestamp in this unit as epoch microseconds (rounded down), if it
    /// is within the range tally keeps.
    fn to_us(self, t: i64) -> Option<i64> {
        let us = match self {
            Precision::Nanoseconds => Some(t.div_euclid(1000)),
            Precision::Microseconds => Some(t),
            Precision::Milliseconds => t.checked_mul(1_000),
            Precision::Seconds => t.checked_mul(1_000_000),
            Precision::Minutes => t.checked_mul(60_000_000),
            Precision::Hours => t.checked_mul(3_600_000_000),
        }?;
        (MIN_TS_US..=MAX_TS_US).contains(&us).then_some(us)
    }
}

/// One measurement's points from a body.
#[derive(Debug)]
pub struct Measurement {
    /// The measurement's name: the stream its points go to.
    pub stream: String,
    pub batch: Batch,
    /// The body line each row starts on, so that a later error about a row
    /// (a type conflict with the stream) can name the line.
    pub lines: Vec<usize>,
}

/// Parses a line protocol body into one batch per measurement, in the
/// order measurements first appear.
pub fn parse_line_protocol(
    body: &[u8],
    precision: Precision,
    now_us: i64,
) -> Result<Vec<Measurement>> {
    let mut out: Vec<(Measurement, BatchBuilder)> = Vec::new();
    let mut p = Parser {
        s: body,
        // Checked once here, so that tokens are slices of it; a body that
        // is not UTF-8 is checked token by token, to name where.
        text: std::str::from_utf8(body).ok(),
        pos: 0,
        line: 1,
    };
    let mut last = 0;
    while let Some(line) = p.next_point()? {
        let at = Location::Line(line);
        let name = p.key(Part::Measurement, at)?;
        // Points of one measurement usually come together.
        let i = match out.get(last) {
            Some((m, _)) if m.stream == name => last,
            _ => match out.iter().position(|(m, _)| m.stream == name) {
                Some(i) => i,
                None => {
                    if name.is_empty() {
                        return Err(syntax(at, "missing measurement"));
                    }
                    validate_public_stream_name(&name).map_err(|message| Error::BadField {
                        at,
                        field: "measurement".into(),
                        message: format!("{name:?} cannot be a stream name: {message}"),
                    })?;
                    let m = Measurement {
                        stream: name.into_owned(),
                        batch: Batch::default(),
                        lines: Vec::new(),
                    };
                    out.push((m, BatchBuilder::new()));
                    out.len() - 1
                }
            },
        };
        last = i;
        let (m, b) = &mut out[i];
        b.start_row(line)?;
        p.point(b, at, precision, now_us)?;
        m.lines.push(line);
    }
    Ok(out
        .into_iter()
        .map(|(mut m, b)| {
            m.batch = b.finish();
            m
        })
        .collect())
}

fn syntax(at: Location, message: impl Into<String>) -> Error {
    Error::Syntax {
        at,
        format: FORMAT,
        message: message.into(),
    }
}

fn bad_field(at: Location, field: &str, message: impl Into<String>) -> Error {
    Error::BadField {
        at,
        field: field.into(),
        message: message.into(),
    }
}

/// What is being read, which decides what ends it and what can be escaped.
#[derive(Clone, Copy, PartialEq)]
enum Part {
    Measurement,
    TagKey,
    TagValue,
    FieldKey,
}

impl Part {
    const fn ends_at(self, c: u8) -> bool {
        match self {
            Part::Measurement => c == b',' || c == b' ',
            Part::TagKey | Part::FieldKey => c == b'=' || c == b',' || c == b' ',
            Part::TagValue => c == b',' || c == b' ',
        }
    }

    fn escapes(self, c: u8) -> bool {
        match self {
            Part::Measurement => matches!(c, b',' | b' ' | b'\\'),
            _ => matches!(c, b',' | b' ' | b'=' | b'\\'),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Part::Measurement => "measurement",
            Part::TagKey => "tag key",
            Part::TagValue => "tag value",
            Part::FieldKey => "field key",
        }
    }

    /// The bytes [`Parser::key`] stops at in this part: those that end it,
    /// a line end, and the backslash (which may escape the next byte).
    fn stops(self) -> &'static [bool; 256] {
        &STOPS[self as usize]
    }
}

/// [`Part::stops`] for each part, in declaration order.
static STOPS: [[bool; 256]; 4] = {
    let parts = [
        Part::Measurement,
        Part::TagKey,
        Part::TagValue,
        Part::FieldKey,
    ];
    let mut all = [[false; 256]; 4];
    let mut p = 0;
    while p < parts.len() {
        let mut c = 0;
        while c < 256 {
            let b = c as u8;
            all[p][c] = b == b'\\' || b == b'\n' || b == b'\r' || parts[p].ends_at(b);
            c += 1;
        }
        p += 1;
    }
    all
};

struct Parser<'a> {
    s: &'a [u8],
    /// `s`, when it is UTF-8.
    text: Option<&'a str>,
    pos: usize,
    /// The 1-based line `pos` is on.
    line: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    /// `s[start..end]` as text, if it is UTF-8. Tokens start and end next
    /// to ASCII separators (or the body's ends), so in a UTF-8 body they
    /// are on character boundaries and need no check of their own.
    fn str(&self, start: usize, end: usize) -> Option<&'a str> {
        match self.text {
            Some(t) => t.get(start..end),
            None => std::str::from_utf8(&self.s[start..end]).ok(),
        }
    }

    fn at_line_end(&self) -> bool {
        matches!(self.peek(), None | Some(b'\n'))
    }

    /// Moves to the start of the next point, past blank lines and
    /// comments; returns its line, or `None` at the end of the body.
    fn next_point(&mut self) -> Result<Option<usize>> {
        loop {
            match self.peek() {
                None => return Ok(None),
                Some(b'\n') => {
                    self.pos += 1;
                    self.line += 1;
                }
                Some(b' ' | b'\t' | b'\r') => self.pos += 1,
                Some(b'#') => {
                    while !self.at_line_end() {
                        self.pos += 1;
                    }
                }
                Some(_) => return Ok(Some(self.line)),
            }
        }
    }

    /// Reads a measurement, tag key, tag value or field key up to the
    /// first unescaped character that ends it (not consumed). Borrowed
    /// from the body unless it holds escapes.
    fn key(&mut self, part: Part, at: Location) -> Result<Cow<'a, str>> {
        let start = self.pos;
        let mut escaped = false;
        let stops = part.stops();
        while let Some(&c) = self.s.get(self.pos) {
            if !stops[usize::from(c)] {
                self.pos += 1;
                continue;
            }
            if c != b'\\' {
                break;
            }
            if self.s.get(self.pos + 1).is_some_and(|&n| part.escapes(n)) {
                escaped = true;
                self.pos += 2;
            } else {
                self.pos += 1;
            }
        }
        let raw = &self.s[start..self.pos];
        let not_utf8 = || syntax(at, format!("{} is not UTF-8", part.name()));
        if !escaped {
            return self
                .str(start, self.pos)
                .map(Cow::Borrowed)
                .ok_or_else(not_utf8);
        }
        let mut out = Vec::with_capacity(raw.len());
        let mut i = 0;
        while i < raw.len() {
            if raw[i] == b'\\' && raw.get(i + 1).is_some_and(|&n| part.escapes(n)) {
                i += 1;
            }
            out.push(raw[i]);
            i += 1;
        }
        String::from_utf8(out)
            .map(Cow::Owned)
            .map_err(|_| not_utf8())
    }

    fn expect(&mut self, c: u8, at: Location, what: impl FnOnce() -> String) -> Result<()> {
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(syntax(at, what()))
        }
    }

    /// Reads the rest of a point (after its measurement) into the row.
    fn point(
        &mut self,
        b: &mut BatchBuilder,
        at: Location,
        precision: Precision,
        now_us: i64,
    ) -> Result<()> {
        // Tags.
        while self.peek() == Some(b',') {
            self.pos += 1;
            let key = self.key(Part::TagKey, at)?;
            if key.is_empty() {
                return Err(syntax(at, "missing tag key"));
            }
            self.expect(b'=', at, || format!("tag {key:?} has no '=value'"))?;
            let value = self.key(Part::TagValue, at)?;
            if value.is_empty() {
                return Err(bad_field(at, &key, "missing tag value"));
            }
            b.push_str(&key, &value)?;
        }
        if self.peek() != Some(b' ') {
            return Err(syntax(
                at,
                "missing fields (expected a space, then field=value)",
            ));
        }
        self.skip_spaces();
        // Fields.
        let mut fields = 0;
        loop {
            if self.at_line_end() {
                return Err(syntax(at, "missing fields (expected field=value)"));
            }
            let key = self.key(Part::FieldKey, at)?;
            if key.is_empty() {
                return Err(syntax(at, "missing field key"));
            }
            self.expect(b'=', at, || format!("field {key:?} has no '=value'"))?;
            self.field_value(b, &key, at)?;
            fields += 1;
            match self.peek() {
                Some(b',') => self.pos += 1,
                _ => break,
            }
        }
        debug_assert!(fields > 0);
        // Timestamp.
        let ts = if self.peek() == Some(b' ') {
            self.skip_spaces();
            let start = self.pos;
            while !matches!(self.peek(), None | Some(b'\n' | b' ' | b'\t' | b'\r')) {
                self.pos += 1;
            }
            let text = self.str(start, self.pos).unwrap_or("");
            if text.is_empty() {
                now_us
            } else {
                let t: i64 = text.parse().map_err(|_| {
                    bad_field(
                        at,
                        "timestamp",
                        format!("{text:?} is not an integer timestamp"),
                    )
                })?;
                precision.to_us(t).ok_or_else(|| {
                    bad_field(
                        at,
                        "timestamp",
                        format!(
                            "{t} ({precision:?}) is outside the range tally keeps (1970 to 2200)"
                        ),
                    )
                })?
            }
        } else {
            now_us
        };
        self.skip_spaces();
        if !self.at_line_end() {
            return Err(syntax(
                at,
                format!(
                    "unexpected text after the point: {:?}",
                    String::from_utf8_lossy(&self.s[self.pos..self.line_end()])
                ),
            ));
        }
        b.finish_row(ts);
        Ok(())
    }

    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r')) {
            self.pos += 1;
        }
    }

    fn line_end(&self) -> usize {
        self.s[self.pos..]
            .iter()
            .position(|&c| c == b'\n')
            .map_or(self.s.len(), |n| self.pos + n)
    }

    fn field_value(&mut self, b: &mut BatchBuilder, key: &str, at: Location) -> Result<()> {
        if self.peek() == Some(b'"') {
            self.pos += 1;
            let mut out = Vec::new();
            loop {
                match self.peek() {
                    None => return Err(bad_field(at, key, "string value has no closing quote")),
                    Some(b'"') => {
                        self.pos += 1;
                        break;
                    }
                    Some(b'\\') if matches!(self.s.get(self.pos + 1), Some(b'"' | b'\\')) => {
                        out.push(self.s[self.pos + 1]);
                        self.pos += 2;
                    }
                    Some(c) => {
                        if c == b'\n' {
                            self.line += 1;
                        }
                        out.push(c);
                        self.pos += 1;
                    }
                }
            }
            let s = String::from_utf8(out)
                .map_err(|_| bad_field(at, key, "string value is not UTF-8"))?;
            return b.push_str(key, &s);
        }
        let start = self.pos;
        while !matches!(
            self.peek(),
            None | Some(b',' | b' ' | b'\n' | b'\t' | b'\r')
        ) {
            self.pos += 1;
        }
        let text = self.str(start, self.pos).unwrap_or("\u{fffd}");
        if text.is_empty() {
            return Err(bad_field(at, key, "missing field value"));
        }
        let invalid = |what: &str| bad_field(at, key, format!("{text:?} is not {what}"));
        match text {
            "t" | "T" | "true" | "True" | "TRUE" => return b.push_str(key, "true"),
            "f" | "F" | "false" | "False" | "FALSE" => return b.push_str(key, "false"),
            _ => {}
        }
        let value = if let Some(int) = text.strip_suffix('i') {
            int.parse::<i64>()
                .map_err(|_| invalid("an integer (64-bit)"))? as f64
        } else if let Some(uint) = text.strip_suffix('u') {
            uint.parse::<u64>()
                .map_err(|_| invalid("an unsigned integer (64-bit)"))? as f64
        } else {
            // Rust also reads "inf", "NaN" and a leading '+': line
            // protocol has none of them.
            let plain = text
                .bytes()
                .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'-' | b'e' | b'E' | b'+'))
                && !text.starts_with('+');
            match text.parse::<f64>() {
                Ok(v) if plain && v.is_finite() => v,
                _ => return Err(invalid("a number, string or boolean")),
            }
        };
        b.push_num(key, value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ColumnData;

    const NOW: i64 = 1_700_000_000_000_000;

    fn parse(body: &str) -> Result<Vec<Measurement>> {
        parse_line_protocol(body.as_bytes(), Precision::Nanoseconds, NOW)
    }

    fn dim(m: &Measurement, field: &str, row: usize) -> Option<String> {
        match &m.batch.column(field)?.data {
            ColumnData::Dim(c) => c.get(row).map(str::to_string),
            ColumnData::Value(_) => panic!("{field} is a value"),
        }
    }

    fn num(m: &Measurement, field: &str, row: usize) -> Option<f64> {
        match &m.batch.column(field)?.data {
            ColumnData::Value(c) => c.get(row),
            ColumnData::Dim(_) => panic!("{field} is a dimension"),
        }
    }

    #[test]
    fn a_point_with_every_kind_of_field() {
        let ms = parse(
            "cpu,host=a,region=eu-west usage=0.5,count=3i,big=18446744073709551615u,ok=t,bad=FALSE,note=\"hi there\" 1700000000123456789\n",
        )
        .unwrap();
        assert_eq!(ms.len(), 1);
        let m = &ms[0];
        assert_eq!(m.stream, "cpu");
        assert_eq!(m.batch.ts, vec![1_700_000_000_123_456]);
        assert_eq!(dim(m, "host", 0).as_deref(), Some("a"));
        assert_eq!(dim(m, "region", 0).as_deref(), Some("eu-west"));
        assert_eq!(num(m, "usage", 0), Some(0.5));
        assert_eq!(num(m, "count", 0), Some(3.0));
        assert_eq!(num(m, "big", 0), Some(u64::MAX as f64));
        assert_eq!(dim(m, "ok", 0).as_deref(), Some("true"));
        assert_eq!(dim(m, "bad", 0).as_deref(), Some("false"));
        assert_eq!(dim(m, "note", 0).as_deref(), Some("hi there"));
        assert_eq!(m.lines, vec![1]);
    }

    #[test]
    fn escapes_as_influxdb_defines_them() {
        let body = concat!(
            r#"my\ measure\,x,tag\ key\,\=k=tag\ value\,\=v field\ key\,\=f="a \"quoted\" \\ string",eq=1 1"#,
            "\n",
            // '=' needs no escape in a measurement; other backslashes stay.
            r#"a=b,t=c\d f=1 2"#,
        );
        let ms = parse_line_protocol(body.as_bytes(), Precision::Nanoseconds, NOW);
        // "my measure,x" is not a stream name: the measurement is refused
        // by name, which proves it was unescaped whole.
        let e = ms.unwrap_err();
        assert!(e.to_string().contains("\"my measure,x\""), "{e}");

        let body = concat!(
            r#"m,tag\ key\,\=k=tag\ value\,\=v field\ key\,\=f="a \"quoted\" \\ string",eq=1 1000"#,
            "\n",
            r#"m,t=c\d f=1 2000"#,
            "\n",
            // A doubled backslash is one: a value may end in a backslash.
            r#"m2,t=c\\d\\,u=\\ f=1 3000"#,
        );
        let ms = parse(body).unwrap();
        let m = &ms[0];
        assert_eq!(dim(m, "tag key,=k", 0).as_deref(), Some("tag value,=v"));
        assert_eq!(
            dim(m, "field key,=f", 0).as_deref(),
            Some(r#"a "quoted" \ string"#)
        );
        assert_eq!(dim(m, "t", 1).as_deref(), Some(r"c\d"));
        assert_eq!(ms[1].stream, "m2");
        assert_eq!(dim(&ms[1], "t", 0).as_deref(), Some(r"c\d\"));
        assert_eq!(dim(&ms[1], "u", 0).as_deref(), Some(r"\"));
        assert_eq!(m.batch.ts, vec![1, 2]);
    }

    #[test]
    fn a_string_value_may_span_lines_and_hold_separators() {
        let ms = parse("log msg=\"one, two=2\nthree\" 5000\nlog msg=\"x\" 6000\n").unwrap();
        let m = &ms[0];
        assert_eq!(dim(m, "msg", 0).as_deref(), Some("one, two=2\nthree"));
        // The second point starts on body line 3.
        assert_eq!(m.lines, vec![1, 3]);
        let e = parse("log msg=\"a\nb\" 1\nlog msg=oops 2\n").unwrap_err();
        assert_eq!(e.location(), Some(Location::Line(3)));
    }

    #[test]
    fn precision_scales_timestamps() {
        let cases = [
            (
                Precision::Nanoseconds,
                1_700_000_000_000_000_999i64,
                1_700_000_000_000_000i64,
            ),
            (
                Precision::Microseconds,
                1_700_000_000_000_001,
                1_700_000_000_000_001,
            ),
            (
                Precision::Milliseconds,
                1_700_000_000_001,
                1_700_000_000_001_000,
            ),
            (Precision::Seconds, 1_700_000_000, 1_700_000_000_000_000),
            (Precision::Minutes, 28_333_333, 1_699_999_980_000_000),
            (Precision::Hours, 472_222, 1_699_999_200_000_000),
        ];
        for (p, t, us) in cases {
            let body = format!("m v=1 {t}");
            let ms = parse_line_protocol(body.as_bytes(), p, NOW).unwrap();
            assert_eq!(ms[0].batch.ts, vec![us], "{p:?}");
        }
        for (name, p) in [
            ("n", Precision::Nanoseconds),
            ("ns", Precision::Nanoseconds),
            ("u", Precision::Microseconds),
            ("us", Precision::Microseconds),
            ("ms", Precision::Milliseconds),
            ("s", Precision::Seconds),
            ("m", Precision::Minutes),
            ("h", Precision::Hours),
        ] {
            assert_eq!(Precision::parse(name), Some(p));
        }
        assert_eq!(Precision::parse("d"), None);
        // Out of tally's range, or of i64 once scaled.
        for (p, t) in [
            (Precision::Seconds, -1i64),
            (Precision::Hours, i64::MAX / 2),
            (Precision::Seconds, 9_999_999_999),
        ] {
            let body = format!("m v=1 {t}");
            let e = parse_line_protocol(body.as_bytes(), p, NOW).unwrap_err();
            assert_eq!(e.field(), Some("timestamp"), "{e}");
        }
    }

    #[test]
    fn no_timestamp_means_now_and_comments_and_blank_lines_are_skipped() {
        let ms = parse("# a comment\n\n  cpu v=1\r\n\ncpu v=2   \n# end").unwrap();
        assert_eq!(ms[0].batch.ts, vec![NOW, NOW]);
        assert_eq!(ms[0].lines, vec![3, 5]);
    }

    #[test]
    fn measurements_go_to_their_own_batches_in_order() {
        let ms = parse("mem used=1 1000\ncpu v=1 2000\nmem used=2 3000\n").unwrap();
        let names: Vec<_> = ms.iter().map(|m| m.stream.as_str()).collect();
        assert_eq!(names, ["mem", "cpu"]);
        assert_eq!(ms[0].batch.ts, vec![1, 3]);
        assert_eq!(ms[0].lines, vec![1, 3]);
        assert_eq!(ms[1].lines, vec![2]);
    }

    #[test]
    fn errors_name_the_line_and_field() {
        let cases: &[(&str, usize, Option<&str>, &str)] = &[
            ("m v=1\nm\n", 2, None, "missing fields"),
            ("m v=1\nm \n", 2, None, "missing fields"),
            ("m,t v=1", 1, None, "no '=value'"),
            ("m,t= v=1", 1, Some("t"), "missing tag value"),
            ("m,=x v=1", 1, None, "missing tag key"),
            ("m v", 1, None, "no '=value'"),
            ("m v=", 1, Some("v"), "missing field value"),
            ("m =1", 1, None, "missing field key"),
            ("m v=1x", 1, Some("v"), "not a number"),
            ("m v=inf", 1, Some("v"), "not a number"),
            ("m v=NaN", 1, Some("v"), "not a number"),
            ("m v=+1", 1, Some("v"), "not a number"),
            ("m v=1.5i", 1, Some("v"), "integer"),
            ("m v=-1u", 1, Some("v"), "unsigned"),
            ("m v=\"open", 1, Some("v"), "closing quote"),
            ("m v=1 12x", 1, Some("timestamp"), "integer timestamp"),
            ("m v=1 1 extra", 1, None, "unexpected text"),
            ("m v=1,v=2", 1, Some("v"), "twice"),
            ("m,v=a v=\"b\"", 1, Some("v"), "twice"),
            ("m,v=a v=2", 1, Some("v"), "type conflict"),
            ("m ts=2", 1, Some("ts"), "reserved"),
            ("m v=1\nm v=\"s\"", 2, Some("v"), "type conflict"),
            ("9m v=1", 1, Some("measurement"), "stream name"),
            (",t=1 v=1", 1, None, "missing measurement"),
        ];
        for (body, line, field, msg) in cases {
            let e = parse(body).unwrap_err();
            assert_eq!(e.location(), Some(Location::Line(*line)), "{body:?}: {e}");
            assert_eq!(e.field(), *field, "{body:?}: {e}");
            assert!(e.to_string().contains(msg), "{body:?}: {e}");
        }
    }

    #[test]
    fn a_body_that_is_not_utf8_is_refused_at_its_line_and_part() {
        let good = "m,city=Tromsø v=1 1\n".as_bytes();
        let body = [good, b"m,city=T\xffr v=1 2\n"].concat();
        let e = parse_line_protocol(&body, Precision::Seconds, NOW).unwrap_err();
        assert_eq!(e.location(), Some(Location::Line(2)), "{e}");
        assert!(e.to_string().contains("tag value is not UTF-8"), "{e}");
        // Non-ASCII text in a UTF-8 body is read as it is.
        let ok = parse_line_protocol(good, Precision::Seconds, NOW).unwrap();
        assert_eq!(dim(&ok[0], "city", 0).as_deref(), Some("Tromsø"));
    }

    #[test]
    fn an_empty_body_has_no_points() {
        assert!(parse("").unwrap().is_empty());
        assert!(parse("\n# only a comment\n").unwrap().is_empty());
    }

    fn escape_key(s: &str) -> String {
        let mut out = String::new();
        for c in s.chars() {
            if matches!(c, '\\' | ',' | '=' | ' ') {
                out.push('\\');
            }
            out.push(c);
        }
        out
    }

    fn escape_string(s: &str) -> String {
        s.replace('\\', r"\\").replace('"', "\\\"")
    }

    proptest::proptest! {
        /// Whatever a client escapes, as InfluxDB's clients escape it,
        /// parses back to what it wrote.
        #[test]
        fn escaped_values_parse_back(
            tag_key in "tag[a-z ,=\\\\\"]{0,8}",
            tag_value in "[a-zé ,=\\\\\"#]{1,12}",
            field_key in "[A-Z ,=\\\\\"]{1,8}",
            text in "[a-z ,=\\\\\"\n#]{0,16}",
            x in -1e12f64..1e12,
            n in proptest::num::i64::ANY,
            t in 0i64..4_000_000_000_000_000_000,
        ) {
            let body = format!(
                "m,{}={} {}=\"{}\",x={x:?},n={n}i {t}\n",
                escape_key(&tag_key),
                escape_key(&tag_value),
                escape_key(&field_key),
                escape_string(&text),
            );
            let ms = parse(&body).unwrap();
            let m = &ms[0];
            proptest::prop_assert_eq!(dim(m, &tag_key, 0), Some(tag_value));
            proptest::prop_assert_eq!(dim(m, &field_key, 0), Some(text));
            proptest::prop_assert_eq!(num(m, "x", 0), Some(x));
            proptest::prop_assert_eq!(num(m, "n", 0), Some(n as f64));
            proptest::prop_assert_eq!(m.batch.ts.clone(), vec![t / 1000]);
        }
    }
}
