//! Web analytics in cluster mode: a day's salt is the same on every node
//! (the first to need it puts it in a shared key-value bucket), so one
//! visitor's page views through different nodes are one visitor; the
//! maintenance lease's holder attributes every node's events to visits,
//! so they are one visit too, and the Stats API answers the same whether
//! the events came through one node or were spread over three.

use crate::cluster::{metric, settle, small_cluster};
use crate::server::{get_json, TestServer};
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::time::{Duration, Instant};

const CHROME: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
const FIREFOX: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0";

/// Posts one tracker event; its status.
async fn send(client: &reqwest::Client, base: &str, ua: &str, ip: &str, body: String) -> u16 {
    client
        .post(format!("{base}/api/event"))
        .header("user-agent", ua)
        .header("x-forwarded-for", ip)
        .header("content-type", "text/plain")
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Waits until a node writes the visits (it took the lease, waited out
/// the publish timeout and read the live visits back); its index.
async fn visit_writer(nodes: &[TestServer]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for (i, n) in nodes.iter().enumerate() {
            if metric(n, "tally_web_visit_writer").await == 1.0 {
                return i;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no node writes the visits within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn stats(n: &TestServer, query: &str) -> Value {
    let (st, v) = get_json(&n.url(&format!("/api/v1/stats/{query}"))).await;
    assert_eq!(st, 200, "{query}: {v}");
    v["results"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_through_two_nodes_is_one_visitor_even_when_the_visit_writer_dies() {
    let (nats, archive, mut nodes) = small_cluster(
        &["a", "b"],
        &[
            "--web-site",
            "example.com",
            "--cluster-publish-timeout",
            "4s",
        ],
    )
    .await;
    let writer = visit_writer(&nodes).await;
    // The same browser and address, through a then b (and both at once),
    // and a second visitor on b.
    let client = reqwest::Client::new();
    let page = |p: usize| {
        format!(r#"{{"n":"pageview","u":"https://example.com/p{p}","d":"example.com"}}"#)
    };
    let (a, b) = (nodes[0].base.as_str(), nodes[1].base.as_str());
    let both = tokio::join!(
        send(&client, a, CHROME, "203.0.113.7", page(1)),
        send(&client, b, CHROME, "203.0.113.7", page(2))
    );
    assert_eq!(both, (202, 202));
    assert_eq!(send(&client, a, CHROME, "203.0.113.7", page(3)).await, 202);
    assert_eq!(send(&client, b, CHROME, "203.0.113.7", page(4)).await, 202);
    assert_eq!(send(&client, b, CHROME, "198.51.100.9", page(5)).await, 202);
    settle(&nodes).await;
    for n in &nodes {
        let v = stats(
            n,
            "aggregate?site_id=example.com&period=day&metrics=visitors,visits,pageviews,bounce_rate",
        )
        .await;
        assert_eq!(v["pageviews"]["value"], 5, "{}: {v}", n.base);
        assert_eq!(v["visitors"]["value"], 2, "{}: {v}", n.base);
        // One visit each: with per-node visits, the first visitor's page
        // views through two nodes at once were two visits.
        assert_eq!(v["visits"]["value"], 2, "{}: {v}", n.base);
        assert_eq!(v["bounce_rate"]["value"], 50, "{}: {v}", n.base);
    }

    // The node writing the visits dies; the other takes over, reads the
    // live visits back from the log, and the first visitor's next page
    // view is still in the same visit.
    let (data, _keep) = nodes[writer].kill9_keeping_data();
    let other = 1 - writer;
    let t0 = Instant::now();
    let mut status = 0;
    while status != 202 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no writer took over"
        );
        status = send(&client, &nodes[other].base, CHROME, "203.0.113.7", page(6)).await;
        if status != 202 {
            // Refused while nobody writes the visits: nothing stored.
            assert_eq!(status, 503);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    eprintln!("the visit writer moved in {:?}", t0.elapsed());
    assert_eq!(visit_writer(std::slice::from_ref(&nodes[other])).await, 0);
    let flags = [
        "--cluster-replicas",
        "1",
        "--web-site",
        "example.com",
        "--cluster-publish-timeout",
        "4s",
    ];
    nodes[writer] = crate::cluster::start_node_with(
        &nats,
        ["a", "b"][writer],
        archive.path(),
        Some(&data),
        &flags,
    )
    .await;
    settle(&nodes).await;
    for n in &nodes {
        let v = stats(
            n,
            "aggregate?site_id=example.com&period=day&metrics=visitors,visits,pageviews",
        )
        .await;
        assert_eq!(v["pageviews"]["value"], 6, "{}: {v}", n.base);
        assert_eq!(v["visits"]["value"], 2, "{}: {v}", n.base);
    }

    // A site added through one node takes events on every node; removed
    // through the other, it takes none anywhere.
    let r = client
        .post(nodes[0].url("/v1/sites"))
        .json(&serde_json::json!({ "domain": "added.example" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    settle(&nodes).await;
    let added = r#"{"n":"pageview","u":"https://added.example/","d":"added.example"}"#;
    assert_eq!(
        send(&client, &nodes[1].base, FIREFOX, "192.0.2.1", added.into()).await,
        202
    );
    settle(&nodes).await;
    for n in &nodes {
        let q = "aggregate?site_id=added.example&period=day&metrics=pageviews";
        let v = stats(n, q).await;
        assert_eq!(v["pageviews"]["value"], 1, "{}: {v}", n.base);
    }
    let r = client
        .delete(nodes[1].url("/v1/sites/added.example"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    settle(&nodes).await;
    assert_eq!(
        send(&client, &nodes[0].base, FIREFOX, "192.0.2.2", added.into()).await,
        202
    );
    settle(&nodes).await;
    for n in &nodes {
        let (_, sites) = get_json(&n.url("/v1/sites")).await;
        assert!(
            !sites.to_string().contains("added.example"),
            "{}: {sites}",
            n.base
        );
        let rows = crate::server::sql(
            n,
            "SELECT count(*) AS n FROM web_events WHERE site = 'added.example'",
        )
        .await;
        assert_eq!(rows[0]["n"], 1, "{}", n.base);
    }
}

/// One generated visitor: an address, a browser, and its steps; each step
/// is one or more events sent at once (the same page, so their order does
/// not matter).
struct Script {
    ip: String,
    ua: &'static str,
    steps: Vec<(usize, String)>,
}

fn scripts(n: usize) -> Vec<Script> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(29);
    let pages = ["/", "/pricing", "/docs", "/blog/launch", "/signup"];
    let refs = [
        "",
        "https://www.google.com/",
        "https://news.ycombinator.com/item?id=1",
    ];
    (0..n)
        .map(|i| {
            let mut steps = Vec::new();
            let referrer = refs[rng.random_range(0..refs.len())];
            let utm = if rng.random_bool(0.2) {
                "?utm_source=newsletter"
            } else {
                ""
            };
            for s in 0..rng.random_range(1..=5) {
                let page = pages[rng.random_range(0..pages.len())];
                let event = if s > 0 && rng.random_bool(0.2) {
                    format!(r#"{{"n":"Signup","u":"https://SITE{page}","d":"SITE"}}"#)
                } else {
                    let r = if s == 0 && !referrer.is_empty() {
                        format!(r#","r":"{referrer}""#)
                    } else {
                        String::new()
                    };
                    let q = if s == 0 { utm } else { "" };
                    format!(
                        r#"{{"n":"pageview","u":"https://SITE{page}{q}","d":"SITE","w":{}{r}}}"#,
                        if i % 3 == 0 { 390 } else { 1440 }
                    )
                };
                // Now and then a page's event sent twice at once (two
                // tabs), through different nodes.
                let copies = if rng.random_bool(0.15) { 2 } else { 1 };
                steps.push((copies, event));
            }
            Script {
                ip: format!("10.29.{}.{}", i / 200, i % 200 + 1),
                ua: if i % 2 == 0 { CHROME } else { FIREFOX },
                steps,
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_visits_through_one_node_or_spread_over_three_give_the_same_stats() {
    let (_nats, _archive, nodes) = small_cluster(
        &["a", "b", "c"],
        &[
            "--web-site",
            "one.example",
            "--web-site",
            "three.example",
            "--cluster-publish-timeout",
            "4s",
        ],
    )
    .await;
    visit_writer(&nodes).await;
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let client = reqwest::Client::new();
    // Every visitor's steps go to one.example through node a, and to
    // three.example through nodes picked at random, at the same moments;
    // all visitors at once.
    let mut tasks = Vec::new();
    for (i, s) in scripts(60).into_iter().enumerate() {
        let (client, bases) = (client.clone(), bases.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(i as u64);
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..500))).await;
            for (copies, event) in &s.steps {
                let mut sends = Vec::new();
                for c in 0..*copies {
                    for (site, base) in [
                        ("one.example", bases[0].clone()),
                        (
                            "three.example",
                            bases[(rng.random_range(0..3) + c) % 3].clone(),
                        ),
                    ] {
                        let body = event.replace("SITE", site);
                        let (client, ip, ua) = (client.clone(), s.ip.clone(), s.ua);
                        sends.push(tokio::spawn(async move {
                            send(&client, &base, ua, &ip, body).await
                        }));
                    }
                }
                for t in sends {
                    assert_eq!(t.await.unwrap(), 202);
                }
                tokio::time::sleep(Duration::from_millis(rng.random_range(50..400))).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    settle(&nodes).await;

    // What the scripts make, counted from them.
    let scripts = scripts(60);
    let pageviews: usize = scripts
        .iter()
        .flat_map(|s| &s.steps)
        .filter(|(_, e)| e.contains("pageview"))
        .map(|(c, _)| c)
        .sum();
    let bounces = scripts
        .iter()
        .filter(|s| {
            let events: usize = s.steps.iter().map(|(c, _)| c).sum();
            events == 1 && s.steps[0].1.contains("pageview")
        })
        .count();

    let queries = [
        "aggregate?site_id=SITE&period=day&metrics=visitors,visits,pageviews,events,bounce_rate,views_per_visit",
        "breakdown?site_id=SITE&period=day&property=event:page&metrics=visitors,pageviews&limit=20",
        "breakdown?site_id=SITE&period=day&property=visit:entry_page&metrics=visitors,visits,bounce_rate&limit=20",
        "breakdown?site_id=SITE&period=day&property=visit:exit_page&metrics=visitors,visits&limit=20",
        "breakdown?site_id=SITE&period=day&property=visit:source&metrics=visitors,visits,bounce_rate&limit=20",
        "breakdown?site_id=SITE&period=day&property=visit:device&metrics=visitors,visits&limit=20",
        "breakdown?site_id=SITE&period=day&property=event:name&metrics=visitors,events&limit=20",
    ];
    for q in queries {
        let one = stats(&nodes[0], &q.replace("SITE", "one.example")).await;
        for n in &nodes {
            let three = stats(n, &q.replace("SITE", "three.example")).await;
            assert_eq!(three, one, "{q} on {}", n.base);
        }
    }
    let one = stats(&nodes[0], &queries[0].replace("SITE", "one.example")).await;
    assert_eq!(one["visitors"]["value"], 60, "{one}");
    assert_eq!(one["visits"]["value"], 60, "{one}");
    assert_eq!(one["pageviews"]["value"], pageviews, "{one}");
    assert_eq!(
        one["bounce_rate"]["value"],
        (bounces as f64 * 100.0 / 60.0).round() as u64,
        "{one}"
    );
    // Durations come from the events' arrival times, a few milliseconds
    // apart between the two sites.
    let q = "aggregate?site_id=SITE&period=day&metrics=visit_duration";
    let one = stats(&nodes[0], &q.replace("SITE", "one.example")).await;
    for n in &nodes {
        let three = stats(n, &q.replace("SITE", "three.example")).await;
        let (d1, d3) = (
            one["visit_duration"]["value"].as_f64().unwrap(),
            three["visit_duration"]["value"].as_f64().unwrap(),
        );
        assert!((d1 - d3).abs() <= 1.0, "{one} {three}");
    }
}
