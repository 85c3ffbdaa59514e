//! The kinds of aggregate state, each defined in one place: how a batch's
//! rows are added to it (update), how two states of it merge (merge),
//! what value it gives (finish), and its bytes in a snapshot. Rollup
//! cells ([`super::State`]) and query-time accumulators ([`super::Acc`])
//! both go through these definitions; neither holds logic of its own.

use super::uniq::{new_hll, UniqAcc};
use super::{Rows, HLL_LG_K, QUANTILE_ALPHA};
use crate::def::Aggregate;
use crate::snapshot::{put_bytes, put_f64, put_opt, put_u64, Reader};
use crate::{Error, Result};
use datasketches::hll::{HllSketch, HllType, HllUnion};
use sketches_ddsketch::{Config, DDSketch};

/// One kind of aggregate state.
pub trait Kind: Clone + Sized {
    /// Its tag in a snapshot (never reused: snapshots outlive builds).
    const TAG: u8;
    /// What a query folds many states of this kind into: the state itself
    /// for most kinds; distinct counts fold faster through their own.
    type Acc: Fold<Self>;
    /// Adds rows of a batch.
    fn update(&mut self, rows: &Rows<'_>);
    /// Folds in another state of the same aggregate.
    fn merge(&mut self, other: &Self);
    /// The aggregate's value: `q` is the rank for quantiles (0..=1);
    /// `None` where there was nothing to aggregate.
    fn finish(&self, agg: &Aggregate, q: f64) -> Option<f64>;
    fn encode(&self, w: &mut Vec<u8>);
    fn decode(r: &mut Reader<'_>) -> Result<Self>;
}

/// Folds many states of kind `K` (a query over many cells).
pub trait Fold<K>: Clone {
    fn from_state(s: K) -> Self;
    fn add(&mut self, s: &K);
    fn absorb(&mut self, other: &Self);
    fn into_state(self) -> K;
    fn value(&self, agg: &Aggregate, q: f64) -> Option<f64>;
}

/// Every kind folds by merging, unless it names another accumulator.
impl<K: Kind> Fold<K> for K {
    fn from_state(s: K) -> K {
        s
    }
    fn add(&mut self, s: &K) {
        self.merge(s)
    }
    fn absorb(&mut self, other: &K) {
        self.merge(other)
    }
    fn into_state(self) -> K {
        self
    }
    fn value(&self, agg: &Aggregate, q: f64) -> Option<f64> {
        self.finish(agg, q)
    }
}

/// `count` (every row) and `count(f)` (rows where `f` is present).
#[derive(Clone, Debug, Default)]
pub struct Count(pub u64);

impl Kind for Count {
    const TAG: u8 = 0;
    type Acc = Count;
    fn update(&mut self, rows: &Rows<'_>) {
        self.0 += rows.present();
    }
    fn merge(&mut self, other: &Count) {
        self.0 += other.0;
    }
    fn finish(&self, _: &Aggregate, _: f64) -> Option<f64> {
        Some(self.0 as f64)
    }
    fn encode(&self, w: &mut Vec<u8>) {
        put_u64(w, self.0);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Count> {
        Ok(Count(r.u64()?))
    }
}

/// `sum(f)` and `avg(f)`: the sum and the number of values summed.
#[derive(Clone, Debug, Default)]
pub struct Sum {
    pub sum: f64,
    pub n: u64,
}

impl Kind for Sum {
    const TAG: u8 = 1;
    type Acc = Sum;
    fn update(&mut self, rows: &Rows<'_>) {
        for v in rows.numbers() {
            self.sum += v;
            self.n += 1;
        }
    }
    fn merge(&mut self, other: &Sum) {
        self.sum += other.sum;
        self.n += other.n;
    }
    fn finish(&self, agg: &Aggregate, _: f64) -> Option<f64> {
        match (self.n, agg) {
            (0, _) => None,
            (n, Aggregate::Avg(_)) => Some(self.sum / n as f64),
            _ => Some(self.sum),
        }
    }
    fn encode(&self, w: &mut Vec<u8>) {
        put_f64(w, self.sum);
        put_u64(w, self.n);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Sum> {
        Ok(Sum {
            sum: r.f64()?,
            n: r.u64()?,
        })
    }
}

/// `min(f)`.
#[derive(Clone, Debug, Default)]
pub struct Min(pub Option<f64>);

/// `max(f)`.
#[derive(Clone, Debug, Default)]
pub struct Max(pub Option<f64>);

/// The two extremes differ only in which of two values they keep.
macro_rules! extreme {
    ($kind:ident, $tag:expr, $keep:ident) => {
        impl Kind for $kind {
            const TAG: u8 = $tag;
            type Acc = $kind;
            fn update(&mut self, rows: &Rows<'_>) {
                for v in rows.numbers() {
                    self.0 = Some(self.0.map_or(v, |m| m.$keep(v)));
                }
            }
            fn merge(&mut self, other: &$kind) {
                if let Some(v) = other.0 {
                    self.0 = Some(self.0.map_or(v, |m| m.$keep(v)));
                }
            }
            fn finish(&self, _: &Aggregate, _: f64) -> Option<f64> {
                self.0
            }
            fn encode(&self, w: &mut Vec<u8>) {
                put_opt(w, self.0);
            }
            fn decode(r: &mut Reader<'_>) -> Result<$kind> {
                Ok($kind(r.opt()?))
            }
        }
    };
}
extreme!(Min, 2, min);
extreme!(Max, 3, max);

/// `uniq(f)`: a HyperLogLog sketch of the values' hashes.
#[derive(Clone)]
pub struct Uniq(pub HllSketch);

impl Default for Uniq {
    fn default() -> Uniq {
        Uniq(new_hll())
    }
}

impl std::fmt::Debug for Uniq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "~{}", self.0.estimate())
    }
}

impl Kind for Uniq {
    const TAG: u8 = 4;
    type Acc = Box<UniqAcc>;
    fn update(&mut self, rows: &Rows<'_>) {
        for c in rows.coupons() {
            self.0.update_with_coupon(c);
        }
    }
    fn merge(&mut self, other: &Uniq) {
        let mut u = HllUnion::new(HLL_LG_K).expect("valid lg_k");
        u.update(&self.0);
        u.update(&other.0);
        self.0 = u.to_sketch(HllType::Hll8);
    }
    fn finish(&self, _: &Aggregate, _: f64) -> Option<f64> {
        Some(self.0.estimate().round())
    }
    fn encode(&self, w: &mut Vec<u8>) {
        put_bytes(w, &self.0.serialize());
    }
    fn decode(r: &mut Reader<'_>) -> Result<Uniq> {
        let h = HllSketch::deserialize(r.bytes()?).map_err(|e| Error::Corrupt {
            message: format!("sketch: {e}"),
        })?;
        Ok(Uniq(h))
    }
}

/// Distinct counts over many cells fold through [`UniqAcc`], which unions
/// dense registers directly instead of through the library's union.
impl Fold<Uniq> for Box<UniqAcc> {
    fn from_state(s: Uniq) -> Self {
        let mut acc = Box::<UniqAcc>::default();
        if s.0.estimate() > 0.0 {
            UniqAcc::add(&mut acc, &s.0);
        }
        acc
    }
    fn add(&mut self, s: &Uniq) {
        UniqAcc::add(self, &s.0)
    }
    fn absorb(&mut self, other: &Self) {
        UniqAcc::absorb(self, other)
    }
    fn into_state(self) -> Uniq {
        Uniq(self.to_sketch())
    }
    fn value(&self, _: &Aggregate, _: f64) -> Option<f64> {
        Some(self.to_sketch().estimate().round())
    }
}

/// `quantiles(f)`: a DDSketch of the finite values, answering every `pNN`.
#[derive(Clone)]
pub struct Quantiles(pub DDSketch);

impl Default for Quantiles {
    fn default() -> Quantiles {
        Quantiles(new_quantiles())
    }
}

impl std::fmt::Debug for Quantiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} values", self.0.count())
    }
}

impl Kind for Quantiles {
    const TAG: u8 = 5;
    type Acc = Quantiles;
    fn update(&mut self, rows: &Rows<'_>) {
        for v in rows.numbers().filter(|v| v.is_finite()) {
            self.0.add(v);
        }
    }
    /// Both of [`new_quantiles`]'s configuration (decoding checks that), so
    /// the merge cannot fail.
    fn merge(&mut self, other: &Quantiles) {
        if let Err(e) = self.0.merge(&other.0) {
            debug_assert!(false, "quantile sketches of two configurations: {e}");
        }
    }
    /// The value at rank `q`, kept within the exact minimum and maximum (a
    /// bin's representative value can lie just outside them).
    fn finish(&self, _: &Aggregate, q: f64) -> Option<f64> {
        let d = &self.0;
        let v = d.quantile(q.clamp(0.0, 1.0)).ok().flatten()?;
        Some(v.clamp(d.min()?, d.max()?))
    }
    fn encode(&self, w: &mut Vec<u8>) {
        put_bytes(w, &self.0.to_java_bytes());
    }
    fn decode(r: &mut Reader<'_>) -> Result<Quantiles> {
        let d = DDSketch::from_java_bytes(r.bytes()?).map_err(|e| Error::Corrupt {
            message: format!("quantile sketch: {e}"),
        })?;
        // Decoded with the configuration this build merges with.
        if new_quantiles().merge(&d).is_err() {
            return Err(Error::Corrupt {
                message: "quantile sketch of another configuration".into(),
            });
        }
        Ok(Quantiles(d))
    }
}

pub(crate) fn new_quantiles() -> DDSketch {
    DDSketch::new(Config::new(QUANTILE_ALPHA, 2048, 1e-9))
}
