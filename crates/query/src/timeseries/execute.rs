//! Running a planned time-series request: the top groups, the series, the
//! totals, then the answer's JSON shape (rank order, "other" last, every
//! bucket filled).

use super::buckets::{bucket_start, bucket_udf, next_bucket};
use super::{column, Fill, Plan, MAX_BUCKETS};
use crate::{collect_plan, QueryState, Result};
use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimestampMicrosecondType, UInt64Type};
use chrono::DateTime;
use datafusion::catalog::TableProvider;
use datafusion::datasource::provider_as_source;
use datafusion::functions_aggregate::expr_fn::grouping;
use datafusion::logical_expr::{lit, Expr, GroupingSet, LogicalPlanBuilder, SortExpr};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Runs the plans of a request and shapes the answer.
pub(super) async fn execute(
    q: QueryState,
    table: Arc<dyn TableProvider>,
    plan: Plan,
) -> Result<Value> {
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
    let mut group_index = None;
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
        // The index of a row's top group, or -1 for "other": the tuple
        // compared null-safely, so a row without the field still lands in
        // "other" unless a top group is that null.
        let mut index: Option<datafusion::logical_expr::conditional_expressions::CaseBuilder> =
            None;
        for (k, vals) in top.iter().enumerate() {
            let is = vals
                .iter()
                .zip(&plan.group_by)
                .map(|(v, g)| match v {
                    Some(s) => Expr::BinaryExpr(datafusion::logical_expr::BinaryExpr::new(
                        Box::new(column(g)),
                        datafusion::logical_expr::Operator::IsNotDistinctFrom,
                        Box::new(lit(s.clone())),
                    )),
                    None => column(g).is_null(),
                })
                .reduce(Expr::and)
                .unwrap_or(lit(true));
            index = Some(match index {
                None => datafusion::logical_expr::when(is, lit(k as i32)),
                Some(mut case) => {
                    case.when(is, lit(k as i32));
                    case
                }
            });
        }
        group_index = Some(match index {
            None => lit(-1i32),
            Some(mut case) => case.otherwise(lit(-1i32))?,
        });
    }

    // 2. The series, the totals per group and the grand total, in one scan
    // as grouping sets: (bucket, group), (group), (), where group is the
    // index of the row's top group (-1: "other"). Rows are told apart by
    // grouping(): 1 where a column is not part of the row's set. Internal
    // names cannot clash with a stream's own columns.
    const BUCKET: &str = "__tally_bucket";
    const GROUP: &str = "__tally_group";
    const IN_BUCKET: &str = "__tally_grouping_bucket";
    const IN_GROUP: &str = "__tally_grouping_group";
    let grouped = !plan.group_by.is_empty();
    let mut projection: Vec<Expr> = source
        .schema()
        .fields()
        .iter()
        .map(|f| column(f.name()))
        .collect();
    let mut by_group: Vec<Expr> = Vec::new();
    if let Some(index) = group_index {
        projection.push(index.alias(GROUP));
        by_group.push(column(GROUP));
    }
    let mut sets: Vec<Vec<Expr>> = Vec::new();
    if plan.interval.is_some() {
        projection.push(
            Expr::ScalarFunction(datafusion::logical_expr::expr::ScalarFunction::new_udf(
                Arc::new(bucket_udf()),
                vec![
                    column("ts"),
                    lit(plan.interval_text.clone().unwrap_or_default()),
                    lit(plan.tz_name.clone()),
                ],
            ))
            .alias(BUCKET),
        );
        let mut set = vec![column(BUCKET)];
        set.extend(by_group.iter().cloned());
        sets.push(set);
    }
    if grouped {
        sets.push(by_group.clone());
    }
    sets.push(vec![]);
    let mut aggs = agg_exprs("a");
    let lp = if sets.len() == 1 {
        scan()?.aggregate(Vec::<Expr>::new(), aggs)?.build()?
    } else {
        if plan.interval.is_some() {
            aggs.push(grouping(column(BUCKET)).alias(IN_BUCKET));
        }
        if grouped {
            aggs.push(grouping(column(GROUP)).alias(IN_GROUP));
        }
        scan()?
            .project(projection)?
            .aggregate(
                vec![Expr::GroupingSet(GroupingSet::GroupingSets(sets))],
                aggs,
            )?
            .build()?
    };
    let answer = collect_plan(&q, lp).await?;
    let keep = |is_other: bool| !is_other || plan.other;
    let mut series: BTreeMap<GroupKey, BTreeMap<i64, Vec<Value>>> = BTreeMap::new();
    let mut totals: BTreeMap<GroupKey, Vec<Value>> = BTreeMap::new();
    let mut grand = None;
    for b in &answer.batches {
        let schema = b.schema();
        let at = |name: &str| schema.index_of(name).ok();
        let first_agg = at("a0").unwrap_or(0);
        let flag = |name: &str, r: usize| -> bool {
            at(name).is_some_and(|i| {
                let c = b.column(i);
                match c.data_type() {
                    DataType::Int32 => {
                        c.as_primitive::<arrow::datatypes::Int32Type>().value(r) == 1
                    }
                    _ => json_number(c, r) == json!(1),
                }
            })
        };
        for r in 0..b.num_rows() {
            let vals = agg_values(b, first_agg, &plan, r);
            let no_bucket = plan.interval.is_none() || flag(IN_BUCKET, r);
            let no_group = !grouped || flag(IN_GROUP, r);
            if no_bucket && no_group {
                grand = Some(vals);
                continue;
            }
            let key = match at(GROUP).filter(|_| grouped) {
                Some(i) => {
                    let k = b
                        .column(i)
                        .as_primitive::<arrow::datatypes::Int32Type>()
                        .value(r);
                    match top.get(k as usize).filter(|_| k >= 0) {
                        Some(values) => GroupKey {
                            other: false,
                            values: values.clone(),
                        },
                        None => GroupKey {
                            other: true,
                            values: vec![None; plan.group_by.len()],
                        },
                    }
                }
                None => GroupKey::default(),
            };
            if !keep(key.other) {
                continue;
            }
            if no_bucket {
                totals.insert(key, vals);
            } else if let Some(i) = at(BUCKET) {
                let t = b
                    .column(i)
                    .as_primitive::<TimestampMicrosecondType>()
                    .value(r);
                series.entry(key).or_default().insert(t, vals);
            }
        }
    }
    let grand = grand.unwrap_or_else(|| empty_values(&plan, Fill::Zero));
    Ok(shape(&plan, &top, series, totals, grand, "raw"))
}

/// The answer's JSON: top groups in rank order, then "other"; every
/// bucket filled. `series` and `totals` hold values per group, `grand` the
/// overall totals; `source` says what answered ("raw", "rollup:NAME").
pub(super) fn shape(
    plan: &Plan,
    top: &[Vec<Option<String>>],
    mut series: BTreeMap<GroupKey, BTreeMap<i64, Vec<Value>>>,
    mut totals: BTreeMap<GroupKey, Vec<Value>>,
    grand: Vec<Value>,
    source: &str,
) -> Value {
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
                    None => empty_values(plan, plan.fill),
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
            None => empty_values(plan, Fill::Zero),
        };
        s.insert("totals".into(), obj(&t));
        out_series.push(Value::Object(s));
    }
    json!({
        "stream": plan.stream,
        "from": rfc3339(plan.from),
        "to": rfc3339(plan.to),
        "interval": plan.interval_text,
        "timezone": plan.tz_name,
        "aggregates": names,
        "group_by": plan.group_by,
        "series": out_series,
        "totals": obj(&grand),
        "source": source,
    })
}

#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct GroupKey {
    pub other: bool,
    pub values: Vec<Option<String>>,
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
pub(super) fn empty_values(plan: &Plan, fill: Fill) -> Vec<Value> {
    plan.aggs
        .iter()
        .map(|(_, a)| match (&a.of, fill) {
            (a, _) if a.whole() => json!(0),
            (tally_rollup::Aggregate::Sum(_), Fill::Zero) => json!(0.0),
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
