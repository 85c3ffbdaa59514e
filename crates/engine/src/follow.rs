//! Following streams: state kept as a function of the log. An app (or a
//! stage above the engine) that derives state from some streams' events
//! registers a [`Follower`]; it is given every event those streams held
//! when it registered (read from the store) and then every record applied
//! after, in log order, on every node alike: two nodes that applied the
//! same sequence hand their followers the same events, whichever node
//! took each write.

use crate::{Engine, Result};
use parking_lot::{Mutex, RwLock};
use std::sync::Arc;
use tally_ingest::Batch;
use tally_log::Lsn;

/// What a follower is given.
pub trait Follower: Send + Sync {
    /// One stream's part of the record applied at `lsn`, on the apply
    /// thread, in log order, before the write that appended it is
    /// answered. Keep it short: the node applies nothing else meanwhile.
    fn applied(&self, lsn: Lsn, stream: &str, batch: &Batch);
}

/// A registered follower: the streams it follows, and what it was given
/// while it was still reading the stored events.
pub(crate) struct Registered {
    streams: Vec<String>,
    follower: Arc<dyn Follower>,
    /// `Some` until the stored events have been read: records applied
    /// meanwhile wait here, in order.
    held: Mutex<Option<Vec<(Lsn, String, Batch)>>>,
}

/// The followers of one engine, read on the apply thread.
pub(crate) type Followers = Arc<RwLock<Vec<Arc<Registered>>>>;

impl Registered {
    /// Hands over a record's parts for the streams it follows.
    pub(crate) fn deliver(&self, lsn: Lsn, parts: &[(String, Batch)]) {
        for (stream, batch) in parts {
            if !self.streams.iter().any(|s| s == stream) {
                continue;
            }
            let mut held = self.held.lock();
            match held.as_mut() {
                Some(q) => q.push((lsn, stream.clone(), batch.clone())),
                None => self.follower.applied(lsn, stream, batch),
            }
        }
    }
}

/// Gives every follower the parts of a record applied at `lsn`.
pub(crate) fn deliver(followers: &Followers, lsn: Lsn, parts: &[(String, Batch)]) {
    let followers = followers.read();
    for f in followers.iter() {
        f.deliver(lsn, parts);
    }
}

impl Engine {
    /// Registers `follower` for `streams`: `stored` is called first with
    /// every event those streams hold (stream by stream, as
    /// [`Engine::scan`] reads them), then the follower is given every
    /// record applied after that point, in order. Nothing is given twice
    /// and nothing is missed: the point is taken while no record applies.
    /// Returns the last sequence the stored events cover. Blocking.
    pub fn follow(
        &self,
        streams: &[&str],
        follower: Arc<dyn Follower>,
        stored: &mut dyn FnMut(&str, &Batch) -> Result<()>,
    ) -> Result<Lsn> {
        let registered = Arc::new(Registered {
            streams: streams.iter().map(|s| s.to_string()).collect(),
            follower,
            held: Mutex::new(Some(Vec::new())),
        });
        let (at, snapshots) = {
            let at = self.applied.lock();
            let mut snapshots = Vec::new();
            for s in streams {
                snapshots.push((s.to_string(), self.stored(s, None, None)?));
            }
            self.followers.write().push(registered.clone());
            (*at, snapshots)
        };
        let read = (|| {
            for (stream, snapshot) in snapshots {
                let history = crate::history::History {
                    snapshot,
                    archive: self.archive.as_deref(),
                };
                history.read(&mut |rb| {
                    stored(&stream, &tally_store::batch_from_arrow(rb)?)?;
                    Ok(true)
                })?;
            }
            Ok(())
        })();
        if let Err(e) = read {
            self.followers
                .write()
                .retain(|r| !Arc::ptr_eq(r, &registered));
            return Err(e);
        }
        // Hand over what was applied meanwhile, then let records through.
        let mut held = registered.held.lock();
        for (lsn, stream, batch) in held.take().unwrap_or_default() {
            registered.follower.applied(lsn, &stream, &batch);
        }
        Ok(at)
    }
}
