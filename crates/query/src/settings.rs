//! The query stage's settings: its pool, limits, cache and the shape a SQL
//! statement may have. Each field is a flag of `tally serve`, a `TALLY_*`
//! variable and a config file key at once (see `tally-settings`); the
//! `default_value`s here are the only defaults, and
//! [`QueryOptions::default`] and [`SqlLimits::default`] start from them.

use crate::{QueryOptions, SqlLimits};
use std::time::Duration;
use tally_settings::{duration, size, to_usize, ByteSize};

/// The query pool, its limits and its cache.
#[derive(clap::Args, Debug, Clone)]
pub struct QuerySettings {
    /// Threads executing queries (a pool of their own, at lower CPU
    /// priority than ingestion). [default: the number of cores]
    #[arg(long, env = "TALLY_QUERY_WORKERS")]
    pub query_workers: Option<usize>,

    /// Queries executing at once; more get 429 with Retry-After (cached
    /// answers do not count).
    #[arg(long, env = "TALLY_QUERY_MAX_CONCURRENT", default_value = "16")]
    pub query_max_concurrent: usize,

    /// A query running longer is cancelled with 422 (limit `timeout`).
    #[arg(long, env = "TALLY_QUERY_TIMEOUT", value_name = "DURATION",
          value_parser = duration, default_value = "30s")]
    pub query_timeout: Duration,

    /// Memory one query's aggregations, sorts and joins may hold; past it
    /// the query fails with 422 (limit `memory`) rather than spill to disk.
    #[arg(long, env = "TALLY_QUERY_MEMORY_LIMIT_BYTES", value_name = "SIZE",
          value_parser = size, default_value = "512MiB")]
    pub query_memory_limit_bytes: ByteSize,

    /// Rows one answer may have; past it 422 (limit `rows`).
    #[arg(long, env = "TALLY_QUERY_MAX_ROWS", default_value = "100000")]
    pub query_max_rows: usize,

    /// Answers the result cache keeps (0 disables it).
    #[arg(long, env = "TALLY_QUERY_CACHE_BYTES", value_name = "SIZE",
          value_parser = size, default_value = "64MiB")]
    pub query_cache_bytes: ByteSize,

    /// SQL text of one statement; past it 413 (limit `sql_bytes`). The
    /// query threads' stacks are sized for the deepest expression this
    /// many bytes can write (reserved address space, not memory used).
    #[arg(long, env = "TALLY_SQL_MAX_BYTES", value_name = "SIZE",
          value_parser = size, default_value = "256KiB")]
    pub sql_max_bytes: ByteSize,

    /// Nesting of expressions and subqueries; past it 400 (limit
    /// `sql_depth`). A chain `a OR b OR ...` is one level per operator:
    /// use `IN`.
    #[arg(long, env = "TALLY_SQL_MAX_DEPTH", default_value = "256")]
    pub sql_max_depth: usize,

    /// Expressions in one statement; past it 400 (limit `sql_nodes`).
    #[arg(long, env = "TALLY_SQL_MAX_NODES", default_value = "50000")]
    pub sql_max_nodes: usize,

    /// Items of one `IN (...)` list (and of a `/v1/query` `in` filter);
    /// past it 400 (limit `sql_in_list`).
    #[arg(long, env = "TALLY_SQL_MAX_IN_LIST", default_value = "10000")]
    pub sql_max_in_list: usize,
}

impl Default for QuerySettings {
    fn default() -> Self {
        tally_settings::defaults()
    }
}

impl QuerySettings {
    /// The statement limits, each kept above the least that still lets a
    /// plain query through.
    pub fn sql_limits(&self) -> SqlLimits {
        SqlLimits {
            max_bytes: to_usize(self.sql_max_bytes).max(16),
            max_depth: self.sql_max_depth.max(4),
            max_nodes: self.sql_max_nodes.max(4),
            max_in_list: self.sql_max_in_list.max(1),
        }
    }

    /// The query stage's options (with no jobs).
    pub fn options(&self) -> QueryOptions {
        QueryOptions {
            workers: self
                .query_workers
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
                .max(1),
            max_concurrent: self.query_max_concurrent.max(1),
            timeout: self.query_timeout.max(Duration::from_millis(1)),
            memory_limit: to_usize(self.query_memory_limit_bytes),
            max_result_rows: self.query_max_rows.max(1),
            cache_bytes: to_usize(self.query_cache_bytes),
            jobs: Vec::new(),
            sql_limits: self.sql_limits(),
        }
    }
}
