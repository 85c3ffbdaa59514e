//! Rollup state: per interval, per bucket, per group, one cell of
//! aggregate states. Every state merges with another of its kind, so a
//! coarser bucket or a longer range is the merge of finer ones, and a
//! rebuilt rollup can be swapped in whole.

use crate::def::{Aggregate, Grain, RollupDef};
use crate::filter::Compiled;
use crate::{Error, Result};
use datasketches::hll::{HllSketch, HllType, HllUnion};
use datasketches::tdigest::TDigestMut;
use std::collections::BTreeMap;

/// Hash maps keyed by group text: a fast hasher (keys are not chosen by
/// an attacker in a way that matters: a rollup's groups are bounded by
/// its data, and ingest is authenticated).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
use tally_ingest::{Batch, Column, ColumnData};

/// HyperLogLog registers: 2^12 = 4096, standard error 1.6 %; small sets
/// are kept as exact lists by the sketch until they grow.
pub const HLL_LG_K: u8 = 12;
/// t-digest compression: 100 centroids (rank error about 1 % at the tails,
/// less in the middle).
pub const TDIGEST_K: u16 = 100;

/// A group: the group-by dimensions' values (`None` where an event has no
/// such field).
pub type GroupKey = Vec<Option<String>>;

/// The state of one aggregate in one cell.
#[derive(Clone)]
pub enum State {
    /// `count(f)`: events where `f` is present.
    Count(u64),
    /// `sum(f)` and `avg(f)`: the sum and the number of values summed.
    Sum {
        sum: f64,
        n: u64,
    },
    Min(Option<f64>),
    Max(Option<f64>),
    Uniq(HllSketch),
    Quantiles(TDigestMut),
}

impl State {
    pub(crate) fn new(a: &Aggregate) -> State {
        match a {
            Aggregate::Count | Aggregate::CountOf(_) => State::Count(0),
            Aggregate::Sum(_) | Aggregate::Avg(_) => State::Sum { sum: 0.0, n: 0 },
            Aggregate::Min(_) => State::Min(None),
            Aggregate::Max(_) => State::Max(None),
            Aggregate::Uniq(_) => State::Uniq(new_hll()),
            Aggregate::Quantiles(_) => State::Quantiles(new_tdigest()),
        }
    }

    /// Whether `self` and `other` are states of one kind of aggregate.
    pub(crate) fn same_kind(&self, other: &State) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }

    /// The aggregate's value: `q` is the rank for quantiles (0..=1).
    /// `None` where there is nothing to aggregate (no values).
    pub fn value(&self, agg: &Aggregate, q: f64) -> Option<f64> {
        match (self, agg) {
            (State::Count(n), _) => Some(*n as f64),
            (State::Sum { n: 0, .. }, _) => None,
            (State::Sum { sum, n }, Aggregate::Avg(_)) => Some(sum / *n as f64),
            (State::Sum { sum, .. }, _) => Some(*sum),
            (State::Min(v) | State::Max(v), _) => *v,
            (State::Uniq(h), _) => Some(h.estimate().round()),
            (State::Quantiles(t), _) => t.clone().quantile(q).ok().flatten(),
        }
    }

    /// Folds `other` (a state of the same aggregate) into this one.
    pub fn merge(&mut self, other: &State) {
        match (self, other) {
            (State::Count(a), State::Count(b)) => *a += b,
            (State::Sum { sum, n }, State::Sum { sum: s2, n: n2 }) => {
                *sum += s2;
                *n += n2;
            }
            (State::Min(a), State::Min(b)) => *a = min_opt(*a, *b),
            (State::Max(a), State::Max(b)) => *a = max_opt(*a, *b),
            (State::Uniq(a), State::Uniq(b)) => {
                let mut u = HllUnion::new(HLL_LG_K).expect("valid lg_k");
                u.update(a);
                u.update(b);
                *a = u.to_sketch(HllType::Hll8);
            }
            (State::Quantiles(a), State::Quantiles(b)) => a.merge(b),
            // States of one aggregate are always of one kind.
            _ => {}
        }
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            State::Count(n) => write!(f, "Count({n})"),
            State::Sum { sum, n } => write!(f, "Sum({sum}, {n})"),
            State::Min(v) => write!(f, "Min({v:?})"),
            State::Max(v) => write!(f, "Max({v:?})"),
            State::Uniq(h) => write!(f, "Uniq(~{})", h.estimate()),
            State::Quantiles(t) => write!(f, "Quantiles({} values)", t.total_weight()),
        }
    }
}

/// Merges many states of one aggregate (a query over many cells): sketch
/// unions stay open across merges instead of being rebuilt per pair.
#[derive(Clone)]
pub enum Acc {
    Count(u64),
    Sum { sum: f64, n: u64 },
    Min(Option<f64>),
    Max(Option<f64>),
    Uniq(Box<HllUnion>),
    Quantiles(TDigestMut),
}

impl Acc {
    pub fn new(a: &Aggregate) -> Acc {
        match State::new(a) {
            State::Count(_) => Acc::Count(0),
            State::Sum { .. } => Acc::Sum { sum: 0.0, n: 0 },
            State::Min(_) => Acc::Min(None),
            State::Max(_) => Acc::Max(None),
            State::Uniq(_) => Acc::Uniq(Box::new(HllUnion::new(HLL_LG_K).expect("valid lg_k"))),
            State::Quantiles(_) => Acc::Quantiles(new_tdigest()),
        }
    }

    pub fn add(&mut self, s: &State) {
        match (self, s) {
            (Acc::Count(a), State::Count(b)) => *a += b,
            (Acc::Sum { sum, n }, State::Sum { sum: s2, n: n2 }) => {
                *sum += s2;
                *n += n2;
            }
            (Acc::Min(a), State::Min(b)) => *a = min_opt(*a, *b),
            (Acc::Max(a), State::Max(b)) => *a = max_opt(*a, *b),
            (Acc::Uniq(u), State::Uniq(h)) => u.update(h),
            (Acc::Quantiles(a), State::Quantiles(b)) => a.merge(b),
            _ => {}
        }
    }

    /// Folds another accumulator of the same aggregate into this one.
    pub fn absorb(&mut self, other: &Acc) {
        match (self, other) {
            (Acc::Count(a), Acc::Count(b)) => *a += b,
            (Acc::Sum { sum, n }, Acc::Sum { sum: s2, n: n2 }) => {
                *sum += s2;
                *n += n2;
            }
            (Acc::Min(a), Acc::Min(b)) => *a = min_opt(*a, *b),
            (Acc::Max(a), Acc::Max(b)) => *a = max_opt(*a, *b),
            (Acc::Uniq(a), Acc::Uniq(b)) => a.update(&b.to_sketch(HllType::Hll8)),
            (Acc::Quantiles(a), Acc::Quantiles(b)) => a.merge(b),
            _ => {}
        }
    }

    /// The value, as [`State::value`].
    pub fn value(&self, agg: &Aggregate, q: f64) -> Option<f64> {
        match (self, agg) {
            (Acc::Count(n), _) => Some(*n as f64),
            (Acc::Sum { n: 0, .. }, _) => None,
            (Acc::Sum { sum, n }, Aggregate::Avg(_)) => Some(sum / *n as f64),
            (Acc::Sum { sum, .. }, _) => Some(*sum),
            (Acc::Min(v) | Acc::Max(v), _) => *v,
            (Acc::Uniq(u), _) => Some(u.estimate().round()),
            (Acc::Quantiles(t), _) => t.clone().quantile(q).ok().flatten(),
        }
    }
}

fn new_hll() -> HllSketch {
    HllSketch::new(HLL_LG_K, HllType::Hll8).expect("valid lg_k")
}

fn new_tdigest() -> TDigestMut {
    TDigestMut::new(TDIGEST_K).expect("valid k")
}

fn min_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// The aggregate states of one (bucket, group).
#[derive(Debug, Clone)]
pub struct Cell {
    pub states: Vec<State>,
}

impl Cell {
    fn new(def: &RollupDef) -> Cell {
        Cell {
            states: def.aggregates.iter().map(State::new).collect(),
        }
    }

    pub fn merge(&mut self, other: &Cell) {
        for (a, b) in self.states.iter_mut().zip(&other.states) {
            a.merge(b);
        }
    }
}

/// Buckets of one interval: bucket start (µs) -> group -> cell.
pub type Buckets = BTreeMap<i64, HashMap<GroupKey, Cell>>;

/// A rollup's definition and state.
#[derive(Debug, Clone)]
pub struct Rollup {
    def: RollupDef,
    filter: Vec<Compiled>,
    /// One per interval of the definition, finest first.
    grains: Vec<(Grain, Buckets)>,
    /// Events counted (after the filter).
    events: u64,
    /// Per interval (as `grains`), the first bucket still kept: older
    /// buckets were dropped by retention and are not recreated.
    kept_from: Vec<i64>,
}

impl Rollup {
    pub fn new(def: RollupDef) -> Result<Rollup> {
        def.validate()?;
        let filter = def
            .filter
            .iter()
            .map(|c| {
                Compiled::new(c).map_err(|message| Error::Invalid {
                    message: format!("rollup {:?}: filter on {:?}: {message}", def.name, c.field),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let grains: Vec<(Grain, Buckets)> = def
            .grains()
            .into_iter()
            .map(|g| (g, Buckets::new()))
            .collect();
        let kept_from = vec![i64::MIN; grains.len()];
        Ok(Rollup {
            def,
            filter,
            grains,
            events: 0,
            kept_from,
        })
    }

    pub fn def(&self) -> &RollupDef {
        &self.def
    }

    pub fn events(&self) -> u64 {
        self.events
    }

    /// The buckets of `grain`, if the rollup keeps it.
    pub fn buckets(&self, grain: Grain) -> Option<&Buckets> {
        self.grains
            .iter()
            .find(|(g, _)| *g == grain)
            .map(|(_, b)| b)
    }

    pub(crate) fn grains_mut(&mut self) -> &mut Vec<(Grain, Buckets)> {
        &mut self.grains
    }

    pub(crate) fn set_events(&mut self, n: u64) {
        self.events = n;
    }

    /// Counts the events of `batch` (which must be of the rollup's stream).
    /// Rows are first sorted by (bucket, group) of the finest interval, so
    /// each stored cell is looked up once per batch, not once per row.
    pub fn apply(&mut self, batch: &Batch) {
        self.apply_in(batch, None);
    }

    /// [`Self::apply`] for the events with `ts` in `[range.0, range.1)`
    /// only (a partial rebuild), or all of them.
    pub fn apply_in(&mut self, batch: &Batch, range: Option<(i64, i64)>) {
        let Some(&(finest, _)) = self.grains.first() else {
            return;
        };
        let groups: Vec<Option<&Column>> =
            self.def.group_by.iter().map(|g| batch.column(g)).collect();
        let fields: Vec<Option<&Column>> = self
            .def
            .aggregates
            .iter()
            .map(|a| a.field().and_then(|f| batch.column(f)))
            .collect();
        // The rows that count, their finest buckets, and per group-by
        // dimension the number of their value in this batch (text is
        // interned once per distinct value, not copied per row).
        let rows: Vec<u32> = (0..batch.len())
            .filter(|&r| !range.is_some_and(|(lo, hi)| batch.ts[r] < lo || batch.ts[r] >= hi))
            .filter(|&r| self.filter.iter().all(|c| c.test(batch, r)))
            .map(|r| r as u32)
            .collect();
        if rows.is_empty() {
            return;
        }
        self.events += rows.len() as u64;
        let nd = groups.len();
        let mut ids: Vec<u32> = vec![0; rows.len() * nd];
        let mut values: Vec<Vec<Option<String>>> = Vec::with_capacity(nd);
        for (d, col) in groups.iter().enumerate() {
            let mut seen: HashMap<Option<&[u8]>, u32> = HashMap::default();
            let mut vals: Vec<Option<String>> = Vec::new();
            let mut bits: HashMap<Option<u64>, u32> = HashMap::default();
            for (i, &r) in rows.iter().enumerate() {
                let r = r as usize;
                let id = match col.map(|c| &c.data) {
                    None => *seen.entry(None).or_insert_with(|| {
                        vals.push(None);
                        vals.len() as u32 - 1
                    }),
                    Some(ColumnData::Dim(s)) => {
                        let v = s.valid[r]
                            .then(|| &s.bytes[s.offsets[r] as usize..s.offsets[r + 1] as usize]);
                        *seen.entry(v).or_insert_with(|| {
                            vals.push(v.map(|b| String::from_utf8_lossy(b).into_owned()));
                            vals.len() as u32 - 1
                        })
                    }
                    Some(ColumnData::Value(n)) => {
                        let v = n.get(r);
                        *bits.entry(v.map(f64::to_bits)).or_insert_with(|| {
                            vals.push(v.map(|x| x.to_string()));
                            vals.len() as u32 - 1
                        })
                    }
                };
                ids[i * nd + d] = id;
            }
            values.push(vals);
        }
        // Rows by (finest bucket, group).
        let mut local: HashMap<(i64, &[u32]), Vec<u32>> = HashMap::default();
        for (i, &r) in rows.iter().enumerate() {
            let key = (
                finest.start(batch.ts[r as usize]),
                &ids[i * nd..(i + 1) * nd],
            );
            local.entry(key).or_default().push(r);
        }
        // Each stored cell is found once per batch and updated with its
        // rows directly (merging sketches per batch would cost far more
        // than updating them).
        for ((bucket, gids), rows) in local {
            let key: GroupKey = gids
                .iter()
                .enumerate()
                .map(|(d, id)| values[d][*id as usize].clone())
                .collect();
            for ((grain, buckets), kept) in self.grains.iter_mut().zip(&self.kept_from) {
                if grain.start(bucket) < *kept {
                    // A late event for a bucket retention dropped.
                    continue;
                }
                let groups = buckets.entry(grain.start(bucket)).or_default();
                let cell = match groups.get_mut(&key) {
                    Some(c) => c,
                    None => groups
                        .entry(key.clone())
                        .or_insert_with(|| Cell::new(&self.def)),
                };
                for ((state, agg), col) in cell
                    .states
                    .iter_mut()
                    .zip(&self.def.aggregates)
                    .zip(&fields)
                {
                    update_rows(state, agg, *col, &rows);
                }
            }
        }
    }

    /// The cells of `grain` in buckets starting in `[from, to)`.
    pub fn cells(
        &self,
        grain: Grain,
        from: i64,
        to: i64,
    ) -> impl Iterator<Item = (i64, &GroupKey, &Cell)> + '_ {
        self.buckets(grain)
            .into_iter()
            .flat_map(move |b| b.range(from..to.max(from)))
            .flat_map(|(start, groups)| groups.iter().map(move |(k, c)| (*start, k, c)))
    }

    /// Replaces this rollup's buckets starting in `[lo, hi)` by `other`'s
    /// (same definition), for every interval. `lo` and `hi` should be
    /// aligned to the coarsest interval, or its edge buckets mix old and
    /// new events.
    pub fn replace_range(&mut self, other: Rollup, lo: i64, hi: i64) {
        for ((_, mine), (_, theirs)) in self.grains.iter_mut().zip(other.grains) {
            let inside: Vec<i64> = mine.range(lo..hi).map(|(b, _)| *b).collect();
            for b in inside {
                mine.remove(&b);
            }
            for (b, groups) in theirs.into_iter().filter(|(b, _)| (lo..hi).contains(b)) {
                mine.insert(b, groups);
            }
        }
        // The event count, from the finest interval's counts when the
        // rollup keeps a count (otherwise it stays approximate).
        if let Some(i) = self
            .def
            .aggregates
            .iter()
            .position(|a| *a == Aggregate::Count)
        {
            if let Some((_, finest)) = self.grains.first() {
                self.events = finest
                    .values()
                    .flat_map(|g| g.values())
                    .map(|c| match &c.states[i] {
                        State::Count(n) => *n,
                        _ => 0,
                    })
                    .sum();
            }
        }
    }

    /// Applies the definition's retention as of `now` (µs): drops buckets
    /// that ended more than their interval's period ago. Returns the
    /// buckets dropped.
    pub fn retain(&mut self, now: i64) -> usize {
        let mut dropped = 0;
        for i in 0..self.grains.len() {
            let g = self.grains[i].0;
            if let Some(period) = self.def.retention_us(g) {
                let cutoff = g.start(now.saturating_sub(period));
                dropped += self.drop_before(g, cutoff);
            }
        }
        dropped
    }

    /// The first bucket start of `grain` still kept (`i64::MIN`: all).
    pub fn kept_from(&self, grain: Grain) -> i64 {
        self.grains
            .iter()
            .zip(&self.kept_from)
            .find(|((g, _), _)| *g == grain)
            .map_or(i64::MIN, |(_, k)| *k)
    }

    pub(crate) fn set_kept_from(&mut self, grain: Grain, from: i64) {
        if let Some(i) = self.grains.iter().position(|(g, _)| *g == grain) {
            self.kept_from[i] = from;
        }
    }

    /// Drops buckets that start before `cutoff` (retention); later events
    /// for them are not counted.
    pub fn drop_before(&mut self, grain: Grain, cutoff: i64) -> usize {
        let Some(i) = self.grains.iter().position(|(g, _)| *g == grain) else {
            return 0;
        };
        self.kept_from[i] = self.kept_from[i].max(cutoff);
        let buckets = &mut self.grains[i].1;
        let keep = buckets.split_off(&cutoff);
        let dropped = buckets.len();
        *buckets = keep;
        dropped
    }
}

/// Adds rows `rows` of a batch to one state.
fn update_rows(state: &mut State, agg: &Aggregate, col: Option<&Column>, rows: &[u32]) {
    if let (Aggregate::Count, State::Count(n)) = (agg, &mut *state) {
        *n += rows.len() as u64;
        return;
    }
    let Some(col) = col else { return };
    let each = rows.iter().map(|r| *r as usize);
    match (state, &col.data) {
        (State::Count(n), data) => {
            let valid = data.valid();
            *n += each.filter(|r| valid[*r]).count() as u64;
        }
        (State::Uniq(h), ColumnData::Dim(s)) => {
            for r in each.filter(|r| s.valid[*r]) {
                // The value's bytes (valid UTF-8 already).
                h.update(&s.bytes[s.offsets[r] as usize..s.offsets[r + 1] as usize]);
            }
        }
        (State::Uniq(h), ColumnData::Value(n)) => {
            for r in each.filter(|r| n.valid[*r]) {
                // Numbers by value; -0.0 and 0.0 are one value.
                h.update((n.values[r] + 0.0).to_bits());
            }
        }
        (State::Sum { sum, n }, ColumnData::Value(c)) => {
            for r in each.filter(|r| c.valid[*r]) {
                *sum += c.values[r];
                *n += 1;
            }
        }
        (State::Min(m), ColumnData::Value(c)) => {
            for r in each.filter(|r| c.valid[*r]) {
                *m = min_opt(*m, Some(c.values[r]));
            }
        }
        (State::Max(m), ColumnData::Value(c)) => {
            for r in each.filter(|r| c.valid[*r]) {
                *m = max_opt(*m, Some(c.values[r]));
            }
        }
        (State::Quantiles(t), ColumnData::Value(c)) => {
            for r in each.filter(|r| c.valid[*r]) {
                t.update(c.values[r]);
            }
        }
        // A numeric aggregate over a text field: nothing to add.
        _ => {}
    }
}
