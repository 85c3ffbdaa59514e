//! Visits, as Plausible defines them: a visitor's events on a site belong to
//! one visit until 30 minutes pass without an event. A visit has an entry
//! page (its first event's page) and an exit page (its last page view's),
//! a duration (last event − first event), page views and events, and is a
//! bounce when it has one page view and nothing else. Its source, UTM
//! parameters, device, browser, OS and country are its first event's.
//!
//! Visits are stored the way a collapsing table stores them: every time a
//! visit changes, its previous row is written again with `sign = -1` and
//! its new row with `sign = +1`, both at the visit's start. Sums over the
//! rows (`sum(sign)` visits, `sum(bounce)` bounces, `sum(duration)`
//! seconds...) are therefore exact at any moment, in any bucket and any
//! group of the visit's own attributes, and rollups keep them like any
//! other sums. Engagement events (sent when a page is left) update nothing:
//! as in Plausible they neither start nor extend a visit.
//!
//! Live visits are kept in memory, and rebuilt at start from the rows of
//! visits seen in the last 30 minutes (the `+1` row with the most events
//! of each visit is its current state).

use std::collections::HashMap;
use tally_ingest::BatchBuilder;

/// A visit ends after this long without events.
pub const VISIT_GAP_US: i64 = 30 * 60 * 1_000_000;

/// The visit attributes taken from its first event, in this order.
pub const ATTRS: [&str; 13] = [
    "source",
    "referrer",
    "utm_medium",
    "utm_source",
    "utm_campaign",
    "utm_content",
    "utm_term",
    "device",
    "browser",
    "browser_version",
    "os",
    "os_version",
    "country",
];

/// Plausible's name of the custom event a page view is.
pub const PAGEVIEW: &str = "pageview";
/// Plausible's engagement event (scroll depth, time on page).
pub const ENGAGEMENT: &str = "engagement";

/// One enriched event for one site, before it is attributed to a visit.
#[derive(Debug, Clone)]
pub struct Hit {
    pub ts: i64,
    pub site: String,
    pub visitor: String,
    pub name: String,
    pub pathname: String,
    pub hostname: String,
    pub props: Vec<(String, String)>,
    pub scroll_depth: Option<f64>,
    pub engagement_ms: Option<f64>,
    /// Values of [`ATTRS`] (empty: none).
    pub attrs: [String; ATTRS.len()],
}

/// A visit's state.
#[derive(Debug, Clone, PartialEq)]
pub struct Visit {
    pub id: u64,
    pub site: String,
    pub visitor: String,
    pub start: i64,
    pub last: i64,
    pub entry_page: String,
    pub exit_page: String,
    pub hostname: String,
    pub pageviews: u32,
    pub events: u32,
    pub attrs: [String; ATTRS.len()],
}

impl Visit {
    pub fn is_bounce(&self) -> bool {
        self.pageviews == 1 && self.events == 1
    }

    pub fn duration_secs(&self) -> f64 {
        ((self.last - self.start).max(0) / 1_000_000) as f64
    }

    pub fn session_id(&self) -> String {
        format!("{:016x}", self.id)
    }

    /// Writes the visit's row with `sign` (+1 or -1).
    pub fn write_row(&self, b: &mut BatchBuilder, line: usize, sign: f64) {
        let _ = b.start_row(line);
        let mut put = |name: &str, value: &str| put_text(b, name, value);
        put("site", &self.site);
        put("visitor", &self.visitor);
        put("session", &self.session_id());
        put("entry_page", &self.entry_page);
        put("exit_page", &self.exit_page);
        put("hostname", &self.hostname);
        for (name, value) in ATTRS.iter().zip(&self.attrs) {
            put(name, value);
        }
        for (name, value) in [
            ("sign", sign),
            ("bounce", if self.is_bounce() { sign } else { 0.0 }),
            ("pageviews", sign * f64::from(self.pageviews)),
            ("events", sign * f64::from(self.events)),
            ("duration", sign * self.duration_secs()),
            ("last_seen_us", self.last as f64),
        ] {
            let _ = b.push_num(name, value);
        }
        b.finish_row(self.start);
    }
}

/// Adds a text field to the row being built; an empty value is left out.
fn put_text(b: &mut BatchBuilder, name: &str, value: &str) {
    if !value.is_empty() {
        // Names are constants or checked prop names; values are text, and
        // a row's fields are distinct: nothing here can fail.
        let _ = b.push_str(name, value);
    }
}

/// What recording an event did to its visit.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The visit's row before the event, to cancel (`None`: a new visit,
    /// or an event that changed nothing).
    pub old: Option<Visit>,
    /// The visit after the event (`None`: an engagement event outside any
    /// visit).
    pub new: Option<Visit>,
    /// Whether the visit changed (rows to write).
    pub changed: bool,
}

/// Live visits by (site, visitor).
#[derive(Debug, Default)]
pub struct Visits {
    live: HashMap<(String, String), Visit>,
}

impl Visits {
    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Puts back a visit's state (after a failed write, or at start).
    pub fn restore(&mut self, key: (String, String), visit: Option<Visit>) {
        match visit {
            Some(v) => self.live.insert(key, v),
            None => self.live.remove(&key),
        };
    }

    pub fn get(&self, site: &str, visitor: &str) -> Option<&Visit> {
        self.live.get(&(site.to_string(), visitor.to_string()))
    }

    /// Attributes `hit` to its visit: continues the visitor's live visit
    /// on the site, or starts one.
    pub fn record(&mut self, hit: &Hit) -> Recorded {
        let key = (hit.site.clone(), hit.visitor.clone());
        let live = self
            .live
            .get(&key)
            .filter(|v| hit.ts - v.last <= VISIT_GAP_US)
            .cloned();
        if hit.name == ENGAGEMENT {
            return Recorded {
                old: None,
                new: live,
                changed: false,
            };
        }
        let pageview = hit.name == PAGEVIEW;
        let new = match &live {
            Some(v) => {
                let mut n = v.clone();
                // Out-of-order events (a backfill) never shorten a visit.
                n.last = n.last.max(hit.ts);
                n.events += 1;
                if pageview {
                    n.pageviews += 1;
                    n.exit_page = hit.pathname.clone();
                }
                n
            }
            None => Visit {
                id: rand::random(),
                site: hit.site.clone(),
                visitor: hit.visitor.clone(),
                start: hit.ts,
                last: hit.ts,
                entry_page: hit.pathname.clone(),
                exit_page: if pageview {
                    hit.pathname.clone()
                } else {
                    String::new()
                },
                hostname: hit.hostname.clone(),
                pageviews: u32::from(pageview),
                events: 1,
                attrs: hit.attrs.clone(),
            },
        };
        self.live.insert(key, new.clone());
        Recorded {
            old: live,
            new: Some(new),
            changed: true,
        }
    }

    /// Forgets visits that ended (no event since `now - 30 min`).
    pub fn sweep(&mut self, now: i64) -> usize {
        let before = self.live.len();
        self.live.retain(|_, v| now - v.last <= VISIT_GAP_US);
        before - self.live.len()
    }

    /// The live visits.
    pub fn iter(&self) -> impl Iterator<Item = &Visit> {
        self.live.values()
    }
}

/// Writes the stored event for `hit` (with its visit's attributes, so
/// events can be filtered by them) into `b`.
pub fn write_event(b: &mut BatchBuilder, line: usize, hit: &Hit, visit: Option<&Visit>) {
    let _ = b.start_row(line);
    let mut put = |name: &str, value: &str| put_text(b, name, value);
    put("site", &hit.site);
    put("name", &hit.name);
    put("pathname", &hit.pathname);
    put("hostname", &hit.hostname);
    put("visitor", &hit.visitor);
    let attrs = visit.map(|v| &v.attrs).unwrap_or(&hit.attrs);
    for (name, value) in ATTRS.iter().zip(attrs) {
        put(name, value);
    }
    if let Some(v) = visit {
        put("session", &v.session_id());
        put("entry_page", &v.entry_page);
    }
    for (k, v) in &hit.props {
        put(&format!("prop.{k}"), v);
    }
    for (name, value) in [
        ("scroll_depth", hit.scroll_depth),
        ("engagement_ms", hit.engagement_ms),
    ] {
        if let Some(v) = value {
            let _ = b.push_num(name, v);
        }
    }
    b.finish_row(hit.ts);
}

/// Writes the rows of one recorded event: its visit's (old row cancelled,
/// new row added) into `sessions`, the event into `events`.
pub fn write_recorded(
    events: &mut BatchBuilder,
    sessions: &mut BatchBuilder,
    line: usize,
    hit: &Hit,
    r: &Recorded,
) {
    if r.changed {
        if let Some(old) = &r.old {
            old.write_row(sessions, line, -1.0);
        }
        if let Some(new) = &r.new {
            new.write_row(sessions, line, 1.0);
        }
    }
    write_event(events, line, hit, r.new.as_ref());
}

/// The live visits at `now` (µs), read back from the visits stream: of
/// each visit seen in the last 30 minutes, its `+1` row with the most
/// events (its rows are cancelled in pairs, so that one is current).
/// Visits start at most a day before they are seen (visitor ids change
/// daily), so only the last two days are read.
pub fn rebuild(
    engine: &tally_engine::Engine,
    stream: &str,
    now: i64,
) -> tally_engine::Result<Visits> {
    let mut best: HashMap<String, Visit> = HashMap::new();
    let lo = now - 2 * 86_400_000_000;
    engine.scan_range(stream, Some(lo), None, &mut |b| {
        let text = |name: &str, i: usize| -> String {
            match b.column(name).map(|c| &c.data) {
                Some(tally_ingest::ColumnData::Dim(c)) => c.get(i).unwrap_or_default().to_string(),
                _ => String::new(),
            }
        };
        let num = |name: &str, i: usize| -> f64 {
            match b.column(name).map(|c| &c.data) {
                Some(tally_ingest::ColumnData::Value(c)) => c.get(i).unwrap_or(0.0),
                _ => 0.0,
            }
        };
        for i in 0..b.len() {
            let last = num("last_seen_us", i) as i64;
            if num("sign", i) <= 0.0 || b.ts[i] < lo || now - last > VISIT_GAP_US {
                continue;
            }
            let session = text("session", i);
            let Ok(id) = u64::from_str_radix(&session, 16) else {
                continue;
            };
            let events = num("events", i) as u32;
            if best.get(&session).is_some_and(|v| v.events >= events) {
                continue;
            }
            let mut attrs: [String; ATTRS.len()] = Default::default();
            for (a, name) in attrs.iter_mut().zip(ATTRS) {
                *a = text(name, i);
            }
            let visit = Visit {
                id,
                site: text("site", i),
                visitor: text("visitor", i),
                start: b.ts[i],
                last,
                entry_page: text("entry_page", i),
                exit_page: text("exit_page", i),
                hostname: text("hostname", i),
                pageviews: num("pageviews", i) as u32,
                events,
                attrs,
            };
            best.insert(session, visit);
        }
        Ok(true)
    })?;
    let mut visits = Visits::default();
    for v in best.into_values() {
        let key = (v.site.clone(), v.visitor.clone());
        // Two live visits of one visitor cannot both be within the gap
        // unless the later one is current: keep the latest.
        if visits.get(&key.0, &key.1).is_some_and(|o| o.last >= v.last) {
            continue;
        }
        visits.restore(key, Some(v));
    }
    Ok(visits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(ts_min: i64, name: &str, page: &str) -> Hit {
        Hit {
            ts: ts_min * 60_000_000,
            site: "a.com".into(),
            visitor: "v1".into(),
            name: name.into(),
            pathname: page.into(),
            hostname: "a.com".into(),
            props: Vec::new(),
            scroll_depth: None,
            engagement_ms: None,
            attrs: Default::default(),
        }
    }

    #[test]
    fn visits_split_after_thirty_idle_minutes() {
        let mut v = Visits::default();
        let a = v.record(&hit(0, PAGEVIEW, "/"));
        assert!(a.old.is_none());
        let first = a.new.unwrap();
        assert!(first.is_bounce());
        let b = v.record(&hit(10, PAGEVIEW, "/b"));
        let second = b.new.unwrap();
        assert_eq!(second.id, first.id);
        assert_eq!(b.old.unwrap(), first);
        assert!(!second.is_bounce());
        assert_eq!(second.entry_page, "/");
        assert_eq!(second.exit_page, "/b");
        assert_eq!(second.duration_secs(), 600.0);
        // An engagement event changes nothing.
        let e = v.record(&hit(20, ENGAGEMENT, "/b"));
        assert!(!e.changed);
        // 30 minutes exactly still continue; more start a new visit.
        let c = v.record(&hit(40, "Signup", "/b"));
        assert_eq!(c.new.as_ref().unwrap().id, first.id);
        assert_eq!(c.new.as_ref().unwrap().exit_page, "/b");
        let d = v.record(&hit(71, PAGEVIEW, "/c"));
        assert!(d.old.is_none());
        assert_ne!(d.new.unwrap().id, first.id);
        assert_eq!(v.sweep(71 * 60_000_000 + VISIT_GAP_US + 1), 1);
        assert!(v.is_empty());
    }

    #[test]
    fn a_custom_event_alone_is_not_a_bounce() {
        let mut v = Visits::default();
        let r = v.record(&hit(0, "Download", "/files"));
        let visit = r.new.unwrap();
        assert!(!visit.is_bounce());
        assert_eq!(visit.entry_page, "/files");
        assert_eq!(visit.exit_page, "");
    }
}
