//! Aggregate states: one per aggregate of a rollup cell. Every state
//! merges with another of its kind (sketches included), so a coarser bucket
//! or a longer range is the merge of finer ones.

use crate::def::{Aggregate, RollupDef};
use datasketches::hll::{Coupon, HllSketch, HllType, HllUnion};
use sketches_ddsketch::{Config, DDSketch};
use tally_ingest::{Column, ColumnData};

mod uniq;
#[cfg(test)]
use uniq::dense_registers;
use uniq::new_hll;
pub use uniq::UniqAcc;

/// HyperLogLog registers: 2^12 = 4096, standard error 1.6 %; small sets
/// are kept as exact lists by the sketch until they grow.
pub const HLL_LG_K: u8 = 12;
/// DDSketch relative accuracy: a quantile is within 1 % of the exact value
/// at its rank (2,048 logarithmic bins per sign, values of magnitude below
/// 1e-9 counted as 0: the crate's default configuration).
pub const QUANTILE_ALPHA: f64 = 0.01;

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
    Quantiles(DDSketch),
}

impl State {
    pub(crate) fn new(a: &Aggregate) -> State {
        match a {
            Aggregate::Count | Aggregate::CountOf(_) => State::Count(0),
            Aggregate::Sum(_) | Aggregate::Avg(_) => State::Sum { sum: 0.0, n: 0 },
            Aggregate::Min(_) => State::Min(None),
            Aggregate::Max(_) => State::Max(None),
            Aggregate::Uniq(_) => State::Uniq(new_hll()),
            Aggregate::Quantiles(_) => State::Quantiles(new_quantiles()),
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
            (State::Quantiles(d), _) => quantile(d, q),
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
            (State::Quantiles(a), State::Quantiles(b)) => merge_quantiles(a, b),
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
            State::Quantiles(d) => write!(f, "Quantiles({} values)", d.count()),
        }
    }
}

/// Merges many states of one aggregate (a query over many cells): distinct
/// counts through a [`UniqAcc`]; every other state merges in place.
#[derive(Clone)]
pub enum Acc {
    State(State),
    Uniq(Box<UniqAcc>),
}

impl Acc {
    pub fn new(a: &Aggregate) -> Acc {
        match State::new(a) {
            State::Uniq(_) => Acc::Uniq(Box::default()),
            s => Acc::State(s),
        }
    }

    pub fn add(&mut self, s: &State) {
        match (self, s) {
            (Acc::Uniq(u), State::Uniq(h)) => u.add(h),
            (Acc::State(a), s) => a.merge(s),
            // States of one aggregate are always of one kind.
            _ => {}
        }
    }

    /// Folds another accumulator of the same aggregate into this one.
    pub fn absorb(&mut self, other: &Acc) {
        match (self, other) {
            (Acc::Uniq(a), Acc::Uniq(b)) => a.absorb(b),
            (Acc::State(a), Acc::State(b)) => a.merge(b),
            _ => {}
        }
    }

    /// The merged state.
    pub fn into_state(self) -> State {
        match self {
            Acc::Uniq(u) => State::Uniq(u.to_sketch()),
            Acc::State(s) => s,
        }
    }

    /// The value, as [`State::value`].
    pub fn value(&self, agg: &Aggregate, q: f64) -> Option<f64> {
        match self {
            Acc::Uniq(u) => Some(u.to_sketch().estimate().round()),
            Acc::State(s) => s.value(agg, q),
        }
    }
}

/// Registers of an HLL sketch of [`HLL_LG_K`].
const HLL_REGISTERS: usize = 1 << HLL_LG_K;
/// The DataSketches image of an array-mode HLL8 sketch: a 40-byte preamble,
/// then one byte per register.
const HLL_PREAMBLE: usize = 40;
/// Its mode byte: current mode HLL (2), target type HLL8 (2).
const HLL8_ARRAY_MODE: u8 = 2 | (2 << 2);
/// Its flag "out of order": the estimate comes from the registers alone
/// (the in-order HIP estimate does not survive a merge).
const HLL_OUT_OF_ORDER: u8 = 16;

pub(crate) fn new_quantiles() -> DDSketch {
    DDSketch::new(Config::new(QUANTILE_ALPHA, 2048, 1e-9))
}

/// Folds `b` into `a`: both of [`new_quantiles`]'s configuration (snapshot
/// decoding checks that), so the merge cannot fail.
fn merge_quantiles(a: &mut DDSketch, b: &DDSketch) {
    if let Err(e) = a.merge(b) {
        debug_assert!(false, "quantile sketches of two configurations: {e}");
    }
}

/// The value at rank `q`, kept within the exact minimum and maximum (a
/// bin's representative value can lie just outside them).
fn quantile(d: &DDSketch, q: f64) -> Option<f64> {
    let v = d.quantile(q.clamp(0.0, 1.0)).ok().flatten()?;
    Some(v.clamp(d.min()?, d.max()?))
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
    pub(crate) fn new(def: &RollupDef) -> Cell {
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

/// The HyperLogLog coupons (hashes) of `rows`' values in `col`, by row
/// number (`None`: no value). Text by its bytes; numbers by value, -0.0
/// and 0.0 being one value.
pub(crate) fn coupons_of(col: &Column, rows: &[u32], len: usize) -> Vec<Option<Coupon>> {
    let mut out = vec![None; len];
    for &r in rows {
        let r = r as usize;
        out[r] = match &col.data {
            ColumnData::Dim(s) => s.valid[r].then(|| {
                Coupon::from_value(&s.bytes[s.offsets[r] as usize..s.offsets[r + 1] as usize])
            }),
            ColumnData::Value(n) => {
                n.valid[r].then(|| Coupon::from_value((n.values[r] + 0.0).to_bits()))
            }
        };
    }
    out
}

/// Adds rows `rows` of a batch to one state (`coupons`: for a distinct
/// count, its values' coupons by row number).
pub(crate) fn update_rows(
    state: &mut State,
    agg: &Aggregate,
    col: Option<&Column>,
    rows: &[u32],
    coupons: &[Option<Coupon>],
) {
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
        (State::Uniq(h), _) => {
            for c in rows.iter().filter_map(|r| coupons[*r as usize]) {
                h.update_with_coupon(c);
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
        (State::Quantiles(d), ColumnData::Value(c)) => {
            for r in each.filter(|r| c.valid[*r] && c.values[*r].is_finite()) {
                d.add(c.values[r]);
            }
        }
        // A numeric aggregate over a text field: nothing to add.
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    /// A sketch of `n` random values: sparse (a list or set of hashes) for
    /// small `n`, dense beyond.
    fn sketch(rng: &mut StdRng, n: usize) -> HllSketch {
        let mut h = new_hll();
        for _ in 0..n {
            h.update(rng.random::<u64>());
        }
        h
    }

    fn registers(h: &HllSketch) -> Option<Vec<u8>> {
        dense_registers(&h.serialize()).map(<[u8]>::to_vec)
    }

    /// Folding sketches through `UniqAcc` (in one accumulator, or split
    /// over two and absorbed) gives the union the library computes from
    /// the same sketches: the same registers, and the same estimate.
    #[test]
    fn uniq_acc_equals_the_librarys_union() {
        let mut rng = StdRng::seed_from_u64(7);
        let sizes: &[&[usize]] = &[
            &[],
            &[3],
            &[5, 40, 0],
            &[20_000],
            &[20_000, 7],
            &[9, 20_000],
            &[20_000, 30_000],
            &[3_000, 20_000, 12, 500, 50_000, 1],
            &[200, 300, 400, 100, 250],
            // Many sparse sketches: past the union's share of the work.
            &[350; 30],
            &[
                350, 350, 20_000, 350, 350, 350, 350, 350, 350, 350, 350, 350, 350, 350, 350,
            ],
        ];
        for (case, sizes) in sizes.iter().enumerate() {
            for _ in 0..5 {
                let sketches: Vec<HllSketch> = sizes.iter().map(|n| sketch(&mut rng, *n)).collect();
                let mut lib = HllUnion::new(HLL_LG_K).unwrap();
                let mut one = UniqAcc::default();
                let (mut left, mut right) = (UniqAcc::default(), UniqAcc::default());
                for (i, h) in sketches.iter().enumerate() {
                    lib.update(h);
                    one.add(h);
                    if i % 2 == 0 {
                        left.add(h)
                    } else {
                        right.add(h)
                    }
                }
                left.absorb(&right);
                let want = lib.to_sketch(HllType::Hll8);
                let dense = sketches.iter().filter(|h| registers(h).is_some()).count();
                // Random 64-bit values: all distinct.
                let exact: usize = sizes.iter().sum();
                for got in [one.to_sketch(), left.to_sketch()] {
                    assert_eq!(registers(&got), registers(&want), "case {case}: registers");
                    let (g, w) = (got.estimate(), want.estimate());
                    if dense >= 2 || exact < 300 || sizes.len() == 1 {
                        // Both estimate from the registers alone (two or
                        // more dense sketches), or both hold the exact
                        // hashes, or one sketch as it came.
                        assert!(
                            (g - w).abs() <= 1e-9 * w.max(1.0),
                            "case {case}: {g} vs {w}"
                        );
                    } else {
                        // The library keeps its in-order estimate (HIP)
                        // where the registers' may differ a little: both
                        // within the sketch's error of the exact count.
                        let e = exact as f64;
                        assert!((g - e).abs() <= 0.05 * e, "case {case}: {g} vs {exact}");
                    }
                }
            }
        }
    }

    /// An accumulator merged from many dense sketches of overlapping sets
    /// estimates their union within the sketch's error.
    #[test]
    fn uniq_acc_estimates_a_union_of_overlapping_sets() {
        let mut acc = UniqAcc::default();
        for day in 0..30u64 {
            let mut h = new_hll();
            // 30 days of 20,000 values each, half of them shared by all.
            for v in 0..10_000u64 {
                h.update(v);
                h.update(1_000_000 * (day + 1) + v);
            }
            acc.add(&h);
        }
        let est = acc.to_sketch().estimate();
        let exact = 10_000.0 + 30.0 * 10_000.0;
        assert!((est - exact).abs() < 0.05 * exact, "{est} vs {exact}");
    }
}
