//! The integration tests: one binary, real `tally` processes on temporary
//! data directories, real HTTP, and independent tools (DuckDB, promtool) to
//! check what tally wrote.

mod archive;
mod auth;
mod backup;
mod browser;
mod cluster;
mod cluster_archive;
mod cluster_counter;
mod cluster_elastic;
mod cluster_import;
mod cluster_jobs;
mod cluster_region;
mod cluster_tables;
mod cluster_web;
mod compressed;
mod counter;
mod crash;
mod duckdb;
mod haproxy;
mod hostile;
mod import;
mod influx;
mod ingest;
mod jobs;
mod nats;
mod ops;
mod query;
mod rates;
mod restart;
mod rollups;
mod server;
mod shippers;
mod tour;
mod web;
