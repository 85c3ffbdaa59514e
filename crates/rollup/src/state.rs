//! Rollup state: per interval, per bucket, per group, one cell of
//! aggregate states ([`crate::aggregate`]); a batch's rows applied cell by
//! cell, coarser intervals merged from finer ones, retention, and a
//! rebuilt range swapped in whole.

use crate::aggregate::GroupKey;
use crate::aggregate::{coupons_of, update_rows, Acc, Cell, State};
use crate::def::{Aggregate, Grain, RollupDef};
use crate::filter::Compiled;
use crate::{Error, Result};
use datasketches::hll::Coupon;
use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::groups::{Groups, HashMap};
use tally_ingest::{Batch, Column};

/// A batch whose (finest bucket, group) pairs fit in this many places
/// finds its cells by position rather than by hashing.
const DENSE_SLOTS: usize = 1 << 16;

/// Buckets of one interval: bucket start (µs) -> group number -> cell.
pub(crate) type Buckets = BTreeMap<i64, HashMap<u32, Cell>>;

/// A rollup's definition and state.
#[derive(Clone)]
pub struct Rollup {
    def: RollupDef,
    filter: Vec<Compiled>,
    /// The groups its cells are of.
    groups: Groups,
    /// One per interval of the definition, finest first.
    grains: Vec<(Grain, Buckets)>,
    /// Events counted (after the filter).
    events: u64,
    /// Per interval (as `grains`), the first bucket still kept: older
    /// buckets were dropped by retention and are not recreated.
    kept_from: Vec<i64>,
    /// Per interval (as `grains`; the finest's is always empty), the cells
    /// whose finer cells changed since they were last derived from them:
    /// a coarser interval is not counted per event but merged from the
    /// next finer one when read (on the fly) or at rest ([`Self::settle`]).
    pending: Vec<BTreeMap<i64, HashSet<u32>>>,
}

type HashSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

impl std::fmt::Debug for Rollup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rollup")
            .field("def", &self.def)
            .field("groups", &self.groups.len())
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
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
        let pending = vec![BTreeMap::new(); grains.len()];
        Ok(Rollup {
            pending,
            groups: Groups::new(def.group_by.len()),
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

    /// The number of buckets of `grain` kept (0 if the rollup lacks it).
    pub fn bucket_count(&self, grain: Grain) -> usize {
        let Some(i) = self.grains.iter().position(|(g, _)| *g == grain) else {
            return 0;
        };
        let stored = &self.grains[i].1;
        stored.len()
            + self.pending[i]
                .keys()
                .filter(|b| !stored.contains_key(b))
                .count()
    }

    /// The number of distinct groups the rollup has numbered.
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// The stored buckets of `grain` (the finest interval's are all of them).
    #[cfg(test)]
    pub(crate) fn buckets(&self, grain: Grain) -> Option<&Buckets> {
        self.grains
            .iter()
            .find(|(g, _)| *g == grain)
            .map(|(_, b)| b)
    }

    /// Sets the cell of (`grain`, bucket `start`, `key`); `false` if the
    /// rollup lacks the interval.
    pub(crate) fn put_cell(
        &mut self,
        grain: Grain,
        start: i64,
        key: &GroupKey,
        cell: Cell,
    ) -> bool {
        let Some((_, buckets)) = self.grains.iter_mut().find(|(g, _)| *g == grain) else {
            return false;
        };
        let g = self.groups.of_key(key);
        buckets.entry(start).or_default().insert(g, cell);
        true
    }

    pub(crate) fn set_events(&mut self, n: u64) {
        self.events = n;
    }

    /// Counts the events of `batch` (which must be of the rollup's stream).
    /// Rows are first put in order of their cell of the finest interval,
    /// so each stored cell is looked up once per batch, not once per row.
    pub fn apply(&mut self, batch: &Batch) {
        self.apply_in(batch, None);
    }

    /// [`Self::apply`] for the events with `ts` in `[range.0, range.1)`
    /// only (a partial rebuild), or all of them.
    pub fn apply_in(&mut self, batch: &Batch, range: Option<(i64, i64)>) {
        let Some(&(finest, _)) = self.grains.first() else {
            return;
        };
        let cols: Vec<Option<&Column>> =
            self.def.group_by.iter().map(|g| batch.column(g)).collect();
        let fields: Vec<Option<&Column>> = self
            .def
            .aggregates
            .iter()
            .map(|a| a.field().and_then(|f| batch.column(f)))
            .collect();
        let rows: Vec<u32> = (0..batch.len())
            .filter(|&r| !range.is_some_and(|(lo, hi)| batch.ts[r] < lo || batch.ts[r] >= hi))
            .filter(|&r| self.filter.iter().all(|c| c.test(batch, r)))
            .map(|r| r as u32)
            .collect();
        if rows.is_empty() {
            return;
        }
        self.events += rows.len() as u64;
        let groups = self.groups.of_rows(&cols, &rows);
        // Distinct counts hash each value once, for every interval.
        let coupons: Vec<Vec<Option<Coupon>>> = self
            .def
            .aggregates
            .iter()
            .zip(&fields)
            .map(|(agg, col)| match (agg, col) {
                (Aggregate::Uniq(_), Some(col)) => coupons_of(col, &rows, batch.len()),
                _ => Vec::new(),
            })
            .collect();
        let cells = CellRows::of(finest, batch, &rows, &groups);
        for (&(bucket, group), rows) in cells.slots.iter().zip(cells.rows()) {
            for i in 0..self.grains.len() {
                let start = self.grains[i].0.start(bucket);
                if start < self.kept_from[i] {
                    // A late event for a bucket retention dropped.
                    continue;
                }
                if i > 0 && start >= self.kept_from[i - 1] {
                    // The next finer interval holds all of this bucket:
                    // merge from it when read.
                    self.pending[i].entry(start).or_default().insert(group);
                    continue;
                }
                let cell = self.grains[i]
                    .1
                    .entry(start)
                    .or_default()
                    .entry(group)
                    .or_insert_with(|| Cell::new(&self.def));
                for (((state, agg), col), coupons) in cell
                    .states
                    .iter_mut()
                    .zip(&self.def.aggregates)
                    .zip(&fields)
                    .zip(&coupons)
                {
                    update_rows(state, agg, *col, rows, coupons);
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
    ) -> impl Iterator<Item = (i64, &GroupKey, Cow<'_, Cell>)> + '_ {
        let i = self.grains.iter().position(|(g, _)| *g == grain);
        let starts: Vec<i64> = match i {
            None => Vec::new(),
            Some(i) => {
                let range = from..to.max(from);
                let mut starts: Vec<i64> = self.grains[i]
                    .1
                    .range(range.clone())
                    .map(|(b, _)| *b)
                    .chain(self.pending[i].range(range).map(|(b, _)| *b))
                    .collect();
                starts.sort_unstable();
                starts.dedup();
                starts
            }
        };
        starts.into_iter().flat_map(move |b| {
            self.bucket_cells(i.expect("starts only if kept"), b)
                .into_iter()
                .map(move |(g, c)| (b, self.groups.key(g), c))
        })
    }

    /// The cells of bucket `b` of interval `i`: stored, or merged from the
    /// finer interval where pending.
    fn bucket_cells(&self, i: usize, b: i64) -> Vec<(u32, Cow<'_, Cell>)> {
        let pending = self.pending[i].get(&b);
        let mut out: Vec<(u32, Cow<'_, Cell>)> = self.grains[i]
            .1
            .get(&b)
            .into_iter()
            .flatten()
            .filter(|(g, _)| !pending.is_some_and(|p| p.contains(*g)))
            .map(|(g, c)| (*g, Cow::Borrowed(c)))
            .collect();
        for g in pending.into_iter().flatten() {
            out.push((*g, Cow::Owned(self.derive(i, b, *g))));
        }
        out
    }

    /// The cell of group `g` in bucket `b` of interval `i > 0`, merged from
    /// the next finer interval's cells of that bucket. (A pending bucket is
    /// one the finer interval holds whole, so its stored cell, if any, is
    /// an earlier merge of the same cells, replaced.)
    fn derive(&self, i: usize, b: i64, g: u32) -> Cell {
        let (finer, _) = self.grains[i - 1];
        let end = b + self.grains[i].0.micros();
        let mut accs: Vec<Acc> = self.def.aggregates.iter().map(Acc::new).collect();
        let mut add = |cell: &Cell| {
            for (a, s) in accs.iter_mut().zip(&cell.states) {
                a.add(s);
            }
        };
        let mut finer_starts: Vec<i64> = self.grains[i - 1]
            .1
            .range(b..end)
            .filter(|(_, groups)| groups.contains_key(&g))
            .map(|(s, _)| *s)
            .chain(
                self.pending[i - 1]
                    .range(b..end)
                    .filter(|(_, p)| p.contains(&g))
                    .map(|(s, _)| *s),
            )
            .collect();
        finer_starts.sort_unstable();
        finer_starts.dedup();
        debug_assert!(finer_starts.iter().all(|s| finer.start(*s) == *s));
        for s in finer_starts {
            let pending = self.pending[i - 1].get(&s).is_some_and(|p| p.contains(&g));
            match pending {
                true => add(&self.derive(i - 1, s, g)),
                false => {
                    if let Some(c) = self.grains[i - 1].1.get(&s).and_then(|c| c.get(&g)) {
                        add(c)
                    }
                }
            }
        }
        Cell {
            states: accs.into_iter().map(Acc::into_state).collect(),
        }
    }

    /// Stores every pending cell (merged from the finer interval), finest
    /// first. Called before retention drops buckets and before a snapshot,
    /// so neither loses what only the finer interval held.
    pub fn settle(&mut self) {
        for i in 1..self.grains.len() {
            let pending = std::mem::take(&mut self.pending[i]);
            // The finer interval is settled already: derive reads stored
            // cells only.
            let mut merged: Vec<(i64, u32, Cell)> = Vec::new();
            for (b, groups) in &pending {
                for g in groups {
                    merged.push((*b, *g, self.derive(i, *b, *g)));
                }
            }
            for (b, g, cell) in merged {
                self.grains[i].1.entry(b).or_default().insert(g, cell);
            }
        }
    }

    /// Replaces this rollup's buckets starting in `[lo, hi)` by `other`'s
    /// (same definition), for every interval. `lo` and `hi` should be
    /// aligned to the coarsest interval, or its edge buckets mix old and
    /// new events.
    pub fn replace_range(&mut self, mut other: Rollup, lo: i64, hi: i64) {
        self.settle();
        other.settle();
        let mut renumber: HashMap<u32, u32> = HashMap::default();
        for ((_, mine), (_, theirs)) in self.grains.iter_mut().zip(other.grains) {
            let inside: Vec<i64> = mine.range(lo..hi).map(|(b, _)| *b).collect();
            for b in inside {
                mine.remove(&b);
            }
            for (b, groups) in theirs.into_iter().filter(|(b, _)| (lo..hi).contains(b)) {
                let groups = groups
                    .into_iter()
                    .map(|(g, cell)| {
                        let mine = *renumber
                            .entry(g)
                            .or_insert_with(|| self.groups.of_key(other.groups.key(g)));
                        (mine, cell)
                    })
                    .collect();
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
                        State::Count(n) => n.0,
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
        // Called at every flush: pending cells are stored here at the latest.
        self.settle();
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

    /// Renumbers the groups when most have no cell left (retention
    /// dropped their buckets), so the numbering does not grow forever.
    fn forget_unused_groups(&mut self) {
        let mut used = vec![false; self.groups.len()];
        for (_, buckets) in &self.grains {
            for g in buckets.values().flat_map(|groups| groups.keys()) {
                used[*g as usize] = true;
            }
        }
        let live: Vec<u32> = (0..used.len() as u32)
            .filter(|g| used[*g as usize])
            .collect();
        if live.len() * 2 > used.len() || used.len() < 1024 {
            return;
        }
        let renumber = self.groups.keep(&live);
        for (_, buckets) in &mut self.grains {
            for groups in buckets.values_mut() {
                *groups = std::mem::take(groups)
                    .into_iter()
                    .map(|(g, cell)| (renumber[g as usize], cell))
                    .collect();
            }
        }
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
        // Coarser cells still merged from these buckets take them in first.
        self.settle();
        self.kept_from[i] = self.kept_from[i].max(cutoff);
        let buckets = &mut self.grains[i].1;
        let keep = buckets.split_off(&cutoff);
        let dropped = buckets.len();
        *buckets = keep;
        if dropped > 0 {
            self.forget_unused_groups();
        }
        dropped
    }
}

/// A batch's rows by cell of the finest interval: a slot per distinct
/// (bucket, group), in order of first appearance, and the rows ordered by
/// slot (a counting sort).
struct CellRows {
    slots: Vec<(i64, u32)>,
    /// Each slot's first position in `ordered`, and one past its last.
    bounds: Vec<usize>,
    ordered: Vec<u32>,
}

impl CellRows {
    fn of(finest: Grain, batch: &Batch, rows: &[u32], groups: &[u32]) -> CellRows {
        let mut slots: Vec<(i64, u32)> = Vec::new();
        let mut new_slot = |key: (i64, u32)| {
            slots.push(key);
            slots.len() as u32 - 1
        };
        let starts: Vec<i64> = rows
            .iter()
            .map(|&r| finest.start(batch.ts[r as usize]))
            .collect();
        let (first, last) = starts
            .iter()
            .fold((i64::MAX, i64::MIN), |(lo, hi), s| (lo.min(*s), hi.max(*s)));
        let width = finest.micros() as u64;
        let n_buckets = (last.abs_diff(first) / width) as usize + 1;
        let n_groups = groups.iter().max().map_or(0, |g| *g as usize + 1);
        let row_slots: Vec<u32> = if n_buckets.saturating_mul(n_groups) <= DENSE_SLOTS {
            // Few buckets and groups (live traffic): slots by position.
            let mut table = vec![u32::MAX; n_buckets * n_groups];
            starts
                .iter()
                .zip(groups)
                .map(|(&start, &g)| {
                    let at = (start.abs_diff(first) / width) as usize * n_groups + g as usize;
                    if table[at] == u32::MAX {
                        table[at] = new_slot((start, g));
                    }
                    table[at]
                })
                .collect()
        } else {
            let mut slot_of: HashMap<(i64, u32), u32> =
                HashMap::with_capacity_and_hasher(rows.len().min(4096), Default::default());
            starts
                .iter()
                .zip(groups)
                .map(|(&start, &g)| {
                    *slot_of
                        .entry((start, g))
                        .or_insert_with(|| new_slot((start, g)))
                })
                .collect()
        };
        let mut bounds = vec![0usize; slots.len() + 1];
        for s in &row_slots {
            bounds[*s as usize + 1] += 1;
        }
        for s in 1..bounds.len() {
            bounds[s] += bounds[s - 1];
        }
        let mut fill = bounds.clone();
        let mut ordered = vec![0u32; rows.len()];
        for (&r, &s) in rows.iter().zip(&row_slots) {
            ordered[fill[s as usize]] = r;
            fill[s as usize] += 1;
        }
        CellRows {
            slots,
            bounds,
            ordered,
        }
    }

    /// Each slot's rows, in slot order.
    fn rows(&self) -> impl Iterator<Item = &[u32]> + '_ {
        self.bounds.windows(2).map(|w| &self.ordered[w[0]..w[1]])
    }
}
