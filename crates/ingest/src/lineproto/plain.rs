//! The common point, read in one pass: a line with no backslash and no
//! quote (so nothing to unescape and no string values), which is what
//! Telegraf and the InfluxDB clients write almost always.
//!
//! [`read`] accepts only what the full scanner (`Point::scan` and
//! `Point::fill`) would read the same way, and gives up on everything
//! else, errors included: the full scanner then reads the line again and
//! names the problem as InfluxDB would. The fuzz target `line_protocol`
//! and the tests check that both paths give the same answer on any body.

use super::numbers::{parse_int, scan_boolean, scan_number, small_whole_number};
use super::{skip_whitespace, Precision, MAX_KEY_BYTES};

/// A field's value in a plain line (which has no string values).
#[derive(Debug, Clone, Copy)]
pub(super) enum Value {
    Num(f64),
    Bool(bool),
}

/// A plain point's measurement and time; its tags and fields are in the
/// lists [`read`] filled.
pub(super) struct Plain {
    /// `[start, end)` of the measurement.
    pub measurement: (usize, usize),
    /// The time in µs, if the point has one.
    pub ts: Option<i64>,
}

/// Reads the point that starts at `start` of the plain line `s`: each
/// tag's key `[start, eq)` and value `[eq + 1, end)` into `tags`, each
/// field's key `[start, eq)` and value into `fields`. `None` when the full
/// scanner must judge the line.
pub(super) fn read(
    s: &[u8],
    start: usize,
    precision: Precision,
    tags: &mut Vec<(usize, usize, usize)>,
    fields: &mut Vec<(usize, usize, Value)>,
) -> Option<Plain> {
    let n = s.len();
    // The measurement, up to a comma (tags) or space; its first byte is
    // never whitespace (skipped) and may not be a comma.
    if s[start] == b',' {
        return None;
    }
    let mut i = start + 1;
    while i < n && !matches!(s[i], b',' | b' ') {
        i += 1;
    }
    if i >= n {
        return None;
    }
    let measurement = (start, i);
    tags.clear();
    if s[i] == b',' {
        loop {
            i += 1;
            let key = i;
            let eq = key_end(s, key)?;
            i = eq + 1;
            let value = i;
            while i < n && !matches!(s[i], b',' | b' ' | b'=') {
                i += 1;
            }
            if i == value || i >= n || s[i] == b'=' {
                return None;
            }
            if tags.iter().any(|&(k, e, _)| s[k..e] == s[key..eq]) {
                return None;
            }
            tags.push((key, eq, i));
            if s[i] == b' ' {
                break;
            }
        }
    }
    if i - start > MAX_KEY_BYTES {
        return None;
    }
    // The fields: key=value, separated by commas, up to a space.
    i = skip_whitespace(s, i);
    fields.clear();
    loop {
        let key = i;
        let eq = key_end(s, key)?;
        i = eq + 1;
        let first = *s.get(i)?;
        let (value, end) = if first.is_ascii_digit() || matches!(first, b'-' | b'.') {
            let end = scan_number(s, i).ok()?;
            (Value::Num(number(&s[i..end])?), end)
        } else if matches!(first, b'N' | b'n') {
            return None;
        } else {
            let end = scan_boolean(s, i).ok()?;
            (Value::Bool(matches!(first, b't' | b'T')), end)
        };
        fields.push((key, eq, value));
        i = end;
        if i >= n || s[i] == b' ' {
            break;
        }
        i += 1;
    }
    // The time: an optional integer, then only spaces.
    let t0 = skip_whitespace(s, i);
    let mut t = t0;
    while t < n && s[t] != b' ' {
        if !(s[t].is_ascii_digit() || (t == t0 && s[t] == b'-')) {
            return None;
        }
        t += 1;
    }
    if s[t..].iter().any(|&c| c != b' ') {
        return None;
    }
    let ts = if t == t0 {
        None
    } else {
        Some(precision.to_us(parse_int(&s[t0..t])?)?)
    };
    Some(Plain { measurement, ts })
}

/// Where a tag or field key starting at `key` ends: its `=`, if the key
/// is not empty and no comma, space or line end comes first.
fn key_end(s: &[u8], key: usize) -> Option<usize> {
    let eq = key
        + s[key..]
            .iter()
            .position(|&c| matches!(c, b'=' | b',' | b' '))?;
    (eq > key && s[eq] == b'=').then_some(eq)
}

/// A number `scan_number` accepted, as the full scanner's `field_value`
/// reads it; `None` where that refuses it.
fn number(t: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(t).ok()?;
    if let Some(int) = t.strip_suffix(b"i") {
        return parse_int(int).map(|n| n as f64);
    }
    if let Some(uint) = text.strip_suffix('u') {
        return uint.parse::<u64>().ok().map(|n| n as f64);
    }
    if let Some(n) = small_whole_number(t) {
        return Some(n);
    }
    text.parse::<f64>().ok().filter(|v| v.is_finite())
}
