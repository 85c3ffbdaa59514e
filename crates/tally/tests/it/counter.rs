//! The global counter app over real HTTP: accounts, CSRF, the
//! once-per-window rule (with a short window), races, restarts and kill -9,
//! live updates, and the admin API.

use crate::server::{get_json, metric, metrics_text, post, TestServer};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// A client that keeps its cookies, as a browser tab would.
#[derive(Clone)]
pub struct Tab {
    http: reqwest::Client,
    base: String,
    cookies: BTreeMap<String, String>,
    pub csrf: String,
}

pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Tab {
    /// A new tab: GET /account gives it a CSRF cookie and token.
    pub async fn open(server: &TestServer) -> Tab {
        let mut tab = Tab {
            http: reqwest::Client::new(),
            base: server.base.clone(),
            cookies: BTreeMap::new(),
            csrf: String::new(),
        };
        let a = tab.get("/account").await;
        assert_eq!(a.status, 200, "{}", a.body);
        tab.csrf = a.body["csrf"].as_str().expect("csrf").to_string();
        assert_eq!(tab.cookies.get("tally_csrf"), Some(&tab.csrf));
        tab
    }

    /// Follows the server to its new address after a restart (the
    /// browser's cookies stay).
    pub fn reopen(&mut self, server: &TestServer) {
        self.base = server.base.clone();
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Answer {
        let resp = req
            .header("cookie", self.cookie_header())
            .send()
            .await
            .expect("request");
        for v in resp.headers().get_all("set-cookie") {
            let v = v.to_str().expect("cookie text");
            let (pair, attrs) = v.split_once(';').unwrap_or((v, ""));
            let (k, val) = pair.split_once('=').expect("cookie pair");
            if attrs.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_string(), val.to_string());
            }
        }
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer {
            status,
            body,
            headers,
        }
    }

    pub async fn get(&mut self, path: &str) -> Answer {
        let req = self.http.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    /// POSTs with the CSRF header, as the page does.
    pub async fn post(&mut self, path: &str, body: Option<Value>) -> Answer {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("x-csrf-token", self.csrf.clone());
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.send(req).await
    }

    pub async fn register(&mut self, user: &str, password: &str) -> Answer {
        let body = json!({ "username": user, "password": password });
        self.post("/account/register", Some(body)).await
    }

    pub async fn login(&mut self, user: &str, password: &str) -> Answer {
        let body = json!({ "username": user, "password": password });
        self.post("/account/login", Some(body)).await
    }

    pub async fn inc(&mut self, counter: &str) -> Answer {
        self.post(&format!("/counter/{counter}/inc"), None).await
    }
}

/// A server whose config file holds `counter` as its `[counter]` table.
pub async fn counter_server(counter: &str, data_dir: Option<&Path>) -> TestServer {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("tally.toml");
    std::fs::write(&config, format!("[counter]\n{counter}\n")).expect("config");
    let mut b = TestServer::builder().args(["--config".to_string(), config.display().to_string()]);
    if let Some(d) = data_dir {
        b = b.data_dir(d);
    }
    let server = b.start().await;
    // The config is read at start.
    drop(dir);
    server
}

async fn value(server: &TestServer, counter: &str) -> u64 {
    let (status, v) = get_json(&server.url(&format!("/counter/{counter}/value"))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["name"], counter);
    let as_of = v["as_of"].as_str().expect("as_of");
    assert!(
        chrono::DateTime::parse_from_rfc3339(as_of).is_ok(),
        "{as_of}"
    );
    v["value"].as_u64().expect("value")
}

#[tokio::test]
async fn accounts_csrf_and_the_window() {
    let server = counter_server(r#"window = "2s""#, None).await;
    let mut tab = Tab::open(&server).await;

    // CSRF: no header, a wrong header, another origin.
    let creds = json!({ "username": "ada", "password": "correct horse" });
    let mut req = reqwest::Client::new()
        .post(server.url("/account/register"))
        .json(&creds);
    let a = tab.send(req).await;
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(a.body["error"].as_str().unwrap().contains("x-csrf-token"));
    req = reqwest::Client::new()
        .post(server.url("/account/register"))
        .header("x-csrf-token", "f".repeat(64))
        .json(&creds);
    assert_eq!(tab.send(req).await.status, 403);
    req = reqwest::Client::new()
        .post(server.url("/account/register"))
        .header("x-csrf-token", tab.csrf.clone())
        .header("origin", "http://evil.example")
        .json(&creds);
    assert_eq!(tab.send(req).await.status, 403);

    // Bad input names the field.
    let a = tab.register("a", "correct horse").await;
    assert_eq!(
        (a.status, a.body["field"].as_str()),
        (400, Some("username"))
    );
    let a = tab.register("ada", "short").await;
    assert_eq!(
        (a.status, a.body["field"].as_str()),
        (400, Some("password"))
    );

    // Register: logged in at once, with an HttpOnly SameSite session cookie.
    let a = tab.register("Ada", "correct horse").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["user"], "ada");
    let set = a.headers["set-cookie"].to_str().unwrap();
    assert!(set.starts_with("tally_session="), "{set}");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax"),
        "{set}"
    );
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    assert_eq!(tab.get("/account").await.body["user"], "ada");

    // A duplicate registration, whatever the case.
    let mut other = Tab::open(&server).await;
    let a = other.register("ADA", "another password").await;
    assert_eq!(a.status, 409, "{}", a.body);

    // Not logged in: 401.
    let a = other.inc("main").await;
    assert_eq!(a.status, 401, "{}", a.body);

    // Wrong password and unknown user: the same answer.
    let wrong = other.login("ada", "wrong horse!").await;
    let unknown = other.login("nobody", "wrong horse!").await;
    assert_eq!((wrong.status, unknown.status), (401, 401));
    assert_eq!(wrong.body, unknown.body);
    assert_eq!(wrong.body["error"], "wrong username or password");

    // Increment once per window; the refusal says when.
    let before = value(&server, "main").await;
    let a = tab.inc("main").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["value"].as_u64(), Some(before + 1));
    let a = tab.inc("main").await;
    assert_eq!(a.status, 429, "{}", a.body);
    let retry = a.body["retry_after"].as_u64().expect("retry_after");
    assert!((1..=2).contains(&retry), "{}", a.body);
    assert_eq!(
        a.headers["retry-after"].to_str().unwrap(),
        retry.to_string()
    );
    let next = chrono::DateTime::parse_from_rfc3339(a.body["next_allowed_at"].as_str().unwrap())
        .expect("next_allowed_at");
    assert_eq!(value(&server, "main").await, before + 1);
    // A second login of the same user (another tab) is the same user.
    let a = other.login("ada", "correct horse").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(other.inc("main").await.status, 429);

    // After the window: allowed again.
    let wait = (next.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(20)).await;
    let a = tab.inc("main").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["value"].as_u64(), Some(before + 2));
    let (_, v) = get_json(&server.url("/getvalue")).await;
    assert_eq!(v["value"].as_u64(), Some(before + 2));
    assert_eq!(v["name"], "main");

    // Log out: the session is gone, the cookie cleared.
    let a = tab.post("/account/logout", None).await;
    assert_eq!(a.status, 200);
    assert!(!tab.cookies.contains_key("tally_session"));
    assert_eq!(tab.get("/account").await.body["user"], Value::Null);
    assert_eq!(tab.inc("main").await.status, 401);

    // Unknown counters.
    assert_eq!(get_json(&server.url("/counter/nope/value")).await.0, 404);
    assert_eq!(tab.inc("nope").await.status, 401);
    assert_eq!(other.inc("nope").await.status, 404);
}

#[tokio::test]
async fn app_streams_are_hidden_from_the_public_apis() {
    let server = counter_server("", None).await;
    let mut tab = Tab::open(&server).await;
    assert_eq!(tab.register("ada", "correct horse").await.status, 200);
    assert_eq!(tab.inc("main").await.status, 200);
    let (status, v) = post(
        &server.url("/v1/events/_tally_counter"),
        Some("application/json"),
        r#"{"kind":"inc","counter":"main","user":"mallory"}"#,
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("reserved"), "{v}");
    let (_, v) = get_json(&server.url("/v1/streams")).await;
    assert_eq!(v["streams"], json!([]), "{v}");
    assert_eq!(
        get_json(&server.url("/v1/streams/_tally_counter_accounts"))
            .await
            .0,
        404
    );
    for sql in [
        "SELECT * FROM _tally_counter_accounts",
        "SELECT * FROM streams._tally_counter",
    ] {
        let (status, v) = post(
            &server.url("/v1/sql"),
            Some("application/json"),
            json!({ "sql": sql }).to_string(),
        )
        .await;
        assert_eq!(status, 400, "{sql}: {v}");
    }
    let (status, v) = post(
        &server.url("/v1/rollups"),
        Some("application/json"),
        r#"{"name":"r","stream":"_tally_counter","intervals":["hour"],"aggregates":["count"]}"#,
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(value(&server, "main").await, 1);
}

#[tokio::test]
async fn concurrent_clicks_by_one_user_count_once_and_by_n_users_n_times() {
    let server = counter_server("registrations_per_address = 100", None).await;
    let mut tab = Tab::open(&server).await;
    assert_eq!(tab.register("ada", "correct horse").await.status, 200);
    // 32 simultaneous clicks from one session, as from many tabs.
    let clicks = (0..32).map(|_| {
        let mut t = tab.clone();
        tokio::spawn(async move { t.inc("main").await.status })
    });
    let statuses: Vec<u16> = futures::future::join_all(clicks)
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| matches!(s, 200 | 429)),
        "{statuses:?}"
    );
    assert_eq!(value(&server, "main").await, 1);

    // N users, each clicking from two connections at once.
    const N: usize = 12;
    let mut tabs = Vec::new();
    for i in 0..N {
        let mut t = Tab::open(&server).await;
        assert_eq!(
            t.register(&format!("user{i}"), "correct horse")
                .await
                .status,
            200
        );
        tabs.push(t);
    }
    let clicks = tabs
        .iter()
        .flat_map(|t| [t.clone(), t.clone()])
        .map(|mut t| tokio::spawn(async move { t.inc("main").await.status }));
    let statuses: Vec<u16> = futures::future::join_all(clicks)
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        N,
        "{statuses:?}"
    );
    assert_eq!(value(&server, "main").await, 1 + N as u64);

    // The metrics agree: 1 + N accepted, the other 31 + N refused.
    let text = metrics_text(&server).await;
    let metric = |series: &str| metric(&text, series);
    assert_eq!(
        metric(r#"tally_increments_total{outcome="accepted"}"#),
        Some(1 + N as u64)
    );
    assert_eq!(
        metric(r#"tally_increments_total{outcome="refused"}"#),
        Some(31 + N as u64)
    );
    assert_eq!(
        metric(r#"tally_account_operations_total{outcome="registered"}"#),
        Some(1 + N as u64)
    );
}

#[tokio::test]
async fn values_accounts_and_the_rule_survive_restart_and_kill_9() {
    let server = counter_server("", None).await;
    let mut tab = Tab::open(&server).await;
    assert_eq!(tab.register("ada", "correct horse").await.status, 200);
    let mut bob = Tab::open(&server).await;
    assert_eq!(bob.register("bob", "battery staple").await.status, 200);
    assert_eq!(tab.inc("main").await.status, 200);
    // Some events in segments, some only in the log.
    let (status, v) = post(&server.url("/v1/admin/flush"), None, "").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(bob.inc("main").await.status, 200);
    let (dir, _tmp) = server.into_data_dir(); // kill -9

    let mut server = counter_server("", Some(&dir)).await;
    tab.reopen(&server);
    bob.reopen(&server);
    assert_eq!(value(&server, "main").await, 2);
    // Sessions and the window survive: still refused, still logged in.
    let a = tab.inc("main").await;
    assert_eq!(a.status, 429, "{}", a.body);
    let mut carol = Tab::open(&server).await;
    assert_eq!(carol.register("carol", "correct horse").await.status, 200);
    assert_eq!(carol.inc("main").await.status, 200);
    assert_eq!(carol.post("/account/logout", None).await.status, 200);
    assert!(server.terminate().success());

    let server = counter_server("", Some(&dir)).await;
    carol.reopen(&server);
    bob.reopen(&server);
    assert_eq!(value(&server, "main").await, 3);
    assert_eq!(carol.get("/account").await.body["user"], Value::Null);
    let mut fresh = Tab::open(&server).await;
    assert_eq!(fresh.login("carol", "correct horse").await.status, 200);
    assert_eq!(fresh.login("carol", "wrong horse!").await.status, 401);
    assert_eq!(fresh.inc("main").await.status, 429);
    assert_eq!(bob.get("/account").await.body["user"], "bob");
}

#[tokio::test]
async fn login_attempts_are_limited_per_account_and_per_address() {
    let server = counter_server(
        "login_failures_per_account = 3\nlogin_attempts_per_address = 8",
        None,
    )
    .await;
    let mut tab = Tab::open(&server).await;
    assert_eq!(tab.register("ada", "correct horse").await.status, 200);
    assert_eq!(tab.register("bob", "correct horse").await.status, 200);
    for _ in 0..3 {
        assert_eq!(tab.login("ada", "wrong horse!").await.status, 401);
    }
    // Locked for the period, even with the right password.
    let a = tab.login("ada", "correct horse").await;
    assert_eq!(a.status, 429, "{}", a.body);
    assert!(a.body["retry_after"].as_u64().unwrap() > 0);
    assert!(a.headers.contains_key("retry-after"));
    // An unknown name is limited the same way (no hint it does not exist).
    for _ in 0..3 {
        assert_eq!(tab.login("ghost", "wrong horse!").await.status, 401);
    }
    assert_eq!(tab.login("ghost", "wrong horse!").await.status, 429);
    // Per address: 6 attempts so far, two more allowed.
    assert_eq!(tab.login("bob", "correct horse").await.status, 200);
    assert_eq!(tab.login("bob", "correct horse").await.status, 200);
    let a = tab.login("bob", "correct horse").await;
    assert_eq!(a.status, 429, "{}", a.body);
    assert!(
        a.body["error"].as_str().unwrap().contains("address"),
        "{}",
        a.body
    );
}

#[tokio::test]
async fn viewers_see_new_values_live_and_admins_add_counters() {
    let mut server = counter_server(r#"counters = ["main", "launch"]"#, None).await;
    assert_eq!(value(&server, "launch").await, 0);
    let (status, v) = post(
        &server.url("/v1/counters"),
        Some("application/json"),
        r#"{"name":"extra"}"#,
    )
    .await;
    assert_eq!((status, v["created"].as_bool()), (201, Some(true)), "{v}");
    let (status, _) = post(&server.url("/v1/counters"), None, r#"{"name":"extra"}"#).await;
    assert_eq!(status, 200);
    let (status, v) = post(&server.url("/v1/counters"), None, r#"{"name":"Bad Name"}"#).await;
    assert_eq!(status, 400, "{v}");
    let (_, v) = get_json(&server.url("/v1/counters")).await;
    assert_eq!(v["default"], "main");
    let names: Vec<&str> = v["counters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["extra", "launch", "main"]);

    // A viewer follows "extra" by Server-Sent Events.
    let mut events = reqwest::Client::new()
        .get(server.url("/counter/extra/events"))
        .send()
        .await
        .expect("events");
    assert_eq!(
        events.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut seen = String::new();
    let mut next_value = async |seen: &mut String| -> u64 {
        loop {
            if let Some(end) = seen.find("\n\n") {
                let block: String = seen.drain(..end + 2).collect();
                if let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) {
                    let v: Value = serde_json::from_str(data).expect("event data");
                    return v["value"].as_u64().expect("value");
                }
                continue;
            }
            let chunk = events.chunk().await.expect("chunk").expect("stream open");
            seen.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        }
    };
    assert_eq!(next_value(&mut seen).await, 0);
    let mut tab = Tab::open(&server).await;
    assert_eq!(tab.register("ada", "correct horse").await.status, 200);
    let t = Instant::now();
    assert_eq!(tab.inc("extra").await.status, 200);
    let v = tokio::time::timeout(Duration::from_secs(1), next_value(&mut seen))
        .await
        .expect("a new value within a second");
    assert_eq!(v, 1);
    assert!(t.elapsed() < Duration::from_secs(1));

    // SIGTERM with the stream open: the stream ends and the server exits
    // promptly (an open page must not hold the graceful shutdown).
    let t = Instant::now();
    assert!(server.terminate().success());
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    drop(events);

    // A counter made through the API survives a restart.
    let (dir, _tmp) = server.into_data_dir();
    let server = counter_server(r#"counters = ["main", "launch"]"#, Some(&dir)).await;
    assert_eq!(value(&server, "extra").await, 1);
}

#[tokio::test]
async fn unknown_names_take_as_long_to_refuse_as_wrong_passwords() {
    let server = counter_server("login_failures_per_account = 1000", None).await;
    let mut tab = Tab::open(&server).await;
    assert_eq!(tab.register("ada", "correct horse").await.status, 200);
    // Medians of alternating attempts: both pay one argon2id verification.
    // Without the dummy hash an unknown name would answer in microseconds,
    // a wrong password in tens of milliseconds.
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..9 {
        for (user, times) in [("ada", &mut known), ("nobody", &mut unknown)] {
            let t = Instant::now();
            let a = tab.login(user, &format!("wrong horse {i}")).await;
            times.push(t.elapsed());
            assert_eq!(a.status, 401, "{}", a.body);
        }
    }
    known.sort();
    unknown.sort();
    let (k, u) = (known[4].as_secs_f64(), unknown[4].as_secs_f64());
    assert!(
        (0.5..2.0).contains(&(u / k)),
        "median refusal: unknown name {u:.4} s, wrong password {k:.4} s"
    );
}
