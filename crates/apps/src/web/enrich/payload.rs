//! The tracker's payload, read as Plausible's trackers send it (long and
//! short field names, props as an object or as JSON text), within the
//! limits Plausible keeps.

use serde_json::Value;

/// Longest event name accepted (Plausible's limit).
pub const MAX_NAME: usize = 120;
/// Longest URL or referrer accepted.
pub const MAX_URL: usize = 2000;
/// Most custom properties kept per event.
pub const MAX_PROPS: usize = 30;
/// Longest property value kept.
pub const MAX_PROP_VALUE: usize = 2000;
/// Longest property name kept (it becomes the field `prop.<name>`).
pub const MAX_PROP_NAME: usize = tally_ingest::MAX_FIELD_NAME_LEN - 5;

/// A tracker's event, as sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Payload {
    pub name: String,
    pub url: url::Url,
    /// One or more sites (`d` may list several, comma-separated).
    pub domains: Vec<String>,
    pub referrer: Option<String>,
    pub props: Vec<(String, String)>,
    /// Screen width in CSS pixels (`w`), when the tracker sent it.
    pub width: Option<u32>,
    /// Hash-based routing (`h`): the fragment is part of the page.
    pub hash_mode: bool,
    /// Of an `engagement` event (Plausible's tracker sends one when a page
    /// is left): the scroll depth in percent (`sd`) and the time engaged
    /// in ms (`e`).
    pub scroll_depth: Option<f64>,
    pub engagement_ms: Option<f64>,
}

/// A payload field that is missing or wrong, in Plausible's error shape.
#[derive(Debug, Clone, PartialEq)]
pub struct PayloadError {
    pub field: &'static str,
    pub message: String,
}

fn field<'a>(obj: &'a serde_json::Map<String, Value>, names: &[&str]) -> Option<&'a Value> {
    names
        .iter()
        .find_map(|n| obj.get(*n))
        .filter(|v| !v.is_null())
}

/// Reads a tracker's body (JSON, whatever its content type).
pub fn parse_payload(body: &[u8]) -> Result<Payload, PayloadError> {
    let bad = |field: &'static str, message: &str| PayloadError {
        field,
        message: message.to_string(),
    };
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| bad("request", &format!("the body is not JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| bad("request", "the body must be a JSON object"))?;
    payload_of(obj)
}

/// Reads a tracker's payload from its JSON object.
pub fn payload_of(obj: &serde_json::Map<String, Value>) -> Result<Payload, PayloadError> {
    let bad = |field: &'static str, message: &str| PayloadError {
        field,
        message: message.to_string(),
    };
    let text = |names: &[&str], field_name: &'static str| -> Result<Option<String>, PayloadError> {
        match field(obj, names) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(bad(field_name, "must be a string")),
        }
    };
    let name = text(&["name", "n"], "name")?
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| bad("name", "can't be blank"))?;
    if name.len() > MAX_NAME {
        return Err(bad(
            "name",
            &format!("is longer than {MAX_NAME} characters"),
        ));
    }
    let raw_url = text(&["url", "u"], "url")?
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| bad("url", "can't be blank"))?;
    if raw_url.len() > MAX_URL {
        return Err(bad("url", &format!("is longer than {MAX_URL} bytes")));
    }
    let url = url::Url::parse(&raw_url).map_err(|e| bad("url", &format!("is not a URL: {e}")))?;
    if url.scheme() == "data" {
        return Err(bad("url", "a data: URL is not a page"));
    }
    let domains: Vec<String> = match text(&["domain", "d"], "domain")? {
        Some(d) => d
            .split(',')
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect(),
        None => url
            .host_str()
            .map(|h| vec![h.trim_start_matches("www.").to_ascii_lowercase()])
            .unwrap_or_default(),
    };
    if domains.is_empty() {
        return Err(bad("domain", "can't be blank"));
    }
    let referrer = text(&["referrer", "r"], "referrer")?
        .filter(|r| !r.is_empty())
        .map(|r| r.chars().take(MAX_URL).collect());
    let props = match field(obj, &["props", "p", "meta", "m"]) {
        None => Vec::new(),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(m)) => props_of(&m),
            _ => {
                return Err(bad(
                    "props",
                    "must be an object or a JSON object as a string",
                ))
            }
        },
        Some(Value::Object(m)) => props_of(m),
        Some(_) => return Err(bad("props", "must be an object")),
    };
    let width = field(obj, &["w", "screen_width"])
        .and_then(Value::as_u64)
        .and_then(|w| u32::try_from(w).ok());
    let hash_mode = matches!(field(obj, &["h", "hashMode"]), Some(Value::Bool(true)))
        || field(obj, &["h", "hashMode"]).and_then(Value::as_u64) == Some(1);
    let number = |names: &[&str]| {
        field(obj, names)
            .and_then(Value::as_f64)
            .filter(|v| v.is_finite() && *v >= 0.0)
    };
    Ok(Payload {
        name,
        url,
        domains,
        referrer,
        props,
        width,
        hash_mode,
        scroll_depth: number(&["sd"]),
        engagement_ms: number(&["e"]),
    })
}

/// Scalar properties as text; lists, objects, nulls and oversized names or
/// values are left out (as Plausible does), at most [`MAX_PROPS`].
fn props_of(m: &serde_json::Map<String, Value>) -> Vec<(String, String)> {
    m.iter()
        .filter_map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return None,
            };
            let ok = !k.is_empty()
                && k.len() <= MAX_PROP_NAME
                && !k.chars().any(char::is_control)
                && !v.is_empty()
                && v.len() <= MAX_PROP_VALUE;
            ok.then(|| (k.clone(), v))
        })
        .take(MAX_PROPS)
        .collect()
}
