//! `tally backup --to DIR` asks a running server for a consistent backup of
//! its data directory, taken while ingest goes on; `tally restore --from DIR
//! --data-dir D` makes a backup the data directory of a server that is not
//! running (docs/operations.md).

use anyhow::Context;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Where the backup goes: a missing or empty directory, on the server's
    /// machine (the server writes it; on the same filesystem as the data
    /// directory, segment files are hard links and cost no space).
    #[arg(long)]
    pub to: PathBuf,
    /// The server's base URL.
    #[arg(long, env = "TALLY_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API key with the admin scope.
    #[arg(long, env = "TALLY_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// A backup made by `tally backup`.
    #[arg(long)]
    pub from: PathBuf,
    /// The new data directory (missing or empty); start `tally serve
    /// --data-dir` on it afterwards.
    #[arg(long, env = "TALLY_DATA_DIR")]
    pub data_dir: PathBuf,
}

pub async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let base = args.url.trim_end_matches('/').to_string();
    let to = std::path::absolute(&args.to).with_context(|| format!("{}", args.to.display()))?;
    let mut req = reqwest::Client::new()
        .post(format!("{base}/v1/admin/backup"))
        .json(&serde_json::json!({ "to": to }));
    if let Some(k) = &args.api_key {
        req = req.bearer_auth(k);
    }
    let v = crate::reprocess::answer(req.send().await, &base).await?;
    println!(
        "backup in {}: {} files, {} bytes copied ({} segment files linked), log position {} or later, {} ms",
        to.display(),
        v["files"],
        v["bytes"],
        v["linked"],
        v["log_lsn"],
        v["took_ms"]
    );
    Ok(())
}

pub fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let report = tally_engine::restore(&args.from, &args.data_dir)
        .with_context(|| format!("restoring {}", args.from.display()))?;
    println!(
        "restored the backup of {} into {}: start `tally serve --data-dir {}`",
        report.taken_at,
        args.data_dir.display(),
        args.data_dir.display()
    );
    Ok(())
}
