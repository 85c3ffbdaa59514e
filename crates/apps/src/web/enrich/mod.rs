//! From a tracker's request to the event tally stores: the payload read as
//! Plausible's trackers send it, the user agent parsed (browser, OS,
//! device) and bots recognised, the referrer turned into a source, UTM
//! parameters read from the URL, and the visitor id computed. The raw
//! address and user agent are used here and never leave this module.
//!
//! Each part in its own file: [`payload`], [`source`], [`visitor`],
//! [`agent`].

mod agent;
mod payload;
mod source;
mod visitor;

pub use agent::{Agent, AgentParser};
pub use payload::{
    parse_payload, payload_of, Payload, PayloadError, MAX_NAME, MAX_PROPS, MAX_PROP_NAME,
    MAX_PROP_VALUE, MAX_URL,
};
pub use source::{pathname, referrer_page, source, utm};
pub use visitor::{device_of_width, visitor_id};

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
