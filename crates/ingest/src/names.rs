//! Rules for stream and field names. Stream names become directory names and
//! SQL table names, so they are kept to a safe alphabet; field names become
//! column names and only need to be printable and bounded.

pub const MAX_STREAM_NAME_LEN: usize = 64;
pub const MAX_FIELD_NAME_LEN: usize = 128;

/// Streams whose names start with this belong to tally's apps (the
/// counter's accounts and increments, say). They are written only by the
/// apps, through the engine; the public ingest, query, stream and rollup
/// APIs neither accept nor show them, and the `"*"` retention default
/// does not apply to them.
pub const INTERNAL_STREAM_PREFIX: &str = "_tally_";

/// Whether `name` is an app's internal stream.
pub fn is_internal_stream(name: &str) -> bool {
    name.starts_with(INTERNAL_STREAM_PREFIX)
}

/// A stream name a client may write or read: a valid name outside the
/// apps' reserved prefix.
pub fn validate_public_stream_name(name: &str) -> Result<(), String> {
    validate_stream_name(name)?;
    if is_internal_stream(name) {
        return Err(format!(
            "stream name {name:?} starts with {INTERNAL_STREAM_PREFIX:?}, which is reserved for tally's apps"
        ));
    }
    Ok(())
}

/// The longest encoded stream name ([`stream_for_measurement`]): three
/// bytes for each byte of a name, within a file name's 255.
pub const MAX_ENCODED_STREAM_NAME_LEN: usize = 192;

/// The byte that starts an encoded byte in a stream name made from a
/// measurement name: safe in file names, URLs and object keys, and not in
/// the stream name alphabet, so no plain name contains it.
const ENCODE_MARK: char = '+';

/// The stream an InfluxDB measurement's points go to. A measurement that
/// is a stream name is its own stream; any other name (`cpu load`,
/// `disk.io`, `foo,bar`) is encoded: each byte outside `[A-Za-z0-9_-]`,
/// and a first byte that is a digit or `-`, becomes `+` and two hex
/// digits (`cpu+20load`, `disk+2Eio`). Plain names never hold a `+`, so
/// distinct measurements always get distinct streams, and the encoding is
/// undone to show the name ([`measurement_of_stream`]). In SQL, such a
/// stream is a quoted identifier: `SELECT * FROM "disk+2Eio"` (or
/// `"disk.io"`, which tally maps to the same stream).
pub fn stream_for_measurement(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("empty measurement name".into());
    }
    let mut out = String::with_capacity(name.len());
    for (i, &c) in name.as_bytes().iter().enumerate() {
        let plain = c.is_ascii_alphanumeric() || c == b'_' || c == b'-';
        let starts_ok = i > 0 || c.is_ascii_alphabetic() || c == b'_';
        if plain && starts_ok {
            out.push(c as char);
        } else {
            out.push(ENCODE_MARK);
            out.push_str(&format!("{c:02X}"));
        }
    }
    if out.len() == name.len() {
        validate_public_stream_name(&out)?;
        return Ok(out);
    }
    if is_internal_stream(&out) {
        return validate_public_stream_name(&out).map(|()| out);
    }
    if out.len() > MAX_ENCODED_STREAM_NAME_LEN {
        return Err(format!(
            "its stream name would be {} bytes (the limit is {MAX_ENCODED_STREAM_NAME_LEN}; \
             each byte outside letters, digits, '_' and '-' takes three)",
            out.len()
        ));
    }
    Ok(out)
}

/// The measurement name a stream was made from (the stream's own name
/// unless it is encoded, see [`stream_for_measurement`]).
pub fn measurement_of_stream(stream: &str) -> std::borrow::Cow<'_, str> {
    if !stream.contains(ENCODE_MARK) {
        return std::borrow::Cow::Borrowed(stream);
    }
    match decode(stream) {
        Some(n) => std::borrow::Cow::Owned(n),
        None => std::borrow::Cow::Borrowed(stream),
    }
}

fn decode(stream: &str) -> Option<String> {
    let b = stream.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == ENCODE_MARK as u8 {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A stream name: 1-64 characters of `[A-Za-z0-9_-]`, starting with a letter
/// or underscore; or a measurement name's encoding
/// ([`stream_for_measurement`]), exactly as tally makes it.
pub fn validate_stream_name(name: &str) -> Result<(), String> {
    if name.contains(ENCODE_MARK) {
        return match decode(name) {
            Some(m) if stream_for_measurement(&m).as_deref() == Ok(name) => Ok(()),
            _ => Err(format!(
                "stream name {name:?} contains '+' but is not a measurement name's encoding \
                 ('+' and two upper-case hex digits for each byte outside letters, digits, '_' and '-')"
            )),
        };
    }
    if name.is_empty() || name.len() > MAX_STREAM_NAME_LEN {
        return Err(format!(
            "stream name must be 1 to {MAX_STREAM_NAME_LEN} characters, got {}",
            name.len()
        ));
    }
    let first = name.as_bytes()[0];
    if !(first.is_ascii_alphabetic() || first == b'_') {
        return Err(format!(
            "stream name {name:?} must start with a letter or '_'"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "stream name {name:?} contains {c:?}; allowed are letters, digits, '_' and '-'"
        ));
    }
    Ok(())
}

/// A field name: 1-128 bytes, no control characters.
pub fn validate_field_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty field name".into());
    }
    if name.len() > MAX_FIELD_NAME_LEN {
        return Err(format!("field name longer than {MAX_FIELD_NAME_LEN} bytes"));
    }
    if name.chars().any(char::is_control) {
        return Err("field name contains a control character".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names() {
        assert!(validate_stream_name("app").is_ok());
        assert!(validate_stream_name("page_view-2").is_ok());
        assert!(validate_stream_name("").is_err());
        assert!(validate_stream_name("2app").is_err());
        assert!(validate_stream_name("a/b").is_err());
        assert!(validate_stream_name("..").is_err());
        assert!(validate_stream_name(&"a".repeat(65)).is_err());
        assert!(validate_stream_name("_tally_counter").is_ok());
        assert!(validate_public_stream_name("_tally_counter").is_err());
        assert!(validate_public_stream_name("_tallyx").is_ok());
    }

    #[test]
    fn measurements_map_to_distinct_streams_and_back() {
        let cases = [
            ("cpu", "cpu"),
            ("cpu load", "cpu+20load"),
            ("disk.io", "disk+2Eio"),
            ("foo,bar", "foo+2Cbar"),
            ("a=b", "a+3Db"),
            ("\"q\"", "+22q+22"),
            ("9m", "+39m"),
            ("-x", "+2Dx"),
            ("a+b", "a+2Bb"),
            ("é", "+C3+A9"),
        ];
        for (m, stream) in cases {
            assert_eq!(stream_for_measurement(m).as_deref(), Ok(stream), "{m}");
            assert_eq!(measurement_of_stream(stream), m);
            assert!(validate_stream_name(stream).is_ok(), "{stream}");
        }
        // Not an encoding tally makes: refused as a stream name.
        for bad in ["a+41", "a+2c", "a+", "a+zz", "+61"] {
            assert!(validate_stream_name(bad).is_err(), "{bad}");
        }
        assert!(stream_for_measurement("").is_err());
        assert!(stream_for_measurement("_tally_x").is_err());
        assert!(stream_for_measurement(&".".repeat(65)).is_err());
    }

    proptest::proptest! {
        #[test]
        fn distinct_measurements_get_distinct_streams(a in "\\PC{1,12}", b in "\\PC{1,12}") {
            if let (Ok(sa), Ok(sb)) = (stream_for_measurement(&a), stream_for_measurement(&b)) {
                proptest::prop_assert_eq!(a == b, sa == sb);
                proptest::prop_assert_eq!(measurement_of_stream(&sa), a.as_str());
                proptest::prop_assert!(validate_stream_name(&sa).is_ok());
            }
        }
    }

    #[test]
    fn field_names() {
        assert!(validate_field_name("a.b c").is_ok());
        assert!(validate_field_name("").is_err());
        assert!(validate_field_name("a\nb").is_err());
    }
}
