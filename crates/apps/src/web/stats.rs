//! Plausible's Stats API v1 (`/api/v1/stats/...`), answered by tally's
//! time-series API over the app's rollups.
//!
//! Event metrics (`visitors`, `pageviews`, `events`) are read from the
//! events stream; visit metrics (`visits`, `bounce_rate`,
//! `visit_duration`, `views_per_visit`) from the visits stream, whose rows
//! are a visit's changes (see [`super::visits`]): `sum(sign)` visits,
//! `sum(bounce)` bounces, `sum(duration)` seconds, `sum(pageviews)`. A
//! visit counts in the period it started in, as in Plausible. Unique
//! visitors are sketch merges (HyperLogLog, exact for small sets).
//!
//! The app defines one rollup per question shape ([`rollups`]): by site
//! and event name, by page, and per visit attribute. A request with a
//! filter on a different dimension than its breakdown is answered from the
//! raw events (same answer, more work).

use super::visits::{ATTRS, ENGAGEMENT, PAGEVIEW};
use super::writer::Streams;
use chrono::{Datelike, Duration, NaiveDate};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use tally_query::timeseries::{Filter, Request};
use tally_query::{QueryEngine, QueryError};
use tally_rollup::{Aggregate, Grain, RollupDef};

/// Errors of a stats request.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// The request is wrong: 400 with this message.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Query(#[from] QueryError),
}

type Result<T> = std::result::Result<T, StatsError>;

fn invalid<T>(message: impl Into<String>) -> Result<T> {
    Err(StatsError::Invalid(message.into()))
}

/// Whether `name` is a visit property (`visit:<name>`): the entry and exit
/// pages and the attributes a visit takes from its first event.
fn is_visit_prop(name: &str) -> bool {
    name == "entry_page" || name == "exit_page" || ATTRS.contains(&name)
}

/// The rollups the stats are read from.
pub fn rollups(streams: &Streams) -> Vec<RollupDef> {
    let events = |name: &str, group_by: &[&str]| RollupDef {
        name: name.into(),
        stream: streams.events.clone(),
        intervals: vec![Grain::Hour, Grain::Day],
        group_by: group_by.iter().map(|s| s.to_string()).collect(),
        filter: Vec::new(),
        aggregates: vec![
            Aggregate::Count,
            Aggregate::Uniq("visitor".into()),
            Aggregate::Uniq("session".into()),
        ],
        retention: Default::default(),
    };
    let visits = |name: &str, group_by: &[&str]| RollupDef {
        name: name.into(),
        stream: streams.visits.clone(),
        intervals: vec![Grain::Hour, Grain::Day],
        group_by: group_by.iter().map(|s| s.to_string()).collect(),
        filter: Vec::new(),
        aggregates: ["sign", "bounce", "duration", "pageviews", "events"]
            .iter()
            .map(|f| Aggregate::Sum(f.to_string()))
            .chain([Aggregate::Uniq("visitor".into())])
            .collect(),
        retention: Default::default(),
    };
    vec![
        events("web_events_by_name", &["site", "name"]),
        events("web_events_by_page", &["site", "name", "pathname"]),
        visits("web_visits", &["site"]),
        visits("web_visits_by_entry_page", &["site", "entry_page"]),
        visits("web_visits_by_exit_page", &["site", "exit_page"]),
        visits("web_visits_by_source", &["site", "source", "referrer"]),
        visits(
            "web_visits_by_utm",
            &[
                "site",
                "utm_medium",
                "utm_source",
                "utm_campaign",
                "utm_content",
                "utm_term",
            ],
        ),
        visits("web_visits_by_device", &["site", "device"]),
        visits(
            "web_visits_by_browser",
            &["site", "browser", "browser_version"],
        ),
        visits("web_visits_by_os", &["site", "os", "os_version"]),
        visits("web_visits_by_country", &["site", "country"]),
    ]
}

/// A metric of Plausible's API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    Visitors,
    Visits,
    Pageviews,
    ViewsPerVisit,
    BounceRate,
    VisitDuration,
    Events,
}

impl Metric {
    fn parse(s: &str) -> Result<Metric> {
        Ok(match s.trim() {
            "visitors" => Metric::Visitors,
            "visits" => Metric::Visits,
            "pageviews" => Metric::Pageviews,
            "views_per_visit" => Metric::ViewsPerVisit,
            "bounce_rate" => Metric::BounceRate,
            "visit_duration" => Metric::VisitDuration,
            "events" => Metric::Events,
            other => return invalid(format!(
                "The metric `{other}` is not recognized. Use visitors, visits, pageviews, views_per_visit, bounce_rate, visit_duration or events"
            )),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Metric::Visitors => "visitors",
            Metric::Visits => "visits",
            Metric::Pageviews => "pageviews",
            Metric::ViewsPerVisit => "views_per_visit",
            Metric::BounceRate => "bounce_rate",
            Metric::VisitDuration => "visit_duration",
            Metric::Events => "events",
        }
    }

    /// Computed from visits (the others from events).
    fn of_visits(self) -> bool {
        matches!(
            self,
            Metric::Visits | Metric::ViewsPerVisit | Metric::BounceRate | Metric::VisitDuration
        )
    }
}

/// Where a property lives.
#[derive(Debug, Clone, PartialEq)]
struct Prop {
    /// The stored field.
    field: String,
    /// The key in breakdown results.
    key: String,
    /// Stored on events.
    on_events: bool,
    /// Stored on visits.
    on_visits: bool,
    /// What an absent value is called.
    none: &'static str,
}

fn prop(name: &str) -> Result<Prop> {
    let p = |field: &str, key: &str, on_events: bool, on_visits: bool| Prop {
        field: field.into(),
        key: key.into(),
        on_events,
        on_visits,
        none: if field == "source" {
            "Direct / None"
        } else {
            "(none)"
        },
    };
    if let Some(k) = name.strip_prefix("event:props:") {
        if k.is_empty() {
            return invalid("event:props: needs a property name");
        }
        return Ok(p(&format!("prop.{k}"), k, true, false));
    }
    Ok(match name {
        "event:page" => p("pathname", "page", true, false),
        "event:name" | "event:goal" => p("name", "name", true, false),
        "event:hostname" => p("hostname", "hostname", true, false),
        "visit:exit_page" => p("exit_page", "exit_page", false, true),
        other => match other.strip_prefix("visit:") {
            Some(v) if is_visit_prop(v) => p(v, v, true, true),
            _ => {
                return invalid(format!(
                    "Invalid property '{other}'. Use event:page, event:name, event:goal, event:hostname, event:props:<name>, or visit: followed by entry_page, exit_page or one of {}",
                    ATTRS.join(", ")
                ))
            }
        },
    })
}

/// One condition of `filters` (`visit:source==Google|Bing`).
#[derive(Debug, Clone)]
struct Cond {
    prop: Prop,
    negated: bool,
    /// Exact values, or one prefix (`/blog/**`), or "absent".
    values: Vec<Value_>,
}

#[derive(Debug, Clone, PartialEq)]
enum Value_ {
    Exact(String),
    Prefix(String),
    Contains(String),
    Absent,
}

fn parse_filters(s: &str) -> Result<Vec<Cond>> {
    let mut out = Vec::new();
    for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, negated, rest) = if let Some((n, v)) = part.split_once("!=") {
            (n, true, v)
        } else if let Some((n, v)) = part.split_once("==") {
            (n, false, v)
        } else if let Some((n, v)) = part.split_once("~") {
            (n, false, v)
        } else {
            return invalid(format!(
                "filter '{part}': use property==value, property!=value or property~value"
            ));
        };
        let contains = !negated && !part.contains("==") && part.contains('~');
        let prop = prop(name.trim())?;
        let mut values = Vec::new();
        for v in rest.split('|').map(str::trim) {
            values.push(if contains {
                Value_::Contains(v.to_string())
            } else if v == prop.none || (prop.field == "source" && v == "(none)") {
                Value_::Absent
            } else if let Some(head) = v.strip_suffix("**").or_else(|| v.strip_suffix('*')) {
                if head.contains('*') {
                    return invalid(format!(
                        "filter '{part}': a wildcard is supported only at the end of a value"
                    ));
                }
                Value_::Prefix(head.to_string())
            } else if v.contains('*') {
                return invalid(format!(
                    "filter '{part}': a wildcard is supported only at the end of a value"
                ));
            } else {
                Value_::Exact(v.to_string())
            });
        }
        out.push(Cond {
            prop,
            negated,
            values,
        });
    }
    Ok(out)
}

/// The request's parameters, as Plausible names them.
#[derive(Debug, Clone, Default)]
pub struct Params(pub HashMap<String, String>);

impl Params {
    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|v| !v.is_empty())
    }
}

/// A resolved period: `[from, to)` dates (UTC) and the default interval.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Period {
    from: NaiveDate,
    to: NaiveDate,
    default_interval: &'static str,
}

fn parse_date(s: &str) -> Result<NaiveDate> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").or_else(|_| {
        invalid(format!(
            "Failed to parse date '{s}': use the format YYYY-MM-DD"
        ))
    })
}

fn month_start(d: NaiveDate, back: i32) -> NaiveDate {
    let months = d.year() * 12 + d.month0() as i32 - back;
    NaiveDate::from_ymd_opt(months.div_euclid(12), months.rem_euclid(12) as u32 + 1, 1).unwrap_or(d)
}

fn period(p: &Params, today: NaiveDate) -> Result<Period> {
    let date = match p.get("date") {
        Some(d) if p.get("period") != Some("custom") => parse_date(d)?,
        _ => today,
    };
    let day = Duration::days(1);
    let (from, to, iv) = match p.get("period").unwrap_or("30d") {
        "day" => (date, date + day, "hour"),
        "7d" => (date - Duration::days(6), date + day, "date"),
        "30d" => (date - Duration::days(29), date + day, "date"),
        "month" => (month_start(date, 0), month_start(date, -1), "date"),
        "6mo" => (month_start(date, 5), month_start(date, -1), "month"),
        "12mo" => (month_start(date, 11), month_start(date, -1), "month"),
        "custom" => {
            let Some((a, b)) = p.get("date").and_then(|d| d.split_once(',')) else {
                return invalid(
                    "The `date` parameter is required when using a custom period: date=YYYY-MM-DD,YYYY-MM-DD",
                );
            };
            let (a, b) = (parse_date(a)?, parse_date(b)?);
            if b < a {
                return invalid("In a custom period the first date must not be after the second");
            }
            if (b - a).num_days() > 3 * 366 {
                return invalid("A custom period may span at most 3 years");
            }
            (a, b + day, "date")
        }
        other => {
            return invalid(format!(
                "Error parsing `period` parameter: invalid period `{other}`. Use day, 7d, 30d, month, 6mo, 12mo or custom"
            ))
        }
    };
    Ok(Period {
        from,
        to,
        default_interval: iv,
    })
}

fn metrics(p: &Params) -> Result<Vec<Metric>> {
    let list = p.get("metrics").unwrap_or("visitors");
    let mut out = Vec::new();
    for m in list.split(',') {
        let m = Metric::parse(m)?;
        if !out.contains(&m) {
            out.push(m);
        }
    }
    Ok(out)
}

fn rfc3339(d: NaiveDate) -> String {
    format!("{}T00:00:00Z", d.format("%Y-%m-%d"))
}

/// One question to the time-series API.
struct Ask<'a> {
    query: &'a QueryEngine,
    stream: &'a str,
    from: String,
    to: String,
    interval: Option<&'static str>,
    filters: Vec<Filter>,
}

fn filter(field: &str, op: &str, value: Value) -> Filter {
    Filter {
        field: field.into(),
        op: op.into(),
        value,
        table: None,
    }
}

/// The time-series filters for `conds` on a stream (`has` tells which
/// fields it has); `None` when they can match nothing there (a value of a
/// field it has never held).
fn ts_filters(conds: &[Cond], has: &dyn Fn(&str) -> bool) -> Result<Option<Vec<Filter>>> {
    let mut out = Vec::new();
    for c in conds {
        let f = &c.prop.field;
        if !has(f) {
            // Nothing has the field: only "absent" or a negation holds.
            let absent_ok = c.values.contains(&Value_::Absent);
            if absent_ok != c.negated {
                continue;
            }
            return Ok(None);
        }
        let exact: Vec<Value> = c
            .values
            .iter()
            .filter_map(|v| match v {
                Value_::Exact(s) => Some(Value::String(s.clone())),
                _ => None,
            })
            .collect();
        let others: Vec<&Value_> = c
            .values
            .iter()
            .filter(|v| !matches!(v, Value_::Exact(_)))
            .collect();
        let unsupported = || {
            invalid(format!(
                "filter on {}: a wildcard, `~` or '{}' value can be negated or combined with `|` only as the one value of its filter, and a wildcard or `~` not negated",
                c.prop.key, c.prop.none
            ))
        };
        match (c.negated, others.as_slice()) {
            (_, []) => out.push(filter(
                f,
                if c.negated { "not_in" } else { "in" },
                Value::Array(exact),
            )),
            (true, [Value_::Absent]) if exact.is_empty() => {
                out.push(filter(f, "exists", Value::Null))
            }
            (false, [one]) if exact.is_empty() => out.push(match one {
                Value_::Absent => filter(f, "missing", Value::Null),
                Value_::Prefix(p) => filter(f, "prefix", Value::String(p.clone())),
                Value_::Contains(p) => filter(f, "contains", Value::String(p.clone())),
                Value_::Exact(_) => return unsupported(),
            }),
            _ => return unsupported(),
        }
    }
    Ok(Some(out))
}

impl Ask<'_> {
    /// Totals per value of `group_by`'s last field (the breakdown's), or,
    /// when the stream has never held that field, all as one absent value.
    async fn groups(
        &self,
        extra: Vec<Filter>,
        aggregates: &[&str],
        group_by: &[String],
        has_field: bool,
        limit: usize,
    ) -> Result<Vec<(Option<String>, Value)>> {
        let field = group_by.last().cloned().unwrap_or_default();
        let by: &[String] = if has_field { group_by } else { &[] };
        let a = self.run(extra, aggregates, by, limit).await?;
        Ok(groups(&a, &field))
    }

    async fn run(
        &self,
        extra: Vec<Filter>,
        aggregates: &[&str],
        group_by: &[String],
        limit: usize,
    ) -> Result<Value> {
        let mut filters = self.filters.clone();
        filters.extend(extra);
        let req = Request {
            stream: self.stream.to_string(),
            from: Some(self.from.clone()),
            to: Some(self.to.clone()),
            interval: self.interval.map(str::to_string),
            aggregates: aggregates.iter().map(|s| s.to_string()).collect(),
            filters,
            group_by: group_by.to_vec(),
            limit: Some(limit.max(1)),
            other: Some(false),
            fill: Some("zero".into()),
            ..Request::default()
        };
        let answer = self.query.timeseries(req).await?;
        let source = match answer.value["source"].as_str() {
            Some(s) if s.starts_with("rollup") => "rollup",
            _ => "raw",
        };
        super::metrics::STATS_READS
            .with_label_values(&[source])
            .inc();
        Ok(answer.value.clone())
    }
}

/// Everything one stats request needs.
pub struct Stats<'a> {
    pub query: &'a QueryEngine,
    pub streams: &'a Streams,
    /// Today (UTC) on the app's clock.
    pub today: NaiveDate,
    /// Now, µs, on the app's clock.
    pub now_us: i64,
}

/// Values of one row (a bucket, a group, or the whole period).
#[derive(Debug, Default, Clone)]
struct Sums {
    visitors: f64,
    events: f64,
    pageviews: f64,
    visits: f64,
    bounces: f64,
    duration: f64,
    visit_pageviews: f64,
    /// Visits stored on events (uniq sessions), for event breakdowns.
    event_visits: f64,
}

impl Sums {
    fn value(&self, m: Metric, event_level: bool) -> Value {
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        match m {
            Metric::Visitors => json!(self.visitors.round() as i64),
            Metric::Events => json!(self.events.round() as i64),
            Metric::Pageviews => json!(self.pageviews.round() as i64),
            Metric::Visits if event_level => json!(self.event_visits.round() as i64),
            Metric::Visits => json!(self.visits.round() as i64),
            Metric::BounceRate => json!(ratio(self.bounces * 100.0, self.visits).round() as i64),
            Metric::VisitDuration => json!(ratio(self.duration, self.visits).round() as i64),
            Metric::ViewsPerVisit => {
                json!((ratio(self.visit_pageviews, self.visits) * 100.0).round() / 100.0)
            }
        }
    }
}

fn num(v: &Value, k: &str) -> f64 {
    v.get(k).and_then(Value::as_f64).unwrap_or(0.0)
}

/// `points` of a time-series answer's only series, by bucket start.
fn points(answer: &Value) -> Vec<(String, Value)> {
    answer["series"]
        .as_array()
        .and_then(|s| s.first())
        .and_then(|s| s["points"].as_array())
        .map(|ps| {
            ps.iter()
                .map(|p| (p["t"].as_str().unwrap_or_default().to_string(), p.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// A breakdown answer's series: group key text (`None`: absent) -> totals.
fn groups(answer: &Value, field: &str) -> Vec<(Option<String>, Value)> {
    answer["series"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter(|x| x["other"] != json!(true))
                .map(|x| {
                    (
                        x["group"][field].as_str().map(str::to_string),
                        x["totals"].clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

impl Stats<'_> {
    fn has(&self, stream: &str) -> impl Fn(&str) -> bool + '_ {
        let engine = self.query.engine().clone();
        let stream = stream.to_string();
        move |f: &str| engine.column_type(&stream, f).is_some()
    }

    fn site(&self, p: &Params) -> Result<String> {
        match p.get("site_id") {
            Some(s) => super::sites::normalize_domain(s)
                .map_err(|e| StatsError::Invalid(format!("site_id: {e}"))),
            None => invalid("The `site_id` parameter is required"),
        }
    }

    /// The asks on the events and the visits streams for a period and the
    /// request's filters, those needed; an ask is `None` when its filters
    /// match nothing (or its stream has nothing yet).
    #[allow(clippy::too_many_arguments)]
    fn asks(
        &self,
        site: &str,
        period: &Period,
        interval: Option<&'static str>,
        conds: &[Cond],
        need_events: bool,
        need_visits: bool,
    ) -> Result<(Option<Ask<'_>>, Option<Ask<'_>>)> {
        for c in conds {
            if need_visits && !c.prop.on_visits {
                return invalid(format!(
                    "Visit metrics and visit breakdowns cannot be filtered by the event property `{}`",
                    c.prop.key
                ));
            }
            if need_events && !c.prop.on_events {
                return invalid(format!(
                    "Event metrics (visitors, pageviews, events) and event breakdowns cannot be filtered by `visit:{}`",
                    c.prop.key
                ));
            }
        }
        let (from, to) = (rfc3339(period.from), rfc3339(period.to));
        let ev = match need_events {
            true => self.ask(&self.streams.events, site, &from, &to, interval, conds)?,
            false => None,
        };
        let vi = match need_visits {
            true => self.ask(&self.streams.visits, site, &from, &to, interval, conds)?,
            false => None,
        };
        Ok((ev, vi))
    }

    /// An ask on `stream`: `None` when it has no events yet or `conds`
    /// match nothing there.
    fn ask<'s>(
        &'s self,
        stream: &'s str,
        site: &str,
        from: &str,
        to: &str,
        interval: Option<&'static str>,
        conds: &[Cond],
    ) -> Result<Option<Ask<'s>>> {
        if self.query.engine().column_type(stream, "site").is_none() {
            return Ok(None);
        }
        let Some(more) = ts_filters(conds, &self.has(stream))? else {
            return Ok(None);
        };
        let mut filters = vec![filter("site", "=", Value::String(site.to_string()))];
        filters.extend(more);
        Ok(Some(Ask {
            query: self.query,
            stream,
            from: from.to_string(),
            to: to.to_string(),
            interval,
            filters,
        }))
    }

    /// `/api/v1/stats/realtime/visitors`: unique visitors of the last 5
    /// minutes.
    pub async fn realtime_visitors(&self, p: &Params) -> Result<u64> {
        let site = self.site(p)?;
        let to = self.now_us + 1;
        let from = to - 5 * 60_000_000;
        let t = |us: i64| {
            chrono::DateTime::from_timestamp_micros(us)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        };
        let Some(ev) = self.ask(&self.streams.events, &site, &t(from), &t(to), None, &[])? else {
            return Ok(0);
        };
        let a = ev
            .run(
                vec![filter("name", "!=", json!(ENGAGEMENT))],
                &["uniq(visitor)"],
                &[],
                1,
            )
            .await?;
        Ok(num(&a["totals"], "uniq(visitor)").round() as u64)
    }

    /// Event and visit sums over the whole period or per bucket.
    async fn sums(
        &self,
        ev: Option<&Ask<'_>>,
        vi: Option<&Ask<'_>>,
        metrics: &[Metric],
    ) -> Result<(Sums, Vec<(String, Sums)>)> {
        let mut total = Sums::default();
        let mut buckets: Vec<(String, Sums)> = Vec::new();
        fn at(buckets: &mut Vec<(String, Sums)>, t: &str) -> usize {
            match buckets.iter().position(|(b, _)| b == t) {
                Some(i) => i,
                None => {
                    buckets.push((t.to_string(), Sums::default()));
                    buckets.len() - 1
                }
            }
        }
        if let Some(ev) = ev {
            if metrics
                .iter()
                .any(|m| matches!(m, Metric::Visitors | Metric::Events))
            {
                let a = ev
                    .run(
                        vec![filter("name", "!=", json!(ENGAGEMENT))],
                        &["count", "uniq(visitor)"],
                        &[],
                        1,
                    )
                    .await?;
                total.events = num(&a["totals"], "count");
                total.visitors = num(&a["totals"], "uniq(visitor)");
                for (t, p) in points(&a) {
                    let i = at(&mut buckets, &t);
                    buckets[i].1.events = num(&p, "count");
                    buckets[i].1.visitors = num(&p, "uniq(visitor)");
                }
            }
            if metrics.contains(&Metric::Pageviews) {
                let a = ev
                    .run(
                        vec![filter("name", "=", json!(PAGEVIEW))],
                        &["count"],
                        &[],
                        1,
                    )
                    .await?;
                total.pageviews = num(&a["totals"], "count");
                for (t, p) in points(&a) {
                    let i = at(&mut buckets, &t);
                    buckets[i].1.pageviews = num(&p, "count");
                }
            }
        }
        if let Some(vi) = vi {
            let aggs = [
                "sum(sign)",
                "sum(bounce)",
                "sum(duration)",
                "sum(pageviews)",
            ];
            let a = vi.run(Vec::new(), &aggs, &[], 1).await?;
            let fill = |s: &mut Sums, v: &Value| {
                s.visits = num(v, "sum(sign)");
                s.bounces = num(v, "sum(bounce)");
                s.duration = num(v, "sum(duration)");
                s.visit_pageviews = num(v, "sum(pageviews)");
            };
            fill(&mut total, &a["totals"]);
            for (t, p) in points(&a) {
                let i = at(&mut buckets, &t);
                fill(&mut buckets[i].1, &p);
            }
        }
        buckets.sort_by(|a, b| a.0.cmp(&b.0));
        Ok((total, buckets))
    }

    fn range(&self, p: &Params) -> Result<(String, Vec<Metric>, Vec<Cond>, Period)> {
        let site = self.site(p)?;
        let metrics = metrics(p)?;
        let conds = parse_filters(p.get("filters").unwrap_or_default())?;
        let period = period(p, self.today)?;
        Ok((site, metrics, conds, period))
    }

    /// `/api/v1/stats/aggregate`.
    pub async fn aggregate(&self, p: &Params) -> Result<Value> {
        let (site, metrics, conds, period) = self.range(p)?;
        let (ev, vi) = self.asks(
            &site,
            &period,
            None,
            &conds,
            metrics.iter().any(|m| !m.of_visits()),
            metrics.iter().any(|m| m.of_visits()),
        )?;
        let (total, _) = self.sums(ev.as_ref(), vi.as_ref(), &metrics).await?;
        let mut results = Map::new();
        for m in &metrics {
            results.insert(m.name().into(), json!({"value": total.value(*m, false)}));
        }
        Ok(json!({ "results": results }))
    }

    /// `/api/v1/stats/timeseries`.
    pub async fn timeseries(&self, p: &Params) -> Result<Value> {
        let (site, metrics, conds, period) = self.range(p)?;
        let interval = p.get("interval").unwrap_or(period.default_interval);
        let (iv, fmt): (&'static str, &str) = match interval {
            "hour" => ("1h", "%Y-%m-%d %H:%M:%S"),
            "date" | "day" => ("1d", "%Y-%m-%d"),
            "week" => ("1w", "%Y-%m-%d"),
            "month" => ("1mo", "%Y-%m-%d"),
            other => {
                return invalid(format!(
                    "Error parsing `interval` parameter: invalid interval `{other}`. Use hour, date, week or month"
                ))
            }
        };
        let (ev, vi) = self.asks(
            &site,
            &period,
            Some(iv),
            &conds,
            metrics.iter().any(|m| !m.of_visits()),
            metrics.iter().any(|m| m.of_visits()),
        )?;
        let (_, buckets) = self.sums(ev.as_ref(), vi.as_ref(), &metrics).await?;
        let mut rows = Vec::new();
        // Every bucket of the period, zero where nothing happened.
        let mut t = bucket_start(period.from, iv);
        let end = period.to.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
        while t < end {
            let key = t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let s = buckets
                .iter()
                .find(|(b, _)| same_instant(b, &key))
                .map(|(_, s)| s.clone())
                .unwrap_or_default();
            let mut row = Map::new();
            row.insert("date".into(), json!(t.format(fmt).to_string()));
            for m in &metrics {
                row.insert(m.name().into(), s.value(*m, false));
            }
            rows.push(Value::Object(row));
            t = next_bucket(t, iv);
        }
        Ok(json!({ "results": rows }))
    }

    /// `/api/v1/stats/breakdown`.
    pub async fn breakdown(&self, p: &Params) -> Result<Value> {
        let (site, metrics, conds, period) = self.range(p)?;
        let Some(property) = p.get("property") else {
            return invalid("The `property` parameter is required for breakdown");
        };
        let prop = prop(property)?;
        let limit: usize = match p.get("limit").map(str::parse::<usize>) {
            None => 100,
            Some(Ok(n)) if (1..=1000).contains(&n) => n,
            _ => return invalid("The `limit` parameter must be a number from 1 to 1000"),
        };
        let page: usize = match p.get("page").map(str::parse::<usize>) {
            None => 1,
            Some(Ok(n)) if n >= 1 => n,
            _ => return invalid("The `page` parameter must be a number from 1"),
        };
        if page * limit > tally_query::timeseries::MAX_GROUPS {
            return invalid(format!(
                "page × limit may be at most {}: only the top {} values of a breakdown can be paged through",
                tally_query::timeseries::MAX_GROUPS,
                tally_query::timeseries::MAX_GROUPS
            ));
        }
        let event_level = !prop.on_visits;
        for m in &metrics {
            let ok = match (event_level, m) {
                (false, _) => true,
                (true, Metric::ViewsPerVisit | Metric::VisitDuration) => false,
                (true, Metric::BounceRate) => prop.field == "pathname",
                (true, _) => true,
            };
            if !ok {
                return invalid(format!(
                    "Metric `{}` cannot be queried for breakdown by `{property}`",
                    m.name()
                ));
            }
        }
        let (ev, vi) = self.asks(
            &site,
            &period,
            None,
            &conds,
            event_level,
            !event_level || metrics.contains(&Metric::BounceRate),
        )?;
        let mut rows: Vec<(Option<String>, Sums)> = Vec::new();
        let want = page * limit;
        let mut group_by = vec![prop.field.clone()];
        if prop.field == "browser_version" {
            group_by.insert(0, "browser".into());
        }
        if prop.field == "os_version" {
            group_by.insert(0, "os".into());
        }
        if event_level {
            if let Some(ev) = &ev {
                let has = self.has(&self.streams.events);
                let name_filter = filter("name", "!=", json!(ENGAGEMENT));
                // The top groups are those of the aggregate behind the
                // first metric (the time-series API ranks by the first).
                // Sketches only for the metrics asked (merging them is
                // most of a breakdown's work).
                let mut aggs = vec!["count"];
                if metrics.contains(&Metric::Visitors) {
                    aggs.push("uniq(visitor)");
                }
                if metrics.contains(&Metric::Visits) {
                    aggs.push("uniq(session)");
                }
                let lead = match metrics[0] {
                    Metric::Visitors => "uniq(visitor)",
                    Metric::Visits => "uniq(session)",
                    _ => "count",
                };
                lead_with(&mut aggs, lead);
                for (k, t) in ev
                    .groups(vec![name_filter], &aggs, &group_by, has(&prop.field), want)
                    .await?
                {
                    if num(&t, "count") > 0.0 {
                        let sums = Sums {
                            events: num(&t, "count"),
                            visitors: num(&t, "uniq(visitor)"),
                            event_visits: num(&t, "uniq(session)"),
                            ..Sums::default()
                        };
                        rows.push((k, sums));
                    }
                }
                let keys: Vec<Value> = rows
                    .iter()
                    .filter_map(|(k, _)| k.clone().map(Value::String))
                    .collect();
                if metrics.contains(&Metric::Pageviews) && has(&prop.field) && !keys.is_empty() {
                    let a = ev
                        .run(
                            vec![
                                filter("name", "=", json!(PAGEVIEW)),
                                filter(&prop.field, "in", Value::Array(keys.clone())),
                            ],
                            &["count"],
                            &group_by,
                            keys.len(),
                        )
                        .await?;
                    for (k, t) in groups(&a, &prop.field) {
                        if let Some(r) = rows.iter_mut().find(|(rk, _)| *rk == k) {
                            r.1.pageviews = num(&t, "count");
                        }
                    }
                }
                if metrics.contains(&Metric::BounceRate) && !keys.is_empty() {
                    // A page's bounce rate is that of the visits entering on it.
                    if let Some(vi) = &vi {
                        let a = vi
                            .run(
                                vec![filter("entry_page", "in", Value::Array(keys.clone()))],
                                &["sum(sign)", "sum(bounce)"],
                                &["entry_page".to_string()],
                                keys.len(),
                            )
                            .await?;
                        for (k, t) in groups(&a, "entry_page") {
                            if let Some(r) = rows.iter_mut().find(|(rk, _)| *rk == k) {
                                r.1.visits = num(&t, "sum(sign)");
                                r.1.bounces = num(&t, "sum(bounce)");
                            }
                        }
                    }
                }
            }
        } else if let Some(vi) = &vi {
            let has = self.has(&self.streams.visits);
            let mut aggs = vec![
                "sum(sign)",
                "sum(bounce)",
                "sum(duration)",
                "sum(pageviews)",
                "sum(events)",
                "uniq(visitor)",
            ];
            let lead = match metrics[0] {
                Metric::Visitors => "uniq(visitor)",
                Metric::Pageviews => "sum(pageviews)",
                Metric::Events => "sum(events)",
                // Rates and averages: the most visited groups.
                _ => "sum(sign)",
            };
            lead_with(&mut aggs, lead);
            let sums = |t: &Value| Sums {
                visits: num(t, "sum(sign)"),
                bounces: num(t, "sum(bounce)"),
                duration: num(t, "sum(duration)"),
                visit_pageviews: num(t, "sum(pageviews)"),
                pageviews: num(t, "sum(pageviews)"),
                events: num(t, "sum(events)"),
                visitors: num(t, "uniq(visitor)"),
                ..Sums::default()
            };
            // A visit's rows cancel in pairs, so a group whose visits all
            // moved on (an old exit page) sums to 0 and is left out.
            for (k, t) in vi
                .groups(Vec::new(), &aggs, &group_by, has(&prop.field), want)
                .await?
            {
                if num(&t, "sum(sign)") > 0.0 {
                    rows.push((k, sums(&t)));
                }
            }
            if prop.field == "exit_page" && metrics.contains(&Metric::Visitors) {
                self.exit_page_visitors(&site, &period, &conds, &mut rows)
                    .await?;
            }
        }
        let first = metrics[0];
        rows.sort_by(|a, b| {
            let va = a.1.value(first, event_level).as_f64().unwrap_or(0.0);
            let vb = b.1.value(first, event_level).as_f64().unwrap_or(0.0);
            vb.partial_cmp(&va)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then_with(|| a.0.cmp(&b.0))
        });
        let results: Vec<Value> = rows
            .into_iter()
            .skip((page - 1) * limit)
            .take(limit)
            .map(|(k, s)| {
                let mut row = Map::new();
                row.insert(
                    prop.key.clone(),
                    json!(k.unwrap_or_else(|| prop.none.to_string())),
                );
                for m in &metrics {
                    row.insert(m.name().into(), s.value(*m, event_level));
                }
                Value::Object(row)
            })
            .collect();
        Ok(json!({ "results": results }))
    }

    /// Visitors per exit page, exactly: a visit's earlier exit pages are
    /// cancelled in its rows' sums but not in a distinct-count sketch, so
    /// these are counted from the visits whose rows sum to one, in SQL.
    async fn exit_page_visitors(
        &self,
        site: &str,
        period: &Period,
        conds: &[Cond],
        rows: &mut [(Option<String>, Sums)],
    ) -> Result<()> {
        let q = |s: &str| format!("'{}'", s.replace('\'', "''"));
        let mut wheres = vec![
            format!("site = {}", q(site)),
            format!("ts >= TIMESTAMP {}", q(&rfc3339(period.from))),
            format!("ts < TIMESTAMP {}", q(&rfc3339(period.to))),
        ];
        for c in conds {
            let f = format!("\"{}\"", c.prop.field.replace('"', "\"\""));
            let alts: Vec<String> = c
                .values
                .iter()
                .map(|v| match v {
                    Value_::Exact(s) => format!("{f} = {}", q(s)),
                    Value_::Prefix(s) => format!("starts_with({f}, {})", q(s)),
                    Value_::Contains(s) => format!("strpos({f}, {}) > 0", q(s)),
                    Value_::Absent => format!("{f} IS NULL"),
                })
                .collect();
            let any = format!("({})", alts.join(" OR "));
            wheres.push(if c.negated {
                format!("NOT coalesce({any}, false)")
            } else {
                any
            });
        }
        let sql = format!(
            "SELECT exit_page, count(DISTINCT visitor) AS visitors FROM (\
             SELECT session, visitor, exit_page FROM \"{}\" WHERE {} \
             GROUP BY session, visitor, exit_page HAVING sum(sign) > 0) GROUP BY exit_page",
            self.streams.visits.replace('"', "\"\""),
            wheres.join(" AND ")
        );
        let answer = self.query.sql(&sql).await?;
        let mut exact: HashMap<Option<String>, f64> = HashMap::new();
        for b in &answer.batches {
            let pages = arrow::array::cast::as_string_array(b.column(0));
            let n = b.column(1);
            let counts = arrow::compute::cast(n, &arrow::datatypes::DataType::Float64)
                .map_err(|e| StatsError::Invalid(e.to_string()))?;
            let counts =
                arrow::array::cast::as_primitive_array::<arrow::datatypes::Float64Type>(&counts);
            for i in 0..b.num_rows() {
                let page =
                    (!arrow::array::Array::is_null(pages, i)).then(|| pages.value(i).to_string());
                exact.insert(page, counts.value(i));
            }
        }
        for (k, s) in rows.iter_mut() {
            s.visitors = exact.get(k).copied().unwrap_or(0.0);
        }
        Ok(())
    }
}

/// Moves `lead` to the front of `aggs`.
fn lead_with(aggs: &mut Vec<&str>, lead: &'static str) {
    aggs.retain(|a| *a != lead);
    aggs.insert(0, lead);
}

fn bucket_start(d: NaiveDate, iv: &str) -> chrono::DateTime<chrono::Utc> {
    let d = match iv {
        "1w" => d - Duration::days(d.weekday().num_days_from_monday() as i64),
        "1mo" => month_start(d, 0),
        _ => d,
    };
    d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
}

fn next_bucket(t: chrono::DateTime<chrono::Utc>, iv: &str) -> chrono::DateTime<chrono::Utc> {
    match iv {
        "1h" => t + Duration::hours(1),
        "1d" => t + Duration::days(1),
        "1w" => t + Duration::days(7),
        _ => month_start(t.date_naive(), -1)
            .and_hms_opt(0, 0, 0)
            .unwrap_or_default()
            .and_utc(),
    }
}

fn same_instant(a: &str, b: &str) -> bool {
    match (
        chrono::DateTime::parse_from_rfc3339(a),
        chrono::DateTime::parse_from_rfc3339(b),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(kv: &[(&str, &str)]) -> Params {
        Params(
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn periods_as_plausible_defines_them() {
        let today = NaiveDate::from_ymd_opt(2024, 3, 15).unwrap();
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let cases = [
            (vec![("period", "day")], "2024-03-15", "2024-03-16"),
            (
                vec![("period", "day"), ("date", "2024-02-29")],
                "2024-02-29",
                "2024-03-01",
            ),
            (vec![("period", "7d")], "2024-03-09", "2024-03-16"),
            (vec![("period", "30d")], "2024-02-15", "2024-03-16"),
            (vec![("period", "month")], "2024-03-01", "2024-04-01"),
            (vec![("period", "6mo")], "2023-10-01", "2024-04-01"),
            (vec![("period", "12mo")], "2023-04-01", "2024-04-01"),
            (
                vec![("period", "custom"), ("date", "2024-01-01,2024-01-31")],
                "2024-01-01",
                "2024-02-01",
            ),
        ];
        for (kv, from, to) in cases {
            let p = period(&params(&kv), today).unwrap();
            assert_eq!((p.from, p.to), (d(from), d(to)), "{kv:?}");
        }
        for bad in [
            vec![("period", "week")],
            vec![("period", "custom")],
            vec![("period", "custom"), ("date", "2024-02-01,2024-01-01")],
            vec![("period", "day"), ("date", "2024-13-01")],
        ] {
            assert!(period(&params(&bad), today).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn filters_parse_into_conditions() {
        let c = parse_filters("visit:source==Google|Direct / None;event:page==/blog/**").unwrap();
        assert_eq!(c[0].prop.field, "source");
        assert_eq!(
            c[0].values,
            vec![Value_::Exact("Google".into()), Value_::Absent]
        );
        assert_eq!(c[1].values, vec![Value_::Prefix("/blog/".into())]);
        let n = parse_filters("event:props:plan!=free").unwrap();
        assert!(n[0].negated);
        assert_eq!(n[0].prop.field, "prop.plan");
        for bad in [
            "visit:city==Oslo",
            "event:page==/a*b",
            "visit:source=Google",
        ] {
            assert!(parse_filters(bad).is_err(), "{bad}");
        }
    }
}
