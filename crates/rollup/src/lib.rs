//! Continuous rollups: declared aggregates of a stream (count, sum, min,
//! max, avg, distinct counts as HyperLogLog, quantiles as DDSketches) kept
//! per minute, hour or day bucket and per group, updated as events are
//! applied. Every state is mergeable, so a coarser bucket, a longer range
//! or a rebuilt rollup is a merge of finer states.

mod aggregate;
mod def;
mod filter;
mod groups;
mod set;
pub mod snapshot;
mod span;
mod state;

pub use aggregate::{Acc, Cell, GroupKey, State, HLL_LG_K, QUANTILE_ALPHA};
pub use def::{parse_period, Aggregate, Grain, RollupDef, PERCENTILES};
pub use filter::{Compiled, Condition, Datum, Op, Operand, Scalar};
pub use set::{Building, Entry, Loaded, RollupSet};
pub use span::{Span, Unit};
pub use state::Rollup;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A definition that cannot be built; the message says why.
    #[error("{message}")]
    Invalid { message: String },

    /// A snapshot that is damaged or of another format.
    #[error("rollup snapshot: {message}")]
    Corrupt { message: String },

    #[error("rollup snapshot: {0}")]
    Io(#[from] std::io::Error),
}

#[cfg(test)]
mod tests;
