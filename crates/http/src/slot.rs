//! Where an app's routes find the app and what the server lends them.

use crate::{ApiError, Keys};
use std::sync::{Arc, OnceLock};
use tally_query::QueryEngine;

/// Where an app's handlers find it: empty while the server starts (503,
/// retry), the app once it has opened, or turned off for good (404).
pub struct Slot<A> {
    app: OnceLock<Arc<A>>,
    off: OnceLock<&'static str>,
}

impl<A> Default for Slot<A> {
    fn default() -> Self {
        Slot {
            app: OnceLock::new(),
            off: OnceLock::new(),
        }
    }
}

impl<A> Slot<A> {
    /// Puts the opened app in; a second call changes nothing.
    pub fn set(&self, app: Arc<A>) {
        let _ = self.app.set(app);
    }

    /// Marks the app as turned off: its routes answer 404 naming `what`
    /// (which says how to turn it on).
    pub fn turn_off(&self, what: &'static str) {
        let _ = self.off.set(what);
    }

    /// The app, if it has opened.
    pub fn get(&self) -> Option<&Arc<A>> {
        self.app.get()
    }

    /// The app, or the answer for a request that came too early (503) or
    /// to an app that is turned off (404).
    pub fn app(&self) -> Result<&Arc<A>, ApiError> {
        if let Some(app) = self.app.get() {
            return Ok(app);
        }
        match self.off.get() {
            Some(what) => Err(ApiError::NotFound {
                what: (*what).into(),
            }),
            None => Err(ApiError::NotReady),
        }
    }
}

/// What the server lends an app's routes: its API keys, and the query
/// stage once the engine has opened.
#[derive(Clone, Default)]
pub struct Ready {
    pub keys: Arc<Keys>,
    query: Arc<OnceLock<Arc<QueryEngine>>>,
}

impl Ready {
    pub fn new(keys: Keys) -> Self {
        Ready {
            keys: Arc::new(keys),
            query: Default::default(),
        }
    }

    /// Set once the engine has opened (the log replayed).
    pub fn set_query(&self, query: Arc<QueryEngine>) {
        let _ = self.query.set(query);
    }

    /// The query stage, or 503 while the engine opens.
    pub fn query(&self) -> Result<&Arc<QueryEngine>, ApiError> {
        self.query.get().ok_or(ApiError::NotReady)
    }
}

/// What an app's admin and read routes hold: the app's slot, and what the
/// server lends them.
pub struct Admin<A> {
    pub slot: Arc<Slot<A>>,
    pub ready: Ready,
}

impl<A> Clone for Admin<A> {
    fn clone(&self) -> Self {
        Admin {
            slot: self.slot.clone(),
            ready: self.ready.clone(),
        }
    }
}

impl<A> Admin<A> {
    /// The app, once the engine has opened (503 before; 404 when the app
    /// is turned off).
    pub fn app(&self) -> Result<&Arc<A>, ApiError> {
        self.ready.query()?;
        self.slot.app()
    }
}
