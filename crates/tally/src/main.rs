//! The `tally` command: the server and the tools around it.
//!
//! `serve` runs the server; `demo` runs it with sample data; `import` streams
//! a file into a running server; `sql` queries one; `keys new` makes an API
//! key; `bench` is the load generator the benchmarks under `bench/` use.

mod backup;
mod bench;
mod cluster;
mod config;
mod demo;
mod import;
mod reprocess;
mod sample;
mod sql;

use clap::{Parser, Subcommand};

// The ingest path allocates per request (bodies, batches, records); mimalloc
// measured faster than glibc malloc there (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its option enum's 16th entry).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// How long memory freed stays with the process for reuse before it goes
/// back to the OS. mimalloc's default (1 s in the version built here)
/// returns the tail's buffers between flushes, and the next tail faults
/// them in again, zeroed by the kernel: 6-7 % of the server's CPU under
/// line protocol load (perf, `clear_page_erms`), 0.4-1.2 % with 10 s, for
/// a peak under overload ~90 MiB higher (BENCHMARKS.md). Memory still goes
/// back to the OS after a quiet spell; `MIMALLOC_PURGE_DELAY` overrides it.
const PURGE_DELAY_MS: std::ffi::c_long = 10_000;

fn keep_freed_memory_for_reuse() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: sets an allocator option, a plain integer mimalloc reads when
    // it next purges.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
}

#[derive(Parser)]
#[command(
    name = "tally",
    version,
    about = "Real-time event analytics server: durable ingest, live rollups, fast queries"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(Box<config::ServeArgs>),
    /// Run the server on a scratch data directory with sample events.
    Demo(demo::DemoArgs),
    /// Stream an NDJSON or CSV file into a running server.
    Import(import::ImportArgs),
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Run a SQL query on a running server and print the answer as a table.
    Sql(sql::SqlArgs),
    /// Rebuild a rollup on a running server from its stored events.
    Reprocess(reprocess::ReprocessArgs),
    /// Back up a running server's data directory while ingest continues.
    Backup(backup::BackupArgs),
    /// Make a backup the data directory of a new server.
    Restore(backup::RestoreArgs),
    /// Load generator used by the benchmarks under bench/.
    Bench(bench::BenchArgs),
    /// Cluster operations: promoting a replica region.
    Cluster {
        #[command(subcommand)]
        command: cluster::ClusterCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Make a new API key: prints the token (shown once) and the config
    /// entry, which holds only its hash.
    New {
        /// A name for the key, shown in logs.
        #[arg(long)]
        name: String,
        /// Comma-separated scopes: ingest, read, admin.
        #[arg(long, default_value = "ingest,read")]
        scopes: String,
    },
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TALLY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a terminal: a log file or journal gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}

fn main() -> anyhow::Result<()> {
    keep_freed_memory_for_reuse();
    let cli = Cli::parse();
    init_tracing();
    match cli.command {
        Command::Serve(args) => {
            // The arguments after `serve`: read again with the config file's
            // values as their defaults.
            let argv: Vec<std::ffi::OsString> = std::env::args_os().skip(2).collect();
            let config = args.into_server_config(&argv)?;
            runtime()?.block_on(async {
                tally_server::run(config, tally_server::shutdown_signal()).await
            })?;
            Ok(())
        }
        Command::Demo(args) => runtime()?.block_on(demo::run(args)),
        Command::Import(args) => runtime()?.block_on(import::run(args)),
        Command::Keys {
            command: KeysCommand::New { name, scopes },
        } => {
            for s in scopes.split(',') {
                if tally_server::Scope::parse(s).is_none() {
                    anyhow::bail!("unknown scope {s:?}; use ingest, read, admin");
                }
            }
            let token = tally_server::new_token();
            println!("# API key for {name:?}. The token is shown only now; the server keeps only its hash.");
            println!("# token: {token}");
            println!("[[keys]]");
            println!("name = {name:?}");
            println!("hash = {:?}", tally_server::hash_token(&token));
            let list: Vec<String> = scopes
                .split(',')
                .map(|s| format!("{:?}", s.trim()))
                .collect();
            println!("scopes = [{}]", list.join(", "));
            Ok(())
        }
        Command::Sql(args) => runtime()?.block_on(sql::run(args)),
        Command::Reprocess(args) => runtime()?.block_on(reprocess::run(args)),
        Command::Bench(args) => runtime()?.block_on(bench::run(args)),
        Command::Backup(args) => runtime()?.block_on(backup::backup(args)),
        Command::Restore(args) => backup::restore(args),
        Command::Cluster { command } => runtime()?.block_on(cluster::run(command)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tally-rt")
        .build()?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: reads an allocator option (a plain integer).
        let get = || unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        // mimalloc's default purge delay in the version built here (1 s);
        // another option at this index would show its own default.
        assert_eq!(get(), 1000);
        super::keep_freed_memory_for_reuse();
        assert_eq!(get(), super::PURGE_DELAY_MS);
    }
}
