//! Answering a time-series request from a rollup.
//!
//! A rollup covers a request when it is of the same stream, is complete,
//! groups by every dimension the request groups by, holds every aggregate
//! (a sum or an average from either state, a percentile from the
//! quantile sketch), has no filter the request lacks, and every other
//! filter of the request is on one of its group-by dimensions (so it can
//! be applied to cells). Its buckets must tile the request's: the coarsest
//! interval of the rollup that divides every request bucket boundary is
//! used (local days in a whole-hour time zone are unions of UTC hours).
//!
//! The range is cut to whole buckets of the rollup's finest interval; the
//! partial buckets at the two ends are computed from the raw events in
//! them, through the same rollup code, so the answer is the raw answer
//! (up to the sketches' documented error for distinct counts and
//! percentiles).

use super::buckets::bucket_start;
use super::execute::{shape, GroupKey};
use super::{Agg, Plan};
use crate::{QueryState, Result};
use datafusion::catalog::TableProvider;
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::LogicalPlanBuilder;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tally_ingest::ColumnType;
use tally_rollup::{Acc, Aggregate, Cell, Compiled, Grain, Rollup, RollupDef};

/// How a rollup answers a request.
#[derive(Debug, Clone)]
pub(super) struct Route {
    pub name: String,
    def: RollupDef,
    /// For each request aggregate: the rollup aggregate it reads, and the
    /// aggregate to compute from it (sum and avg share one state).
    aggs: Vec<(usize, Aggregate, f64)>,
    /// Positions of the request's group-by dimensions in the rollup's.
    keys: Vec<usize>,
    /// Request filters applied to cells: (position in the rollup's key,
    /// condition).
    key_filters: Vec<(usize, Compiled)>,
    grain: Grain,
    /// Whole buckets of the finest interval: [lo, hi).
    lo: i64,
    hi: i64,
}

/// Whether rollup filter condition `c` is request condition `f` (numbers
/// compared as numbers, so `1` is `1.0`).
fn same_condition(c: &tally_rollup::Condition, f: &Compiled) -> bool {
    Compiled::new(c).is_ok_and(|c| c == *f)
}

/// The rollup aggregate answering request aggregate `a`, if the rollup
/// has one: (its index, the aggregate to compute, the quantile rank).
fn find_agg(def: &RollupDef, a: &Agg) -> Option<(usize, Aggregate, f64)> {
    let i = def.aggregates.iter().position(|k| a.of.answered_by(k))?;
    Some((i, a.of.clone(), a.rank))
}

/// Why `def` cannot answer, or how it can.
pub(super) fn route(
    rollup: &Rollup,
    plan: &Plan,
    field_type: &dyn Fn(&str) -> Option<ColumnType>,
) -> std::result::Result<Route, String> {
    let def = rollup.def();
    if def.stream != plan.stream {
        return Err("another stream".into());
    }
    let aggs = plan
        .aggs
        .iter()
        .map(|(t, a)| find_agg(def, a).ok_or_else(|| format!("no state for {t}")))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let keys = plan
        .group_by
        .iter()
        .map(|g| {
            def.group_by
                .iter()
                .position(|d| d == g)
                .ok_or_else(|| format!("not grouped by {g}"))
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    // Every rollup condition must be a request filter; the other request
    // filters must apply to text group-by dimensions.
    for c in &def.filter {
        if !plan.conditions.iter().any(|f| same_condition(c, f)) {
            return Err(format!(
                "the rollup filters on {} and the request does not",
                c.field
            ));
        }
    }
    let mut key_filters = Vec::new();
    for f in &plan.conditions {
        if def.filter.iter().any(|c| same_condition(c, f)) {
            continue;
        }
        let pos = def
            .group_by
            .iter()
            .position(|d| *d == f.field)
            .filter(|_| field_type(&f.field) == Some(ColumnType::Dim))
            .ok_or_else(|| format!("filter on {} is not on a text group-by dimension", f.field))?;
        key_filters.push((pos, f.clone()));
    }
    let grains = def.grains();
    let finest = *grains.first().ok_or("no intervals")?;
    let w = finest.micros();
    let lo = plan.from.div_euclid(w) * w + if plan.from.rem_euclid(w) == 0 { 0 } else { w };
    let hi = plan.to.div_euclid(w) * w;
    if lo >= hi {
        return Err("the range is shorter than one bucket".into());
    }
    // Boundaries the chosen interval must divide.
    let mut bounds = vec![lo, hi];
    if let Some(i) = plan.interval {
        let mut b = bucket_start(lo, i, plan.tz.as_ref());
        while b < hi {
            if b > lo {
                bounds.push(b);
            }
            b = super::buckets::next_bucket(b, i, plan.tz.as_ref());
        }
    }
    let aligned: Vec<Grain> = grains
        .iter()
        .rev()
        .filter(|g| bounds.iter().all(|b| b.rem_euclid(g.micros()) == 0))
        .copied()
        .collect();
    if aligned.is_empty() {
        return Err("the request's buckets do not align with the rollup's".into());
    }
    // Retention may have dropped the older buckets of an interval.
    let grain = aligned
        .iter()
        .find(|g| rollup.kept_from(**g) <= lo)
        .copied()
        .ok_or("the range starts before the buckets the rollup keeps (retention)")?;
    Ok(Route {
        name: def.name.clone(),
        def: def.clone(),
        aggs,
        keys,
        key_filters,
        grain,
        lo,
        hi,
    })
}

impl Route {
    pub(super) fn group_dims(&self) -> usize {
        self.def.group_by.len()
    }

    pub(super) fn grain_micros(&self) -> i64 {
        self.grain.micros()
    }
}

/// Values of the request's aggregates from states (`cell`) or
/// accumulators (`accs`), as JSON like the raw path's.
fn json_values(route: &Route, value: impl Fn(usize, &Aggregate, f64) -> Option<f64>) -> Vec<Value> {
    route
        .aggs
        .iter()
        .enumerate()
        .map(|(k, (_, a, q))| match (a, value(k, a, *q)) {
            (_, None) => Value::Null,
            (a, Some(v)) if a.whole() => json!(v as i64),
            (_, Some(v)) if v.is_finite() => json!(v),
            _ => Value::Null,
        })
        .collect()
}

fn new_accs(route: &Route) -> Vec<Acc> {
    route.aggs.iter().map(|(_, a, _)| Acc::new(a)).collect()
}

fn add_cell(accs: &mut [Acc], route: &Route, cell: &Cell) {
    for (acc, (i, _, _)) in accs.iter_mut().zip(&route.aggs) {
        acc.add(&cell.states[*i]);
    }
}

/// Answers `plan` from `rollup` along `route`; the partial buckets at the
/// ends come from raw events through a rollup of the same definition.
pub(super) async fn answer(
    q: QueryState,
    table: Arc<dyn TableProvider>,
    plan: Plan,
    route: Route,
    rollup: Arc<parking_lot::RwLock<tally_rollup::Entry>>,
) -> Result<Value> {
    // The ends first: raw events in [from, lo) and [hi, to).
    let finest = route.def.grains()[0];
    let mut edges = Vec::new();
    for (a, b) in [(plan.from, route.lo), (route.hi, plan.to)] {
        if a < b {
            edges.push(raw_rollup(&q, &table, &plan, &route.def, a, b).await?);
        }
    }
    let entry = rollup.read();
    // Every cell in range, with its request bucket and group, once the
    // request's filters on group values hold.
    let rb_of = |b: i64| {
        plan.interval
            .map_or(0, |i| bucket_start(b, i, plan.tz.as_ref()))
    };
    let cells = || {
        entry
            .rollup
            .cells(route.grain, route.lo, route.hi)
            .chain(
                edges
                    .iter()
                    .flat_map(|e| e.cells(finest, i64::MIN, i64::MAX)),
            )
            .filter(|(_, key, _)| {
                route
                    .key_filters
                    .iter()
                    .all(|(p, f)| f.test_key(key[*p].as_deref()))
            })
            .map(|(b, key, cell)| {
                let group: Vec<Option<String>> =
                    route.keys.iter().map(|p| key[*p].clone()).collect();
                (rb_of(b), group, cell)
            })
    };
    // Pass 1: totals per group (for ranking) and cells per series point.
    let mut totals: HashMap<Vec<Option<String>>, Vec<Acc>> = HashMap::new();
    let mut per_point: HashMap<(i64, Vec<Option<String>>), u32> = HashMap::new();
    for (rb, group, cell) in cells() {
        if plan.interval.is_some() {
            *per_point.entry((rb, group.clone())).or_default() += 1;
        }
        let accs = totals.entry(group).or_insert_with(|| new_accs(&route));
        add_cell(accs, &route, &cell);
    }

    // Rank groups, keep the top, fold the rest into "other".
    let rank = plan.rank;
    let (_, rank_agg, rank_q) = &route.aggs[rank];
    let mut groups: Vec<(&Vec<Option<String>>, Option<f64>)> = totals
        .iter()
        .map(|(g, accs)| (g, accs[rank].value(rank_agg, *rank_q)))
        .collect();
    groups.sort_by(|a, b| {
        // Rank descending, no value last; then the group ascending, missing
        // values first (as the raw path orders them).
        let by_rank = match (a.1, b.1) {
            (Some(x), Some(y)) => y.total_cmp(&x),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        };
        by_rank.then_with(|| a.0.cmp(b.0))
    });
    let grouped = !plan.group_by.is_empty();
    let top: Vec<Vec<Option<String>>> = if grouped {
        groups
            .iter()
            .take(plan.limit)
            .map(|(g, _)| (*g).clone())
            .collect()
    } else {
        vec![]
    };
    let is_top: std::collections::HashSet<&Vec<Option<String>>> = top.iter().collect();
    let n = plan.group_by.len();
    let key_of = |g: &Vec<Option<String>>| -> GroupKey {
        if !grouped || is_top.contains(g) {
            GroupKey {
                other: false,
                values: g.clone(),
            }
        } else {
            GroupKey {
                other: true,
                values: vec![None; n],
            }
        }
    };

    // Pass 2: the series. A point of a top group made of one cell reads
    // the cell's states directly; others merge.
    let mut series: BTreeMap<GroupKey, BTreeMap<i64, Vec<Value>>> = BTreeMap::new();
    if plan.interval.is_some() {
        let mut merged: BTreeMap<(GroupKey, i64), Vec<Acc>> = BTreeMap::new();
        for (rb, group, cell) in cells() {
            let k = key_of(&group);
            if k.other && !plan.other {
                continue;
            }
            if !k.other && per_point[&(rb, group)] == 1 {
                let vals = json_values(&route, |k, a, q| cell.states[route.aggs[k].0].value(a, q));
                series.entry(k).or_default().insert(rb, vals);
                continue;
            }
            let accs = merged.entry((k, rb)).or_insert_with(|| new_accs(&route));
            add_cell(accs, &route, &cell);
        }
        for ((k, rb), accs) in merged {
            let vals = json_values(&route, |i, a, q| accs[i].value(a, q));
            series.entry(k).or_default().insert(rb, vals);
        }
    }
    drop(entry);

    // Totals per shown group ("other" merged), and overall.
    let mut shown: BTreeMap<GroupKey, Vec<Acc>> = BTreeMap::new();
    let mut grand = new_accs(&route);
    for (g, accs) in &totals {
        for (x, y) in grand.iter_mut().zip(accs) {
            x.absorb(y);
        }
        if !grouped {
            continue;
        }
        let k = key_of(g);
        if k.other && !plan.other {
            continue;
        }
        match shown.entry(k) {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(accs.clone());
            }
            std::collections::btree_map::Entry::Occupied(mut o) => {
                for (x, y) in o.get_mut().iter_mut().zip(accs) {
                    x.absorb(y);
                }
            }
        }
    }
    let totals: BTreeMap<GroupKey, Vec<Value>> = shown
        .into_iter()
        .map(|(k, accs)| (k, json_values(&route, |i, a, q| accs[i].value(a, q))))
        .collect();
    let grand = json_values(&route, |i, a, q| grand[i].value(a, q));
    Ok(shape(
        &plan,
        &top,
        series,
        totals,
        grand,
        &format!("rollup:{}", route.name),
    ))
}

/// A rollup of `def` over the raw events in `[lo, hi)`.
async fn raw_rollup(
    q: &QueryState,
    table: &Arc<dyn TableProvider>,
    plan: &Plan,
    def: &RollupDef,
    lo: i64,
    hi: i64,
) -> Result<Rollup> {
    let lp = LogicalPlanBuilder::scan(
        plan.stream.as_str(),
        provider_as_source(table.clone()),
        None,
    )?
    .filter(super::column("ts").gt_eq(super::ts_lit(lo)))?
    .filter(super::column("ts").lt(super::ts_lit(hi)))?
    .build()?;
    let df = datafusion::dataframe::DataFrame::new(q.session.clone(), lp);
    let mut stream = df.execute_stream().await?;
    let mut r = Rollup::new(def.clone()).map_err(|e| crate::QueryError::Internal(e.to_string()))?;
    // Streamed: an end holds less than one bucket of the finest interval,
    // but nothing bounds its rows but the memory pool.
    while let Some(rb) = futures::StreamExt::next(&mut stream).await {
        let b = tally_store::batch_from_arrow(&rb?)
            .map_err(|e| crate::QueryError::Internal(e.to_string()))?;
        r.apply(&b);
    }
    q.pins.0.lock().clear();
    Ok(r)
}
