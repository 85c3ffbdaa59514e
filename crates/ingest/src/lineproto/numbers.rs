//! Numbers and booleans in line protocol as InfluxDB scans them
//! (`scanNumber`, `scanBoolean`), and the shortcuts the parser reads plain
//! timestamps and whole numbers with.

/// `-?[0-9]+` as an `i64` (what `str::parse` reads of it), or `None`
/// past its range or for anything else.
pub(super) fn parse_int(t: &[u8]) -> Option<i64> {
    let (neg, digits) = match t.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, t),
    };
    if digits.is_empty() {
        return None;
    }
    let mut n: i64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        let d = i64::from(c - b'0');
        n = n.checked_mul(10)?;
        n = if neg {
            n.checked_sub(d)?
        } else {
            n.checked_add(d)?
        };
    }
    Some(n)
}

/// A float field written as up to 15 plain digits (`123`): its value
/// without the general float parser, exact (below 2^53) and equal to what
/// `f64::from_str` reads. Anything else (a sign, a point, an exponent) is
/// `None`.
pub(super) fn small_whole_number(t: &[u8]) -> Option<f64> {
    if t.is_empty() || t.len() > 15 || !t.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(t.iter().fold(0u64, |n, &c| n * 10 + u64::from(c - b'0')) as f64)
}

/// InfluxDB's `scanNumber`: where a number starting at `i` ends, or why it
/// is not one.
pub(super) fn scan_number(s: &[u8], mut i: usize) -> std::result::Result<usize, String> {
    let start = i;
    let invalid = |s: &[u8], end: usize| {
        let end = end.min(s.len());
        let stop = s[end..]
            .iter()
            .position(|&c| c == b',' || c == b' ')
            .map_or(s.len(), |n| end + n);
        let text = String::from_utf8_lossy(&s[start..stop]);
        let what = match text.as_bytes().last() {
            Some(b'i') => "an integer (64-bit)",
            Some(b'u') => "an unsigned integer (64-bit)",
            _ => "a number",
        };
        format!("{text:?} is not {what} (invalid number)")
    };
    if s.get(i) == Some(&b'-') {
        i += 1;
        if i == s.len() {
            return Err(invalid(s, i));
        }
    }
    let (mut decimal, mut scientific, mut is_int, mut is_uint) = (false, false, false, false);
    while i < s.len() {
        let c = s[i];
        if c == b',' || c == b' ' {
            break;
        }
        if c == b'i' && i > start && !(is_int || is_uint) {
            is_int = true;
            i += 1;
            continue;
        }
        if c == b'u' && i > start && !(is_int || is_uint) {
            is_uint = true;
            i += 1;
            continue;
        }
        if c == b'.' {
            if decimal {
                return Err(invalid(s, i));
            }
            decimal = true;
        }
        if i > start && (c == b'e' || c == b'E') {
            scientific = true;
            i += 1;
            continue;
        }
        if (c == b'+' || c == b'-') && matches!(s[i - 1], b'e' | b'E') {
            i += 1;
            continue;
        }
        if i + 2 < s.len() && (c == b'N' || c == b'n') {
            return Err(invalid(s, i));
        }
        if !(c.is_ascii_digit() || c == b'.') {
            return Err(invalid(s, i));
        }
        i += 1;
    }
    if (is_int || is_uint) && (decimal || scientific) {
        return Err(invalid(s, i));
    }
    let mut digits = i - start;
    if is_int || is_uint {
        digits -= 1;
    }
    if decimal {
        digits -= 1;
    }
    if s[start] == b'-' {
        digits -= 1;
    }
    if digits == 0 {
        return Err(invalid(s, i));
    }
    if (is_int && s[i - 1] != b'i') || (is_uint && (s[i - 1] != b'u' || s[start] == b'-')) {
        return Err(invalid(s, i));
    }
    Ok(i)
}

/// InfluxDB's `scanBoolean`: where a boolean starting at `i` ends.
pub(super) fn scan_boolean(s: &[u8], i: usize) -> std::result::Result<usize, String> {
    let end = s[i..]
        .iter()
        .position(|&c| c == b',' || c == b' ')
        .map_or(s.len(), |n| i + n);
    match &s[i..end] {
        b"t" | b"T" | b"true" | b"True" | b"TRUE" | b"f" | b"F" | b"false" | b"False"
        | b"FALSE" => Ok(end),
        other => Err(format!(
            "{:?} is not a number, string or boolean (invalid boolean)",
            String::from_utf8_lossy(other)
        )),
    }
}
