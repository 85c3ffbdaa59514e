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

/// A stream name: 1-64 characters of `[A-Za-z0-9_-]`, starting with a letter
/// or underscore.
pub fn validate_stream_name(name: &str) -> Result<(), String> {
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
    fn field_names() {
        assert!(validate_field_name("a.b c").is_ok());
        assert!(validate_field_name("").is_err());
        assert!(validate_field_name("a\nb").is_err());
    }
}
