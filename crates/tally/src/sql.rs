//! `tally sql "SELECT ..."`: runs a query on a running server and prints the
//! answer as a table (or CSV/JSON as the server sends it).
//!
//! The answer travels as an Arrow IPC stream, so types survive the trip and
//! the table printer sees real columns.

use anyhow::{bail, Context};
use clap::Args;
use std::io::Write;

#[derive(Args, Debug)]
pub struct SqlArgs {
    /// The SQL statement (read-only: SELECT, WITH, SHOW, DESCRIBE, EXPLAIN).
    pub sql: String,
    /// The server's base URL.
    #[arg(long, env = "TALLY_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API key with the read scope.
    #[arg(long, env = "TALLY_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Output: table, csv or json.
    #[arg(long, default_value = "table")]
    pub format: String,
}

pub async fn run(args: SqlArgs) -> anyhow::Result<()> {
    let accept = match args.format.as_str() {
        "table" => "application/vnd.apache.arrow.stream",
        "csv" => "text/csv",
        "json" => "application/json",
        other => bail!("--format must be table, csv or json, not {other:?}"),
    };
    let client = reqwest::Client::new();
    let mut req = client
        .post(format!("{}/v1/sql", args.url.trim_end_matches('/')))
        .header("accept", accept)
        .json(&serde_json::json!({ "sql": args.sql }));
    if let Some(key) = &args.api_key {
        req = req.bearer_auth(key);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("cannot reach {}", args.url))?;
    let status = resp.status();
    let body = resp.bytes().await.context("reading the answer")?;
    if !status.is_success() {
        let msg = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                let mut m = v.get("error")?.as_str()?.to_string();
                if let (Some(l), Some(c)) = (v.get("line"), v.get("column")) {
                    m.push_str(&format!(" (line {l}, column {c})"));
                }
                Some(m)
            })
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        bail!("{status}: {msg}");
    }
    let mut out = std::io::stdout().lock();
    if args.format != "table" {
        out.write_all(&body)?;
        if !body.ends_with(b"\n") {
            writeln!(out)?;
        }
        return Ok(());
    }
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None)
        .context("decoding the answer")?;
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .context("decoding the answer")?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    writeln!(
        out,
        "{}",
        arrow::util::pretty::pretty_format_batches(&batches)?
    )?;
    writeln!(out, "({rows} row{})", if rows == 1 { "" } else { "s" })?;
    Ok(())
}
