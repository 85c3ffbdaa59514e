//! From a tracker's request to the event tally stores: the payload read as
//! Plausible's trackers send it, the user agent parsed (browser, OS,
//! device) and bots recognised, the referrer turned into a source, UTM
//! parameters read from the URL, and the visitor id computed. The raw
//! address and user agent are used here and never leave this module.

use serde_json::Value;
use siphasher::sip::SipHasher24;
use std::hash::Hasher;
use std::sync::OnceLock;

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

/// The page of a URL: its path (and, in hash mode, its fragment).
pub fn pathname(url: &url::Url, hash_mode: bool) -> String {
    let mut p = url.path().to_string();
    if hash_mode {
        if let Some(f) = url.fragment() {
            p.push('#');
            p.push_str(f);
        }
    }
    p
}

/// The UTM parameters of a URL, as `(field, value)`.
pub fn utm(url: &url::Url) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for (k, v) in url.query_pairs() {
        let field = match k.as_ref() {
            "utm_source" => "utm_source",
            "utm_medium" => "utm_medium",
            "utm_campaign" => "utm_campaign",
            "utm_content" => "utm_content",
            "utm_term" => "utm_term",
            _ => continue,
        };
        if !v.is_empty() && !out.iter().any(|(f, _)| *f == field) {
            out.push((field, v.chars().take(MAX_URL).collect()));
        }
    }
    out
}

/// Where a visit came from: the `ref`, `source` or `utm_source` parameter
/// when the page has one, else the referrer's site (a known one by its
/// name: Google, Bing, Facebook...). `None` for direct visits and for
/// referrers on the site itself.
pub fn source(url: &url::Url, referrer: Option<&str>, site: &str) -> Option<String> {
    for (k, v) in url.query_pairs() {
        if matches!(k.as_ref(), "ref" | "source" | "utm_source") && !v.trim().is_empty() {
            return Some(v.trim().chars().take(200).collect());
        }
    }
    let host = referrer
        .and_then(|r| url::Url::parse(r).ok())
        .and_then(|u| u.host_str().map(|h| h.to_ascii_lowercase()))?;
    let host = host.trim_start_matches("www.").to_string();
    if host == site || host.ends_with(&format!(".{site}")) {
        return None;
    }
    Some(known_source(&host).map_or(host, str::to_string))
}

/// The referrer as stored: its host and path, without scheme or query.
pub fn referrer_page(referrer: &str) -> Option<String> {
    let u = url::Url::parse(referrer).ok()?;
    let host = u.host_str()?.trim_start_matches("www.");
    Some(format!("{host}{}", u.path().trim_end_matches('/')))
}

/// Well-known referrer sites by name, matched on the host or a parent.
const KNOWN_SOURCES: &[(&str, &str)] = &[
    ("google.", "Google"),
    ("bing.com", "Bing"),
    ("duckduckgo.com", "DuckDuckGo"),
    ("search.yahoo.com", "Yahoo!"),
    ("yahoo.com", "Yahoo!"),
    ("baidu.com", "Baidu"),
    ("yandex.", "Yandex"),
    ("ecosia.org", "Ecosia"),
    ("search.brave.com", "Brave"),
    ("qwant.com", "Qwant"),
    ("facebook.com", "Facebook"),
    ("fb.com", "Facebook"),
    ("instagram.com", "Instagram"),
    ("t.co", "Twitter"),
    ("twitter.com", "Twitter"),
    ("x.com", "Twitter"),
    ("linkedin.com", "LinkedIn"),
    ("lnkd.in", "LinkedIn"),
    ("reddit.com", "Reddit"),
    ("news.ycombinator.com", "Hacker News"),
    ("github.com", "GitHub"),
    ("youtube.com", "YouTube"),
    ("pinterest.com", "Pinterest"),
    ("tiktok.com", "TikTok"),
    ("wikipedia.org", "Wikipedia"),
    ("stackoverflow.com", "Stack Overflow"),
    ("chatgpt.com", "ChatGPT"),
];

fn known_source(host: &str) -> Option<&'static str> {
    KNOWN_SOURCES.iter().find_map(|(pat, name)| {
        let hit = if let Some(prefix) = pat.strip_suffix('.') {
            // `google.` matches google.com, google.co.uk, www.google.de...
            host.starts_with(&format!("{prefix}.")) || host.contains(&format!(".{prefix}."))
        } else {
            host == *pat || host.ends_with(&format!(".{pat}"))
        };
        hit.then_some(*name)
    })
}

/// A screen width to a device class, with Plausible's breakpoints.
pub fn device_of_width(w: u32) -> &'static str {
    match w {
        0..=575 => "Mobile",
        576..=991 => "Tablet",
        992..=1439 => "Laptop",
        _ => "Desktop",
    }
}

/// The visitor id: SipHash-2-4 keyed by the day's salt over the user agent,
/// the address and the site, as 16 hex digits. Without the salt (deleted
/// after a day) it cannot be traced back or linked across days or sites.
pub fn visitor_id(salt: &[u8; 16], user_agent: &str, ip: &str, site: &str) -> String {
    let k0 = u64::from_le_bytes(salt[..8].try_into().unwrap_or([0; 8]));
    let k1 = u64::from_le_bytes(salt[8..].try_into().unwrap_or([0; 8]));
    let mut h = SipHasher24::new_with_keys(k0, k1);
    for part in [user_agent, ip, site] {
        h.write(part.as_bytes());
        h.write_u8(0);
    }
    format!("{:016x}", h.finish())
}

/// What a user agent says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Agent {
    pub browser: String,
    pub browser_version: String,
    pub os: String,
    pub os_version: String,
    /// `Mobile`, `Tablet` or `Desktop` when the user agent tells.
    pub device: Option<&'static str>,
    pub bot: bool,
}

/// The ua-parser (uap-core) rules, compiled once, on first use, and the
/// answers for the user agents seen most recently (a site's visitors share
/// a few hundred user agents; the rules take tens of µs per agent).
pub struct AgentParser {
    extractor: OnceLock<Option<ua_parser::Extractor<'static>>>,
    recent: quick_cache::sync::Cache<String, std::sync::Arc<Agent>>,
}

/// User agents whose answers are kept.
const RECENT_AGENTS: usize = 20_000;

/// uap-core's `regexes.yaml` (Apache-2.0), converted to JSON.
const UAP_REGEXES: &str = include_str!("uap-regexes.json");

impl Default for AgentParser {
    fn default() -> Self {
        AgentParser {
            extractor: OnceLock::new(),
            recent: quick_cache::sync::Cache::new(RECENT_AGENTS),
        }
    }
}

impl AgentParser {
    /// Compiles the rules now (they take a moment); called at start on a
    /// background thread so the first event does not wait.
    pub fn warm(&self) {
        self.extractor();
    }

    fn extractor(&self) -> Option<&ua_parser::Extractor<'static>> {
        self.extractor
            .get_or_init(|| {
                let regexes: ua_parser::Regexes<'static> = serde_json::from_str(UAP_REGEXES)
                    .map_err(|e| tracing::error!(error = %e, "cannot read the user-agent rules"))
                    .ok()?;
                ua_parser::Extractor::try_from(regexes)
                    .map_err(|e| tracing::error!(error = %e, "cannot compile the user-agent rules"))
                    .ok()
            })
            .as_ref()
    }

    /// What `ua` says, from the recent answers when it was seen lately.
    pub fn parse(&self, ua: &str) -> std::sync::Arc<Agent> {
        if let Some(a) = self.recent.get(ua) {
            return a;
        }
        let agent = std::sync::Arc::new(self.parse_uncached(ua));
        if ua.len() <= 1024 && self.extractor().is_some() {
            self.recent.insert(ua.to_string(), agent.clone());
        }
        agent
    }

    fn parse_uncached(&self, ua: &str) -> Agent {
        let lower = ua.to_ascii_lowercase();
        let mut agent = Agent {
            bot: ua.trim().is_empty()
                || [
                    "bot",
                    "crawl",
                    "spider",
                    "slurp",
                    "headlesschrome",
                    "phantomjs",
                    "lighthouse",
                ]
                .iter()
                .any(|w| lower.contains(w)),
            ..Agent::default()
        };
        let Some(ex) = self.extractor() else {
            return agent;
        };
        let version = |parts: [Option<&str>; 2]| match parts {
            [Some(a), Some(b)] => format!("{a}.{b}"),
            [Some(a), None] => a.to_string(),
            _ => String::new(),
        };
        if let Some(b) = ex.ua.extract(ua) {
            agent.browser = b.family.to_string();
            agent.browser_version = version([b.major, b.minor]);
        }
        if let Some(o) = ex.os.extract(ua) {
            agent.os = o.os.to_string();
            agent.os_version = version([o.major.as_deref(), o.minor.as_deref()]);
        }
        if let Some(d) = ex.dev.extract(ua) {
            if d.device == "Spider" {
                agent.bot = true;
            }
        }
        agent.device = Some(if lower.contains("ipad") || lower.contains("tablet") {
            "Tablet"
        } else if lower.contains("mobi") || lower.contains("iphone") || lower.contains("android") {
            "Mobile"
        } else {
            "Desktop"
        });
        if agent.browser == "Other" {
            agent.browser.clear();
        }
        if agent.os == "Other" {
            agent.os.clear();
        }
        agent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_long_and_short_names_and_props() {
        let p = parse_payload(
            br#"{"n":"Signup","u":"https://www.example.com/a/b?utm_source=news&x=1#top","d":"example.com, other.org","r":"https://google.com/search","p":"{\"plan\":\"pro\",\"n\":3,\"bad\":[1]}","w":390,"h":1}"#,
        )
        .unwrap();
        assert_eq!(p.name, "Signup");
        assert_eq!(p.domains, vec!["example.com", "other.org"]);
        assert_eq!(
            p.props,
            vec![("n".into(), "3".into()), ("plan".into(), "pro".into())]
        );
        assert_eq!(pathname(&p.url, p.hash_mode), "/a/b#top");
        assert_eq!(p.width, Some(390));
        assert_eq!(utm(&p.url), vec![("utm_source", "news".to_string())]);
        let q = parse_payload(
            br#"{"name":"pageview","url":"https://example.com/","domain":"example.com","props":{"k":"v"}}"#,
        )
        .unwrap();
        assert_eq!(q.props, vec![("k".into(), "v".into())]);
        assert!(!q.hash_mode);
        let e = parse_payload(br#"{"n":"pageview","d":"example.com"}"#).unwrap_err();
        assert_eq!(e.field, "url");
        let e = parse_payload(br#"{"u":"https://example.com/"}"#).unwrap_err();
        assert_eq!(e.field, "name");
        // The domain defaults to the URL's host.
        let p = parse_payload(br#"{"n":"pageview","u":"https://www.site.dev/x"}"#).unwrap();
        assert_eq!(p.domains, vec!["site.dev"]);
    }

    #[test]
    fn sources() {
        let url = url::Url::parse("https://example.com/").unwrap();
        assert_eq!(
            source(
                &url,
                Some("https://www.google.co.uk/search?q=x"),
                "example.com"
            )
            .as_deref(),
            Some("Google")
        );
        assert_eq!(
            source(&url, Some("https://blog.example.com/post"), "example.com"),
            None
        );
        assert_eq!(
            source(&url, Some("https://someblog.net/p"), "example.com").as_deref(),
            Some("someblog.net")
        );
        let tagged = url::Url::parse("https://example.com/?utm_source=Newsletter").unwrap();
        assert_eq!(
            source(&tagged, Some("https://t.co/x"), "example.com").as_deref(),
            Some("Newsletter")
        );
        assert_eq!(source(&url, None, "example.com"), None);
        assert_eq!(
            referrer_page("https://www.google.com/search?q=1").as_deref(),
            Some("google.com/search")
        );
    }

    #[test]
    fn visitor_ids_depend_on_salt_agent_address_and_site() {
        let s1 = [1u8; 16];
        let s2 = [2u8; 16];
        let a = visitor_id(&s1, "UA", "10.0.0.1", "example.com");
        assert_eq!(a, visitor_id(&s1, "UA", "10.0.0.1", "example.com"));
        assert_eq!(a.len(), 16);
        for other in [
            visitor_id(&s2, "UA", "10.0.0.1", "example.com"),
            visitor_id(&s1, "UA2", "10.0.0.1", "example.com"),
            visitor_id(&s1, "UA", "10.0.0.2", "example.com"),
            visitor_id(&s1, "UA", "10.0.0.1", "other.org"),
        ] {
            assert_ne!(a, other);
        }
    }

    #[test]
    fn agents_and_bots() {
        let p = AgentParser::default();
        let chrome = p.parse("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.109 Safari/537.36");
        assert_eq!(
            (
                chrome.browser.as_str(),
                chrome.browser_version.as_str(),
                chrome.os.as_str()
            ),
            ("Chrome", "120.0", "Windows")
        );
        assert_eq!(chrome.device, Some("Desktop"));
        assert!(!chrome.bot);
        let iphone = p.parse("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1");
        assert_eq!((iphone.os.as_str(), iphone.device), ("iOS", Some("Mobile")));
        for bot in [
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36",
            "",
        ] {
            assert!(p.parse(bot).bot, "{bot}");
        }
        assert_eq!(device_of_width(390), "Mobile");
        assert_eq!(device_of_width(1280), "Laptop");
    }
}
