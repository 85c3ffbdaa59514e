//! Aggregate states: one per aggregate of a rollup cell. Every state
//! merges with another of its kind (sketches included), so a coarser bucket
//! or a longer range is the merge of finer ones. Each kind is defined once,
//! in [`kinds`]; [`State`] and [`Acc`] only dispatch to it.

use crate::def::{Aggregate, RollupDef};
use crate::snapshot::Reader;
use crate::{Error, Result};
use datasketches::hll::Coupon;
use tally_ingest::{Column, ColumnData};

mod kinds;
mod uniq;
pub use kinds::{Count, Fold, Kind, Max, Min, Quantiles, Sum, Uniq};

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

/// What an update adds: rows of a batch, as a column's values at them.
pub enum Rows<'a> {
    /// Every row, whatever its fields (`count`).
    All(&'a [u32]),
    /// The values of one column at these rows; `coupons` are a distinct
    /// count's hashes of them, by row number (empty for other kinds).
    Of {
        data: &'a ColumnData,
        rows: &'a [u32],
        coupons: &'a [Option<Coupon>],
    },
}

impl Rows<'_> {
    /// Rows with a value.
    pub fn present(&self) -> u64 {
        match self {
            Rows::All(rows) => rows.len() as u64,
            Rows::Of { data, rows, .. } => {
                let valid = data.valid();
                rows.iter().filter(|r| valid[**r as usize]).count() as u64
            }
        }
    }

    /// The numbers present (none for a text field).
    pub fn numbers(&self) -> impl Iterator<Item = f64> + '_ {
        let (col, rows) = match self {
            Rows::Of {
                data: ColumnData::Value(c),
                rows,
                ..
            } => (Some(c), *rows),
            _ => (None, &[][..]),
        };
        rows.iter().filter_map(move |r| {
            let (c, r) = (col?, *r as usize);
            c.valid[r].then(|| c.values[r])
        })
    }

    /// The hashes of the values present.
    pub fn coupons(&self) -> impl Iterator<Item = Coupon> + '_ {
        let (rows, coupons) = match self {
            Rows::Of { rows, coupons, .. } => (*rows, *coupons),
            Rows::All(_) => (&[][..], &[][..]),
        };
        rows.iter().filter_map(|r| coupons[*r as usize])
    }
}

/// Declares the states and accumulators of the kinds, and their dispatch.
macro_rules! kinds {
    ($($kind:ident),*) => {
        /// The state of one aggregate in one cell.
        #[derive(Clone)]
        pub enum State {
            $($kind($kind),)*
        }

        /// Merges many states of one aggregate (a query over many cells),
        /// each kind through its own [`Kind::Acc`].
        #[derive(Clone)]
        pub enum Acc {
            $($kind(<$kind as Kind>::Acc),)*
        }

        impl State {
            pub(crate) fn update(&mut self, rows: &Rows<'_>) {
                match self {
                    $(State::$kind(s) => s.update(rows),)*
                }
            }

            /// Folds `other` (a state of the same aggregate) into this one.
            pub fn merge(&mut self, other: &State) {
                match (self, other) {
                    $((State::$kind(a), State::$kind(b)) => a.merge(b),)*
                    // States of one aggregate are always of one kind.
                    _ => {}
                }
            }

            /// The aggregate's value: `q` is the rank for quantiles (0..=1).
            /// `None` where there is nothing to aggregate (no values).
            pub fn value(&self, agg: &Aggregate, q: f64) -> Option<f64> {
                match self {
                    $(State::$kind(s) => s.finish(agg, q),)*
                }
            }

            pub(crate) fn encode(&self, w: &mut Vec<u8>) {
                match self {
                    $(State::$kind(s) => {
                        w.push(<$kind as Kind>::TAG);
                        s.encode(w);
                    })*
                }
            }

            pub(crate) fn decode(r: &mut Reader<'_>) -> Result<State> {
                let tag = r.u8()?;
                $(if tag == <$kind as Kind>::TAG {
                    return Ok(State::$kind(<$kind as Kind>::decode(r)?));
                })*
                Err(Error::Corrupt {
                    message: format!("state tag {tag}"),
                })
            }
        }

        impl std::fmt::Debug for State {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match self {
                    $(State::$kind(s) => write!(f, "{}({s:?})", stringify!($kind)),)*
                }
            }
        }

        impl Acc {
            pub fn new(a: &Aggregate) -> Acc {
                match State::new(a) {
                    $(State::$kind(s) => Acc::$kind(Fold::from_state(s)),)*
                }
            }

            pub fn add(&mut self, s: &State) {
                match (self, s) {
                    $((Acc::$kind(a), State::$kind(s)) => a.add(s),)*
                    // States of one aggregate are always of one kind.
                    _ => {}
                }
            }

            /// Folds another accumulator of the same aggregate into this one.
            pub fn absorb(&mut self, other: &Acc) {
                match (self, other) {
                    $((Acc::$kind(a), Acc::$kind(b)) => a.absorb(b),)*
                    _ => {}
                }
            }

            /// The merged state.
            pub fn into_state(self) -> State {
                match self {
                    $(Acc::$kind(a) => State::$kind(a.into_state()),)*
                }
            }

            /// The value, as [`State::value`].
            pub fn value(&self, agg: &Aggregate, q: f64) -> Option<f64> {
                match self {
                    $(Acc::$kind(a) => a.value(agg, q),)*
                }
            }
        }
    };
}

kinds!(Count, Sum, Min, Max, Uniq, Quantiles);

impl State {
    /// The empty state of an aggregate: the one place an aggregate is
    /// given its kind.
    pub(crate) fn new(a: &Aggregate) -> State {
        match a {
            Aggregate::Count | Aggregate::CountOf(_) => State::Count(Count::default()),
            Aggregate::Sum(_) | Aggregate::Avg(_) => State::Sum(Sum::default()),
            Aggregate::Min(_) => State::Min(Min::default()),
            Aggregate::Max(_) => State::Max(Max::default()),
            Aggregate::Uniq(_) => State::Uniq(Uniq::default()),
            Aggregate::Quantiles(_) => State::Quantiles(Quantiles::default()),
        }
    }

    /// Whether `self` and `other` are states of one kind of aggregate.
    pub(crate) fn same_kind(&self, other: &State) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
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
    let rows = match (agg, col) {
        (Aggregate::Count, _) => Rows::All(rows),
        (_, Some(col)) => Rows::Of {
            data: &col.data,
            rows,
            coupons,
        },
        // The batch lacks the field: nothing to add.
        (_, None) => return,
    };
    state.update(&rows);
}
