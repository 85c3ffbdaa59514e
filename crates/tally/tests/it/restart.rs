//! Restart without downtime: a supervisor (here the test, as systemd with
//! a socket unit) holds the listening socket and hands it to each tally
//! process in turn. While the server is restarted 10 times, clients keep
//! sending single events and queries: none fails, and every acknowledged
//! event is there afterwards.

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Starts tally on `data`, with `listener` as its socket (descriptor 3,
/// `LISTEN_FDS=1`, `LISTEN_PID` its own pid, as systemd passes it).
fn spawn(listener: &std::net::TcpListener, data: &std::path::Path) -> Child {
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tally"));
    cmd.args(["serve", "--data-dir"])
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: between fork and exec: dup2, getpid and setenv in the child.
    // (No `.env()` on the command: with one, exec would get an environment
    // built before the fork, without these two.)
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let pid = format!("{}\0", libc::getpid());
            libc::setenv(c"LISTEN_PID".as_ptr(), pid.as_ptr().cast(), 1);
            libc::setenv(c"LISTEN_FDS".as_ptr(), c"1".as_ptr(), 1);
            Ok(())
        });
    }
    cmd.spawn().expect("start tally")
}

#[tokio::test]
async fn ten_restarts_under_load_fail_no_request_and_lose_no_event() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = spawn(&listener, &data);

    // One connection per request: a request never rides on a keep-alive
    // connection the old process is closing (see docs/operations.md).
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let queries = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for w in 0..6 {
        let (client, base, stop, acked, failures, queries, next) = (
            client.clone(),
            base.clone(),
            stop.clone(),
            acked.clone(),
            failures.clone(),
            queries.clone(),
            next.clone(),
        );
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if w == 0 {
                    let r = client
                        .post(format!("{base}/v1/sql"))
                        .json(&json!({"sql": "SELECT count(*) AS n FROM restarts"}))
                        .send()
                        .await;
                    match r {
                        // Before the first event lands the stream is unknown.
                        Ok(r) if r.status() == 200 || r.status() == 400 => {
                            queries.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => failures
                            .lock()
                            .unwrap()
                            .push(format!("query: {}", r.status())),
                        Err(e) => failures.lock().unwrap().push(format!("query: {e}")),
                    }
                    continue;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let r = client
                    .post(format!("{base}/v1/events/restarts"))
                    .json(&json!({ "i": i }))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        acked.lock().unwrap().insert(i);
                    }
                    Ok(r) => failures
                        .lock()
                        .unwrap()
                        .push(format!("event {i}: {}", r.status())),
                    Err(e) => failures.lock().unwrap().push(format!("event {i}: {e}")),
                }
            }
        }));
    }

    let wait_for_progress = |since: usize| {
        let acked = acked.clone();
        async move {
            // Ends as soon as 200 more events are acknowledged.
            while acked.lock().unwrap().len() < since + 200 {
                tokio::task::yield_now().await;
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
    };
    for _ in 0..10 {
        let since = acked.lock().unwrap().len();
        wait_for_progress(since).await;
        // As `systemctl restart`: SIGTERM, wait for the exit, start anew.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap();
        assert!(status.success(), "{status}");
        child = spawn(&listener, &data);
    }
    let since = acked.lock().unwrap().len();
    wait_for_progress(since).await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(queries.load(Ordering::Relaxed) > 0);

    // Every acknowledged event is stored, once.
    let acked = acked.lock().unwrap().clone();
    let r: Value = client
        .post(format!("{base}/v1/sql"))
        .json(&json!({"sql": "SELECT count(*) AS n, count(DISTINCT i) AS d FROM restarts"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let row = &r["rows"][0];
    assert!(acked.len() >= 2200, "{}", acked.len());
    assert_eq!(row["d"].as_u64(), Some(acked.len() as u64), "{r}");
    // Events sent but never answered (none, when nothing failed) could
    // be stored too; none is stored twice.
    assert_eq!(row["n"], row["d"], "{r}");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap();
}

/// Logs written to a pipe carry no colour codes.
#[tokio::test]
async fn a_piped_log_has_no_colour_codes() {
    let server = crate::server::TestServer::start().await;
    let log = server.stderr_log();
    assert!(log.contains("WARN"), "{log}");
    assert!(!log.contains('\u{1b}'), "colour codes in a piped log");
}

/// A second server on a data directory in use is refused before it prints
/// the listening line that scripts take as "started".
#[tokio::test]
async fn a_second_server_on_a_locked_data_directory_never_says_listening() {
    let server = crate::server::TestServer::start().await;
    let out = Command::new(env!("CARGO_BIN_EXE_tally"))
        .arg("serve")
        .arg("--data-dir")
        .arg(&server.data_dir)
        .args(["--listen", "127.0.0.1:0"])
        .env("TALLY_LOG", "warn")
        .output()
        .expect("run tally");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "second server ran: {stderr}");
    assert!(!stdout.contains("listening"), "{stdout}");
    assert!(
        stderr.contains("in use by another tally process"),
        "{stderr}"
    );
    // The first one is untouched.
    let (st, _) = crate::server::get_json(&server.url("/readyz")).await;
    assert_eq!(st, 200);
}
