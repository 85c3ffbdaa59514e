//! Apps built on tally's engine, the way a user's own code would build on
//! it: each app keeps its state as events (in its own internal streams,
//! `_tally_*`, hidden from the public APIs, or in the user's streams and
//! tables), rebuilds its memory from them at start or answers through the
//! query engine, and serves its own routes.
//!
//! - [`counter`]: the global counter (S2).
//! - [`rates`]: the rates service (S1).
//! - [`web`]: web analytics (S4): Plausible-compatible tracking.

pub mod counter;
pub mod rates;
pub mod web;
