//! JSON and NDJSON bodies, deserialized straight into a [`BatchBuilder`].
//!
//! serde_json drives a visitor that pushes each field into its column as it
//! is read, so no intermediate `serde_json::Value` tree or per-event map is
//! built. Nested objects are flattened with `.`; arrays are refused (there is
//! no column type for them); `null` means the field is absent.

use crate::{Batch, BatchBuilder, Error, Location, Result, TimeField};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// Deepest nesting of objects accepted inside one event.
const MAX_DEPTH: usize = 16;

struct State<'b> {
    b: &'b mut BatchBuilder,
    /// The field holding the event's time, and its format.
    time: &'b TimeField,
    path: String,
    ts: Option<i64>,
    /// Our own error, kept aside because serde errors are strings.
    error: Option<Error>,
}

impl State<'_> {
    fn fail<E: de::Error>(&mut self, e: Error) -> E {
        self.error = Some(e);
        E::custom("")
    }
    fn field_error(&self, message: impl Into<String>) -> Error {
        Error::BadField {
            at: self.b.location(),
            field: self.path.clone(),
            message: message.into(),
        }
    }
}

/// Parses one JSON object, or a JSON array of objects. A body of several
/// objects one after another (NDJSON sent as `application/json`) is parsed as
/// NDJSON.
pub(crate) fn parse_json(body: &[u8], now_us: i64, time: &TimeField) -> Result<Batch> {
    let first = body.iter().find(|c| !c.is_ascii_whitespace()).copied();
    let mut b = BatchBuilder::new();
    if first == Some(b'[') {
        let mut de = serde_json::Deserializer::from_slice(body);
        let mut st = State {
            b: &mut b,
            time,
            path: String::new(),
            ts: None,
            error: None,
        };
        let r = de
            .deserialize_seq(ArrayVisitor {
                st: &mut st,
                now_us,
            })
            .and_then(|()| de.end());
        if let Err(e) = r {
            return Err(st.error.take().unwrap_or_else(|| syntax(e)));
        }
        return Ok(b.finish());
    }
    b.start_row(1)?;
    let mut de = serde_json::Deserializer::from_slice(body);
    let mut st = State {
        b: &mut b,
        time,
        path: String::new(),
        ts: None,
        error: None,
    };
    match (EventSeed {
        st: &mut st,
        top: true,
    })
    .deserialize(&mut de)
    .and_then(|()| de.end())
    {
        Ok(()) => {
            let ts = st.ts.unwrap_or(now_us);
            b.finish_row(ts);
            Ok(b.finish())
        }
        Err(e) if st.error.is_none() && e.to_string().starts_with("trailing characters") => {
            parse_ndjson(body, now_us, time)
        }
        Err(e) => Err(st.error.take().unwrap_or_else(|| syntax(e))),
    }
}

/// Parses NDJSON: one object per line, blank lines skipped.
pub(crate) fn parse_ndjson(body: &[u8], now_us: i64, time: &TimeField) -> Result<Batch> {
    parse_ndjson_from(body, now_us, 1, time)
}

/// NDJSON whose first line is line `first_line` of a larger file (the
/// import reads files a chunk of lines at a time).
pub(crate) fn parse_ndjson_from(
    body: &[u8],
    now_us: i64,
    first_line: usize,
    time: &TimeField,
) -> Result<Batch> {
    let mut b = BatchBuilder::new();
    // One state for the whole body, so its path buffer is allocated once.
    let mut st = State {
        b: &mut b,
        time,
        path: String::new(),
        ts: None,
        error: None,
    };
    let mut start = 0;
    let mut lineno = first_line.saturating_sub(1);
    // memchr finds line ends with SIMD.
    while start < body.len() {
        let end = memchr::memchr(b'\n', &body[start..]).map_or(body.len(), |i| start + i);
        let line = &body[start..end];
        start = end + 1;
        lineno += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        st.b.start_row(lineno)?;
        st.ts = None;
        st.path.clear();
        let mut de = serde_json::Deserializer::from_slice(line);
        if let Err(e) = (EventSeed {
            st: &mut st,
            top: true,
        })
        .deserialize(&mut de)
        .and_then(|()| de.end())
        {
            return Err(st.error.take().unwrap_or_else(|| Error::Syntax {
                at: Location::Line(lineno),
                format: "JSON",
                message: strip_position(&e),
            }));
        }
        let ts = st.ts.unwrap_or(now_us);
        st.b.finish_row(ts);
    }
    Ok(b.finish())
}

fn syntax(e: serde_json::Error) -> Error {
    Error::Syntax {
        at: Location::Line(e.line().max(1)),
        format: "JSON",
        message: strip_position(&e),
    }
}

/// serde_json appends "at line L column C"; the line is reported separately,
/// the column is kept in the message.
fn strip_position(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => format!("{} (column {})", &s[..i], e.column()),
        None => s,
    }
}

struct ArrayVisitor<'s, 'b> {
    st: &'s mut State<'b>,
    now_us: i64,
}

impl<'de> Visitor<'de> for ArrayVisitor<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of events")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut n = 0;
        loop {
            n += 1;
            if let Err(e) = self.st.b.start_row_at(Location::Event(n)) {
                return Err(self.st.fail(e));
            }
            self.st.ts = None;
            self.st.path.clear();
            if seq
                .next_element_seed(EventSeed {
                    st: self.st,
                    top: true,
                })?
                .is_none()
            {
                return Ok(());
            }
            let ts = self.st.ts.unwrap_or(self.now_us);
            self.st.b.finish_row(ts);
        }
    }
}

/// One event: must be an object.
struct EventSeed<'s, 'b> {
    st: &'s mut State<'b>,
    top: bool,
}

impl<'de> DeserializeSeed<'de> for EventSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EventSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let top = self.top;
        while let Some(()) = map.next_key_seed(KeySeed {
            path: &mut self.st.path,
        })? {
            map.next_value_seed(FieldSeed {
                st: self.st,
                depth: 0,
                top,
            })?;
            self.st.path.clear();
        }
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(self.not_object("a boolean"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(self.not_object("a number"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(self.not_object("a number"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(self.not_object("a number"))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(self.not_object("a string"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(self.not_object("null"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(self.not_object("an array"))
    }
}

impl EventSeed<'_, '_> {
    fn not_object<E: de::Error>(self, found: &'static str) -> E {
        let at = self.st.b.location();
        self.st.fail(Error::NotAnObject { at, found })
    }
}

/// Appends a key to the current path (with a `.` after a prefix).
struct KeySeed<'p> {
    path: &'p mut String,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: de::Error>(self, k: &str) -> Result<(), E> {
        if !self.path.is_empty() {
            self.path.push('.');
        }
        self.path.push_str(k);
        Ok(())
    }
}

/// One field's value, at `st.path`.
struct FieldSeed<'s, 'b> {
    st: &'s mut State<'b>,
    depth: usize,
    top: bool,
}

impl FieldSeed<'_, '_> {
    fn is_ts(&self) -> bool {
        self.top && self.depth == 0 && self.st.path == self.st.time.field
    }
    /// Takes `ts` (read from `value`) as the event's time; an error naming
    /// the field and the format expected when it is `None`.
    fn set_ts<E: de::Error>(self, ts: Option<i64>, value: &str) -> Result<(), E> {
        match ts {
            Some(ts) => {
                self.st.ts = Some(ts);
                Ok(())
            }
            None => {
                let e = Error::BadTimestamp {
                    at: self.st.b.location(),
                    field: self.st.time.field.clone(),
                    value: value.into(),
                    expected: self.st.time.format.expected(),
                };
                Err(self.st.fail(e))
            }
        }
    }
    fn push_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        if self.is_ts() {
            let ts = self.st.time.from_text(v);
            return self.set_ts(ts, v);
        }
        let path = std::mem::take(&mut self.st.path);
        let r = self.st.b.push_str(&path, v);
        self.st.path = path;
        r.map_err(|e| self.st.fail(e))
    }
    fn push_num<E: de::Error>(self, v: f64) -> Result<(), E> {
        if self.is_ts() {
            let ts = self.st.time.from_number(v);
            return self.set_ts(ts, &v.to_string());
        }
        let path = std::mem::take(&mut self.st.path);
        let r = self.st.b.push_num(&path, v);
        self.st.path = path;
        r.map_err(|e| self.st.fail(e))
    }
}

impl<'de> DeserializeSeed<'de> for FieldSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FieldSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string, number, boolean, object or null")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.push_str(v)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        if self.is_ts() {
            return self.set_ts(None, &v.to_string());
        }
        self.push_str(if v { "true" } else { "false" })
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        if self.is_ts() {
            let ts = self.st.time.from_int(v);
            return self.set_ts(ts, &v.to_string());
        }
        self.push_num(v as f64)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        if self.is_ts() {
            let ts = i64::try_from(v).ok().and_then(|v| self.st.time.from_int(v));
            return self.set_ts(ts, &v.to_string());
        }
        self.push_num(v as f64)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.push_num(v)
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        let e = self.st.field_error(
            "arrays are not supported; send a string or flatten the values into fields",
        );
        Err(self.st.fail(e))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if self.depth >= MAX_DEPTH {
            let e = self
                .st
                .field_error(format!("objects nested deeper than {MAX_DEPTH} levels"));
            return Err(self.st.fail(e));
        }
        if let Some(existing) = self.st.b.column_type(&self.st.path) {
            let e = Error::TypeConflict {
                at: self.st.b.location(),
                field: self.st.path.clone(),
                existing,
                found: "object".into(),
            };
            return Err(self.st.fail(e));
        }
        let base = self.st.path.len();
        while let Some(()) = map.next_key_seed(KeySeed {
            path: &mut self.st.path,
        })? {
            map.next_value_seed(FieldSeed {
                st: self.st,
                depth: self.depth + 1,
                top: self.top,
            })?;
            self.st.path.truncate(base);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse, ColumnData, Format};

    fn p(body: &str, f: Format) -> Result<Batch> {
        parse(body.as_bytes(), f, 42, &|_| None)
    }

    fn with_time(body: &str, f: Format, field: &str, format: &str) -> Result<Batch> {
        let time = TimeField {
            field: field.into(),
            format: crate::TimeFormat::parse(format).unwrap(),
        };
        crate::parse_with_time(body.as_bytes(), f, 42, &|_| None, &time)
    }

    #[test]
    fn log_shippers_time_fields() {
        let us = 1_714_557_600_123_456i64;
        // Fluent Bit's http output: `json_lines` or `json` (an array), the
        // time in `date` as seconds with a fraction (json_date_format double).
        let fluent_bit = "{\"date\":1714557600.123456,\"log\":\"GET /a\",\"rtt_ms\":12}\n{\"date\":1714557601.5,\"log\":\"GET /b\"}\n";
        let b = with_time(fluent_bit, Format::Ndjson, "date", "epoch_s").unwrap();
        assert_eq!(b.ts, vec![us, 1_714_557_601_500_000]);
        assert!(
            b.column("date").is_none(),
            "the time field is the event time"
        );
        let arr = "[{\"date\":1714557600.123456,\"log\":\"x\"}]";
        assert_eq!(
            with_time(arr, Format::Json, "date", "epoch_s").unwrap().ts,
            vec![us]
        );
        // Fluent Bit's json_date_format iso8601.
        let iso = "{\"date\":\"2024-05-01T10:00:00.123456Z\",\"log\":\"x\"}";
        assert_eq!(
            with_time(iso, Format::Ndjson, "date", "rfc3339")
                .unwrap()
                .ts,
            vec![us]
        );
        // Vector's http sink (codec json, framing newline_delimited):
        // `timestamp` in RFC 3339 with nanoseconds.
        let vector = "{\"timestamp\":\"2024-05-01T10:00:00.123456789Z\",\"message\":\"x\"}";
        assert_eq!(
            with_time(vector, Format::Ndjson, "timestamp", "rfc3339")
                .unwrap()
                .ts,
            vec![us]
        );
        // Fluentd's out_http with `<inject> time_type unixtime`: whole
        // seconds; nanoseconds as an integer stay exact.
        let fluentd = "{\"time\":1714557600,\"message\":\"x\"}";
        assert_eq!(
            with_time(fluentd, Format::Ndjson, "time", "epoch_s")
                .unwrap()
                .ts,
            vec![us - 123_456]
        );
        let ns = "{\"t\":1714557600123456789}";
        assert_eq!(
            with_time(ns, Format::Ndjson, "t", "epoch_ns").unwrap().ts,
            vec![us]
        );
        // `ts` stays the name of the time column: a body may not also
        // send a field by that name.
        let e =
            with_time("{\"ts\":\"x\",\"date\":1}", Format::Json, "date", "epoch_s").unwrap_err();
        assert_eq!(e.field(), Some("ts"));
        // A value in another format names the field and the format.
        let e = with_time(
            "{\"a\":1}\n{\"date\":\"yesterday\"}",
            Format::Ndjson,
            "date",
            "epoch_s",
        )
        .unwrap_err();
        assert_eq!(e.location(), Some(Location::Line(2)));
        assert_eq!(e.field(), Some("date"));
        assert!(e.to_string().contains("expected epoch seconds"), "{e}");
        let e = with_time("{\"date\":1714557600}", Format::Json, "date", "rfc3339").unwrap_err();
        assert!(e.to_string().contains("expected RFC 3339"), "{e}");
        // CSV reads the same column.
        let csv = "date,v\n1714557600.123456,1\n";
        assert_eq!(
            with_time(csv, Format::Csv, "date", "epoch_s").unwrap().ts,
            vec![us]
        );
    }

    #[test]
    fn single_object_array_and_ndjson() {
        let one = p(r#"{"a":"x","v":1}"#, Format::Json).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one.ts, vec![42]);
        let arr = p(r#"[{"a":"x"},{"v":2,"ts":1000}]"#, Format::Json).unwrap();
        assert_eq!(arr.len(), 2);
        assert_eq!(arr.ts, vec![42, 1_000_000]);
        let nd = p(
            "{\"a\":\"x\"}\n\n{\"a\":\"y\",\"ts\":\"2024-01-01T00:00:00Z\"}\n",
            Format::Ndjson,
        )
        .unwrap();
        assert_eq!(nd.len(), 2);
        assert_eq!(nd.ts[1], 1_704_067_200_000_000);
        let nd_as_json = p("{\"a\":\"x\"}\n{\"a\":\"y\"}", Format::Json).unwrap();
        assert_eq!(nd_as_json.len(), 2);
    }

    #[test]
    fn nested_objects_flatten_and_booleans_are_dims() {
        let b = p(
            r#"{"user":{"geo":{"country":"FR"},"age":30},"ok":true,"n":null}"#,
            Format::Json,
        )
        .unwrap();
        let names: Vec<_> = b.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["user.geo.country", "user.age", "ok"]);
        let ColumnData::Dim(ok) = &b.column("ok").unwrap().data else {
            panic!()
        };
        assert_eq!(ok.get(0), Some("true"));
    }

    #[test]
    fn errors_name_line_and_field() {
        let e = p("{\"v\":1}\n{\"v\":\"x\"}\n", Format::Ndjson).unwrap_err();
        assert_eq!(e.location(), Some(Location::Line(2)));
        assert_eq!(e.field(), Some("v"));
        let e = p("{\"v\":1}\n{\"v\":\n", Format::Ndjson).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Syntax {
                    at: Location::Line(2),
                    ..
                }
            ),
            "{e:?}"
        );
        let e = p(r#"[{"a":1},{"a":[1]}]"#, Format::Json).unwrap_err();
        assert_eq!(e.location(), Some(Location::Event(2)));
        assert_eq!(e.field(), Some("a"));
        let e = p(r#"{"ts":"yesterday"}"#, Format::Json).unwrap_err();
        assert!(matches!(e, Error::BadTimestamp { .. }));
        let e = p(r#"[1]"#, Format::Json).unwrap_err();
        assert!(matches!(e, Error::NotAnObject { .. }));
        let e = p(r#"{"a":1,"a":2}"#, Format::Json).unwrap_err();
        assert_eq!(e.field(), Some("a"));
        let e = p(r#"{"a":1,"a":{"b":2}}"#, Format::Json).unwrap_err();
        assert!(matches!(e, Error::TypeConflict { .. }), "{e:?}");
    }
}
