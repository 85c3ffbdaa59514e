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
//! Points are read exactly as InfluxDB 1.x and 2.x read them (checked
//! against a real InfluxDB 1.6 by the integration tests):
//! - In a measurement, tag key or tag value, a character preceded by a
//!   backslash does not end the part: `\,` and `\ ` (and in tags `\=`)
//!   are a comma, space and equals sign. A backslash is removed only
//!   before a character it escapes, so `\\ east` is a kept backslash and
//!   an escaped space: the tag value `\ east`, as InfluxDB reads it.
//! - A measurement's escapes are undone twice over, as InfluxDB's key
//!   handling does (`m\\ x` is the measurement `m x`); `\"` and `\=` are
//!   escapes in it too.
//! - In a field key, `\,`, `\"`, `\ ` and `\=`; in a string field value,
//!   `\"` and `\\`, and a string may span lines.
//! - Blank lines and lines starting with `#` are skipped.
//!
//! Where tally differs from InfluxDB 1.6, on purpose: `u` unsigned integers
//! are read (as InfluxDB 2 does); a line may end in CR LF; a field and a
//! tag of one name, or a field given twice, are refused (InfluxDB keeps
//! both, or the last); timestamps must fall between 1970 and 2200.
//!
//! A measurement that is not a stream name (`cpu load`, `disk.io`) goes to
//! a stream named by [`crate::stream_for_measurement`]'s rule.
//!
//! Parsing is all-or-nothing, like every body: the first bad point fails
//! the whole body with an error naming its line (1-based, in the body) and
//! field.

use std::borrow::Cow;

use crate::{
    stream_for_measurement, Batch, BatchBuilder, Error, Location, Result, MAX_TS_US, MIN_TS_US,
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
    /// The stream its points go to: the measurement's name, or its
    /// encoding when the name is not a stream name
    /// ([`crate::stream_for_measurement`]).
    pub stream: String,
    /// The measurement's name, as InfluxDB reads it.
    pub measurement: String,
    pub batch: Batch,
    /// The body line each row starts on, so that a later error about a row
    /// (a type conflict with the stream) can name the line.
    pub lines: Vec<usize>,
}

/// The longest line (one point) a body may hold.
pub const MAX_POINT_BYTES: usize = 1 << 20;

/// InfluxDB's limit on a point's measurement and tags, as written.
pub const MAX_KEY_BYTES: usize = 65_535;

/// Parses a line protocol body into one batch per measurement, in the
/// order measurements first appear.
pub fn parse_line_protocol(
    body: &[u8],
    precision: Precision,
    now_us: i64,
) -> Result<Vec<Measurement>> {
    parse(body, precision, now_us, true)
}

/// [`parse_line_protocol`] without the one-pass reading of plain lines:
/// every point through the full scanner. For the tests and the fuzz
/// target that check both give the same answer.
#[doc(hidden)]
pub fn parse_line_protocol_scanner_only(
    body: &[u8],
    precision: Precision,
    now_us: i64,
) -> Result<Vec<Measurement>> {
    parse(body, precision, now_us, false)
}

fn parse(
    body: &[u8],
    precision: Precision,
    now_us: i64,
    shortcut: bool,
) -> Result<Vec<Measurement>> {
    let mut out: Vec<(Measurement, BatchBuilder)> = Vec::new();
    // Checked once here, so that tokens are slices of it; a body that is
    // not UTF-8 is checked token by token, to name where.
    let text = std::str::from_utf8(body).ok();
    let mut pos = 0;
    let mut line = 1;
    let mut last = 0;
    // Each tag's key `[start, eq)` and value `[eq + 1, end)`, per point
    // (one list reused).
    let mut tags: Vec<(usize, usize, usize)> = Vec::new();
    // A plain point's fields (one list reused).
    let mut fields: Vec<(usize, usize, plain::Value)> = Vec::new();
    while pos < body.len() {
        let (end, newlines, plain) = scan_line(body, pos);
        let block = &body[pos..end];
        let at_line = line;
        line += newlines + 1;
        let block_start = pos;
        pos = end + 1;
        // A line ending in CR LF (InfluxDB refuses the CR; tally reads it
        // as the line end that Windows tools write).
        let block = block.strip_suffix(b"\r").unwrap_or(block);
        let start = skip_whitespace(block, 0);
        if start >= block.len() || block[start] == b'#' {
            continue;
        }
        let at = Location::Line(at_line);
        if block.len() > MAX_POINT_BYTES {
            return Err(syntax(
                at,
                format!(
                    "the point is longer than {MAX_POINT_BYTES} bytes (line protocol line length)"
                ),
            ));
        }
        let point = Point {
            s: block,
            text: text.and_then(|t| t.get(block_start..block_start + block.len())),
            plain,
            at,
        };
        let read = match plain && shortcut && point.text.is_some() {
            true => plain::read(block, start, precision, &mut tags, &mut fields),
            false => None,
        };
        let read = match read {
            Some(p) => Read::Plain(p),
            None => Read::Scanned(point.scan(start, &mut tags)?),
        };
        let name = point.measurement(match &read {
            Read::Plain(p) => p.measurement,
            Read::Scanned(p) => p.measurement,
        })?;
        // Points of one measurement usually come together.
        let i = match out.get(last) {
            Some((m, _)) if m.measurement == name => last,
            _ => match out.iter().position(|(m, _)| m.measurement == name) {
                Some(i) => i,
                None => {
                    let stream =
                        stream_for_measurement(&name).map_err(|message| Error::BadField {
                            at,
                            field: "measurement".into(),
                            message: format!("{name:?} cannot be a stream name: {message}"),
                        })?;
                    let m = Measurement {
                        stream,
                        measurement: name.into_owned(),
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
        b.start_row(at_line)?;
        match &read {
            Read::Plain(p) => point.fill_plain(b, p, &tags, &fields, now_us)?,
            Read::Scanned(p) => point.fill(b, p, &tags, precision, now_us)?,
        }
        m.lines.push(at_line);
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

/// Where a point's line ends (the index of its `\n`, or the body's end),
/// and how many newlines its quoted string values hold. As InfluxDB: a
/// backslash skips the byte after it; past the first space, a `"` after
/// a field's `=` opens or closes a string, in which a newline is text.
/// Also whether the line holds neither a backslash nor a quote (then no
/// part of it needs unescaping).
fn scan_line(buf: &[u8], start: usize) -> (usize, usize, bool) {
    let nl = memchr::memchr(b'\n', &buf[start..]).map_or(buf.len(), |n| start + n);
    // Most lines hold neither: the line is all up to its newline.
    if memchr::memchr2(b'\\', b'"', &buf[start..nl]).is_none() {
        return (nl, 0, true);
    }
    let (mut i, mut quoted, mut fields, mut equals, mut commas, mut newlines) =
        (start, false, false, 0usize, 0usize, 0usize);
    while i < buf.len() {
        let c = buf[i];
        if c == b'\\' {
            if buf.get(i + 1) == Some(&b'\n') {
                newlines += 1;
            }
            i += 2;
            continue;
        }
        if c == b' ' {
            fields = true;
        }
        if fields {
            if !quoted && c == b'=' {
                equals += 1;
                i += 1;
                continue;
            } else if !quoted && c == b',' {
                commas += 1;
                i += 1;
                continue;
            } else if c == b'"' && equals > commas {
                quoted = !quoted;
                i += 1;
                continue;
            }
        }
        if c == b'\n' {
            if !quoted {
                break;
            }
            newlines += 1;
        }
        i += 1;
    }
    (i.min(buf.len()), newlines, false)
}

/// Spaces, tabs and NULs, as InfluxDB skips them around a point's parts.
fn skip_whitespace(buf: &[u8], mut i: usize) -> usize {
    while i < buf.len() && matches!(buf[i], b' ' | b'\t' | 0) {
        i += 1;
    }
    i
}

/// The positions of a point's parts in its line.
struct Scanned {
    /// `[start, end)` of the measurement.
    measurement: (usize, usize),
    /// `[start, end)` of the fields.
    fields: (usize, usize),
    /// `[start, end)` of the timestamp (empty: none).
    ts: (usize, usize),
}

/// A point's parts, as the one-pass reading of a plain line or the full
/// scanner found them.
enum Read {
    Plain(plain::Plain),
    Scanned(Scanned),
}

/// One point's line.
struct Point<'a> {
    s: &'a [u8],
    /// `s`, when the body is UTF-8.
    text: Option<&'a str>,
    /// `s` holds no backslash (nor quote).
    plain: bool,
    at: Location,
}

impl Point<'_> {
    /// Where a measurement or tag value that starts at `start` ends: the
    /// first comma or space after it that no backslash precedes, and which
    /// of the two. An unescaped `=` in a tag value is refused (InfluxDB's
    /// "invalid tag format"); a line that ends first has no fields.
    fn part_end(&self, start: usize, tag_value: bool) -> Result<(usize, u8)> {
        let s = self.s;
        let mut i = start;
        loop {
            i += 1;
            if i >= s.len() {
                return Err(syntax(
                    self.at,
                    "missing fields (expected a space, then field=value)",
                ));
            }
            if escaped(s, i) {
                continue;
            }
            match s[i] {
                c @ (b',' | b' ') => return Ok((i, c)),
                b'=' if tag_value => return Err(syntax(self.at, "unescaped '='")),
                _ => {}
            }
        }
    }
}

/// A byte preceded by a backslash is escaped (InfluxDB's rule in keys:
/// `\\,` is an escaped comma, not an escaped backslash).
fn escaped(s: &[u8], i: usize) -> bool {
    i > 0 && s[i - 1] == b'\\'
}

impl<'a> Point<'a> {
    fn str(&self, start: usize, end: usize, what: &str) -> Result<Cow<'a, str>> {
        let t = match self.text {
            Some(t) => t.get(start..end),
            None => std::str::from_utf8(&self.s[start..end]).ok(),
        };
        t.map(Cow::Borrowed)
            .ok_or_else(|| syntax(self.at, format!("{what} is not UTF-8")))
    }

    /// Finds the parts of the point, refusing it as InfluxDB would.
    fn scan(&self, start: usize, tags: &mut Vec<(usize, usize, usize)>) -> Result<Scanned> {
        let s = self.s;
        let at = self.at;
        // The measurement, up to an unescaped comma (tags) or space.
        if s[start] == b',' {
            return Err(syntax(at, "missing measurement"));
        }
        let (mut i, end) = self.part_end(start, false)?;
        let tags_follow = end == b',';
        let measurement = (start, i);
        tags.clear();
        if tags_follow {
            i += 1;
            loop {
                // The tag key, up to an unescaped '='.
                let key = i;
                if i >= s.len() || matches!(s[i], b' ' | b',' | b'=') {
                    return Err(syntax(at, "missing tag key"));
                }
                loop {
                    i += 1;
                    if i >= s.len() || (matches!(s[i], b' ' | b',') && !escaped(s, i)) {
                        let k = String::from_utf8_lossy(&s[key..i.min(s.len())]).into_owned();
                        return Err(syntax(at, format!("tag {k:?} has no '=value'")));
                    }
                    if s[i] == b'=' && !escaped(s, i) {
                        break;
                    }
                }
                let eq = i;
                i += 1;
                let key_name = || String::from_utf8_lossy(&s[key..eq]).into_owned();
                // The tag value, up to an unescaped comma or space.
                if i >= s.len() || matches!(s[i], b',' | b' ') {
                    return Err(bad_field(at, &key_name(), "missing tag value"));
                }
                let (end, c) = self.part_end(i, true).map_err(|e| match e {
                    Error::Syntax { message, .. } if message.contains('=') => bad_field(
                        at,
                        &key_name(),
                        "tag value holds an unescaped '=' (invalid tag format)",
                    ),
                    other => other,
                })?;
                i = end;
                let more = c == b',';
                tags.push((key, eq, i));
                if !more {
                    break;
                }
                i += 1;
            }
            // Tags with the same key (as written) are refused.
            for (n, &(k, e, _)) in tags.iter().enumerate() {
                if tags[..n].iter().any(|&(k2, e2, _)| s[k2..e2] == s[k..e]) {
                    let name = String::from_utf8_lossy(&s[k..e]).into_owned();
                    return Err(bad_field(at, &name, "duplicate tags"));
                }
            }
        }
        if i - start > MAX_KEY_BYTES {
            return Err(syntax(
                at,
                format!("the measurement and tags are longer than {MAX_KEY_BYTES} bytes (max key length)"),
            ));
        }
        let fields = self.scan_fields(i)?;
        // The timestamp: an optional integer, then only spaces.
        let t0 = skip_whitespace(s, fields.1);
        let mut t = t0;
        while t < s.len() && !matches!(s[t], b'\n' | b' ') {
            if !(s[t].is_ascii_digit() || (t == t0 && s[t] == b'-')) {
                return Err(bad_field(
                    at,
                    "timestamp",
                    format!(
                        "{:?} is not an integer timestamp",
                        String::from_utf8_lossy(&s[t0..])
                    ),
                ));
            }
            t += 1;
        }
        if t > t0 && s[t..].iter().any(|&c| c != b' ') {
            return Err(syntax(
                at,
                format!(
                    "unexpected text after the point: {:?}",
                    String::from_utf8_lossy(&s[t..])
                ),
            ));
        }
        Ok(Scanned {
            measurement,
            fields,
            ts: (t0, t),
        })
    }

    /// The fields' span (InfluxDB's `scanFields`): keys and values checked
    /// as they are scanned; a backslash skips the byte after it.
    fn scan_fields(&self, from: usize) -> Result<(usize, usize)> {
        let s = self.s;
        let at = self.at;
        let start = skip_whitespace(s, from);
        let (mut i, mut quoted, mut equals, mut commas) = (start, false, 0usize, 0usize);
        let key_before = |i: usize| {
            let k0 = s[start..i]
                .iter()
                .rposition(|&c| c == b',')
                .map_or(start, |p| start + p + 1);
            String::from_utf8_lossy(&s[k0..i]).into_owned()
        };
        while i < s.len() {
            let c = s[i];
            if c == b'\\' && i + 1 < s.len() {
                i += 2;
                continue;
            }
            if c == b'"' && equals > commas {
                quoted = !quoted;
                i += 1;
                continue;
            }
            if c == b'=' && !quoted {
                equals += 1;
                let prev = s[i - 1];
                let prev2 = if i >= 2 { s[i - 2] } else { 0 };
                if (prev == b' ' || prev == b',') && prev2 != b'\\' {
                    return Err(syntax(at, "missing field key"));
                }
                let Some(&next) = s.get(i + 1) else {
                    return Err(bad_field(at, &key_before(i), "missing field value"));
                };
                if next == b',' || next == b' ' {
                    return Err(bad_field(at, &key_before(i), "missing field value"));
                }
                if next.is_ascii_digit() || matches!(next, b'.' | b'-' | b'N' | b'n') {
                    i = scan_number(s, i + 1).map_err(|m| bad_field(at, &key_before(i), m))?;
                    continue;
                }
                if next != b'"' {
                    i = scan_boolean(s, i + 1).map_err(|m| bad_field(at, &key_before(i), m))?;
                    continue;
                }
            }
            if c == b',' && !quoted {
                commas += 1;
            }
            if c == b' ' && !quoted {
                break;
            }
            i += 1;
        }
        if quoted {
            return Err(syntax(
                at,
                "unbalanced quotes (a string value has no closing quote)",
            ));
        }
        if i == start {
            return Err(syntax(at, "missing fields (expected field=value)"));
        }
        if equals == 0 || commas != equals - 1 {
            return Err(syntax(
                at,
                "invalid field format: a field has no '=value' (expected field=value[,field=value...])",
            ));
        }
        Ok((start, i))
    }

    /// The measurement's name as InfluxDB stores it: its text unescaped
    /// twice over (`\,`, `\"`, `\ ` and `\=` each time), which is what
    /// InfluxDB's key handling makes of it.
    fn measurement(&self, (a, b): (usize, usize)) -> Result<Cow<'a, str>> {
        let raw = &self.s[a..b];
        if self.plain || !raw.contains(&b'\\') {
            return self.str(a, b, "measurement");
        }
        let once = unescape(raw, b",\" =");
        let twice = unescape(&once, b",\" =");
        String::from_utf8(twice)
            .map(Cow::Owned)
            .map_err(|_| syntax(self.at, "measurement is not UTF-8"))
    }

    /// Puts the point's tags, fields and time into the row.
    fn fill(
        &self,
        b: &mut BatchBuilder,
        p: &Scanned,
        tags: &[(usize, usize, usize)],
        precision: Precision,
        now_us: i64,
    ) -> Result<()> {
        let s = self.s;
        let at = self.at;
        for &(k, eq, end) in tags {
            let key = self.unescaped(k, eq, b", =", "tag key")?;
            let value = self.unescaped(eq + 1, end, b", =", "tag value")?;
            b.push_str(&key, &value)?;
        }
        // Each field: its key up to an '=' not preceded by a backslash,
        // its value up to a comma outside quotes.
        let (f0, f1) = p.fields;
        let fields = &s[f0..f1];
        let mut i = 0;
        while i < fields.len() {
            let mut eq = i;
            while eq < fields.len() && !(fields[eq] == b'=' && !(eq > 0 && fields[eq - 1] == b'\\'))
            {
                eq += 1;
            }
            let key = self.unescaped(f0 + i, f0 + eq, b",\" =", "field key")?;
            let v0 = (eq + 1).min(fields.len());
            let mut v1 = v0;
            let mut quoted = false;
            while v1 < fields.len() {
                let c = fields[v1];
                if c == b'\\' && matches!(fields.get(v1 + 1), Some(b'"' | b'\\')) {
                    v1 += 2;
                    continue;
                }
                if c == b'"' {
                    quoted = !quoted;
                } else if c == b',' && !quoted {
                    break;
                }
                v1 += 1;
            }
            let value = &fields[v0..v1.min(fields.len())];
            i = v1 + 1;
            if key.is_empty() {
                // InfluxDB skips a field whose key unescapes to nothing.
                continue;
            }
            self.field_value(b, &key, f0 + v0, value)?;
        }
        let (t0, t1) = p.ts;
        let ts = if t1 == t0 {
            now_us
        } else {
            let t = parse_int(&s[t0..t1]).ok_or_else(|| {
                bad_field(
                    at,
                    "timestamp",
                    format!(
                        "{:?} is not a 64-bit integer timestamp",
                        String::from_utf8_lossy(&s[t0..t1])
                    ),
                )
            })?;
            precision.to_us(t).ok_or_else(|| {
                bad_field(
                    at,
                    "timestamp",
                    format!("{t} ({precision:?}) is outside the range tally keeps (1970 to 2200)"),
                )
            })?
        };
        b.finish_row(ts);
        Ok(())
    }

    /// Puts a plain point's tags, fields and time into the row, as
    /// [`Point::fill`] would.
    fn fill_plain(
        &self,
        b: &mut BatchBuilder,
        p: &plain::Plain,
        tags: &[(usize, usize, usize)],
        fields: &[(usize, usize, plain::Value)],
        now_us: i64,
    ) -> Result<()> {
        for &(k, eq, end) in tags {
            let key = self.str(k, eq, "tag key")?;
            let value = self.str(eq + 1, end, "tag value")?;
            b.push_str(&key, &value)?;
        }
        for &(k, eq, value) in fields {
            let key = self.str(k, eq, "field key")?;
            match value {
                plain::Value::Num(n) => b.push_num(&key, n)?,
                plain::Value::Bool(t) => b.push_str(&key, if t { "true" } else { "false" })?,
            }
        }
        b.finish_row(p.ts.unwrap_or(now_us));
        Ok(())
    }

    /// `s[start..end]` with a backslash before any of `codes` removed.
    fn unescaped(
        &self,
        start: usize,
        end: usize,
        codes: &[u8],
        what: &str,
    ) -> Result<Cow<'a, str>> {
        let raw = &self.s[start..end];
        if self.plain || !raw.contains(&b'\\') {
            return self.str(start, end, what);
        }
        String::from_utf8(unescape(raw, codes))
            .map(Cow::Owned)
            .map_err(|_| syntax(self.at, format!("{what} is not UTF-8")))
    }

    fn field_value(&self, b: &mut BatchBuilder, key: &str, start: usize, v: &[u8]) -> Result<()> {
        let at = self.at;
        let Some(&first) = v.first() else {
            return Err(bad_field(at, key, "missing field value"));
        };
        if first == b'"' {
            // The text between the first and last byte, with `\\` and `\"`
            // unescaped.
            let inner = &v[1..v.len().max(2) - 1];
            let mut out = Vec::with_capacity(inner.len());
            let mut i = 0;
            while i < inner.len() {
                if inner[i] == b'\\' && matches!(inner.get(i + 1), Some(b'\\' | b'"')) {
                    i += 1;
                }
                out.push(inner[i]);
                i += 1;
            }
            let text = String::from_utf8(out)
                .map_err(|_| bad_field(at, key, "string value is not UTF-8"))?;
            return b.push_str(key, &text);
        }
        let text = self.str(start, start + v.len(), "field value")?;
        let invalid = |what: &str| bad_field(at, key, format!("{text:?} is not {what}"));
        if b"0123456789-.nNiIu".contains(&first) {
            let value = if let Some(int) = text.strip_suffix('i') {
                int.parse::<i64>()
                    .map_err(|_| invalid("an integer (64-bit)"))? as f64
            } else if let Some(uint) = text.strip_suffix('u') {
                uint.parse::<u64>()
                    .map_err(|_| invalid("an unsigned integer (64-bit)"))? as f64
            } else if let Some(n) = small_whole_number(text.as_bytes()) {
                n
            } else {
                match text.parse::<f64>() {
                    Ok(v) if v.is_finite() => v,
                    // InfluxDB refuses it too (Go's ParseFloat range error).
                    Ok(_) => return Err(invalid("a 64-bit float (out of range)")),
                    Err(_) => return Err(invalid("a number, string or boolean")),
                }
            };
            return b.push_num(key, value);
        }
        match &*text {
            "t" | "T" | "true" | "True" | "TRUE" => b.push_str(key, "true"),
            "f" | "F" | "false" | "False" | "FALSE" => b.push_str(key, "false"),
            _ => Err(invalid("a number, string or boolean")),
        }
    }
}

/// `raw` with each backslash that precedes one of `codes` removed, left to
/// right (`\\,` is a backslash and a comma).
fn unescape(raw: &[u8], codes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' && raw.get(i + 1).is_some_and(|c| codes.contains(c)) {
            i += 1;
        }
        out.push(raw[i]);
        i += 1;
    }
    out
}

mod numbers;
mod plain;
use numbers::{parse_int, scan_boolean, scan_number, small_whole_number};

#[cfg(test)]
mod tests;
