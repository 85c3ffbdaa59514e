//! Asking the time-series API on one of the app's streams, and reading its
//! answers: filters from the request's conditions, the answers' points and
//! groups, the sums a row of metrics is computed from.

use super::params::{month_start, Cond, Metric, Value_};
use super::{invalid, Result};
use chrono::{Datelike, Duration, NaiveDate};
use serde_json::{json, Value};
use tally_query::timeseries::{Filter, Op, Request};
use tally_query::QueryEngine;

/// One question to the time-series API.
pub(super) struct Ask<'a> {
    pub(super) query: &'a QueryEngine,
    pub(super) stream: &'a str,
    pub(super) from: String,
    pub(super) to: String,
    pub(super) interval: Option<&'static str>,
    pub(super) filters: Vec<Filter>,
}

pub(super) fn filter(field: &str, op: Op, value: Value) -> Filter {
    Filter {
        field: field.into(),
        op: op.as_str().into(),
        value,
        table: None,
    }
}

/// The time-series filters for `conds` on a stream (`has` tells which
/// fields it has); `None` when they can match nothing there (a value of a
/// field it has never held).
pub(super) fn ts_filters(
    conds: &[Cond],
    has: &dyn Fn(&str) -> bool,
) -> Result<Option<Vec<Filter>>> {
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
                if c.negated { Op::NotIn } else { Op::In },
                Value::Array(exact),
            )),
            (true, [Value_::Absent]) if exact.is_empty() => {
                out.push(filter(f, Op::Exists, Value::Null))
            }
            (false, [one]) if exact.is_empty() => out.push(match one {
                Value_::Absent => filter(f, Op::Missing, Value::Null),
                Value_::Prefix(p) => filter(f, Op::Prefix, Value::String(p.clone())),
                Value_::Contains(p) => filter(f, Op::Contains, Value::String(p.clone())),
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
    pub(super) async fn groups(
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

    pub(super) async fn run(
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
        crate::web::metrics::STATS_READS
            .with_label_values(&[source])
            .inc();
        Ok(answer.value.clone())
    }
}

/// Values of one row (a bucket, a group, or the whole period).
#[derive(Debug, Default, Clone)]
pub(super) struct Sums {
    pub(super) visitors: f64,
    pub(super) events: f64,
    pub(super) pageviews: f64,
    pub(super) visits: f64,
    pub(super) bounces: f64,
    pub(super) duration: f64,
    pub(super) visit_pageviews: f64,
    /// Visits stored on events (uniq sessions), for event breakdowns.
    pub(super) event_visits: f64,
}

impl Sums {
    pub(super) fn value(&self, m: Metric, event_level: bool) -> Value {
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

pub(super) fn num(v: &Value, k: &str) -> f64 {
    v.get(k).and_then(Value::as_f64).unwrap_or(0.0)
}

/// `points` of a time-series answer's only series, by bucket start.
pub(super) fn points(answer: &Value) -> Vec<(String, Value)> {
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

/// A breakdown answer's series: group key text (`None`: absent) -> totals,
/// with the whole group (every field grouped by) under `"group"`.
pub(super) fn groups(answer: &Value, field: &str) -> Vec<(Option<String>, Value)> {
    answer["series"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter(|x| x["other"] != json!(true))
                .map(|x| {
                    let mut totals = x["totals"].clone();
                    if let Some(t) = totals.as_object_mut() {
                        t.insert("group".into(), x["group"].clone());
                    }
                    (x["group"][field].as_str().map(str::to_string), totals)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Moves `lead` to the front of `aggs`.
pub(super) fn lead_with(aggs: &mut Vec<&str>, lead: &'static str) {
    aggs.retain(|a| *a != lead);
    aggs.insert(0, lead);
}

pub(super) fn bucket_start(d: NaiveDate, iv: &str) -> chrono::DateTime<chrono::Utc> {
    let d = match iv {
        "1w" => d - Duration::days(d.weekday().num_days_from_monday() as i64),
        "1mo" => month_start(d, 0),
        _ => d,
    };
    d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
}

pub(super) fn next_bucket(
    t: chrono::DateTime<chrono::Utc>,
    iv: &str,
) -> chrono::DateTime<chrono::Utc> {
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

pub(super) fn same_instant(a: &str, b: &str) -> bool {
    match (
        chrono::DateTime::parse_from_rfc3339(a),
        chrono::DateTime::parse_from_rfc3339(b),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}
