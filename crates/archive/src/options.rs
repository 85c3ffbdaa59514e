//! Where an archive is and how it is reached: its options, its URL's
//! forms, and the object store they make.

use crate::{Error, Result};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::ObjectStore;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Where the archive lives and how it is reached.
#[derive(Clone)]
pub struct ArchiveOptions {
    /// `s3://bucket[/prefix]`, `file:///dir` or a plain directory path.
    pub url: String,
    /// S3 endpoint (an S3-compatible server); AWS when absent.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Allow `http://` endpoints (a store on this machine or network).
    pub allow_http: bool,
    /// A partition is archived once its hour ended this long ago, so most
    /// of its late events and compaction are behind it.
    pub settle: Duration,
    /// Time between archive passes.
    pub interval: Duration,
    /// Cluster mode: nodes share this archive and the one allowed by
    /// [`Archive::set_writer`] writes it.
    pub shared: bool,
}

impl ArchiveOptions {
    pub fn new(url: impl Into<String>) -> Self {
        ArchiveOptions {
            url: url.into(),
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            allow_http: false,
            settle: Duration::from_secs(600),
            interval: Duration::from_secs(30),
            shared: false,
        }
    }
}

impl std::fmt::Debug for ArchiveOptions {
    // Never prints the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveOptions")
            .field("url", &self.url)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("allow_http", &self.allow_http)
            .field("settle", &self.settle)
            .field("interval", &self.interval)
            .field("shared", &self.shared)
            .finish()
    }
}

/// Where an archive is, as its URL names it.
#[derive(Debug, Clone, PartialEq)]
pub enum Location {
    /// `s3://BUCKET[/PREFIX]`: any S3-compatible store.
    S3 { bucket: String, prefix: String },
    /// `file:///DIR` or `/DIR`: a local (or shared) directory.
    Dir(PathBuf),
}

/// The forms an archive URL may take, for error messages.
pub const URL_FORMS: &str =
    "s3://BUCKET[/PREFIX], file:///ABSOLUTE/DIR, an absolute directory, or none";

impl Location {
    /// Parses an archive URL, or says why it cannot be used: an unknown
    /// scheme, a relative directory, a bucket missing.
    pub fn parse(url: &str) -> std::result::Result<Location, String> {
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(format!("no bucket: write {URL_FORMS}"));
            }
            return Ok(Location::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        let dir = match url.strip_prefix("file://") {
            Some(p) => PathBuf::from(p),
            None => {
                if let Some((scheme, _)) = url.split_once("://") {
                    return Err(format!(
                        "the scheme {scheme:?} is not supported: use {URL_FORMS}"
                    ));
                }
                PathBuf::from(url)
            }
        };
        if !dir.is_absolute() {
            return Err(format!(
                "{:?} is a relative directory: use {URL_FORMS}",
                dir.display().to_string()
            ));
        }
        Ok(Location::Dir(dir))
    }
}

pub(crate) fn build_store(
    opts: &ArchiveOptions,
) -> Result<(Arc<dyn ObjectStore>, Option<PathBuf>)> {
    let bad = |reason: String| Error::Config {
        url: opts.url.clone(),
        reason,
    };
    match Location::parse(&opts.url).map_err(bad)? {
        Location::S3 { bucket, prefix } => {
            let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
            if let Some(v) = &opts.endpoint {
                b = b.with_endpoint(v);
            }
            if let Some(v) = &opts.region {
                b = b.with_region(v);
            }
            if let Some(v) = &opts.access_key_id {
                b = b.with_access_key_id(v);
            }
            if let Some(v) = &opts.secret_access_key {
                b = b.with_secret_access_key(v);
            }
            if opts.allow_http {
                b = b.with_allow_http(true);
            }
            let s3 = b.build().map_err(|e| bad(e.to_string()))?;
            let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
                Arc::new(s3)
            } else {
                Arc::new(PrefixStore::new(s3, prefix))
            };
            Ok((store, None))
        }
        Location::Dir(dir) => {
            std::fs::create_dir_all(&dir).map_err(|e| bad(e.to_string()))?;
            let fs = LocalFileSystem::new_with_prefix(&dir).map_err(|e| bad(e.to_string()))?;
            Ok((Arc::new(fs), Some(dir)))
        }
    }
}

/// Makes an object put in a local directory durable: the file system store
/// does not fsync.
pub(crate) fn sync_put(
    root: &Path,
    key: &ObjectPath,
) -> std::result::Result<(), (PathBuf, std::io::Error)> {
    let path = root.join(key.as_ref());
    let sync = |p: &Path| std::fs::File::open(p).and_then(|f| f.sync_all());
    sync(&path)
        .and_then(|()| sync(path.parent().unwrap_or(root)))
        .map_err(|e| (path.clone(), e))
}

/// The default archive of a data directory.
pub fn default_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("archive")
}

impl ArchiveOptions {
    /// The default archive: the directory `DATA_DIR/archive`.
    pub fn in_data_dir(data_dir: &Path) -> ArchiveOptions {
        let dir = default_dir(data_dir);
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        ArchiveOptions::new(dir.to_string_lossy())
    }
}
