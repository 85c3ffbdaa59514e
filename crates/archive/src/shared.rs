//! The shared archive's root in cluster mode, for what lives beside the
//! archive itself (which [`crate::Archive`] writes on one node): the claim
//! objects of records too large for one NATS message and the staged files
//! of batch imports (put by the node that took them, read by every node
//! that applies them: `tally_log::ClaimStore`), and the bootstrap
//! checkpoints a node on an empty disk starts from.

use crate::{build_store, sync_put, ArchiveOptions, Result};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The shared archive, at its root (not a node's prefix).
pub struct Shared {
    store: Arc<dyn ObjectStore>,
    local_root: Option<PathBuf>,
    url: String,
}

/// One object of a listing.
#[derive(Debug, Clone)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    pub modified: chrono::DateTime<chrono::Utc>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Shared({})", self.url)
    }
}

impl Shared {
    /// The archive `opts` names, at its root.
    pub fn open(opts: &ArchiveOptions) -> Result<Shared> {
        let (store, local_root) = build_store(opts)?;
        Ok(Shared {
            store,
            local_root,
            url: opts.url.clone(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Puts an object; resolves once it is durable.
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), String> {
        let path = ObjectPath::from(key);
        self.store
            .put(&path, PutPayload::from(bytes))
            .await
            .map_err(|e| format!("{}: put {key}: {e}", self.url))?;
        if let Some(root) = self.local_root.clone() {
            tokio::task::spawn_blocking(move || sync_put(&root, &path))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|(p, e)| format!("fsync {}: {e}", p.display()))?;
        }
        Ok(())
    }

    /// An object's bytes; `None` when there is no such object.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, String> {
        let path = ObjectPath::from(key);
        match self.store.get(&path).await {
            Ok(r) => r
                .bytes()
                .await
                .map(Some)
                .map_err(|e| format!("{}: read {key}: {e}", self.url)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(format!("{}: get {key}: {e}", self.url)),
        }
    }

    /// Every object under `prefix`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>, String> {
        let prefix = ObjectPath::from(prefix);
        let mut listing = self.store.list(Some(&prefix));
        let mut out = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| format!("{}: list {prefix}: {e}", self.url))?;
            out.push(Listed {
                key: meta.location.to_string(),
                size: meta.size,
                modified: meta.last_modified,
            });
        }
        Ok(out)
    }

    /// Deletes an object (one already gone counts as deleted).
    pub async fn delete(&self, key: &str) -> Result<(), String> {
        match self.store.delete(&ObjectPath::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(format!("{}: delete {key}: {e}", self.url)),
        }
    }
}

impl tally_log::ClaimStore for Shared {
    fn put<'a>(&'a self, key: &'a str, bytes: Bytes) -> BoxFuture<'a, Result<(), String>> {
        Shared::put(self, key, bytes).boxed()
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, String>> {
        Shared::get(self, key).boxed()
    }

    fn remove_older_than<'a>(
        &'a self,
        prefix: &'a str,
        age: Duration,
    ) -> BoxFuture<'a, Result<usize, String>> {
        async move {
            let cutoff =
                chrono::Utc::now() - chrono::Duration::from_std(age).map_err(|e| e.to_string())?;
            let mut removed = 0;
            for o in self.list(prefix).await? {
                if o.modified < cutoff {
                    self.delete(&o.key).await?;
                    removed += 1;
                }
            }
            Ok(removed)
        }
        .boxed()
    }
}
