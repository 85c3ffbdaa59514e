//! `tally reprocess --rollup NAME [--from T --to T]`: rebuilds a rollup on a
//! running server from its stored events while ingest continues, with a
//! progress bar; the new state replaces the old one when it is complete.

use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct ReprocessArgs {
    /// The rollup to rebuild.
    #[arg(long)]
    pub rollup: String,
    /// Rebuild only buckets from this time (RFC 3339, on the rollup's
    /// coarsest interval); with --to.
    #[arg(long, requires = "to")]
    pub from: Option<String>,
    /// ... up to this time (exclusive).
    #[arg(long, requires = "from")]
    pub to: Option<String>,
    /// The server's base URL.
    #[arg(long, env = "TALLY_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API key with the admin scope.
    #[arg(long, env = "TALLY_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

pub async fn run(args: ReprocessArgs) -> anyhow::Result<()> {
    let base = args.url.trim_end_matches('/').to_string();
    let client = reqwest::Client::new();
    let auth = |r: reqwest::RequestBuilder| match &args.api_key {
        Some(k) => r.bearer_auth(k),
        None => r,
    };
    let mut url = reqwest::Url::parse(&format!("{base}/v1/rollups/{}/rebuild", args.rollup))
        .context("the server URL")?;
    if let (Some(f), Some(t)) = (&args.from, &args.to) {
        url.query_pairs_mut()
            .append_pair("from", f)
            .append_pair("to", t);
    }
    let t0 = Instant::now();
    let v = answer(auth(client.post(url)).send().await, &base).await?;
    let bar = ProgressBar::new(v["build"]["rows_total"].as_u64().unwrap_or(0));
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} rebuilding {msg} [{bar:40}] {human_pos}/{human_len} events ({per_sec}, {eta} left)",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.set_message(args.rollup.clone());
    let status_url = format!("{base}/v1/rollups/{}", args.rollup);
    let rows = loop {
        let v = answer(auth(client.get(&status_url)).send().await, &base).await?;
        match v["build"].as_object() {
            Some(b) => {
                bar.set_length(b["rows_total"].as_u64().unwrap_or(0));
                bar.set_position(b["rows_done"].as_u64().unwrap_or(0));
            }
            None => {
                if v["status"] != "ready" {
                    bail!("the rebuild ended without a ready rollup: {v}");
                }
                break bar.length().unwrap_or(0);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    bar.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "rollup {} rebuilt: {rows} stored events in {secs:.1} s ({:.0} events/s); it answers from now on",
        args.rollup,
        rows as f64 / secs.max(1e-9)
    );
    Ok(())
}

/// The JSON body of a successful answer, or the server's error.
pub(crate) async fn answer(
    r: reqwest::Result<reqwest::Response>,
    base: &str,
) -> anyhow::Result<Value> {
    let resp = r.with_context(|| format!("cannot reach {base}"))?;
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let msg = v["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string());
        bail!("{status}: {msg}");
    }
    Ok(v)
}
