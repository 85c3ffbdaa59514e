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
    // A scratch directory of its own is deleted when the demo ends
    // (Ctrl-C, or a failure); one given with --data-dir is kept.
    let (data_dir, scratch) = match args.data_dir {
        Some(d) => (d, None),
        None => {
            let t = tempfile::Builder::new()
                .prefix("tally-demo-")
                .tempdir()
                .map_err(|e| anyhow::anyhow!("making a scratch data directory: {e}"))?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let mut engine = EngineOptions::new(&data_dir);
    engine.archive = Some(tally_engine::ArchiveOptions::in_data_dir(&data_dir));
    let mut config = ServerConfig::new(args.listen, engine);
    if let Some(web) = config.web.as_mut() {
        web.sites.push(DEMO_SITE.to_string());
    }
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
    let r = client
        .post(format!("{base}/v1/web/backfill"))
        .header("content-type", "application/x-ndjson")
        .body(web_traffic(&mut rng, now_ms / 1000))
        .send()
        .await?;
    anyhow::ensure!(
        r.status().is_success(),
        "loading sample web traffic failed: {}",
        r.text().await?
    );
    let web: serde_json::Value = r.json().await?;

    println!();
    println!(
        "tally demo is running on {base} with data in {}",
        data_dir.display()
    );
    println!("  loaded {sent} sample page views into stream 'pageview' and 25 hits into 'app'");
    println!(
        "  and a week of web traffic for the site {DEMO_SITE}: {} events, {} visits",
        web["stored"], web["visits"]
    );
    println!();
    println!("  the dashboard:              open {base}/dashboard");
    println!("  Plausible's Stats API:      curl '{base}/api/v1/stats/aggregate?site_id={DEMO_SITE}&period=7d&metrics=visitors,visits,bounce_rate'");
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
    match scratch {
        Some(_) => println!("Press Ctrl-C to stop (the scratch data directory is deleted then)."),
        None => println!("Press Ctrl-C to stop."),
    }
    server.await??;
    if let Some(dir) = scratch {
        let path = dir.path().display().to_string();
        dir.close()
            .map_err(|e| anyhow::anyhow!("deleting the scratch data directory {path}: {e}"))?;
        eprintln!("deleted the scratch data directory {path}");
    }
    Ok(())
}

/// The site the demo's web traffic is for.
const DEMO_SITE: &str = "demo.tally";

/// A week of tracker events for [`DEMO_SITE`], in the backfill's format:
/// visitors arriving from a few sources, reading a few pages each.
fn web_traffic(rng: &mut impl rand::Rng, now_s: i64) -> String {
    const AGENTS: [&str; 3] = [
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
    ];
    const PAGES: [&str; 6] = [
        "/",
        "/pricing",
        "/docs",
        "/blog/launch",
        "/blog/rollups",
        "/signup",
    ];
    const ARRIVALS: [(&str, &str); 5] = [
        ("", "https://www.google.com/"),
        ("?utm_source=newsletter&utm_campaign=november", ""),
        ("", "https://news.ycombinator.com/item?id=1"),
        ("", "https://github.com/"),
        ("", ""),
    ];
    let mut out = String::new();
    for v in 0..3000u32 {
        let agent = AGENTS[rng.random_range(0..AGENTS.len())];
        let ip = format!("10.{}.{}.{}", v >> 16, (v >> 8) & 255, v & 255);
        let width = [390, 820, 1280, 1920][rng.random_range(0..4)];
        let mut ts = now_s - rng.random_range(60..7 * 86_400);
        let (query, referrer) = ARRIVALS[rng.random_range(0..ARRIVALS.len())];
        for i in 0..rng.random_range(1..6) {
            if ts >= now_s {
                break;
            }
            let page = PAGES[rng.random_range(0..PAGES.len())];
            let mut e = serde_json::json!({
                "n": if page == "/signup" && i > 0 { "Signup" } else { "pageview" },
                "u": format!("https://{DEMO_SITE}{page}{}", if i == 0 { query } else { "" }),
                "d": DEMO_SITE, "w": width, "timestamp": ts, "user_agent": agent, "ip": ip,
            });
            if i == 0 && !referrer.is_empty() {
                e["r"] = referrer.into();
            }
            out.push_str(&e.to_string());
            out.push('\n');
            ts += rng.random_range(10..400);
        }
    }
    out
}
