//! `tally serve` flags and the TOML config file.
//!
//! Every setting has a flag, a `TALLY_*` environment twin and a config-file
//! key of the same name, all three from one definition: the stages'
//! settings structs (`HttpSettings`, `LogSettings`, `TailSettings`,
//! `QuerySettings`, see `tally-settings`), flattened here. A flag or
//! variable wins over the file, the file over the default. The file's
//! tables (`[[keys]]`, `[[rollup]]`, `[archive]`, the apps' tables ...)
//! are read by serde. `docs/configuration.md`'s table is rendered from the
//! same definitions (a test fails when it differs).

use anyhow::{bail, Context};
use clap::parser::ValueSource;
use clap::{Args, Command, FromArgMatches};
use serde::Deserialize;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;
use tally_engine::{ClusterSettings, EngineOptions, LogSettings, TailSettings};
use tally_query::QuerySettings;
use tally_server::{ApiKey, HttpSettings, Scope, ServerConfig};

/// The settings the config file's top-level keys set too.
#[derive(Args, Debug, Clone)]
pub struct Settings {
    /// Where the log (`wal/`), segments (`segments/`) and `catalog.json`
    /// live; one process per directory (an `flock` on `LOCK` enforces it).
    #[arg(long, env = "TALLY_DATA_DIR", default_value = "tally-data")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub http: HttpSettings,
    #[command(flatten)]
    pub log: LogSettings,
    #[command(flatten)]
    pub tail: TailSettings,
    #[command(flatten)]
    pub query: QuerySettings,
    #[command(flatten)]
    pub cluster: ClusterSettings,
    #[command(flatten)]
    pub older: OlderSpellings,
}

/// Earlier names of settings that now take a duration with its unit; each
/// still reads a bare number in the unit its name says, and applies when
/// the new name is given nowhere.
#[derive(Args, Debug, Clone)]
pub struct OlderSpellings {
    /// `--sync-interval` in milliseconds.
    #[arg(long, env = "TALLY_SYNC_INTERVAL_MS", hide = true)]
    sync_interval_ms: Option<u64>,
    /// `--flush-interval` in seconds.
    #[arg(long, env = "TALLY_FLUSH_INTERVAL_SECS", hide = true)]
    flush_interval_secs: Option<u64>,
    /// `--memory-wait` in milliseconds.
    #[arg(long, env = "TALLY_MEMORY_WAIT_MS", hide = true)]
    memory_wait_ms: Option<u64>,
    /// `--body-read-timeout` in seconds.
    #[arg(long, env = "TALLY_BODY_READ_TIMEOUT_SECS", hide = true)]
    body_read_timeout_secs: Option<u64>,
    /// `--query-timeout` in seconds.
    #[arg(long, env = "TALLY_QUERY_TIMEOUT_SECS", hide = true)]
    query_timeout_secs: Option<f64>,
}

impl Settings {
    /// Applies each older spelling given (flag, variable or file key) whose
    /// new name `given` says was given nowhere.
    fn apply_older_spellings(&mut self, given: impl Fn(&str) -> bool) -> anyhow::Result<()> {
        let o = self.older.clone();
        let older = |old: &str, new: &str, value: Option<Duration>| -> Option<Duration> {
            let v = value?;
            if given(new) {
                tracing::warn!("both {old} and {new} are set; {new} applies");
                return None;
            }
            tracing::info!(
                "{old} is read as {new} = {v:?}; write {new} with a unit (\"30s\", \"100ms\")"
            );
            Some(v)
        };
        if let Some(v) = older(
            "sync_interval_ms",
            "sync_interval",
            o.sync_interval_ms.map(Duration::from_millis),
        ) {
            self.log.sync_interval = v;
        }
        if let Some(v) = older(
            "flush_interval_secs",
            "flush_interval",
            o.flush_interval_secs.map(Duration::from_secs),
        ) {
            self.tail.flush_interval = v;
        }
        if let Some(v) = older(
            "memory_wait_ms",
            "memory_wait",
            o.memory_wait_ms.map(Duration::from_millis),
        ) {
            self.tail.memory_wait = v;
        }
        if let Some(v) = older(
            "body_read_timeout_secs",
            "body_read_timeout",
            o.body_read_timeout_secs.map(Duration::from_secs),
        ) {
            self.http.body_read_timeout = v;
        }
        let timeout = match o.query_timeout_secs {
            Some(v) if !(v.is_finite() && v > 0.0) => {
                bail!("--query-timeout-secs must be a positive number, not {v}")
            }
            Some(v) => Some(Duration::from_secs_f64(v)),
            None => None,
        };
        if let Some(v) = older("query_timeout_secs", "query_timeout", timeout) {
            self.query.query_timeout = v;
        }
        Ok(())
    }
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// TOML file with the keys below (each flag's name with `_` for `-`),
    /// `[[keys]]`, `[[rollup]]`, `[[job]]`, `[archive]`, `[retention]`,
    /// `[time]` and the apps' tables.
    #[arg(long, env = "TALLY_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub settings: Settings,

    /// Where sealed segments are copied: a directory, `file:///DIR`,
    /// `s3://BUCKET[/PREFIX]` (settings in the file's `[archive]` table), or
    /// `none`. [default: DATA_DIR/archive]
    #[arg(long, env = "TALLY_ARCHIVE")]
    pub archive: Option<String>,

    /// The counter app's window: how long after a user's accepted
    /// increment their next one is refused (`24h`, `90s`). [default: 24h]
    #[arg(long, env = "TALLY_COUNTER_WINDOW")]
    pub counter_window: Option<String>,

    /// A site web analytics accepts tracker events for (repeatable; more
    /// through `POST /v1/sites`).
    #[arg(long = "web-site", env = "TALLY_WEB_SITES", value_delimiter = ',')]
    pub web_sites: Vec<String>,

    /// A MaxMind-format database for visitors' countries.
    #[arg(long, env = "TALLY_WEB_GEOIP")]
    pub web_geoip: Option<PathBuf>,

    /// Seconds added to web analytics' clock (to try day changes).
    #[arg(long, hide = true, env = "TALLY_WEB_CLOCK_OFFSET_SECS")]
    pub web_clock_offset_secs: Option<i64>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
/// The config file's tables; its top-level keys are [`Settings`]'.
struct FileConfig {
    #[serde(default)]
    keys: Vec<KeyConfig>,
    /// `[[rollup]]` tables: continuous rollups (docs/rollups.md).
    #[serde(default, rename = "rollup")]
    rollups: Vec<tally_rollup::RollupDef>,
    /// `[[job]]` tables: SQL run on a schedule over consecutive time
    /// windows, each window's answer kept in `jobs.<name>` (docs/jobs.md).
    #[serde(default, rename = "job")]
    jobs: Vec<tally_query::jobs::JobSpec>,
    /// `[archive]`: where raw segments are archived (docs/archive.md).
    archive: Option<ArchiveConfig>,
    /// `[retention]`: stream name (or "*") = how long raw events stay in
    /// the data directory ("36h", "30d", "2w").
    #[serde(default)]
    retention: std::collections::BTreeMap<String, String>,
    /// `[time]`: stream name = the field holding its events' time and its
    /// format, for log shippers that name and write it their own way:
    /// `logs = { field = "date", format = "epoch_s" }` (docs/api.md).
    #[serde(default)]
    time: std::collections::BTreeMap<String, TimeFileConfig>,
    counter: Option<CounterFileConfig>,
    rates: Option<RatesFileConfig>,
    web: Option<WebFileConfig>,
}

/// One stream's entry in `[time]`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct TimeFileConfig {
    field: String,
    #[serde(default)]
    format: Option<String>,
}

/// `[web]`: web analytics (docs/web.md).
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct WebFileConfig {
    enabled: Option<bool>,
    sites: Option<Vec<String>>,
    stream: Option<String>,
    visits_stream: Option<String>,
    geoip: Option<PathBuf>,
}

/// `[rates]`: the rates service (docs/rates.md).
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct RatesFileConfig {
    stream: Option<String>,
    ports: Option<String>,
    regions: Option<String>,
    max_days: Option<u32>,
    cache_entries: Option<usize>,
}

/// `[counter]`: the global counter app (docs/counter.md).
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct CounterFileConfig {
    enabled: Option<bool>,
    counters: Option<Vec<String>>,
    window: Option<String>,
    session_ttl: Option<String>,
    secure_cookies: Option<bool>,
    login_failures_per_account: Option<u32>,
    login_attempts_per_address: Option<u32>,
    registrations_per_address: Option<u32>,
    limit_period: Option<String>,
    max_live_clients: Option<usize>,
}

impl CounterFileConfig {
    /// The app's settings; `None` when it is turned off.
    fn into_config(
        self,
        window_flag: Option<String>,
    ) -> anyhow::Result<Option<tally_apps::counter::CounterConfig>> {
        if self.enabled == Some(false) {
            return Ok(None);
        }
        let mut c = tally_apps::counter::CounterConfig::default();
        let duration = |key: &str, text: &str| {
            humantime::parse_duration(text).with_context(|| {
                format!("[counter] {key} = {text:?}: write a duration such as \"24h\" or \"90s\"")
            })
        };
        if let Some(names) = self.counters {
            if names.is_empty() {
                bail!("[counter] counters: name at least one counter (the first is the default)");
            }
            for n in &names {
                tally_apps::counter::validate_counter_name(n)
                    .map_err(|e| anyhow::anyhow!("[counter] counters: {e}"))?;
            }
            c.counters = names;
        }
        if let Some(w) = window_flag.or(self.window) {
            c.window = duration("window", &w)?;
        }
        if let Some(t) = self.session_ttl {
            c.session_ttl = duration("session_ttl", &t)?;
        }
        if let Some(p) = self.limit_period {
            c.limit_period = duration("limit_period", &p)?;
        }
        c.secure_cookies = self.secure_cookies.unwrap_or(false);
        if let Some(v) = self.login_failures_per_account {
            c.login_failures_per_account = v;
        }
        if let Some(v) = self.login_attempts_per_address {
            c.login_attempts_per_address = v;
        }
        if let Some(v) = self.registrations_per_address {
            c.registrations_per_address = v;
        }
        if let Some(v) = self.max_live_clients {
            c.max_live_clients = v;
        }
        Ok(Some(c))
    }
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct ArchiveConfig {
    /// A directory, file:///DIR, s3://BUCKET[/PREFIX] or "none".
    url: Option<String>,
    endpoint: Option<String>,
    region: Option<String>,
    access_key_id: Option<String>,
    /// Also read from AWS_SECRET_ACCESS_KEY; never logged.
    secret_access_key: Option<String>,
    allow_http: Option<bool>,
    settle_secs: Option<u64>,
    interval_secs: Option<u64>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct KeyConfig {
    name: String,
    hash: String,
    scopes: Vec<String>,
}

impl ServeArgs {
    /// The server's configuration from `argv` (the arguments after
    /// `serve`), the environment and the config file `--config` names.
    pub fn into_server_config(self, argv: &[OsString]) -> anyhow::Result<ServerConfig> {
        let (mut table, origin) = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let table: toml::Table =
                    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
                (table, path.display().to_string())
            }
            None => (toml::Table::new(), String::new()),
        };
        let keys = tally_settings::ids::<Settings>();
        let in_file: Vec<String> = keys
            .iter()
            .filter(|k| table.contains_key(k.as_str()))
            .cloned()
            .collect();
        let cmd = Self::augment_args(Command::new("tally serve").no_binary_name(true));
        let cmd = tally_settings::file_values_as_defaults(cmd, &mut table, &keys, &origin)
            .map_err(anyhow::Error::msg)?;
        let matches = cmd
            .try_get_matches_from(argv)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let args = Self::from_arg_matches(&matches).map_err(|e| anyhow::anyhow!("{e}"))?;
        let given = |id: &str| {
            in_file.iter().any(|k| k == id)
                || matches!(
                    matches.value_source(id),
                    Some(ValueSource::CommandLine | ValueSource::EnvVariable)
                )
        };
        let file: FileConfig = table.try_into().with_context(|| {
            format!(
                "{origin}: the settings are the flags' names with '_' for '-' (tally serve --help)"
            )
        })?;
        let mut settings = args.settings.clone();
        settings.apply_older_spellings(given)?;
        args.build(settings, file)
    }

    fn build(self, s: Settings, file: FileConfig) -> anyhow::Result<ServerConfig> {
        let mut engine = EngineOptions::with_settings(&s.data_dir, &s.log, &s.tail);
        for r in &file.rollups {
            r.validate()
                .with_context(|| format!("[[rollup]] {:?}", r.name))?;
        }
        engine.rollups = file.rollups;
        let archive = file.archive.unwrap_or_default();
        engine.cluster = s.cluster.options().map_err(anyhow::Error::msg)?;
        let archive_url = self.archive.or(archive.url);
        if engine.cluster.is_some() && archive_url.as_deref().is_none_or(|u| u == "none") {
            bail!(
                "cluster mode needs a shared archive: --archive s3://BUCKET[/PREFIX] (or a directory every node shares), the same on every node (docs/cluster.md)"
            );
        }
        engine.archive = match archive_url {
            Some(url) if url == "none" => None,
            Some(url) => Some(tally_engine::ArchiveOptions::new(url)),
            None => Some(tally_engine::ArchiveOptions::in_data_dir(&engine.data_dir)),
        };
        if let Some(a) = &mut engine.archive {
            a.endpoint = archive.endpoint;
            a.region = archive.region;
            a.access_key_id = archive.access_key_id;
            a.secret_access_key = archive.secret_access_key;
            a.allow_http = archive.allow_http.unwrap_or(false);
            if let Some(v) = archive.settle_secs {
                a.settle = Duration::from_secs(v);
            }
            if let Some(v) = archive.interval_secs {
                a.interval = Duration::from_secs(v.max(1));
            }
            if let Err(reason) = tally_engine::ArchiveLocation::parse(&a.url) {
                bail!(
                    "--archive {:?} (TALLY_ARCHIVE, or [archive] url): {reason}",
                    a.url
                );
            }
        }
        for (stream, period) in file.retention {
            let us = tally_rollup::parse_period(&period).with_context(|| {
                format!("[retention] {stream} = {period:?}: write a whole number of hours, days or weeks, as \"36h\", \"30d\" or \"2w\"")
            })?;
            engine
                .retention
                .insert(stream, Duration::from_micros(us as u64));
        }
        let mut query = s.query.options();
        for spec in file.jobs {
            let def = spec.into_def(&query.sql_limits).context("[[job]]")?;
            if query.jobs.iter().any(|j| j.name == def.name) {
                bail!("[[job]] {:?} is defined twice", def.name);
            }
            query.jobs.push(def);
        }
        let mut config = ServerConfig::with_settings(&s.http, engine, query);
        for (stream, t) in file.time {
            let format = match t.format.as_deref() {
                None => tally_ingest::TimeFormat::Auto,
                Some(f) => tally_ingest::TimeFormat::parse(f).with_context(|| {
                    format!(
                        "[time] {stream}: format {f:?}: use {}",
                        tally_ingest::TimeFormat::NAMES
                    )
                })?,
            };
            tally_ingest::validate_field_name(&t.field)
                .map_err(|e| anyhow::anyhow!("[time] {stream}: field {:?}: {e}", t.field))?;
            config.time_fields.insert(
                stream,
                tally_ingest::TimeField {
                    field: t.field,
                    format,
                },
            );
        }
        let rates = file.rates.unwrap_or_default();
        let r = &mut config.rates;
        r.stream = rates.stream.unwrap_or(r.stream.clone());
        r.ports = rates.ports.unwrap_or(r.ports.clone());
        r.regions = rates.regions.unwrap_or(r.regions.clone());
        if let Some(v) = rates.max_days {
            r.max_days = v.max(1);
        }
        if let Some(v) = rates.cache_entries {
            r.cache_entries = v;
        }
        config.counter = file
            .counter
            .unwrap_or_default()
            .into_config(self.counter_window)?;
        let web = file.web.unwrap_or_default();
        config.web = if web.enabled == Some(false) {
            None
        } else {
            let mut w = tally_apps::web::WebConfig {
                sites: web.sites.unwrap_or_default(),
                ..Default::default()
            };
            w.sites.extend(self.web_sites);
            for site in &w.sites {
                tally_apps::web::sites::normalize_domain(site)
                    .map_err(|e| anyhow::anyhow!("[web] sites: {e}"))?;
            }
            if let Some(s) = web.stream {
                w.stream = s;
            }
            if let Some(s) = web.visits_stream {
                w.visits_stream = s;
            }
            w.geoip = self.web_geoip.or(web.geoip);
            w.clock_offset_secs = self.web_clock_offset_secs.unwrap_or(0);
            Some(w)
        };
        for k in file.keys {
            let hash = ApiKey::parse_hash(&k.hash)
                .map_err(|e| anyhow::anyhow!("key {:?}: {e}", k.name))?;
            let scopes = k
                .scopes
                .iter()
                .map(|s| {
                    Scope::parse(s)
                        .ok_or_else(|| anyhow::anyhow!("key {:?}: unknown scope {s:?}", k.name))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            config.keys.push(ApiKey {
                name: k.name,
                hash,
                scopes,
            });
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_engine::SyncMode;

    /// A setting's key in the config file, where it has one.
    fn file_key(id: &str) -> Option<String> {
        match id {
            "config" => None,
            "archive" => Some("[archive] url".into()),
            "counter_window" => Some("[counter] window".into()),
            "web_sites" => Some("[web] sites".into()),
            "web_geoip" => Some("[web] geoip".into()),
            _ => Some(id.into()),
        }
    }

    const BEGIN: &str = "<!-- BEGIN flags: rendered from `tally serve`'s definitions; \
                         TALLY_WRITE_DOCS=1 cargo test -p tally the_configuration_table rewrites it -->\n";
    const END: &str = "<!-- END flags -->\n";

    #[test]
    fn the_configuration_table_in_the_docs_is_made_from_the_flags() {
        let cmd = ServeArgs::augment_args(Command::new("serve"));
        let table = format!(
            "| flag / file key | env | default | what it trades |\n|---|---|---|---|\n{}",
            tally_settings::markdown_rows(&cmd, file_key)
        );
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md");
        let docs = std::fs::read_to_string(path).unwrap();
        let (start, end) = (
            docs.find(BEGIN)
                .expect("docs/configuration.md has the BEGIN line")
                + BEGIN.len(),
            docs.find(END)
                .expect("docs/configuration.md has the END line"),
        );
        if docs[start..end] != table && std::env::var_os("TALLY_WRITE_DOCS").is_some() {
            std::fs::write(path, format!("{}{table}{}", &docs[..start], &docs[end..])).unwrap();
            return;
        }
        assert!(
            docs[start..end] == table,
            "docs/configuration.md's table differs from the flags; it should read:\n{table}"
        );
    }

    fn config(file: Option<&str>, argv: &[&str]) -> anyhow::Result<ServerConfig> {
        let dir = tempfile::tempdir().unwrap();
        let mut argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
        if let Some(text) = file {
            let path = dir.path().join("tally.toml");
            std::fs::write(&path, text).unwrap();
            argv.push("--config".into());
            argv.push(path.into());
        }
        let cmd = ServeArgs::augment_args(Command::new("serve").no_binary_name(true));
        let args = ServeArgs::from_arg_matches(&cmd.try_get_matches_from(&argv)?)?;
        args.into_server_config(&argv)
    }

    #[test]
    fn with_nothing_given_the_server_gets_the_libraries_defaults() {
        let c = config(None, &[]).unwrap();
        let mut d = ServerConfig::new(c.listen, EngineOptions::new("tally-data"));
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        // The CLI adds the default archive; the library has none.
        d.engine.archive = c.engine.archive.clone();
        assert!(d.engine.archive.is_some());
        assert_eq!(format!("{:?}", c.engine), format!("{:?}", d.engine));
        assert_eq!(format!("{:?}", c.query), format!("{:?}", d.query));
        assert_eq!(
            (c.max_body_bytes, c.ingest_budget_bytes, c.body_read_timeout),
            (16 << 20, 192 << 20, Duration::from_secs(30))
        );
        assert_eq!(
            (
                c.max_body_bytes,
                c.ingest_budget_bytes,
                c.body_read_timeout,
                c.max_import_bytes
            ),
            (
                d.max_body_bytes,
                d.ingest_budget_bytes,
                d.body_read_timeout,
                d.max_import_bytes
            )
        );
        assert_eq!(c.engine.sync, SyncMode::Always);
    }

    #[test]
    fn sizes_and_durations_read_with_units_and_flags_win_over_the_file() {
        let file = "sync = \"interval\"\nsync_interval = \"250ms\"\nflush_bytes = 4096\n\
                    max_body_bytes = \"1MiB\"\nquery_timeout = \"1m 30s\"\nallow_unauthenticated = true\n";
        let c = config(
            Some(file),
            &["--max-body-bytes", "2MiB", "--log-queue", "7"],
        )
        .unwrap();
        assert_eq!(
            c.engine.sync,
            SyncMode::Interval(Duration::from_millis(250))
        );
        assert_eq!(c.engine.flush_bytes, 4096);
        assert_eq!(c.max_body_bytes, 2 << 20);
        assert_eq!(c.engine.log_queue, 7);
        assert_eq!(c.query.timeout, Duration::from_secs(90));
        assert!(c.allow_unauthenticated);
    }

    #[test]
    fn older_spellings_read_in_the_unit_of_their_name() {
        let c = config(
            None,
            &[
                "--flush-interval-secs",
                "3",
                "--memory-wait-ms",
                "0",
                "--query-timeout-secs",
                "0.5",
                "--sync",
                "interval",
                "--sync-interval-ms",
                "20",
            ],
        )
        .unwrap();
        assert_eq!(c.engine.flush_interval, Duration::from_secs(3));
        assert_eq!(c.engine.memory_wait, Duration::ZERO);
        assert_eq!(c.query.timeout, Duration::from_millis(500));
        assert_eq!(c.engine.sync, SyncMode::Interval(Duration::from_millis(20)));
        let c = config(
            Some("body_read_timeout_secs = 4\nflush_interval = \"9s\""),
            &["--flush-interval-secs", "3"],
        )
        .unwrap();
        assert_eq!(c.body_read_timeout, Duration::from_secs(4));
        assert_eq!(
            c.engine.flush_interval,
            Duration::from_secs(9),
            "the new name wins"
        );
        let e = config(None, &["--query-timeout-secs", "0"]).unwrap_err();
        assert!(e.to_string().contains("positive"), "{e}");
    }

    #[test]
    fn a_cluster_node_drains_for_a_few_health_checks_unless_told_otherwise() {
        assert_eq!(config(None, &[]).unwrap().drain_delay, Duration::ZERO);
        let cluster = [
            "--cluster",
            "nats://127.0.0.1:4222",
            "--node-id",
            "a",
            "--archive",
            "/srv/tally-archive",
        ];
        let c = config(None, &cluster).unwrap();
        assert_eq!(c.drain_delay, tally_server::CLUSTER_DRAIN_DELAY);
        let c = config(Some("drain_delay = \"1500ms\""), &cluster).unwrap();
        assert_eq!(c.drain_delay, Duration::from_millis(1500));
        let c = config(None, &["--drain-delay", "2s"]).unwrap();
        assert_eq!(c.drain_delay, Duration::from_secs(2));
    }

    #[test]
    fn bad_file_values_and_unknown_keys_are_named() {
        let e = config(Some("flush_interval = 60"), &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tally.toml: flush_interval = 60: ") && e.contains("unit"),
            "{e}"
        );
        let e = config(Some("max_body_bytes = \"big\""), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_body_bytes = \"big\""), "{e}");
        let e = config(Some("sync = \"sometimes\""), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("sync = \"sometimes\""), "{e}");
        let e = format!("{:#}", config(Some("flush_byte = 3"), &[]).unwrap_err());
        assert!(e.contains("flush_byte"), "{e}");
    }
}
