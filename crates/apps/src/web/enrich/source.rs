//! Where a visit came from: the page of its URL, its UTM parameters, and
//! the source its referrer names.

use super::payload::MAX_URL;

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
