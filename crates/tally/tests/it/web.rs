//! Web analytics ingest (`POST /api/event`): every payload variant of
//! Plausible's Events API, enrichment (browser, OS, device, source, UTM,
//! country from a MaxMind database written here), bots and unknown sites
//! dropped and counted, visitor ids (stable within a day and site, new after
//! midnight), the sites admin API, and no raw address or user agent on disk.

use crate::server::{get_json, metric, metrics_text, post, sql, TestServer};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.109 Safari/537.36";
const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1";
const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

/// A MaxMind-format country database: 203.0.113.0/24 in Norway, written
/// as MaxMind's own databases hold a country (`country.iso_code`), and
/// 198.51.100.0/24 in Germany, as the free ip-location-db databases hold
/// it (`country_code`).
fn geoip_db(path: &Path) {
    use maxminddb_writer::paths::IpAddrWithMask;
    let mut db = maxminddb_writer::Database::default();
    db.metadata.binary_format_major_version = 2;
    db.metadata.database_type = "GeoLite2-Country".into();
    db.metadata.languages = vec!["en".into()];
    for (net, record) in [
        ("203.0.113.0/24", json!({"country": {"iso_code": "NO"}})),
        ("198.51.100.0/24", json!({"country_code": "DE"})),
    ] {
        let data = db.insert_value(record).unwrap();
        db.insert_node(net.parse::<IpAddrWithMask>().unwrap(), data);
    }
    db.write_to(std::fs::File::create(path).unwrap()).unwrap();
}

async fn track(server: &TestServer, ua: &str, ip: &str, body: &str) -> (u16, String) {
    let resp = reqwest::Client::new()
        .post(server.url("/api/event"))
        .header("user-agent", ua)
        .header("x-forwarded-for", ip)
        .header("content-type", "text/plain")
        .body(body.to_string())
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// Sends a tracker event and checks it was accepted (202).
async fn accepted(server: &TestServer, ua: &str, body: &str) {
    let (st, text) = track(server, ua, "203.0.113.7", body).await;
    assert_eq!(st, 202, "{body}: {text}");
}

fn dropped(m: &str, reason: &str) -> u64 {
    metric(
        m,
        &format!("tally_web_events_dropped_total{{reason=\"{reason}\"}}"),
    )
    .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracker_events_are_enriched_checked_and_anonymous() {
    let tmp = tempfile::tempdir().unwrap();
    let geo = tmp.path().join("country.mmdb");
    geoip_db(&geo);
    let server = TestServer::builder()
        .args(["--web-site", "example.com", "--web-site", "other.org"])
        .args(["--web-geoip", geo.to_str().unwrap()])
        .start()
        .await;

    // Long field names, props as an object, a search engine referrer.
    let (st, body) = track(&server, CHROME, "203.0.113.7", r#"{"name":"pageview","url":"https://example.com/pricing?utm_medium=email&utm_campaign=spring","domain":"example.com","referrer":"https://www.google.com/search?q=tally","props":{"plan":"pro","seats":3}}"#).await;
    assert_eq!((st, body.as_str()), (202, "ok"));
    // Short names, two sites, props as a JSON string, screen width, hash mode.
    let (st, _) = track(&server, IPHONE, "198.51.100.9, 10.0.0.1", r##"{"n":"Signup","u":"https://example.com/app#/welcome?x=1","d":"example.com,other.org","r":"https://news.ycombinator.com/item?id=1","p":"{\"plan\":\"free\"}","w":390,"h":1}"##).await;
    assert_eq!(st, 202);
    // New visitors (other addresses): utm_source wins over the referrer;
    // a self-referral is direct.
    let (st, _) = track(&server, CHROME, "203.0.113.8", r#"{"n":"pageview","u":"https://example.com/blog?utm_source=newsletter","d":"example.com","r":"https://t.co/abc"}"#).await;
    assert_eq!(st, 202);
    let (st, _) = track(&server, CHROME, "203.0.113.9", r#"{"n":"pageview","u":"https://example.com/docs","d":"example.com","r":"https://example.com/pricing"}"#).await;
    assert_eq!(st, 202);
    // The first visitor again, from another referrer: the same visit, so
    // the event carries the visit's source, UTM and device (its first
    // event's).
    accepted(&server, CHROME, r#"{"n":"pageview","u":"https://example.com/features","d":"example.com","r":"https://www.bing.com/","w":390}"#).await;

    let m0 = metrics_text(&server).await;
    // A bot, an unknown site: accepted (trackers ignore answers) but dropped.
    accepted(
        &server,
        GOOGLEBOT,
        r#"{"n":"pageview","u":"https://example.com/","d":"example.com"}"#,
    )
    .await;
    accepted(
        &server,
        CHROME,
        r#"{"n":"pageview","u":"https://unknown.net/","d":"unknown.net"}"#,
    )
    .await;
    // Bad payloads: 400 in Plausible's error shape.
    for (body, field) in [
        (r#"{"n":"pageview","d":"example.com"}"#, "url"),
        (r#"{"u":"https://example.com/","d":"example.com"}"#, "name"),
        (
            r#"{"n":"pageview","u":"not a url","d":"example.com"}"#,
            "url",
        ),
        (
            r#"{"n":"x","u":"https://example.com/","d":"example.com","p":[1]}"#,
            "props",
        ),
        ("not json", "request"),
    ] {
        let (st, text) = track(&server, CHROME, "203.0.113.7", body).await;
        assert_eq!(st, 400, "{body}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert!(v["errors"][field].is_array(), "{body}: {v}");
    }
    let m1 = metrics_text(&server).await;
    assert_eq!(dropped(&m1, "bot"), dropped(&m0, "bot") + 1);
    assert_eq!(
        dropped(&m1, "unknown_site"),
        dropped(&m0, "unknown_site") + 1
    );
    assert_eq!(dropped(&m1, "invalid"), dropped(&m0, "invalid") + 5);

    let rows = sql(&server, r#"SELECT site, name, pathname, visitor, source, referrer, utm_source, utm_medium, utm_campaign, browser, browser_version, os, device, country, "prop.plan" AS plan, "prop.seats" AS seats FROM web_events ORDER BY ts, site"#).await;
    assert_eq!(rows.len(), 6, "{rows:?}");
    let r = &rows[0];
    assert_eq!(
        (
            r["site"].as_str(),
            r["name"].as_str(),
            r["pathname"].as_str()
        ),
        (Some("example.com"), Some("pageview"), Some("/pricing"))
    );
    assert_eq!(
        (r["source"].as_str(), r["referrer"].as_str()),
        (Some("Google"), Some("google.com/search"))
    );
    assert_eq!(
        (r["utm_medium"].as_str(), r["utm_campaign"].as_str()),
        (Some("email"), Some("spring"))
    );
    assert_eq!(
        (
            r["browser"].as_str(),
            r["browser_version"].as_str(),
            r["os"].as_str()
        ),
        (Some("Chrome"), Some("120.0"), Some("Windows"))
    );
    assert_eq!(
        (r["device"].as_str(), r["country"].as_str()),
        (Some("Desktop"), Some("NO"))
    );
    assert_eq!(
        (r["plan"].as_str(), r["seats"].as_str()),
        (Some("pro"), Some("3"))
    );
    // The fanned-out event: one row per site, the first valid forwarded
    // address (Germany), the screen width's device, the hash route.
    for r in &rows[1..3] {
        assert_eq!(r["name"], "Signup");
        assert_eq!(r["pathname"], "/app#/welcome?x=1");
        assert_eq!(
            (r["device"].as_str(), r["os"].as_str()),
            (Some("Mobile"), Some("iOS"))
        );
        assert_eq!(
            (r["country"].as_str(), r["plan"].as_str()),
            (Some("DE"), Some("free"))
        );
        assert_eq!(r["source"], "Hacker News");
    }
    assert_eq!(
        (rows[1]["site"].as_str(), rows[2]["site"].as_str()),
        (Some("example.com"), Some("other.org"))
    );
    assert_eq!(
        (rows[3]["source"].as_str(), rows[3]["utm_source"].as_str()),
        (Some("newsletter"), Some("newsletter"))
    );
    assert!(rows[4]["source"].is_null(), "{}", rows[4]);
    assert_eq!(rows[5]["pathname"], "/features");
    for f in ["source", "referrer", "utm_medium", "device", "country"] {
        assert_eq!(rows[5][f], rows[0][f], "{f}: {}", rows[5]);
    }
    // Visitor ids: one per (day, agent, address, site).
    assert_eq!(rows[0]["visitor"], rows[5]["visitor"]);
    assert_ne!(rows[0]["visitor"], rows[3]["visitor"]);
    assert_ne!(rows[3]["visitor"], rows[4]["visitor"]);
    assert_ne!(rows[0]["visitor"], rows[1]["visitor"]);
    assert_ne!(rows[1]["visitor"], rows[2]["visitor"]);
    assert_eq!(rows[0]["visitor"].as_str().unwrap().len(), 16);

    // The stream is the app's: public writes are refused.
    let (st, v) = post(
        &server.url("/v1/events/web_events"),
        None,
        r#"{"name":"x"}"#,
    )
    .await;
    assert_eq!(st, 400, "{v}");
    // The tracker script, for any origin.
    let resp = reqwest::get(server.url("/js/script.js")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/javascript"));
    assert!(resp.text().await.unwrap().contains("/api/event"));

    // Sites through the admin API survive a restart; config sites stay.
    let (st, v) = post(
        &server.url("/v1/sites"),
        Some("application/json"),
        r#"{"domain":"New.dev"}"#,
    )
    .await;
    assert_eq!((st, v["domain"].as_str()), (201, Some("new.dev")), "{v}");
    accepted(
        &server,
        CHROME,
        r#"{"n":"pageview","u":"https://new.dev/","d":"new.dev"}"#,
    )
    .await;
    let (st, v) = post(
        &server.url("/v1/sites"),
        Some("application/json"),
        r#"{"domain":"bad domain"}"#,
    )
    .await;
    assert_eq!(st, 400, "{v}");

    // Nothing on disk holds an address or a user agent: the log, the
    // segments, the catalog, the salts.
    let (st, _) = post(&server.url("/v1/admin/flush"), None, "").await;
    assert_eq!(st, 200);
    let (data, _keep) = server.into_data_dir();
    let mut files = 0;
    for entry in walk(&data) {
        let bytes = std::fs::read(&entry).unwrap();
        files += 1;
        for needle in [
            "203.0.113.7",
            "198.51.100.9",
            "Chrome/120.0.6099.109",
            "iPhone OS 17_1",
            "Googlebot",
        ] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle} found in {}",
                entry.display()
            );
        }
    }
    assert!(files > 3);

    let server = TestServer::builder()
        .data_dir(&data)
        .args(["--web-site", "example.com", "--web-site", "other.org"])
        .start()
        .await;
    let (st, v) = get_json(&server.url("/v1/sites")).await;
    assert_eq!(st, 200);
    let sites: Vec<(String, String)> = v["sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["domain"].as_str().unwrap().into(),
                s["from"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        sites,
        vec![
            ("example.com".into(), "config".into()),
            ("new.dev".into(), "api".into()),
            ("other.org".into(), "config".into())
        ]
    );
    let del = |d: &str| {
        let url = server.url(&format!("/v1/sites/{d}"));
        async move {
            reqwest::Client::new()
                .delete(url)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(del("example.com").await, 409);
    assert_eq!(del("new.dev").await, 200);
    assert_eq!(del("new.dev").await, 404);
    let m0 = metrics_text(&server).await;
    accepted(
        &server,
        CHROME,
        r#"{"n":"pageview","u":"https://new.dev/","d":"new.dev"}"#,
    )
    .await;
    let m1 = metrics_text(&server).await;
    assert_eq!(
        dropped(&m1, "unknown_site"),
        dropped(&m0, "unknown_site") + 1
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The visitor id of one agent and address changes at UTC midnight (a new
/// daily salt) and only then; the day's salt survives a restart and the
/// file keeps only today's and yesterday's salts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salts_rotate_at_midnight() {
    // The app's clock reaches UTC midnight 6 s after this line.
    let t0 = std::time::Instant::now();
    let now = chrono::Utc::now();
    let midnight = (now + chrono::Duration::days(1))
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    let offset = (midnight - now).num_seconds() - 6;
    let offset_arg = offset.to_string();
    let server = TestServer::builder()
        .args(["--web-site", "example.com"])
        .args(["--web-clock-offset-secs", offset_arg.as_str()])
        .start()
        .await;
    let event = r#"{"n":"pageview","u":"https://example.com/","d":"example.com"}"#;
    assert_eq!(track(&server, CHROME, "203.0.113.7", event).await.0, 202);
    assert_eq!(track(&server, CHROME, "203.0.113.7", event).await.0, 202);
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "the server took too long to start for this test"
    );
    // Past midnight on the app's clock.
    tokio::time::sleep(Duration::from_millis(7500).saturating_sub(t0.elapsed())).await;
    assert_eq!(track(&server, CHROME, "203.0.113.7", event).await.0, 202);
    let rows = sql(&server, "SELECT visitor, ts FROM web_events ORDER BY ts").await;
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["visitor"], rows[1]["visitor"]);
    assert_ne!(rows[1]["visitor"], rows[2]["visitor"]);
    let salts: Value =
        serde_json::from_slice(&std::fs::read(server.data_dir.join("web/salts.json")).unwrap())
            .unwrap();
    assert_eq!(salts["salts"].as_object().unwrap().len(), 2, "{salts}");
    // After a restart, the same day keeps its ids.
    let (data, _keep) = server.into_data_dir();
    let server = TestServer::builder()
        .data_dir(&data)
        .args(["--web-site", "example.com"])
        .args(["--web-clock-offset-secs", offset_arg.as_str()])
        .start()
        .await;
    assert_eq!(track(&server, CHROME, "203.0.113.7", event).await.0, 202);
    let rows = sql(&server, "SELECT visitor FROM web_events ORDER BY ts").await;
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[2]["visitor"], rows[3]["visitor"]);
}

/// Whether tally's `got` for `metric` agrees with the reference's
/// unrounded `want`: counts exactly, unique visitors within the sketches'
/// error (HyperLogLog: 5 %, +1), rates and durations rounded to the
/// nearest integer, views per visit to two decimals.
fn agrees(metric: &str, got: &Value, want: &Value) -> bool {
    let (Some(g), Some(w)) = (got.as_f64(), want.as_f64()) else {
        return got == want;
    };
    match metric {
        "visitors" => (g - w).abs() <= (w * 0.05).max(1.0),
        "bounce_rate" | "visit_duration" => g.fract() == 0.0 && (g - w).abs() <= 0.5 + 1e-9,
        "views_per_visit" => {
            (g * 100.0 - (g * 100.0).round()).abs() < 1e-6 && (g - w).abs() <= 0.005 + 1e-9
        }
        _ => g == w,
    }
}

/// Compares one Stats API answer with the reference's, naming what differs.
fn compare(check: &Value, got: &Value) -> Result<(), String> {
    let want = &check["expected"];
    let endpoint = check["endpoint"].as_str().unwrap();
    // Visits broken down by an event property are distinct visits (a
    // sketch), like visitors.
    let by_event = check["params"]["property"]
        .as_str()
        .is_some_and(|p| p.starts_with("event:"));
    let same_row = |g: &Value, w: &Value| -> Result<(), String> {
        for (m, wv) in w.as_object().unwrap() {
            let gv = &g[m];
            let ok = match m.as_str() {
                "date" | "page" | "name" | "plan" | "source" | "entry_page" | "exit_page"
                | "device" | "browser" | "browser_version" | "utm_campaign" => gv == wv,
                "visits" if by_event => agrees("visitors", gv, wv),
                _ => agrees(m, gv, wv),
            };
            if !ok {
                return Err(format!("{m}: tally {gv}, DuckDB {wv}"));
            }
        }
        Ok(())
    };
    match endpoint {
        "aggregate" => {
            for (m, wv) in want.as_object().unwrap() {
                let gv = &got["results"][m]["value"];
                if !agrees(m, gv, wv) {
                    return Err(format!("{m}: tally {gv}, DuckDB {wv}"));
                }
            }
            Ok(())
        }
        "timeseries" => {
            let g = got["results"].as_array().unwrap();
            let w = want.as_array().unwrap();
            if g.len() != w.len() {
                return Err(format!("{} buckets, DuckDB {}", g.len(), w.len()));
            }
            for (gr, wr) in g.iter().zip(w) {
                same_row(gr, wr).map_err(|e| format!("{}: {e}", wr["date"]))?;
            }
            Ok(())
        }
        _ => {
            let key = check["params"]["property"]
                .as_str()
                .unwrap()
                .rsplit(':')
                .next()
                .unwrap();
            let g = got["results"].as_array().unwrap();
            let w = want.as_array().unwrap();
            if g.len() != w.len() {
                return Err(format!("{} rows, DuckDB {}", g.len(), w.len()));
            }
            // A version's row is told apart by its browser too.
            let same_group = |r: &Value, wr: &Value| {
                r[key] == wr[key] && (key != "browser_version" || r["browser"] == wr["browser"])
            };
            for wr in w {
                let gr = g
                    .iter()
                    .find(|r| same_group(r, wr))
                    .ok_or_else(|| format!("no row for {}", wr[key]))?;
                same_row(gr, wr).map_err(|e| format!("{}: {e}", wr[key]))?;
            }
            // Ranked by the first metric, highest first.
            let first = check["params"]["metrics"]
                .as_str()
                .unwrap()
                .split(',')
                .next()
                .unwrap();
            let ranks: Vec<f64> = g.iter().map(|r| r[first].as_f64().unwrap()).collect();
            if ranks.windows(2).any(|p| p[0] < p[1]) {
                return Err(format!("not ranked by {first}: {ranks:?}"));
            }
            Ok(())
        }
    }
}

async fn stats_get(server: &TestServer, endpoint: &str, params: &Value) -> (u16, Value) {
    let mut url = reqwest::Url::parse(&server.url(&format!("/api/v1/stats/{endpoint}"))).unwrap();
    for (k, v) in params.as_object().unwrap() {
        url.query_pairs_mut().append_pair(k, v.as_str().unwrap());
    }
    get_json(url.as_str()).await
}

/// The Stats API on a generated traffic set (1 500 visitors over 9 days,
/// visits split by idle time and midnight, bounces, custom events with
/// properties, other sites, bots and unknown sites as noise), sent as a
/// backfill, against DuckDB computing every metric from the same events:
/// aggregates over every period, time series by day and hour, breakdowns
/// by page, event, property and every visit attribute, filters; then the
/// same after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_api_equals_duckdb_on_generated_traffic() {
    let tmp = tempfile::tempdir().unwrap();
    let now = chrono::Utc::now().timestamp();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = manifest.join("tests/it/web_reference.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .args(["7", &now.to_string(), tmp.path().to_str().unwrap()])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference: Value = serde_json::from_slice(&out.stdout).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        TestServer::builder()
            .data_dir(dir.path())
            .args(["--web-site", "shop.test", "--web-site", "other.test"])
            .start()
    };
    let server = start().await;

    // A bad line refuses the whole request, naming it.
    let body = std::fs::read_to_string(tmp.path().join("traffic.ndjson")).unwrap();
    let mut bad = body.clone();
    bad.push_str("{\"n\":\"pageview\",\"u\":\"https://shop.test/\",\"d\":\"shop.test\",\"ip\":\"10.0.0.1\"}\n");
    let lines = reference["lines"].as_u64().unwrap();
    let backfill = server.url("/v1/web/backfill");
    let (st, v) = post(&backfill, Some("application/x-ndjson"), bad).await;
    assert_eq!(st, 400, "{v}");
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.contains(&format!("line {}: timestamp", lines + 1)),
        "{msg}"
    );
    assert_eq!(crate::server::rows(&server, "web_events").await, 0);

    let (st, v) = post(&backfill, Some("application/x-ndjson"), body).await;
    assert_eq!(st, 200, "{v}");
    let (bots, unknown) = (
        reference["bots"].as_u64().unwrap(),
        reference["unknown_site"].as_u64().unwrap(),
    );
    assert_eq!(
        (
            v["stored"].as_u64(),
            v["bots"].as_u64(),
            v["unknown_site"].as_u64()
        ),
        (Some(lines - bots - unknown), Some(bots), Some(unknown)),
        "{v}"
    );

    let checks = reference["checks"].as_array().unwrap();
    let run_all = |server: &TestServer| {
        let server_url = server.url("");
        async move {
            let mut failures = Vec::new();
            for c in checks {
                let endpoint = c["endpoint"].as_str().unwrap();
                let mut url =
                    reqwest::Url::parse(&format!("{server_url}/api/v1/stats/{endpoint}")).unwrap();
                for (k, v) in c["params"].as_object().unwrap() {
                    url.query_pairs_mut().append_pair(k, v.as_str().unwrap());
                }
                let (st, got) = get_json(url.as_str()).await;
                if st != 200 {
                    failures.push(format!("{url}: {st} {got}"));
                } else if let Err(e) = compare(c, &got) {
                    failures.push(format!("{endpoint} {}: {e}", c["params"]));
                }
            }
            failures
        }
    };
    let reads = |m: &str, source: &str| {
        metric(
            m,
            &format!("tally_web_stats_reads_total{{source=\"{source}\"}}"),
        )
        .unwrap_or(0)
    };
    let m0 = metrics_text(&server).await;
    let failures = run_all(&server).await;
    assert!(
        failures.is_empty(),
        "{} of {} differ:\n{}",
        failures.len(),
        checks.len(),
        failures.join("\n")
    );
    // Rollups answer what they cover (all but the filtered breakdown's
    // and the property's reads, which are answered from the raw events).
    let m1 = metrics_text(&server).await;
    let (rollup, raw) = (
        reads(&m1, "rollup") - reads(&m0, "rollup"),
        reads(&m1, "raw") - reads(&m0, "raw"),
    );
    assert!(
        rollup > 3 * raw && rollup > 20,
        "rollup {rollup}, raw {raw}"
    );

    // A live visit (on the other site): its first page view now, the next
    // after the restart.
    let live = r#"{"n":"pageview","u":"https://other.test/live-entry","d":"other.test"}"#;
    accepted(&server, CHROME, live).await;

    // Paging walks the ranked list.
    let all = json!({"site_id": "shop.test", "period": "30d", "property": "visit:entry_page", "metrics": "visits,visitors"});
    let (_, full) = stats_get(&server, "breakdown", &all).await;
    let mut paged = all.clone();
    paged["limit"] = json!("2");
    paged["page"] = json!("2");
    let (st, page2) = stats_get(&server, "breakdown", &paged).await;
    assert_eq!(st, 200, "{page2}");
    assert_eq!(
        page2["results"].as_array().unwrap()[..],
        full["results"].as_array().unwrap()[2..4]
    );

    // Wrong requests are named.
    for (params, needle) in [
        (json!({"period": "30d"}), "site_id"),
        (json!({"site_id": "shop.test", "period": "5y"}), "period"),
        (
            json!({"site_id": "shop.test", "metrics": "sessions"}),
            "sessions",
        ),
        (
            json!({"site_id": "shop.test", "metrics": "bounce_rate", "filters": "event:page==/docs"}),
            "page",
        ),
        (
            json!({"site_id": "shop.test", "filters": "visit:city==Oslo"}),
            "visit:city",
        ),
        (
            json!({"site_id": "shop.test", "period": "custom", "date": "2024-02-01"}),
            "date",
        ),
    ] {
        let (st, v) = stats_get(&server, "aggregate", &params).await;
        assert_eq!(st, 400, "{params}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains(needle),
            "{params}: {v}"
        );
    }
    let (st, v) = stats_get(
        &server,
        "breakdown",
        &json!({"site_id": "shop.test", "property": "event:page", "metrics": "visit_duration"}),
    )
    .await;
    assert_eq!(st, 400, "{v}");

    // After a restart (rollups and visits read back) the answers are the
    // same, and the live visit goes on.
    drop(server);
    let server = start().await;
    accepted(&server, CHROME, &live.replace("live-entry", "live-next")).await;
    let entry = json!({"site_id": "other.test", "period": "day", "property": "visit:entry_page",
        "metrics": "visits,pageviews,bounce_rate", "filters": "visit:entry_page==/live-entry"});
    let (st, v) = stats_get(&server, "breakdown", &entry).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["results"],
        json!([{"entry_page": "/live-entry", "visits": 1, "pageviews": 2, "bounce_rate": 0}])
    );
    let failures = run_all(&server).await;
    assert!(
        failures.is_empty(),
        "after restart, {} of {} differ:\n{}",
        failures.len(),
        checks.len(),
        failures.join("\n")
    );
}
