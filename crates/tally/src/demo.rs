//! `tally demo`: the server on a scratch data directory, filled with a day of
//! sample page views and timestamp-recorder hits, so there is something to
//! look at within seconds of a fresh checkout.

use crate::sample::PageView;
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tally_engine::EngineOptions;
use tally_server::ServerConfig;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Address to listen on.
    #[arg(long, env = "TALLY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Data directory; a fresh temporary one by default.
    #[arg(long, env = "TALLY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Sample page views to load.
    #[arg(long, default_value_t = 200_000)]
    pub events: usize,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let tmp;
    let data_dir = match args.data_dir {
        Some(d) => d,
        None => {
            tmp = tempfile_dir()?;
            tmp.clone()
        }
    };
    let mut engine = EngineOptions::new(&data_dir);
    engine.archive = Some(tally_engine::ArchiveOptions::in_data_dir(&data_dir));
    let config = ServerConfig::new(args.listen, engine);
    let server = tokio::spawn(tally_server::run(config, tally_server::shutdown_signal()));
    let base = format!("http://{}", args.listen);
    let client = reqwest::Client::new();
    // Wait until the server is ready (or has failed).
    loop {
        if server.is_finished() {
            return match server.await? {
                Ok(()) => Ok(()),
                Err(e) => Err(e.into()),
            };
        }
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut rng = rand::rng();
    let mut sent = 0;
    while sent < args.events {
        let n = (args.events - sent).min(5000);
        let mut body = String::with_capacity(n * 128);
        for _ in 0..n {
            PageView::random(&mut rng, now_ms - 86_400_000, 86_400_000).push_ndjson(&mut body);
        }
        let r = client
            .post(format!("{base}/v1/events/pageview"))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await?;
        anyhow::ensure!(
            r.status().is_success(),
            "loading sample data failed: {}",
            r.text().await?
        );
        sent += n;
    }
    for _ in 0..25 {
        client.post(format!("{base}/app")).send().await?;
    }

    println!();
    println!(
        "tally demo is running on {base} with data in {}",
        data_dir.display()
    );
    println!("  loaded {sent} sample page views into stream 'pageview' and 25 hits into 'app'");
    println!();
    println!(
        "  the global counter (S2):    open {base}/counter/main   (value: curl {base}/getvalue)"
    );
    println!("  streams and their schemas:  curl {base}/v1/streams");
    println!("  record a timestamp (S0):    curl -X POST {base}/app");
    println!("  send events:                curl -X POST {base}/v1/events/pageview -d '{{\"path\":\"/\",\"country\":\"NO\"}}'");
    println!("  metrics:                    curl {base}/metrics");
    println!(
        "  Parquet segments (DuckDB):  {}/segments/  (written by the background flush)",
        data_dir.display()
    );
    println!(
        "  raw archive (DuckDB):       {}/archive/  (hours archived 10 minutes after they end)",
        data_dir.display()
    );
    println!();
    println!("Press Ctrl-C to stop.");
    server.await??;
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("tally-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
