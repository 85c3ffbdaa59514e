//! The time-series API: one stream, a time range, buckets, aggregates,
//! filters, a top-N breakdown with an "other" series, filled gaps, totals.
//!
//! A request is validated against the stream's schema (unknown fields and
//! type mismatches are named), then compiled into DataFusion logical plans
//! (never SQL text, so no quoting can go wrong) that run on the same tables
//! as SQL:
//! 1. with `group_by`: the top `limit` groups by the ranking aggregate;
//! 2. the series: aggregates per (bucket, group), rows outside the top
//!    groups folded into one "other" group, computed from the raw rows so
//!    distinct counts and percentiles of "other" are right too;
//! 3. totals per group over the whole range, and the grand total.
//!
//! Buckets are calendar-aware in the request's time zone ([`bucket_start`]):
//! a day is local midnight to local midnight (23 or 25 hours across a DST
//! change), a month starts on the 1st. Fixed widths (minutes, hours) are
//! aligned to local clock time with the instant's own offset, so the two
//! 01:00 hours of a DST fall-back are two buckets.

use crate::{collect_plan, QueryEngine, QueryError, QueryState, Result};
use arrow::array::{Array, ArrayRef, AsArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit, UInt64Type};
use chrono::{DateTime, Datelike, NaiveDate, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use datafusion::catalog::TableProvider;
use datafusion::common::{Column, ScalarValue};
use datafusion::datasource::provider_as_source;
use datafusion::functions_aggregate::expr_fn as agg;
use datafusion::logical_expr::{
    create_udf, lit, ColumnarValue, Expr, LogicalPlanBuilder, ScalarUDF, SortExpr, Volatility,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use tally_ingest::ColumnType;

/// Most buckets one answer may have.
pub const MAX_BUCKETS: usize = 10_000;
/// Most groups a breakdown may ask for.
pub const MAX_GROUPS: usize = 1_000;

/// A time-series request, as sent (JSON body or query parameters).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub stream: String,
    /// RFC 3339, a date (midnight in `timezone`), `now`, or `now-24h`;
    /// default `to - 24h`.
    pub from: Option<String>,
    /// Exclusive end; same forms; default `now`.
    pub to: Option<String>,
    /// Bucket width (`1m` ... `12h`, `1d`, `1w`, `1mo`); none: totals only.
    pub interval: Option<String>,
    /// IANA time zone for buckets and dates; default UTC.
    pub timezone: Option<String>,
    /// Aggregates, default `["count"]`.
    #[serde(default)]
    pub aggregates: Vec<String>,
    #[serde(default)]
    pub filters: Vec<Filter>,
    #[serde(default)]
    pub group_by: Vec<String>,
    /// Top groups kept by `order_by` (default 10); the rest form "other".
    pub limit: Option<usize>,
    /// The aggregate that ranks groups; default the first.
    pub order_by: Option<String>,
    /// Include the "other" series (default true).
    pub other: Option<bool>,
    /// Empty buckets: `null` (default), `zero`, or `none` (left out).
    pub fill: Option<String>,
}

/// One filter: `field op value`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    pub field: String,
    /// `=`, `!=`, `in`, `not_in`, `prefix`, `contains`, `>`, `>=`, `<`,
    /// `<=`, `under` (tree), `exists`, `missing`.
    pub op: String,
    #[serde(default)]
    pub value: Value,
    /// For `under`: the tree dimension table.
    pub table: Option<String>,
}

/// A bucket width.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Interval {
    Minutes(i64),
    Hours(i64),
    Day,
    Week,
    Month,
}

impl Interval {
    pub fn parse(s: &str) -> Result<Interval> {
        let bad = || {
            QueryError::Invalid {
            message: format!(
                "interval {s:?}: use 1m, 2m, 5m, 10m, 15m, 20m, 30m, 1h, 2h, 3h, 4h, 6h, 8h, 12h, 1d, 1w or 1mo"
            ),
        }
        };
        let (num, unit) = s
            .find(|c: char| !c.is_ascii_digit())
            .map(|i| s.split_at(i))
            .ok_or_else(bad)?;
        let n: i64 = num.parse().map_err(|_| bad())?;
        match (unit, n) {
            ("m" | "min", 1 | 2 | 5 | 10 | 15 | 20 | 30) => Ok(Interval::Minutes(n)),
            ("h", 1 | 2 | 3 | 4 | 6 | 8 | 12) => Ok(Interval::Hours(n)),
            ("m" | "min", 60) => Ok(Interval::Hours(1)),
            ("d", 1) | ("h", 24) => Ok(Interval::Day),
            ("w", 1) | ("d", 7) => Ok(Interval::Week),
            ("mo", 1) => Ok(Interval::Month),
            _ => Err(bad()),
        }
    }

    fn fixed_us(self) -> Option<i64> {
        match self {
            Interval::Minutes(n) => Some(n * 60_000_000),
            Interval::Hours(n) => Some(n * 3_600_000_000),
            _ => None,
        }
    }
}

/// The start (µs since the epoch) of the bucket `ts` falls in.
pub fn bucket_start(ts: i64, interval: Interval, tz: Option<&Tz>) -> i64 {
    let Some(tz) = tz else {
        return match interval.fixed_us() {
            Some(w) => ts.div_euclid(w) * w,
            None => calendar_start(ts, interval, &Tz::UTC),
        };
    };
    match interval.fixed_us() {
        Some(w) => {
            let instant = DateTime::from_timestamp_micros(ts).unwrap_or_default();
            let offset_us = tz
                .offset_from_utc_datetime(&instant.naive_utc())
                .fix()
                .local_minus_utc() as i64
                * 1_000_000;
            let local = ts + offset_us;
            local.div_euclid(w) * w - offset_us
        }
        None => calendar_start(ts, interval, tz),
    }
}

fn calendar_start(ts: i64, interval: Interval, tz: &Tz) -> i64 {
    let instant = DateTime::from_timestamp_micros(ts).unwrap_or_default();
    let date = instant.with_timezone(tz).date_naive();
    let first = match interval {
        Interval::Week => {
            date - chrono::Duration::days(date.weekday().num_days_from_monday() as i64)
        }
        Interval::Month => date.with_day(1).unwrap_or(date),
        _ => date,
    };
    local_midnight(first, tz)
}

/// The first instant of `date` in `tz` (the earlier one if midnight repeats,
/// the first valid one if midnight is skipped).
fn local_midnight(date: NaiveDate, tz: &Tz) -> i64 {
    let mut t = date.and_hms_opt(0, 0, 0).unwrap_or_default();
    for _ in 0..4 {
        if let Some(dt) = tz.from_local_datetime(&t).earliest() {
            return dt.timestamp_micros();
        }
        t += chrono::Duration::minutes(30);
    }
    Utc.from_utc_datetime(&t).timestamp_micros()
}

/// The start of the bucket after the one starting at `b`.
fn next_bucket(b: i64, interval: Interval, tz: Option<&Tz>) -> i64 {
    const H: i64 = 3_600_000_000;
    let step = match interval {
        Interval::Minutes(_) | Interval::Hours(_) => {
            let w = interval.fixed_us().unwrap_or(H);
            // A DST change can make a local bucket shorter; step until the
            // bucket changes.
            let mut n = bucket_start(b + w, interval, tz);
            if n <= b {
                n = bucket_start(b + 2 * w, interval, tz);
            }
            return n;
        }
        Interval::Day => 26 * H,
        Interval::Week => 7 * 24 * H + 2 * H,
        Interval::Month => 32 * 24 * H,
    };
    bucket_start(b + step, interval, tz)
}

/// `tally_bucket(ts, '1h', 'Europe/Berlin')`: the bucket start of each `ts`,
/// for SQL users who want the API's buckets.
pub fn bucket_udf() -> ScalarUDF {
    let ts_type = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    create_udf(
        "tally_bucket",
        vec![ts_type.clone(), DataType::Utf8, DataType::Utf8],
        ts_type,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let text = |v: &ColumnarValue| {
                match v {
                ColumnarValue::Scalar(ScalarValue::Utf8(Some(s))) => Ok(s.clone()),
                _ => Err(datafusion::error::DataFusionError::Plan(
                    "tally_bucket(ts, interval, timezone): interval and timezone must be text literals"
                        .into(),
                )),
            }
            };
            let interval = Interval::parse(&text(&args[1])?)
                .map_err(|e| datafusion::error::DataFusionError::Plan(e.to_string()))?;
            let tz = parse_tz(&text(&args[2])?)
                .map_err(|e| datafusion::error::DataFusionError::Plan(e.to_string()))?;
            let f = |t: i64| bucket_start(t, interval, tz.as_ref());
            Ok(match &args[0] {
                ColumnarValue::Array(a) => {
                    let ts = a.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
                    let out: TimestampMicrosecondArray = ts.unary(f);
                    ColumnarValue::Array(Arc::new(out.with_timezone("UTC")))
                }
                ColumnarValue::Scalar(ScalarValue::TimestampMicrosecond(v, _)) => {
                    ColumnarValue::Scalar(ScalarValue::TimestampMicrosecond(
                        v.map(f),
                        Some("UTC".into()),
                    ))
                }
                other => {
                    return Err(datafusion::error::DataFusionError::Plan(format!(
                        "tally_bucket: unexpected argument {other:?}"
                    )))
                }
            })
        }),
    )
}

/// `None` for UTC (the fast path).
fn parse_tz(name: &str) -> Result<Option<Tz>> {
    if name.eq_ignore_ascii_case("utc") || name == "Z" {
        return Ok(None);
    }
    name.parse::<Tz>()
        .map(Some)
        .map_err(|_| QueryError::Invalid {
            message: format!("unknown time zone {name:?} (use an IANA name like Europe/Berlin)"),
        })
}

/// A time in a request: RFC 3339, a date, `now`, `now-15m`, `now+1d`.
pub fn parse_time(s: &str, now_us: i64, tz: Option<&Tz>) -> Result<i64> {
    let bad = || {
        QueryError::Invalid {
        message: format!(
            "time {s:?}: use RFC 3339 (2024-05-01T00:00:00Z), a date (2024-05-01), or now / now-24h / now-7d"
        ),
    }
    };
    let s = s.trim();
    if let Some(rest) = s.strip_prefix("now") {
        if rest.is_empty() {
            return Ok(now_us);
        }
        let (sign, amount) = match rest.as_bytes()[0] {
            b'-' => (-1, &rest[1..]),
            b'+' => (1, &rest[1..]),
            _ => return Err(bad()),
        };
        let i = amount.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let n: i64 = amount[..i].parse().map_err(|_| bad())?;
        let unit = match &amount[i..] {
            "s" => 1_000_000,
            "m" | "min" => 60_000_000,
            "h" => 3_600_000_000,
            "d" => 86_400_000_000,
            "w" => 7 * 86_400_000_000,
            _ => return Err(bad()),
        };
        return n
            .checked_mul(unit)
            .and_then(|d| now_us.checked_add(sign * d))
            .ok_or_else(bad);
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Ok(dt.timestamp_micros());
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(local_midnight(d, tz.unwrap_or(&Tz::UTC)));
    }
    Err(bad())
}

/// One aggregate of a request.
#[derive(Debug, Clone, PartialEq)]
enum Agg {
    Count,
    CountOf(String),
    Sum(String),
    Avg(String),
    Min(String),
    Max(String),
    Uniq(String),
    Quantile(f64, String),
}

impl Agg {
    fn parse(s: &str) -> Result<Agg> {
        let s = s.trim();
        if s == "count" || s == "count()" || s == "count(*)" {
            return Ok(Agg::Count);
        }
        let bad = || {
            QueryError::Invalid {
            message: format!(
                "aggregate {s:?}: use count, count(f), sum(f), avg(f), min(f), max(f), uniq(f), p50(f), p90(f), p95(f), p99(f)"
            ),
        }
        };
        let open = s.find('(').ok_or_else(bad)?;
        let field = s[open + 1..].strip_suffix(')').ok_or_else(bad)?.to_string();
        if field.is_empty() {
            return Err(bad());
        }
        Ok(match &s[..open] {
            "count" => Agg::CountOf(field),
            "sum" => Agg::Sum(field),
            "avg" => Agg::Avg(field),
            "min" => Agg::Min(field),
            "max" => Agg::Max(field),
            "uniq" => Agg::Uniq(field),
            "p50" => Agg::Quantile(0.5, field),
            "p75" => Agg::Quantile(0.75, field),
            "p90" => Agg::Quantile(0.9, field),
            "p95" => Agg::Quantile(0.95, field),
            "p99" => Agg::Quantile(0.99, field),
            _ => return Err(bad()),
        })
    }

    fn field(&self) -> Option<&str> {
        match self {
            Agg::Count => None,
            Agg::CountOf(f)
            | Agg::Sum(f)
            | Agg::Avg(f)
            | Agg::Min(f)
            | Agg::Max(f)
            | Agg::Uniq(f)
            | Agg::Quantile(_, f) => Some(f),
        }
    }

    fn needs_number(&self) -> bool {
        !matches!(self, Agg::Count | Agg::CountOf(_) | Agg::Uniq(_))
    }

    fn expr(&self) -> Expr {
        match self {
            Agg::Count => agg::count(lit(1i64)),
            Agg::CountOf(f) => agg::count(column(f)),
            Agg::Sum(f) => agg::sum(column(f)),
            Agg::Avg(f) => agg::avg(column(f)),
            Agg::Min(f) => agg::min(column(f)),
            Agg::Max(f) => agg::max(column(f)),
            Agg::Uniq(f) => agg::approx_distinct(column(f)),
            Agg::Quantile(q, f) => {
                agg::approx_percentile_cont(SortExpr::new(column(f), true, false), lit(*q), None)
            }
        }
    }
}

fn column(name: &str) -> Expr {
    Expr::Column(Column::new_unqualified(name))
}

/// A request checked against the stream and with its times resolved.
#[derive(Debug, Clone)]
struct Plan {
    stream: String,
    from: i64,
    to: i64,
    interval: Option<Interval>,
    interval_text: Option<String>,
    tz: Option<Tz>,
    tz_name: String,
    aggs: Vec<(String, Agg)>,
    filters: Vec<Expr>,
    group_by: Vec<String>,
    limit: usize,
    rank: usize,
    other: bool,
    fill: Fill,
    /// Normalized request and the versions it depends on, for the cache.
    key: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fill {
    Null,
    Zero,
    None,
}

impl QueryEngine {
    /// Answers a time-series request.
    pub async fn timeseries(&self, req: Request) -> Result<Arc<Value>> {
        let t = Instant::now();
        let result = self.timeseries_inner(req).await;
        crate::observe("timeseries", &result, t);
        result.map(|(v, _)| v)
    }

    async fn timeseries_inner(&self, req: Request) -> Result<(Arc<Value>, bool)> {
        let plan = self.plan(&req)?;
        let inner = &self.inner;
        if let Some(hit) = inner.ts_cache.get(&plan.key) {
            crate::CACHE_LOOKUPS
                .with_label_values(&["timeseries", "hit"])
                .inc();
            return Ok((hit, true));
        }
        crate::CACHE_LOOKUPS
            .with_label_values(&["timeseries", "miss"])
            .inc();
        let provider = crate::provider::TallySchema {
            engine: inner.engine.clone(),
            tables: inner.tables.clone(),
            namespace: crate::provider::Namespace::Streams,
        };
        let table = datafusion::catalog::SchemaProvider::table(&provider, &plan.stream)
            .await?
            .ok_or_else(|| QueryError::NotFound {
                what: "stream",
                name: plan.stream.clone(),
            })?;
        let key = plan.key.clone();
        let value = self
            .run(move |q| async move { execute(q, table, plan).await })
            .await?;
        let value = Arc::new(value);
        let bytes = value.to_string().len();
        inner.ts_cache.put(key, value.clone(), bytes);
        Ok((value, false))
    }

    fn plan(&self, req: &Request) -> Result<Plan> {
        let inner = &self.inner;
        let store = inner.engine.store();
        let schema = store
            .schemas()
            .get(&req.stream)
            .ok_or_else(|| QueryError::NotFound {
                what: "stream",
                name: req.stream.clone(),
            })?;
        let field_type = |f: &str| -> Result<ColumnType> {
            schema.get(f).ok_or_else(|| QueryError::UnknownColumn {
                name: f.to_string(),
            })
        };
        let tz_name = req.timezone.clone().unwrap_or_else(|| "UTC".into());
        let tz = parse_tz(&tz_name)?;
        let now = Utc::now().timestamp() * 1_000_000;
        let to = match &req.to {
            Some(s) => parse_time(s, now, tz.as_ref())?,
            None => now,
        };
        let from = match &req.from {
            Some(s) => parse_time(s, now, tz.as_ref())?,
            None => to - 86_400_000_000,
        };
        if from >= to {
            return Err(QueryError::Invalid {
                message: "'from' must be before 'to'".into(),
            });
        }
        let interval = req.interval.as_deref().map(Interval::parse).transpose()?;
        if let Some(i) = interval {
            let width = i.fixed_us().unwrap_or(86_400_000_000);
            let n = (to - from) / width;
            if n as usize > MAX_BUCKETS {
                return Err(QueryError::Limit {
                    limit: "buckets",
                    message: format!(
                        "{n} buckets of {} between 'from' and 'to'; at most {MAX_BUCKETS}",
                        req.interval.as_deref().unwrap_or_default()
                    ),
                });
            }
        }
        let texts = if req.aggregates.is_empty() {
            vec!["count".to_string()]
        } else {
            req.aggregates.clone()
        };
        let mut aggs = Vec::new();
        for text in texts {
            let a = Agg::parse(&text)?;
            if let Some(f) = a.field() {
                let ty = field_type(f)?;
                if a.needs_number() && ty != ColumnType::Value {
                    return Err(QueryError::Invalid {
                        message: format!(
                            "aggregate {text}: field '{f}' is a dimension (text), not a number"
                        ),
                    });
                }
            }
            aggs.push((text, a));
        }
        let mut versions = vec![(
            req.stream.clone(),
            store.data_version(&req.stream, Some(from), Some(to - 1)),
        )];
        let mut filters = vec![
            column("ts").gt_eq(ts_lit(from)),
            column("ts").lt(ts_lit(to)),
        ];
        for (i, f) in req.filters.iter().enumerate() {
            let ty = field_type(&f.field)?;
            filters.push(self.filter_expr(i, f, ty, &mut versions)?);
        }
        for g in &req.group_by {
            field_type(g)?;
        }
        if req.group_by.len() > 8 {
            return Err(QueryError::Invalid {
                message: "group_by takes at most 8 fields".into(),
            });
        }
        let limit = req.limit.unwrap_or(10);
        if limit == 0 || limit > MAX_GROUPS {
            return Err(QueryError::Invalid {
                message: format!("limit must be between 1 and {MAX_GROUPS}"),
            });
        }
        let rank = match &req.order_by {
            None => 0,
            Some(o) => {
                aggs.iter()
                    .position(|(t, _)| t == o)
                    .ok_or_else(|| QueryError::Invalid {
                        message: format!("order_by {o:?} is not one of the aggregates"),
                    })?
            }
        };
        let fill = match req.fill.as_deref() {
            None | Some("null") => Fill::Null,
            Some("zero") | Some("0") => Fill::Zero,
            Some("none") => Fill::None,
            Some(other) => {
                return Err(QueryError::Invalid {
                    message: format!("fill {other:?}: use null, zero or none"),
                })
            }
        };
        let mut normalized = req.clone();
        normalized.from = Some(from.to_string());
        normalized.to = Some(to.to_string());
        let key = format!(
            "{}\u{1}{:?}",
            serde_json::to_string(&normalized).unwrap_or_default(),
            versions
        );
        Ok(Plan {
            stream: req.stream.clone(),
            from,
            to,
            interval,
            interval_text: req.interval.clone(),
            tz,
            tz_name,
            aggs,
            filters,
            group_by: req.group_by.clone(),
            limit,
            rank,
            other: req.other.unwrap_or(true),
            fill,
            key,
        })
    }

    fn filter_expr(
        &self,
        i: usize,
        f: &Filter,
        ty: ColumnType,
        versions: &mut Vec<(String, u64)>,
    ) -> Result<Expr> {
        let bad = |what: &str| QueryError::Invalid {
            message: format!("filters[{i}] on '{}': {what}", f.field),
        };
        let c = column(&f.field);
        let scalar = |v: &Value| -> Result<Expr> {
            match (ty, v) {
                (ColumnType::Dim, Value::String(s)) => Ok(lit(s.clone())),
                (ColumnType::Value, Value::Number(n)) => Ok(lit(n.as_f64().unwrap_or(f64::NAN))),
                (ColumnType::Dim, _) => Err(bad("the field is text; give a string value")),
                (ColumnType::Value, _) => Err(bad("the field is a number; give a numeric value")),
            }
        };
        let list = |v: &Value| -> Result<Vec<Expr>> {
            match v {
                Value::Array(items) if !items.is_empty() => items.iter().map(scalar).collect(),
                _ => Err(bad("give a non-empty array of values")),
            }
        };
        let text = |v: &Value| -> Result<String> {
            match (ty, v) {
                (ColumnType::Dim, Value::String(s)) => Ok(s.clone()),
                _ => Err(bad("this operator takes a text field and a string value")),
            }
        };
        Ok(match f.op.as_str() {
            "=" | "==" | "eq" => c.eq(scalar(&f.value)?),
            "!=" | "<>" | "ne" => c.clone().not_eq(scalar(&f.value)?).or(c.is_null()),
            "in" => c.in_list(list(&f.value)?, false),
            "not_in" => c.clone().in_list(list(&f.value)?, true).or(c.is_null()),
            "prefix" => datafusion::functions::expr_fn::starts_with(c, lit(text(&f.value)?)),
            "contains" => {
                datafusion::functions::expr_fn::strpos(c, lit(text(&f.value)?)).gt(lit(0i64))
            }
            ">" | ">=" | "<" | "<=" => {
                if ty != ColumnType::Value {
                    return Err(bad("numeric comparisons need a numeric field"));
                }
                let v = scalar(&f.value)?;
                match f.op.as_str() {
                    ">" => c.gt(v),
                    ">=" => c.gt_eq(v),
                    "<" => c.lt(v),
                    _ => c.lt_eq(v),
                }
            }
            "exists" => c.is_not_null(),
            "missing" => c.is_null(),
            "under" => {
                let table = f
                    .table
                    .as_deref()
                    .ok_or_else(|| bad("'under' needs \"table\": the tree dimension table"))?;
                let node = text(&f.value)?;
                let dim = self
                    .inner
                    .tables
                    .get(table)
                    .ok_or_else(|| QueryError::NotFound {
                        what: "table",
                        name: table.to_string(),
                    })?;
                let nodes = dim.descendants(&node)?;
                versions.push((format!("table:{table}"), dim.version));
                c.in_list(nodes.into_iter().map(|(n, _)| lit(n)).collect(), false)
            }
            other => return Err(bad(&format!("unknown operator {other:?}"))),
        })
    }
}

fn ts_lit(us: i64) -> Expr {
    lit(ScalarValue::TimestampMicrosecond(
        Some(us),
        Some("UTC".into()),
    ))
}

/// Runs the plans of a request and shapes the answer.
async fn execute(q: QueryState, table: Arc<dyn TableProvider>, plan: Plan) -> Result<Value> {
    let source = provider_as_source(table);
    let scan = || -> Result<LogicalPlanBuilder> {
        let mut b = LogicalPlanBuilder::scan(plan.stream.as_str(), source.clone(), None)?;
        for f in &plan.filters {
            b = b.filter(f.clone())?;
        }
        Ok(b)
    };
    let agg_exprs = |prefix: &str| -> Vec<Expr> {
        plan.aggs
            .iter()
            .enumerate()
            .map(|(i, (_, a))| a.expr().alias(format!("{prefix}{i}")))
            .collect()
    };

    // 1. The top groups.
    let mut top: Vec<Vec<Option<String>>> = Vec::new();
    let mut other_expr = None;
    if !plan.group_by.is_empty() {
        let groups: Vec<Expr> = plan.group_by.iter().map(|g| column(g)).collect();
        let rank_col = format!("a{}", plan.rank);
        let mut sort: Vec<SortExpr> = vec![SortExpr::new(column(&rank_col), false, false)];
        sort.extend(groups.iter().map(|g| SortExpr::new(g.clone(), true, true)));
        let lp = scan()?
            .aggregate(groups.clone(), agg_exprs("a"))?
            .sort(sort)?
            .limit(0, Some(plan.limit))?
            .build()?;
        let answer = collect_plan(&q, lp).await?;
        for b in &answer.batches {
            for r in 0..b.num_rows() {
                top.push(
                    (0..plan.group_by.len())
                        .map(|c| text_at(b.column(c), r))
                        .collect(),
                );
            }
        }
        // A row is in a top group when its group tuple equals one of them.
        let matches = top
            .iter()
            .map(|vals| {
                vals.iter()
                    .zip(&plan.group_by)
                    // Null-safe, so the match is never NULL and a row
                    // without the field still lands in "other".
                    .map(|(v, g)| match v {
                        Some(s) => Expr::BinaryExpr(datafusion::logical_expr::BinaryExpr::new(
                            Box::new(column(g)),
                            datafusion::logical_expr::Operator::IsNotDistinctFrom,
                            Box::new(lit(s.clone())),
                        )),
                        None => column(g).is_null(),
                    })
                    .reduce(Expr::and)
                    .unwrap_or(lit(true))
            })
            .reduce(Expr::or)
            .unwrap_or(lit(false));
        other_expr = Some(matches);
    }

    // Group expressions for series and totals: the group columns kept only
    // for top rows, plus whether the row is "other".
    let group_exprs = || -> Vec<Expr> {
        let Some(m) = &other_expr else { return vec![] };
        let mut g: Vec<Expr> = plan
            .group_by
            .iter()
            .enumerate()
            .map(|(i, name)| {
                datafusion::logical_expr::when(m.clone(), column(name))
                    .end()
                    .unwrap_or_else(|_| column(name))
                    .alias(format!("g{i}"))
            })
            .collect();
        g.push(datafusion::logical_expr::not(m.clone()).alias("is_other"));
        g
    };
    let keep = |is_other: bool| !is_other || plan.other;

    // 2. The series.
    let mut series: BTreeMap<GroupKey, BTreeMap<i64, Vec<Value>>> = BTreeMap::new();
    if let Some(interval) = plan.interval {
        let bucket = datafusion::logical_expr::Expr::ScalarFunction(
            datafusion::logical_expr::expr::ScalarFunction::new_udf(
                Arc::new(bucket_udf()),
                vec![
                    column("ts"),
                    lit(plan.interval_text.clone().unwrap_or_default()),
                    lit(plan.tz_name.clone()),
                ],
            ),
        )
        .alias("bucket");
        let mut groups = vec![bucket];
        groups.extend(group_exprs());
        let lp = scan()?.aggregate(groups, agg_exprs("a"))?.build()?;
        let answer = collect_plan(&q, lp).await?;
        for b in &answer.batches {
            let buckets = b
                .column(0)
                .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
            for r in 0..b.num_rows() {
                let key = group_key(b, 1, plan.group_by.len(), r);
                if !keep(key.other) {
                    continue;
                }
                let vals = agg_values(b, 1 + group_width(&plan), &plan, r);
                series
                    .entry(key)
                    .or_default()
                    .insert(buckets.value(r), vals);
            }
        }
        let _ = interval;
    }

    // 3. Totals per group, and the grand total.
    let mut totals: BTreeMap<GroupKey, Vec<Value>> = BTreeMap::new();
    if !plan.group_by.is_empty() || plan.interval.is_none() {
        let lp = scan()?.aggregate(group_exprs(), agg_exprs("a"))?.build()?;
        let answer = collect_plan(&q, lp).await?;
        for b in &answer.batches {
            for r in 0..b.num_rows() {
                let key = group_key(b, 0, plan.group_by.len(), r);
                if !keep(key.other) {
                    continue;
                }
                totals.insert(key, agg_values(b, group_width(&plan), &plan, r));
            }
        }
    }
    let mut grand = if plan.group_by.is_empty() {
        totals.remove(&GroupKey::default())
    } else {
        None
    };
    if grand.is_none() {
        let lp = scan()?
            .aggregate(Vec::<Expr>::new(), agg_exprs("a"))?
            .build()?;
        let answer = collect_plan(&q, lp).await?;
        grand = answer
            .batches
            .iter()
            .find(|b| b.num_rows() > 0)
            .map(|b| agg_values(b, 0, &plan, 0));
    }
    let grand = grand.unwrap_or_else(|| empty_values(&plan, Fill::Zero));

    // Shape: top groups in rank order, then "other"; every bucket filled.
    let mut order: Vec<GroupKey> = top
        .iter()
        .map(|vals| GroupKey {
            other: false,
            values: vals.clone(),
        })
        .collect();
    if plan.group_by.is_empty() {
        order.push(GroupKey::default());
    } else if plan.other {
        order.push(GroupKey {
            other: true,
            values: vec![None; plan.group_by.len()],
        });
    }
    let all_buckets = plan.interval.map(|i| {
        let mut out = Vec::new();
        let mut b = bucket_start(plan.from, i, plan.tz.as_ref());
        while b < plan.to && out.len() <= MAX_BUCKETS {
            out.push(b);
            b = next_bucket(b, i, plan.tz.as_ref());
        }
        out
    });
    let names: Vec<&str> = plan.aggs.iter().map(|(t, _)| t.as_str()).collect();
    let obj = |vals: &[Value]| -> Value {
        Value::Object(
            names
                .iter()
                .zip(vals)
                .map(|(n, v)| (n.to_string(), v.clone()))
                .collect(),
        )
    };
    let mut out_series = Vec::new();
    for key in order {
        let points_of = series.remove(&key).unwrap_or_default();
        let group_totals = totals.remove(&key);
        if key.other && points_of.is_empty() && group_totals.is_none() {
            continue;
        }
        let mut s = Map::new();
        if !plan.group_by.is_empty() {
            let group: Map<String, Value> = plan
                .group_by
                .iter()
                .zip(&key.values)
                .map(|(g, v)| (g.clone(), v.clone().map_or(Value::Null, Value::String)))
                .collect();
            s.insert(
                "group".into(),
                if key.other {
                    Value::Null
                } else {
                    Value::Object(group)
                },
            );
            s.insert("other".into(), Value::Bool(key.other));
        }
        if let Some(buckets) = &all_buckets {
            let mut points = Vec::new();
            for b in buckets {
                let vals = match points_of.get(b) {
                    Some(v) => v.clone(),
                    None if plan.fill == Fill::None => continue,
                    None => empty_values(&plan, plan.fill),
                };
                let mut p = Map::new();
                p.insert("t".into(), Value::String(rfc3339(*b)));
                if let Value::Object(m) = obj(&vals) {
                    p.extend(m);
                }
                points.push(Value::Object(p));
            }
            s.insert("points".into(), Value::Array(points));
        }
        let t = match group_totals {
            Some(t) => t,
            None if plan.group_by.is_empty() => grand.clone(),
            None => empty_values(&plan, Fill::Zero),
        };
        s.insert("totals".into(), obj(&t));
        out_series.push(Value::Object(s));
    }
    Ok(json!({
        "stream": plan.stream,
        "from": rfc3339(plan.from),
        "to": rfc3339(plan.to),
        "interval": plan.interval_text,
        "timezone": plan.tz_name,
        "aggregates": names,
        "group_by": plan.group_by,
        "series": out_series,
        "totals": obj(&grand),
        "source": "raw",
    }))
}

#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
struct GroupKey {
    other: bool,
    values: Vec<Option<String>>,
}

fn group_width(plan: &Plan) -> usize {
    if plan.group_by.is_empty() {
        0
    } else {
        plan.group_by.len() + 1
    }
}

/// The group of row `r`: `n` text columns from `first`, then `is_other`.
fn group_key(b: &arrow::record_batch::RecordBatch, first: usize, n: usize, r: usize) -> GroupKey {
    if n == 0 {
        return GroupKey::default();
    }
    let values = (0..n).map(|i| text_at(b.column(first + i), r)).collect();
    let other = b.column(first + n).as_boolean().value(r);
    GroupKey { other, values }
}

fn text_at(a: &ArrayRef, r: usize) -> Option<String> {
    if a.is_null(r) {
        return None;
    }
    match a.data_type() {
        DataType::Utf8 => Some(a.as_string::<i32>().value(r).to_string()),
        DataType::Utf8View => Some(a.as_string_view().value(r).to_string()),
        DataType::LargeUtf8 => Some(a.as_string::<i64>().value(r).to_string()),
        _ => arrow::util::display::array_value_to_string(a, r).ok(),
    }
}

/// The aggregate values of row `r`, from column `first` on.
fn agg_values(
    b: &arrow::record_batch::RecordBatch,
    first: usize,
    plan: &Plan,
    r: usize,
) -> Vec<Value> {
    (0..plan.aggs.len())
        .map(|i| json_number(b.column(first + i), r))
        .collect()
}

fn json_number(a: &ArrayRef, r: usize) -> Value {
    if a.is_null(r) {
        return Value::Null;
    }
    match a.data_type() {
        DataType::Int64 => json!(a.as_primitive::<Int64Type>().value(r)),
        DataType::UInt64 => json!(a.as_primitive::<UInt64Type>().value(r)),
        DataType::Float64 => {
            let v = a.as_primitive::<Float64Type>().value(r);
            if v.is_finite() {
                json!(v)
            } else {
                Value::Null
            }
        }
        _ => match arrow::compute::cast(a, &DataType::Float64) {
            Ok(f) => json_number(&f, r),
            Err(_) => Value::Null,
        },
    }
}

/// Values for a bucket with no events: counts are 0, the rest null (or 0
/// with `fill: zero`).
fn empty_values(plan: &Plan, fill: Fill) -> Vec<Value> {
    plan.aggs
        .iter()
        .map(|(_, a)| match (a, fill) {
            (Agg::Count | Agg::CountOf(_) | Agg::Uniq(_), _) => json!(0),
            (Agg::Sum(_), Fill::Zero) => json!(0.0),
            (_, Fill::Zero) => json!(0),
            _ => Value::Null,
        })
        .collect()
}

fn rfc3339(us: i64) -> String {
    DateTime::from_timestamp_micros(us)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_micros()
    }

    #[test]
    fn utc_buckets_are_floors() {
        let t = us("2024-03-05T13:47:12Z");
        assert_eq!(
            bucket_start(t, Interval::Minutes(15), None),
            us("2024-03-05T13:45:00Z")
        );
        assert_eq!(
            bucket_start(t, Interval::Hours(6), None),
            us("2024-03-05T12:00:00Z")
        );
        assert_eq!(
            bucket_start(t, Interval::Day, None),
            us("2024-03-05T00:00:00Z")
        );
        assert_eq!(
            bucket_start(t, Interval::Week, None),
            us("2024-03-04T00:00:00Z")
        );
        assert_eq!(
            bucket_start(t, Interval::Month, None),
            us("2024-03-01T00:00:00Z")
        );
        assert_eq!(bucket_start(-1, Interval::Hours(1), None), -3_600_000_000);
    }

    #[test]
    fn days_follow_local_midnight_across_dst() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        // Spring forward on 2024-03-31: that local day has 23 hours.
        let day = bucket_start(us("2024-03-31T12:00:00Z"), Interval::Day, Some(&tz));
        assert_eq!(day, us("2024-03-30T23:00:00Z"));
        let next = next_bucket(day, Interval::Day, Some(&tz));
        assert_eq!(next, us("2024-03-31T22:00:00Z"));
        // Fall back on 2024-10-27: two 02:00 local hours are two buckets.
        let a = bucket_start(us("2024-10-27T00:30:00Z"), Interval::Hours(1), Some(&tz));
        let b = bucket_start(us("2024-10-27T01:30:00Z"), Interval::Hours(1), Some(&tz));
        assert_eq!(a, us("2024-10-27T00:00:00Z"));
        assert_eq!(b, us("2024-10-27T01:00:00Z"));
        assert_eq!(next_bucket(a, Interval::Hours(1), Some(&tz)), b);
        // Half-hour offsets: hours align to local clock hours.
        let india: Tz = "Asia/Kolkata".parse().unwrap();
        assert_eq!(
            bucket_start(us("2024-01-01T10:10:00Z"), Interval::Hours(1), Some(&india)),
            us("2024-01-01T09:30:00Z")
        );
        let month = bucket_start(us("2024-03-01T00:30:00Z"), Interval::Month, Some(&tz));
        assert_eq!(month, us("2024-02-29T23:00:00Z"));
    }

    #[test]
    fn times_parse_in_every_form() {
        let now = us("2024-05-10T12:00:00Z");
        assert_eq!(parse_time("now", now, None).unwrap(), now);
        assert_eq!(
            parse_time("now-24h", now, None).unwrap(),
            us("2024-05-09T12:00:00Z")
        );
        assert_eq!(
            parse_time("now+15m", now, None).unwrap(),
            us("2024-05-10T12:15:00Z")
        );
        assert_eq!(
            parse_time("2024-05-01", now, None).unwrap(),
            us("2024-05-01T00:00:00Z")
        );
        assert_eq!(
            parse_time("2024-05-01T02:00:00+02:00", now, None).unwrap(),
            us("2024-05-01T00:00:00Z")
        );
        assert!(parse_time("yesterday", now, None).is_err());
        assert!(parse_time("now-5y", now, None).is_err());
    }

    #[test]
    fn intervals_and_aggregates_parse_or_say_why_not() {
        assert_eq!(Interval::parse("5m").unwrap(), Interval::Minutes(5));
        assert_eq!(Interval::parse("1d").unwrap(), Interval::Day);
        assert!(Interval::parse("7m").is_err());
        assert_eq!(
            Agg::parse("p95(rtt)").unwrap(),
            Agg::Quantile(0.95, "rtt".into())
        );
        assert_eq!(Agg::parse("count").unwrap(), Agg::Count);
        assert!(Agg::parse("median(x)").is_err());
        assert!(Agg::parse("sum()").is_err());
    }
}
