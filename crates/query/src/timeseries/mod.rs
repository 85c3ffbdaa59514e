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
//! Buckets are calendar-aware in the request's time zone ([`buckets`]).
//! This file checks and plans a request; [`execute`] runs the plans and
//! shapes the answer.

mod buckets;
mod execute;
mod filter;
mod rollup;

pub use buckets::{bucket_start, bucket_udf, parse_time, Interval};
/// A filter's operator, as the shared model reads it.
pub use tally_rollup::Op;

use crate::{QueryEngine, QueryError, Result};
use buckets::parse_tz;
use chrono::Utc;
use chrono_tz::Tz;
use datafusion::common::{Column, ScalarValue};
use datafusion::functions_aggregate::expr_fn as agg;
use datafusion::logical_expr::{lit, Expr, SortExpr};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use std::time::Instant;
use tally_ingest::ColumnType;
use tally_rollup::Aggregate;

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
    /// `auto` (default): a rollup answers when one covers the request;
    /// `raw`: always the raw events; `rollup`: a rollup or an error saying
    /// why none covers it.
    pub source: Option<String>,
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

/// One aggregate of a request: the aggregate (read with the one grammar
/// rollups use too, `tally_rollup::Aggregate::parse_with_rank`), the rank
/// a percentile asks for, and whether a distinct count is of numbers.
#[derive(Debug, Clone, PartialEq)]
struct Agg {
    of: Aggregate,
    /// For `pNN(f)`: the rank (0..=1); 0 otherwise.
    rank: f64,
    /// `uniq(f)` of a numeric field (DataFusion's estimator takes text).
    of_numbers: bool,
}

impl Agg {
    /// A request asks for percentiles by rank (`p95(f)`), not for the
    /// sketch (`quantiles(f)`).
    fn parse(s: &str) -> Result<Agg> {
        let bad = || {
            QueryError::Invalid {
            message: format!(
                "aggregate {:?}: use count, count(f), sum(f), avg(f), min(f), max(f), uniq(f), p50(f), p75(f), p90(f), p95(f), p99(f)",
                s.trim()
            ),
        }
        };
        match Aggregate::parse_with_rank(s).map_err(|_| bad())? {
            (Aggregate::Quantiles(_), None) => Err(bad()),
            (of, rank) => Ok(Agg {
                of,
                rank: rank.unwrap_or(0.0),
                of_numbers: false,
            }),
        }
    }

    /// The aggregate on the raw path, as DataFusion's own.
    fn expr(&self) -> Expr {
        let field = || column(self.of.field().unwrap_or_default());
        match &self.of {
            Aggregate::Count => agg::count(lit(1i64)),
            Aggregate::CountOf(_) => agg::count(field()),
            Aggregate::Sum(_) => agg::sum(field()),
            Aggregate::Avg(_) => agg::avg(field()),
            Aggregate::Min(_) => agg::min(field()),
            Aggregate::Max(_) => agg::max(field()),
            Aggregate::Uniq(_) if self.of_numbers => agg::approx_distinct(
                datafusion::logical_expr::cast(field(), arrow::datatypes::DataType::Utf8),
            ),
            Aggregate::Uniq(_) => agg::approx_distinct(field()),
            Aggregate::Quantiles(_) => agg::approx_percentile_cont(
                SortExpr::new(field(), true, false),
                lit(self.rank),
                None,
            ),
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
    /// The request's filters, read into the shared model ...
    conditions: Vec<tally_rollup::Compiled>,
    /// ... and as expressions, with the time range's.
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

/// A time-series answer, kept in the cache serialized as well, so a cached
/// answer is sent without building its JSON again.
#[derive(Debug)]
pub struct Answer {
    pub value: Value,
    /// `value` as JSON text.
    pub json: String,
}

impl QueryEngine {
    /// Answers a time-series request.
    pub async fn timeseries(&self, req: Request) -> Result<Arc<Answer>> {
        let t = Instant::now();
        let result = self.timeseries_inner(req).await;
        crate::observe("timeseries", &result, t);
        result.map(|(v, _)| v)
    }

    async fn timeseries_inner(&self, req: Request) -> Result<(Arc<Answer>, bool)> {
        crate::limits::check_request(&req, &self.inner.opts.sql_limits)?;
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
        let route = self.find_rollup(&req, &plan)?;
        let value = match route {
            Some((route, entry)) => {
                self.run(move |q| async move { rollup::answer(q, table, plan, route, entry).await })
                    .await?
            }
            None => {
                self.run(move |q| async move { execute::execute(q, table, plan).await })
                    .await?
            }
        };
        let json = value.to_string();
        // The text twice over: the value and its serialization.
        let bytes = 2 * json.len();
        let answer = Arc::new(Answer { value, json });
        inner.ts_cache.put(key, answer.clone(), bytes);
        Ok((answer, false))
    }

    /// The rollup that answers `plan`, if one covers it (and the request
    /// allows it): the one with the fewest group-by dimensions, then the
    /// coarsest interval.
    #[allow(clippy::type_complexity)]
    fn find_rollup(
        &self,
        req: &Request,
        plan: &Plan,
    ) -> Result<Option<(rollup::Route, Arc<parking_lot::RwLock<tally_rollup::Entry>>)>> {
        let mode = req.source.as_deref().unwrap_or("auto");
        if !matches!(mode, "auto" | "raw" | "rollup") {
            return Err(QueryError::Invalid {
                message: format!("source {mode:?}: use auto, raw or rollup"),
            });
        }
        if mode == "raw" {
            return Ok(None);
        }
        let schemas = self.inner.engine.store().schemas();
        let field_type = |f: &str| schemas.column_type(&plan.stream, f);
        let rollups = self.inner.engine.rollups();
        let mut best: Option<(
            rollup::Route,
            Arc<parking_lot::RwLock<tally_rollup::Entry>>,
            (usize, i64),
        )> = None;
        let mut why = Vec::new();
        for name in rollups.names() {
            let Some(entry) = rollups.get(&name) else {
                continue;
            };
            let r = {
                let e = entry.read();
                if !e.complete {
                    why.push(format!("{name}: still building"));
                    continue;
                }
                rollup::route(&e.rollup, plan, &field_type)
            };
            match r {
                Ok(route) => {
                    let rank = (route.group_dims(), -route.grain_micros());
                    if best.as_ref().is_none_or(|b| rank < b.2) {
                        best = Some((route, entry, rank));
                    }
                }
                Err(e) => why.push(format!("{name}: {e}")),
            }
        }
        match best {
            Some((route, entry, _)) => Ok(Some((route, entry))),
            None if mode == "rollup" => Err(QueryError::Invalid {
                message: if why.is_empty() {
                    "no rollup of this stream".into()
                } else {
                    format!("no rollup covers this request ({})", why.join("; "))
                },
            }),
            None => Ok(None),
        }
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
            let mut a = Agg::parse(&text)?;
            if let Some(f) = a.of.field() {
                let ty = field_type(f)?;
                a.of_numbers = ty == ColumnType::Value;
                if a.of.numeric() && ty != ColumnType::Value {
                    return Err(QueryError::Invalid {
                        message: format!(
                            "aggregate {text}: field '{f}' is a dimension (text), not a number"
                        ),
                    });
                }
            }
            aggs.push((text, a));
        }
        let mut versions = vec![
            (
                req.stream.clone(),
                store.data_version(&req.stream, Some(from), Some(to - 1)),
            ),
            ("rollups".to_string(), inner.engine.rollups().generation()),
        ];
        let mut filters = vec![
            column("ts").gt_eq(ts_lit(from)),
            column("ts").lt(ts_lit(to)),
        ];
        let mut conditions = Vec::new();
        for (i, f) in req.filters.iter().enumerate() {
            let ty = field_type(&f.field)?;
            let c = self.condition(i, f, ty, &mut versions)?;
            filters.push(filter::expr(&c));
            conditions.push(c);
        }
        for g in &req.group_by {
            field_type(g)?;
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
            conditions,
            filters,
            group_by: req.group_by.clone(),
            limit,
            rank,
            other: req.other.unwrap_or(true),
            fill,
            key,
        })
    }

    /// Request filter `i` in the shared model; `under` becomes `in` the
    /// node's descendants in its tree dimension table.
    fn condition(
        &self,
        i: usize,
        f: &Filter,
        ty: ColumnType,
        versions: &mut Vec<(String, u64)>,
    ) -> Result<tally_rollup::Compiled> {
        if f.op != "under" {
            return filter::compile(i, f, ty);
        }
        let bad = |what: &str| QueryError::Invalid {
            message: format!("filters[{i}] on '{}': {what}", f.field),
        };
        let table = f
            .table
            .as_deref()
            .ok_or_else(|| bad("'under' needs \"table\": the tree dimension table"))?;
        let node = match (ty, &f.value) {
            (ColumnType::Dim, Value::String(s)) => s.clone(),
            _ => return Err(bad("this operator takes a text field and a string value")),
        };
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
        Ok(tally_rollup::Compiled {
            field: f.field.clone(),
            op: tally_rollup::Op::In,
            operand: tally_rollup::Operand::List(
                nodes
                    .into_iter()
                    .map(|(n, _)| tally_rollup::Scalar::Text(n))
                    .collect(),
            ),
        })
    }
}

fn ts_lit(us: i64) -> Expr {
    lit(ScalarValue::TimestampMicrosecond(
        Some(us),
        Some("UTC".into()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_parse_or_say_why_not() {
        assert_eq!(
            Agg::parse("p95(rtt)").unwrap(),
            Agg {
                of: Aggregate::Quantiles("rtt".into()),
                rank: 0.95,
                of_numbers: false
            }
        );
        assert_eq!(Agg::parse("count").unwrap().of, Aggregate::Count);
        assert!(Agg::parse("median(x)").is_err());
        assert!(Agg::parse("sum()").is_err());
    }
}
