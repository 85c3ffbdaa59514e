//! Pages in a real browser: Debian's Chromium driven by playwright-core
//! (tests/browser, installed by scripts/test.sh). Screenshots are kept as
//! artifacts under target/tmp/artifacts/.

use crate::server::TestServer;
use std::path::PathBuf;
use std::process::Command;

/// Runs a browser script against `server`; returns its last stdout line.
fn run_script(script: &str, server: &TestServer, screenshot: &str) -> (String, PathBuf) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run scripts/test.sh (or npm ci --prefix {})",
        dir.display()
    );
    let artifacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    let shot = artifacts.join(screenshot);
    let _ = std::fs::remove_file(&shot);
    let out = Command::new("node")
        .arg(dir.join(script))
        .arg(&server.base)
        .arg(&shot)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{script} failed:\nstdout: {stdout}\nstderr: {}\nserver log: {}",
        String::from_utf8_lossy(&out.stderr),
        server.stderr_log()
    );
    let last = stdout.lines().last().unwrap_or_default().to_string();
    (last, shot)
}

#[tokio::test]
async fn counter_page_registers_clicks_refuses_and_updates_other_viewers() {
    let server = TestServer::start().await;
    // The server is another process: blocking this thread while the browser
    // runs is fine.
    let (summary, shot) = run_script("counter.mjs", &server, "counter-page.png");
    let v: serde_json::Value = serde_json::from_str(&summary).expect("summary JSON");
    assert_eq!(
        v["after"].as_u64(),
        v["before"].as_u64().map(|b| b + 1),
        "{v}"
    );
    assert!(v["live_ms"].as_u64().expect("live_ms") < 1000, "{v}");
    assert!(v["refusal"].as_str().unwrap().starts_with("Not yet"), "{v}");
    // The server agrees with what the page showed.
    let (_, value) = crate::server::get_json(&server.url("/getvalue")).await;
    assert_eq!(value["value"], v["after"]);
    let png = std::fs::read(&shot).expect("screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 1000,
        "{}",
        shot.display()
    );
}

/// Plausible's npm tracker and tally's script, in Chromium, send page views
/// (on load and on history navigation) and custom events with properties
/// that tally stores, enriched, for the registered site.
#[tokio::test]
async fn real_trackers_send_page_views_and_custom_events() {
    let server = TestServer::builder()
        .args(["--web-site", "example.com"])
        .start()
        .await;
    let (summary, shot) = run_script("trackers.mjs", &server, "trackers-page.png");
    let v: serde_json::Value = serde_json::from_str(&summary).expect("summary JSON");
    let sent = v["sent"].as_array().expect("sent");
    assert!(sent.len() >= 6, "{v}");
    assert!(sent.iter().all(|s| s["status"] == 202), "{v}");
    let (st, rows) = crate::server::post(
        &server.url("/v1/sql"),
        Some("application/json"),
        serde_json::json!({"sql": "SELECT name, pathname, browser, device, \"prop.plan\" AS plan, \"prop.file\" AS file FROM web_events WHERE site = 'example.com' AND name <> 'engagement' ORDER BY ts"}).to_string(),
    )
    .await;
    assert_eq!(st, 200, "{rows}");
    let got: Vec<(String, String)> = rows["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let detail = r["plan"].as_str().or(r["file"].as_str()).unwrap_or("");
            (
                format!(
                    "{} {}",
                    r["name"].as_str().unwrap(),
                    r["pathname"].as_str().unwrap()
                ),
                detail.to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("pageview /__test/npm/", ""),
        ("Signup /__test/npm/", "pro"),
        ("pageview /__test/npm/second/", ""),
        ("pageview /__test/script/", ""),
        ("Download /__test/script/", "report.pdf"),
        ("pageview /__test/script/second/", ""),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(got, want, "{rows}");
    // Events carry their visit's attributes (its first event's): the visit
    // began with Plausible's package, which sends no screen width, so the
    // device is the user agent's for every event.
    for r in rows["rows"].as_array().unwrap() {
        assert_eq!(
            (r["browser"].as_str(), r["device"].as_str()),
            (Some("Chrome"), Some("Desktop")),
            "{r}"
        );
    }
    // The same events through Plausible's Stats API: one visitor, one
    // visit of four page views and six events (engagement events are not
    // events), the custom events by name (ranked by the first metric,
    // ties by name).
    let stats = |path: &str| server.url(&format!("/api/v1/stats/{path}"));
    let agg = stats_ok(&stats(
        "aggregate?site_id=example.com&period=day&metrics=visitors,visits,pageviews,events,bounce_rate,views_per_visit",
    ))
    .await;
    assert_eq!(
        agg["results"],
        serde_json::json!({
            "visitors": {"value": 1}, "visits": {"value": 1}, "pageviews": {"value": 4},
            "events": {"value": 6}, "bounce_rate": {"value": 0}, "views_per_visit": {"value": 4.0}
        }),
        "{agg}"
    );
    let names = stats_ok(&stats(
        "breakdown?site_id=example.com&period=day&property=event:name&metrics=events,visitors",
    ))
    .await;
    assert_eq!(
        names["results"],
        serde_json::json!([
            {"name": "pageview", "visitors": 1, "events": 4},
            {"name": "Download", "visitors": 1, "events": 1},
            {"name": "Signup", "visitors": 1, "events": 1}
        ]),
        "{names}"
    );
    let realtime = stats_ok(&stats("realtime/visitors?site_id=example.com")).await;
    assert_eq!(realtime, serde_json::json!(1));
    let png = std::fs::read(&shot).expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "{}", shot.display());
}

/// A Stats API answer, checked to be a 200.
async fn stats_ok(url: &str) -> serde_json::Value {
    let (st, v) = crate::server::get_json(url).await;
    assert_eq!(st, 200, "{url}: {v}");
    v
}

/// The dashboard in Chromium shows what the Stats API answers for a site
/// with a week of traffic (cards, chart, tables, the period picker), the
/// explorer charts and breaks down a stream as SQL counts it, a phone's
/// screen needs no sideways scrolling, every request stays on tally's
/// origin, and the console stays clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_a_sites_traffic_and_explores_streams() {
    let server = TestServer::builder()
        .args(["--web-site", "shop.test"])
        .start()
        .await;
    let now = chrono::Utc::now().timestamp();
    let chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36";
    let mut lines = String::new();
    for i in 0..420i64 {
        let page = ["/", "/", "/", "/pricing", "/pricing", "/blog/a"][(i % 6) as usize];
        let query = if i % 3 == 0 { "?ref=newsletter" } else { "" };
        let line = serde_json::json!({
            "n": "pageview", "u": format!("https://shop.test{page}{query}"), "d": "shop.test",
            "w": if i % 4 == 0 { 375 } else { 1280 },
            "timestamp": now - 600 - i * 1400, "user_agent": chrome,
            "ip": format!("10.1.{}.{}", i / 250, i % 250 + 1),
        });
        lines.push_str(&format!("{line}\n"));
    }
    let (st, v) = crate::server::post(
        &server.url("/v1/web/backfill"),
        Some("application/x-ndjson"),
        lines,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    // A visitor now, for the realtime count.
    let r = reqwest::Client::new()
        .post(server.url("/api/event"))
        .header("user-agent", chrome)
        .header("x-forwarded-for", "10.9.0.1")
        .body(r#"{"n":"pageview","u":"https://shop.test/","d":"shop.test"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);

    let (summary, shot) = run_script("dashboard.mjs", &server, "dashboard.png");
    let v: serde_json::Value = serde_json::from_str(&summary).expect("summary JSON");
    // No country database configured: the page says how to get countries
    // instead of one "(none)" row.
    let countries = v["countries"].as_str().unwrap_or_default();
    assert!(countries.contains("--web-geoip"), "{countries}");
    assert!(!countries.contains("(none)"), "{countries}");
    let api = |q: &str| {
        let url = server.url(&format!("/api/v1/stats/{q}"));
        async move { stats_ok(&url).await }
    };
    // Tables as the API ranks them, values as the page formats them.
    let table = |answer: &serde_json::Value, key: &str, metric: &str| -> serde_json::Value {
        answer["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| serde_json::json!([r[key].as_str().unwrap(), r[metric].to_string()]))
            .collect()
    };
    let week =
        api("breakdown?site_id=shop.test&period=7d&property=event:page&metrics=pageviews&limit=10")
            .await;
    assert_eq!(v["pages7d"], table(&week, "page", "pageviews"), "{v}");
    let today = api(
        "breakdown?site_id=shop.test&period=day&property=event:page&metrics=pageviews&limit=10",
    )
    .await;
    assert_eq!(v["pagesDay"], table(&today, "page", "pageviews"), "{v}");
    let sources = api(
        "breakdown?site_id=shop.test&period=7d&property=visit:source&metrics=visitors&limit=10",
    )
    .await;
    assert_eq!(v["sources"], table(&sources, "source", "visitors"), "{v}");
    let devices = api(
        "breakdown?site_id=shop.test&period=7d&property=visit:device&metrics=visitors&limit=10",
    )
    .await;
    assert_eq!(v["devices"], table(&devices, "device", "visitors"), "{v}");
    let agg = api("aggregate?site_id=shop.test&period=7d&metrics=visitors,visits,pageviews").await;
    let cards = v["cards"].as_array().unwrap();
    assert_eq!(cards[0], "1", "realtime: {v}");
    for (i, m) in ["visitors", "visits", "pageviews"].iter().enumerate() {
        assert_eq!(
            cards[i + 1].as_str().unwrap(),
            agg["results"][m]["value"].to_string(),
            "{m}: {v}"
        );
    }
    // Seven days, two series.
    assert_eq!(v["points"], 14, "{v}");
    // The explorer's breakdown is SQL's count by page.
    let (st, counts) = crate::server::post(
        &server.url("/v1/sql"),
        Some("application/json"),
        serde_json::json!({"sql": "SELECT pathname, count(*) AS n FROM web_events GROUP BY pathname ORDER BY n DESC, pathname"}).to_string(),
    )
    .await;
    assert_eq!(st, 200, "{counts}");
    let want: Vec<serde_json::Value> = counts["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| serde_json::json!([r["pathname"], r["n"].to_string()]))
        .collect();
    assert_eq!(v["explore"].as_array().unwrap(), &want, "{v}");
    assert!(v["caption"].as_str().unwrap().contains("web_events"), "{v}");
    assert!(v["overflow"].as_i64().unwrap() <= 0, "{v}");
    for path in [shot.clone(), shot.with_file_name("dashboard-phone.png")] {
        let png = std::fs::read(&path).expect("screenshot");
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 10_000,
            "{}",
            path.display()
        );
    }
}
