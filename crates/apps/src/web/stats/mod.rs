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

mod ask;
mod params;

pub use params::{Metric, Params};

use super::visits::{ENGAGEMENT, PAGEVIEW};
use super::writer::Streams;
use ask::{
    bucket_start, filter, groups, lead_with, next_bucket, num, points, same_instant, ts_filters,
    Ask, Sums,
};
use chrono::NaiveDate;
use params::{metrics, parse_filters, period, prop, rfc3339, Cond, Period, Value_};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use tally_engine::{Aggregate, Grain, RollupDef};
use tally_query::timeseries::Op;
use tally_query::{QueryEngine, QueryError};

/// Errors of a stats request.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// The request is wrong: 400 with this message.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Query(#[from] QueryError),
}

pub(crate) type Result<T> = std::result::Result<T, StatsError>;

pub(crate) fn invalid<T>(message: impl Into<String>) -> Result<T> {
    Err(StatsError::Invalid(message.into()))
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

/// Checks a stats request's parameters as the endpoints do before they
/// read anything: site, metrics, filters, period, and the interval,
/// property, limit and page where given. (The fuzz target's entry point.)
pub fn check_params(p: &Params, today: NaiveDate) -> Result<()> {
    let (_, _, _, period) = range(p, today)?;
    if p.get("interval").is_some() {
        interval(p, &period)?;
    }
    if p.get("property").is_some() {
        breakdown_args(p)?;
    }
    Ok(())
}

fn site(p: &Params) -> Result<String> {
    match p.get("site_id") {
        Some(s) => super::sites::normalize_domain(s)
            .map_err(|e| StatsError::Invalid(format!("site_id: {e}"))),
        None => invalid("The `site_id` parameter is required"),
    }
}

/// The site, metrics, filter conditions and period every endpoint takes.
fn range(p: &Params, today: NaiveDate) -> Result<(String, Vec<Metric>, Vec<Cond>, Period)> {
    let site = site(p)?;
    let metrics = metrics(p)?;
    let conds = parse_filters(p.get("filters").unwrap_or_default())?;
    let period = period(p, today)?;
    Ok((site, metrics, conds, period))
}

/// A timeseries' bucket (as `/v1/query` names it) and the format of its
/// dates.
fn interval(p: &Params, period: &Period) -> Result<(&'static str, &'static str)> {
    Ok(match p.get("interval").unwrap_or(period.default_interval) {
        "hour" => ("1h", "%Y-%m-%d %H:%M:%S"),
        "date" | "day" => ("1d", "%Y-%m-%d"),
        "week" => ("1w", "%Y-%m-%d"),
        "month" => ("1mo", "%Y-%m-%d"),
        other => {
            return invalid(format!(
                "Error parsing `interval` parameter: invalid interval `{other}`. Use hour, date, week or month"
            ))
        }
    })
}

/// A breakdown's property, its place, and the page asked for (`limit`
/// rows, page `page` from 1).
fn breakdown_args(p: &Params) -> Result<(&str, params::Prop, usize, usize)> {
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
    if page.saturating_mul(limit) > tally_query::timeseries::MAX_GROUPS {
        return invalid(format!(
            "page × limit may be at most {}: only the top {} values of a breakdown can be paged through",
            tally_query::timeseries::MAX_GROUPS,
            tally_query::timeseries::MAX_GROUPS
        ));
    }
    Ok((property, prop, limit, page))
}

/// Everything one stats request needs.
pub struct Stats<'a> {
    pub query: &'a QueryEngine,
    pub streams: &'a Streams,
    /// The sites tracked: a request for another is a 404.
    pub sites: &'a super::sites::Sites,
    /// Today (UTC) on the app's clock.
    pub today: NaiveDate,
    /// Now, µs, on the app's clock.
    pub now_us: i64,
}

impl Stats<'_> {
    /// The request's site, one of the sites tracked, or a 404.
    fn known(&self, site: String) -> Result<String> {
        match self.sites.contains(&site) {
            true => Ok(site),
            false => Err(StatsError::Query(QueryError::NotFound {
                what: "site",
                name: site,
            })),
        }
    }

    fn has(&self, stream: &str) -> impl Fn(&str) -> bool + '_ {
        let engine = self.query.engine().clone();
        let stream = stream.to_string();
        move |f: &str| engine.column_type(&stream, f).is_some()
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
        let mut filters = vec![filter("site", Op::Eq, Value::String(site.to_string()))];
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
        let site = self.known(site(p)?)?;
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
                vec![filter("name", Op::Ne, json!(ENGAGEMENT))],
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
                        vec![filter("name", Op::Ne, json!(ENGAGEMENT))],
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
                        vec![filter("name", Op::Eq, json!(PAGEVIEW))],
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

    /// `/api/v1/stats/aggregate`.
    pub async fn aggregate(&self, p: &Params) -> Result<Value> {
        let (site, metrics, conds, period) = range(p, self.today)?;
        let site = self.known(site)?;
        let (ev, vi) = self.asks(
            &site,
            &period,
            None,
            &conds,
            metrics.iter().any(|m| !m.of_visits()),
            metrics.iter().any(|m| m.of_visits()),
        )?;
        let (mut total, _) = self.sums(ev.as_ref(), vi.as_ref(), &metrics).await?;
        if ev.is_some()
            && metrics.contains(&Metric::Visitors)
            && total.visitors < EXACT_VISITORS_BELOW
        {
            if let Some(n) = self.exact_visitors(&site, &period, &conds).await? {
                total.visitors = n;
            }
        }
        let mut results = Map::new();
        for m in &metrics {
            results.insert(m.name().into(), json!({"value": total.value(*m, false)}));
        }
        Ok(json!({ "results": results }))
    }

    /// `/api/v1/stats/timeseries`.
    pub async fn timeseries(&self, p: &Params) -> Result<Value> {
        let (site, metrics, conds, period) = range(p, self.today)?;
        let site = self.known(site)?;
        let (iv, fmt) = interval(p, &period)?;
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
        let (site, metrics, conds, period) = range(p, self.today)?;
        let site = self.known(site)?;
        let (property, prop, limit, page) = breakdown_args(p)?;
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
        // Each row's parent value (a version's browser or OS), by row.
        let mut parents: HashMap<usize, Option<String>> = HashMap::new();
        let want = page * limit;
        let mut group_by = vec![prop.field.clone()];
        if let Some(parent) = prop.parent {
            group_by.insert(0, parent.into());
        }
        if event_level {
            if let Some(ev) = &ev {
                let has = self.has(&self.streams.events);
                let name_filter = filter("name", Op::Ne, json!(ENGAGEMENT));
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
                                filter("name", Op::Eq, json!(PAGEVIEW)),
                                filter(&prop.field, Op::In, Value::Array(keys.clone())),
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
                                vec![filter("entry_page", Op::In, Value::Array(keys.clone()))],
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
                    if let Some(parent) = prop.parent {
                        let name = t["group"][parent].as_str().map(str::to_string);
                        parents.insert(rows.len(), name);
                    }
                    rows.push((k, sums(&t)));
                }
            }
            if prop.field == "exit_page" && metrics.contains(&Metric::Visitors) {
                self.exit_page_visitors(&site, &period, &conds, &mut rows)
                    .await?;
            }
        }
        let first = metrics[0];
        let mut rows: Vec<(Option<String>, Option<String>, Sums)> = rows
            .into_iter()
            .enumerate()
            .map(|(i, (k, s))| (parents.remove(&i).flatten(), k, s))
            .collect();
        rows.sort_by(|a, b| {
            let va = a.2.value(first, event_level).as_f64().unwrap_or(0.0);
            let vb = b.2.value(first, event_level).as_f64().unwrap_or(0.0);
            vb.partial_cmp(&va)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then_with(|| (&a.0, &a.1).cmp(&(&b.0, &b.1)))
        });
        let none = |v: Option<String>| json!(v.unwrap_or_else(|| prop.none.to_string()));
        let results: Vec<Value> = rows
            .into_iter()
            .skip((page - 1) * limit)
            .take(limit)
            .map(|(parent, k, s)| {
                let mut row = Map::new();
                if let Some(name) = prop.parent {
                    row.insert(name.into(), none(parent));
                }
                row.insert(prop.key.clone(), none(k));
                for m in &metrics {
                    row.insert(m.name().into(), s.value(*m, event_level));
                }
                Value::Object(row)
            })
            .collect();
        Ok(json!({ "results": results }))
    }

    /// A period's unique visitors counted exactly, in SQL over the events:
    /// below [`EXACT_VISITORS_BELOW`] (as the rollups' sketch estimates
    /// them) that is cheap, and a small site's headline number is then
    /// exact rather than within the sketch's error (an estimate a few
    /// percent high can read as more visitors than visits).
    /// `None` when a filter names a field the events do not have (the
    /// estimate, which the asks made of such filters, stands).
    async fn exact_visitors(
        &self,
        site: &str,
        period: &Period,
        conds: &[Cond],
    ) -> Result<Option<f64>> {
        let has = self.has(&self.streams.events);
        if !["site", "name", "visitor"]
            .into_iter()
            .chain(conds.iter().map(|c| c.prop.field.as_str()))
            .all(has)
        {
            return Ok(None);
        }
        let mut wheres = sql_conditions(site, period, conds);
        wheres.push(format!("name <> '{}'", ENGAGEMENT.replace('\'', "''")));
        let sql = format!(
            "SELECT count(DISTINCT visitor) AS visitors FROM \"{}\" WHERE {}",
            self.streams.events.replace('"', "\"\""),
            wheres.join(" AND ")
        );
        let answer = self.query.sql(&sql).await?;
        let Some(b) = answer.batches.iter().find(|b| b.num_rows() > 0) else {
            return Ok(Some(0.0));
        };
        let n = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Float64)
            .map_err(|e| StatsError::Invalid(e.to_string()))?;
        Ok(Some(
            arrow::array::cast::as_primitive_array::<arrow::datatypes::Float64Type>(&n).value(0),
        ))
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
        let sql = format!(
            "SELECT exit_page, count(DISTINCT visitor) AS visitors FROM (\
             SELECT session, visitor, exit_page FROM \"{}\" WHERE {} \
             GROUP BY session, visitor, exit_page HAVING sum(sign) > 0) GROUP BY exit_page",
            self.streams.visits.replace('"', "\"\""),
            sql_conditions(site, period, conds).join(" AND ")
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

/// Below this many unique visitors (as the sketches estimate them), an
/// aggregate's visitors are counted exactly in SQL.
const EXACT_VISITORS_BELOW: f64 = 20_000.0;

/// The SQL conditions for a site's events or visits of a period that meet
/// `conds`.
fn sql_conditions(site: &str, period: &Period, conds: &[Cond]) -> Vec<String> {
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
    wheres
}
