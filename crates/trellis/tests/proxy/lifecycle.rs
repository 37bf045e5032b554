use crate::harness::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn versioned(body: &str, a: std::net::SocketAddr) -> String {
    http_listener(&format!(
        r#"- match: {{ prefix: "/version" }}
  direct_response: {{ status: 200, body: "{body}" }}
- match: {{ prefix: "/" }}
  route: {{ cluster: a }}"#
    )) + "clusters:\n"
        + &cluster("a", &[a], "")
}

/// Runs `clients` loops of requests until `stop`; counts successes and failures.
fn load(
    url: String,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> (
    Arc<AtomicU64>,
    Arc<AtomicU64>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let tasks = (0..clients)
        .map(|_| {
            let (url, stop, ok, failed) = (url.clone(), stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(30);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match send(Req::get(&url)).await {
                        Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                        other => {
                            eprintln!("failed request: {other:?}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    (ok, failed, tasks)
}

#[tokio::test]
async fn hot_reload_under_load_drops_nothing() {
    let _quiet = quiet().await;
    let a = app("a", &[]);
    let p = proxy(&versioned("v1", a.addr));
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, tasks) = load(p.url("web", "/x"), 4, stop.clone());
    let (ok_v, failed_v, tasks_v) = load(p.url("web", "/version"), 2, stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 2..=6 {
        p.write_config(&versioned(&format!("v{i}"), a.addr));
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            if get(&p.url("web", "/version")).await.body == format!("v{i}") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "v{i} not live within 1 s:\n{}",
                p.proc.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks.into_iter().chain(tasks_v) {
        t.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed) + failed_v.load(Ordering::Relaxed),
        0
    );
    assert!(ok.load(Ordering::Relaxed) > 50 && ok_v.load(Ordering::Relaxed) > 10);
    assert_eq!(
        p.metric("trellis_config_reloads_total{result=\"success\"}")
            .await,
        5.0
    );
}

#[tokio::test]
async fn invalid_config_is_refused_and_the_old_one_keeps_serving() {
    let a = app("a", &[]);
    let p = proxy(&versioned("v1", a.addr));
    let bad = versioned("v2", a.addr).replace("prefix: \"/version\"", "regex: \"/version[\"");
    p.write_config(&bad);
    p.wait_log("config refused", Duration::from_secs(3)).await;
    let log = p.proc.log();
    let path = p.config_path().display().to_string();
    assert!(
        log.contains(&format!("{path}: listeners[0].http.virtual_hosts[0].routes[0].match.regex: invalid regex \"/version[\"")),
        "{log}"
    );
    assert_eq!(get(&p.url("web", "/version")).await.body, "v1");
    assert_eq!(
        p.metric("trellis_config_reloads_total{result=\"failure\"}")
            .await,
        1.0
    );
    // A listener that cannot bind refuses the whole config too.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let clash = versioned("v3", a.addr).replace(
        "address: 127.0.0.1:0",
        &format!("address: {}", taken.local_addr().unwrap()),
    );
    p.write_config(&clash);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        p.metric("trellis_config_reloads_total{result=\"failure\"}")
            .await,
        2.0
    );
    assert_eq!(get(&p.url("web", "/version")).await.body, "v1");
    // Then a good one applies.
    p.write_config(&versioned("v4", a.addr));
    p.wait_log("config reloaded", Duration::from_secs(3)).await;
    assert_eq!(get(&p.url("web", "/version")).await.body, "v4");
}

#[tokio::test]
async fn sighup_reloads_and_listeners_come_and_go() {
    let a = app("a", &[]);
    // A long watch interval so only SIGHUP can trigger the reload.
    let p = proxy_with(&versioned("v1", a.addr), &["--watch-interval", "1h"]);
    let extra = versioned("v2", a.addr).replace(
        "clusters:\n",
        "  - name: extra\n    address: 127.0.0.1:0\n    tcp: { cluster: a }\nclusters:\n",
    );
    p.write_config(&extra);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(&p.url("web", "/version")).await.body, "v1");
    p.proc.signal("HUP");
    p.wait_log("config reloaded", Duration::from_secs(3)).await;
    assert_eq!(get(&p.url("web", "/version")).await.body, "v2");
    let listeners = p.admin_get("/listeners").await.json();
    assert_eq!(listeners.as_array().unwrap().len(), 2, "{listeners}");
    // Removing it again closes its socket.
    let extra_addr: std::net::SocketAddr = listeners
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "extra")
        .unwrap()["addresses"][0]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(tokio::net::TcpStream::connect(extra_addr).await.is_ok());
    p.write_config(&versioned("v3", a.addr));
    p.proc.signal("HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(tokio::net::TcpStream::connect(extra_addr).await.is_err());
    assert_eq!(get(&p.url("web", "/version")).await.body, "v3");
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests() {
    let a = app("a", &[]);
    let mut p = proxy(&versioned("v1", a.addr));
    let url = p.url("web", "/slow?delay=800ms");
    let in_flight: Vec<_> = (0..5)
        .map(|_| {
            tokio::spawn({
                let url = url.clone();
                async move { send(Req::get(&url)).await }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    p.proc.signal("TERM");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        p.admin_get("/ready").await.status,
        503,
        "not ready while draining"
    );
    assert!(
        tokio::net::TcpStream::connect(p.addr("web")).await.is_err(),
        "no new connections while draining"
    );
    for t in in_flight {
        let r = t.await.unwrap().expect("in-flight request completes");
        assert_eq!(r.status, 200);
    }
    let code = tokio::task::spawn_blocking(move || {
        p.proc.wait_exit(Duration::from_secs(5)).map(|c| (c, p))
    })
    .await
    .unwrap();
    let (code, p) = code.expect("proxy exits after draining");
    assert_eq!(code, 0, "{}", p.proc.log());
    assert!(p.proc.log().contains("drained; exiting"));
}

#[tokio::test]
async fn bad_config_at_start_names_file_field_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "listeners:\n  - name: web\n    address: 127.0.0.1:0\n    tcp: { cluster: nope }\nclusters:\n  - name: c\n    endpoints: [\"10.0.0.1\"]\n    lb_policy: fastest\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["proxy", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}: clusters[0].lb_policy: unknown variant `fastest`",
            path.display()
        )),
        "{err}"
    );
    std::fs::write(
        &path,
        "listeners:\n  - name: web\n    address: 127.0.0.1:0\n    tcp: { cluster: nope }\nclusters:\n  - name: c\n    endpoints: [\"10.0.0.1\"]\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["proxy", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("listeners[0].tcp.cluster: cluster \"nope\" is not defined"),
        "{err}"
    );
    assert!(
        err.contains("clusters[0].endpoints[0]: \"10.0.0.1\" is not an IP:port"),
        "{err}"
    );
}
