//! Apps built on tally's engine, the way a user's own code would build on
//! it: each app keeps its state as events in its own internal streams
//! (`_tally_*`, hidden from the public APIs), rebuilds its memory from them
//! at start, and serves its own routes.
//!
//! - [`counter`]: the global counter (S2).

pub mod counter;
