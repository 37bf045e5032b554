//! `trellis up examples/bookinfo`: the example mesh end to end, observed from a client
//! that goes through the mesh's client sidecar.

use super::harness::*;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// Debian's Chromium; without it the browser checks skip, saying so, except in CI.
fn chromium() -> Option<String> {
    let path = "/usr/bin/chromium";
    if Path::new(path).exists() {
        return Some(path.into());
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{path} is missing, and CI requires it (./run test installs it)"
    );
    eprintln!("SKIPPED: the dashboard in a browser: no {path} (apt install chromium)");
    None
}

/// The page at `url` as headless Chromium shows it once its scripts ran and its live
/// updates arrived (`--timeout` ends the load after 4 s and the DOM is dumped).
fn dump_dom(chromium: &str, url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--dump-dom",
            "--timeout=4000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn call(client: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut req = Req::get(&format!("http://{client}{path}")).header("host", host);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    send(req).await.unwrap()
}

#[tokio::test]
async fn the_example_mesh_routes_splits_retries_faults_denies_and_follows_edits() {
    let _quiet = quiet().await;
    let work = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/bookinfo");
    let mesh = work.path().join("bookinfo");
    copy_dir(&example, &mesh);
    // The ingress gateways' ports (Istio's Gateway, the Gateway API's), moved to free ones.
    let (ingress, gateway_api) = (free_port(), free_port());
    for (file, port, free) in [
        (
            "istio/gateway.yaml",
            "number: 8080",
            format!("number: {ingress}"),
        ),
        (
            "istio/gateway-api.yaml",
            "port: 8081",
            format!("port: {gateway_api}"),
        ),
    ] {
        let path = mesh.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(port), "{file}");
        std::fs::write(&path, text.replace(port, &free)).unwrap();
    }
    let ready = work.path().join("up.json");
    let base = free_ports(100).to_string();
    let (m, r) = (mesh.display().to_string(), ready.display().to_string());
    let mut up = Proc::spawn(
        &[
            "up",
            &m,
            "--base-port",
            &base,
            "--ready-file",
            &r,
            "--duration",
            "120s",
        ],
        tempfile::tempdir().unwrap(),
    );
    // A whole mesh: eight sidecars and gateways with certificates, on a machine busy with other tests.
    let doc = up.wait_ready_for(&ready, Duration::from_secs(90));
    let client: SocketAddr = doc["client"].as_str().unwrap().parse().unwrap();

    // Routes: each service answers through the mesh.
    assert_eq!(
        call(client, "details:9080", "/details/0", &[])
            .await
            .served_by(),
        "details-v1"
    );
    assert_eq!(
        call(client, "productpage:9080", "/", &[]).await.served_by(),
        "productpage-v1"
    );
    // From outside the mesh, through the ingress gateway (bookinfo's Gateway and
    // VirtualService): /productpage is routed, other paths are not.
    let through = send(Req::get(&format!("http://127.0.0.1:{ingress}/productpage")))
        .await
        .unwrap();
    assert_eq!(through.status, 200, "{}", through.body);
    assert_eq!(through.served_by(), "productpage-v1");
    assert!(
        through.body.contains("sa/ingressgateway"),
        "over mTLS from the gateway: {}",
        through.body
    );
    let other = send(Req::get(&format!("http://127.0.0.1:{ingress}/details/0")))
        .await
        .unwrap();
    assert_eq!(other.status, 404);
    // The same through the Gateway API's bookinfo-gateway and HTTPRoute.
    let through = send(Req::get(&format!(
        "http://127.0.0.1:{gateway_api}/productpage"
    )))
    .await
    .unwrap();
    assert_eq!(through.status, 200, "{}", through.body);
    assert!(
        through.body.contains("sa/bookinfo-gateway"),
        "over mTLS from the gateway: {}",
        through.body
    );
    let other = send(Req::get(&format!(
        "http://127.0.0.1:{gateway_api}/details/0"
    )))
    .await
    .unwrap();
    assert_eq!(other.status, 404);

    // The dashboard in a real browser: the graph's nodes, and its edges as the apps'
    // calls make them (productpage → details and reviews, reviews v3 → ratings; the
    // built-in client sends jason's requests to v3), over mutual TLS, updated live.
    if let Some(chromium) = chromium() {
        let url = doc["dashboard"].as_str().expect("the dashboard's address");
        let edge = |from: &str, to: &str| {
            format!("class=\"edge mtls\" data-source=\"{from}\" data-destination=\"{to}\"")
        };
        let want = [
            edge("client", "productpage-v1"),
            edge("productpage-v1", "details-v1"),
            edge("productpage-v1", "reviews-v1"),
            edge("reviews-v3", "ratings-v1"),
            "<g class=\"node gateway\" data-id=\"ingressgateway\"".to_string(),
            "spiffe://cluster.local/ns/default/sa/productpage".to_string(),
            "class=\"live\">live".to_string(),
        ];
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let dom = dump_dom(&chromium, url);
            let missing: Vec<&String> = want.iter().filter(|w| !dom.contains(w.as_str())).collect();
            if missing.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the dashboard never showed {missing:?}:\n{dom}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    // Weights: the 90/10 canary; the header route sends jason to v3.
    let mut v1 = 0;
    for _ in 0..200 {
        match call(client, "reviews:9080", "/reviews/0", &[])
            .await
            .served_by()
            .as_str()
        {
            "reviews-v1" => v1 += 1,
            "reviews-v2" => {}
            other => panic!("canary traffic reached {other}"),
        }
    }
    assert!(
        (160..=195).contains(&v1),
        "v1 got {v1} of 200 (90% expected)"
    );
    let r = call(
        client,
        "reviews:9080",
        "/reviews/0",
        &[("end-user", "jason")],
    )
    .await;
    assert_eq!(r.served_by(), "reviews-v3");

    // Retries hide ratings' 20% failures; the fault delays about 10% by 50 ms.
    let (mut ok, mut slow) = (0, 0);
    for _ in 0..100 {
        let t = Instant::now();
        let r = call(client, "ratings:9080", "/ratings/0", &[]).await;
        if r.status == 200 {
            ok += 1;
        }
        if t.elapsed() >= Duration::from_millis(45) {
            slow += 1;
        }
    }
    assert!(ok >= 97, "{ok} of 100 succeeded (80 without retries)");
    // Loose on the high side: on a busy machine an undelayed request can be slow too.
    assert!(
        (1..=50).contains(&slow),
        "{slow} of 100 were delayed (10% expected)"
    );

    // The deny policy on details' admin pages.
    let r = call(client, "details:9080", "/admin/config", &[]).await;
    assert_eq!(r.status, 403, "{}", r.body);

    // Edit the canary on disk while traffic runs: all of it on v2 within a second,
    // and not one request fails meanwhile.
    let stop = Arc::new(AtomicBool::new(false));
    let (failed, sent) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = tokio::spawn({
        let (stop, failed, sent) = (stop.clone(), failed.clone(), sent.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                let r = call(client, "reviews:9080", "/reviews/0", &[]).await;
                sent.fetch_add(1, Ordering::Relaxed);
                if r.status != 200 {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
    let vs = mesh.join("istio/reviews.yaml");
    let text = std::fs::read_to_string(&vs).unwrap();
    std::fs::write(
        &vs,
        text.replace("weight: 90", "weight: 0")
            .replace("weight: 10", "weight: 100"),
    )
    .unwrap();
    let edited = Instant::now();
    loop {
        let all_v2 = {
            let mut all = true;
            for _ in 0..10 {
                all &= call(client, "reviews:9080", "/reviews/0", &[])
                    .await
                    .served_by()
                    == "reviews-v2";
            }
            all
        };
        if all_v2 {
            break;
        }
        assert!(
            edited.elapsed() < Duration::from_secs(1),
            "the edit was not applied within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("edit applied after {:?}", edited.elapsed());
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The control plane dies; traffic keeps flowing on the last config.
    let pid = doc["control_pid"].as_u64().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .unwrap()
        .success());
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "of {} requests",
        sent.load(Ordering::Relaxed)
    );
    assert_eq!(
        call(client, "reviews:9080", "/reviews/0", &[])
            .await
            .served_by(),
        "reviews-v2"
    );
    up.signal("INT");
    assert!(
        up.wait_exit(Duration::from_secs(10)).is_some(),
        "trellis up stops on Ctrl-C"
    );
}

#[test]
fn bad_mesh_files_are_refused_naming_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("no-workloads.yaml", "services:\n  - name: a\n    port: 80\n    workloads: []\n", "services[0].workloads: at least one is needed"),
        ("port.yaml", "services:\n  - name: a\n    port: eighty\n    workloads: [{ version: v1 }]\n", "services[0].port: invalid type"),
        ("rate.yaml", "services:\n  - name: a\n    port: 80\n    workloads: [{ version: v1, fail_rate: 2 }]\n", "services[0].workloads[0].fail_rate: outside 0..1"),
        ("typo.yaml", "servces: []\n", "unknown field `servces`"),
        ("twice.yaml", "services:\n  - { name: a, port: 80, workloads: [{ version: v1 }] }\n  - { name: a, port: 81, workloads: [{ version: v1 }] }\n", "services[1].name: \"a\" appears twice"),
    ];
    for (file, text, needle) in cases {
        let path = dir.path().join(file);
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(BIN)
            .arg("up")
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{file} was accepted");
        assert!(err.contains(file) && err.contains(needle), "{file}: {err}");
    }
}
