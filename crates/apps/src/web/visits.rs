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
use std::sync::Arc;
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
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
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

/// What a visit takes from its first event; it never changes, so a
/// visit's states share it.
#[derive(Debug, PartialEq)]
pub struct VisitStart {
    pub id: u64,
    /// `id` as stored (16 hex digits).
    pub session: String,
    pub site: String,
    pub visitor: String,
    pub start: i64,
    pub entry_page: String,
    pub hostname: String,
    pub attrs: [String; ATTRS.len()],
}

/// A visit's state: its start and what its later events changed. Cloning
/// one copies the exit page, not the visit's attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct Visit {
    pub first: Arc<VisitStart>,
    pub last: i64,
    pub exit_page: String,
    pub pageviews: u32,
    pub events: u32,
}

impl Visit {
    pub fn is_bounce(&self) -> bool {
        self.pageviews == 1 && self.events == 1
    }

    pub fn duration_secs(&self) -> f64 {
        ((self.last - self.first.start).max(0) / 1_000_000) as f64
    }

    /// Writes the visit's row with `sign` (+1 or -1).
    pub fn write_row(&self, b: &mut BatchBuilder, line: usize, sign: f64) {
        let first = &*self.first;
        let _ = b.start_row(line);
        let mut put = |name: &str, value: &str| put_text(b, name, value);
        put("site", &first.site);
        put("visitor", &first.visitor);
        put("session", &first.session);
        put("entry_page", &first.entry_page);
        put("exit_page", &self.exit_page);
        put("hostname", &first.hostname);
        for (name, value) in ATTRS.iter().zip(&first.attrs) {
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
        b.finish_row(first.start);
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

/// Live visits by site, then visitor (looked up without copying either).
#[derive(Debug, Default)]
pub struct Visits {
    live: HashMap<String, HashMap<String, Visit>>,
    len: usize,
}

impl Visits {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Puts back the visitor's state on a site (after a failed write, or
    /// at start): `None` forgets the visitor.
    pub fn restore(&mut self, site: &str, visitor: &str, visit: Option<Visit>) {
        let before = self.live.get(site).map_or(0, HashMap::len);
        match visit {
            Some(v) => {
                self.live
                    .entry(site.to_string())
                    .or_default()
                    .insert(visitor.to_string(), v);
            }
            None => {
                if let Some(m) = self.live.get_mut(site) {
                    m.remove(visitor);
                }
            }
        }
        let after = self.live.get(site).map_or(0, HashMap::len);
        self.len = self.len + after - before;
    }

    pub fn get(&self, site: &str, visitor: &str) -> Option<&Visit> {
        self.live.get(site)?.get(visitor)
    }

    /// Attributes `hit` to its visit: continues the visitor's live visit
    /// on the site, or starts one.
    pub fn record(&mut self, hit: &Hit) -> Recorded {
        let live = self
            .get(&hit.site, &hit.visitor)
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
                    n.exit_page.clone_from(&hit.pathname);
                }
                n
            }
            None => {
                let id: u64 = rand::random();
                Visit {
                    first: Arc::new(VisitStart {
                        id,
                        session: format!("{id:016x}"),
                        site: hit.site.clone(),
                        visitor: hit.visitor.clone(),
                        start: hit.ts,
                        entry_page: hit.pathname.clone(),
                        hostname: hit.hostname.clone(),
                        attrs: hit.attrs.clone(),
                    }),
                    last: hit.ts,
                    exit_page: if pageview {
                        hit.pathname.clone()
                    } else {
                        String::new()
                    },
                    pageviews: u32::from(pageview),
                    events: 1,
                }
            }
        };
        match self
            .live
            .get_mut(&hit.site)
            .and_then(|m| m.get_mut(&hit.visitor))
        {
            Some(slot) => *slot = new.clone(),
            None => self.restore(&hit.site, &hit.visitor, Some(new.clone())),
        }
        Recorded {
            old: live,
            new: Some(new),
            changed: true,
        }
    }

    /// Undoes recorded hits: `before` holds each hit's visit as it was
    /// before the hit, in the order the hits were recorded.
    pub fn put_back(&mut self, before: Vec<(&Hit, Option<Visit>)>) {
        for (hit, v) in before.into_iter().rev() {
            self.restore(&hit.site, &hit.visitor, v);
        }
    }

    /// Forgets visits that ended (no event since `now - 30 min`).
    pub fn sweep(&mut self, now: i64) -> usize {
        let before = self.len;
        for m in self.live.values_mut() {
            m.retain(|_, v| now - v.last <= VISIT_GAP_US);
        }
        self.live.retain(|_, m| !m.is_empty());
        self.len = self.live.values().map(HashMap::len).sum();
        before - self.len
    }

    /// The live visits.
    pub fn iter(&self) -> impl Iterator<Item = &Visit> {
        self.live.values().flat_map(HashMap::values)
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
    let attrs = visit.map(|v| &v.first.attrs).unwrap_or(&hit.attrs);
    for (name, value) in ATTRS.iter().zip(attrs) {
        put(name, value);
    }
    if let Some(v) = visit {
        put("session", &v.first.session);
        put("entry_page", &v.first.entry_page);
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
                first: Arc::new(VisitStart {
                    id,
                    session: session.clone(),
                    site: text("site", i),
                    visitor: text("visitor", i),
                    start: b.ts[i],
                    entry_page: text("entry_page", i),
                    hostname: text("hostname", i),
                    attrs,
                }),
                last,
                exit_page: text("exit_page", i),
                pageviews: num("pageviews", i) as u32,
                events,
            };
            best.insert(session, visit);
        }
        Ok(true)
    })?;
    let mut visits = Visits::default();
    for v in best.into_values() {
        let first = v.first.clone();
        // Two live visits of one visitor cannot both be within the gap
        // unless the later one is current: keep the latest.
        if visits
            .get(&first.site, &first.visitor)
            .is_some_and(|o| o.last >= v.last)
        {
            continue;
        }
        visits.restore(&first.site, &first.visitor, Some(v));
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
        assert_eq!(second.first.id, first.first.id);
        assert_eq!(b.old.unwrap(), first);
        assert!(!second.is_bounce());
        assert_eq!(second.first.entry_page, "/");
        assert_eq!(second.exit_page, "/b");
        assert_eq!(second.duration_secs(), 600.0);
        // An engagement event changes nothing.
        let e = v.record(&hit(20, ENGAGEMENT, "/b"));
        assert!(!e.changed);
        // 30 minutes exactly still continue; more start a new visit.
        let c = v.record(&hit(40, "Signup", "/b"));
        assert_eq!(c.new.as_ref().unwrap().first.id, first.first.id);
        assert_eq!(c.new.as_ref().unwrap().exit_page, "/b");
        let d = v.record(&hit(71, PAGEVIEW, "/c"));
        assert!(d.old.is_none());
        assert_ne!(d.new.unwrap().first.id, first.first.id);
        assert_eq!(v.sweep(71 * 60_000_000 + VISIT_GAP_US + 1), 1);
        assert!(v.is_empty());
    }

    fn state(v: &Visits) -> Vec<Visit> {
        let mut all: Vec<Visit> = v.iter().cloned().collect();
        all.sort_by(|a, b| {
            (&a.first.site, &a.first.visitor).cmp(&(&b.first.site, &b.first.visitor))
        });
        all
    }

    #[test]
    fn put_back_undoes_a_batch_of_hits() {
        let mut v = Visits::default();
        v.record(&hit(0, PAGEVIEW, "/"));
        let mut other = hit(1, PAGEVIEW, "/x");
        other.site = "b.com".into();
        v.record(&other);
        let before = state(&v);
        let mut batch = vec![
            hit(2, PAGEVIEW, "/a"),
            hit(3, "Signup", "/a"),
            hit(4, PAGEVIEW, "/b"),
        ];
        let mut new_visitor = hit(5, PAGEVIEW, "/n");
        new_visitor.visitor = "v2".into();
        batch.push(new_visitor);
        batch.push(hit(70, PAGEVIEW, "/late"));
        let mut undo = Vec::new();
        for h in &batch {
            undo.push((h, v.get(&h.site, &h.visitor).cloned()));
            v.record(h);
        }
        assert_eq!(v.len(), 3);
        assert_ne!(state(&v), before);
        v.put_back(undo);
        assert_eq!(v.len(), 2);
        assert_eq!(state(&v), before);
    }

    #[test]
    fn a_custom_event_alone_is_not_a_bounce() {
        let mut v = Visits::default();
        let r = v.record(&hit(0, "Download", "/files"));
        let visit = r.new.unwrap();
        assert!(!visit.is_bounce());
        assert_eq!(visit.first.entry_page, "/files");
        assert_eq!(visit.exit_page, "");
    }
}
