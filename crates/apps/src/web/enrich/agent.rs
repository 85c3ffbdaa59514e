//! User agents: browser, OS and device from uap-core's patterns, bots
//! recognised, recent answers remembered.

use std::sync::OnceLock;

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
const UAP_REGEXES: &str = include_str!("../uap-regexes.json");

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
