//! `trellis proxy --xds`: listeners, routes and clusters from an ADS server (the
//! trellis-xds server over real gRPC), in both protocol variants.

use super::harness::*;
use std::net::SocketAddr;
use std::time::Duration;
use trellis_config::Config;
use trellis_xds::{Cache, ServerThread};

const NODE: &str = "sidecar~127.0.0.1~productpage-v1.default~default.svc.cluster.local";

/// The proxy's view: one HTTP listener `web` on port 0 routing `/` to `to`, with
/// clusters `a` and `b`.
fn view(to: &str, a: SocketAddr, b: SocketAddr) -> trellis_xds::Snapshot {
    let yaml = http_listener(&format!(
        r#"- match: {{ prefix: "/version" }}
  direct_response: {{ status: 200, body: "{to}" }}
- match: {{ prefix: "/" }}
  route: {{ cluster: {to}, retry_policy: {{ num_retries: 2 }} }}"#
    )) + "clusters:\n"
        + &cluster("a", &[a], "")
        + &cluster("b", &[b], "");
    let config = Config::parse(&yaml, "view").unwrap();
    trellis_control::snapshot(&trellis_envoy::encode(&config).unwrap())
}

async fn until(what: &str, timeout: Duration, mut f: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// The bound address of a listener the proxy got over xDS.
async fn listener_addr(p: &Proxy, name: &str) -> Option<SocketAddr> {
    let list = p.admin_get("/listeners").await.json();
    list.as_array()?.iter().find(|l| l["name"] == name)?["addresses"][0]
        .as_str()?
        .parse()
        .ok()
}

async fn follows_the_control_plane(extra: &[&str]) {
    let (a, b) = (app("a", &[]), app("b", &[]));
    let cache = Cache::new();
    cache.set(NODE, view("a", a.addr, b.addr));
    let plane = ServerThread::start(cache.clone(), "127.0.0.1:0".parse().unwrap()).unwrap();
    let xds = plane.addr.to_string();
    let mut args = vec!["--xds", &xds, "--node-id", NODE];
    args.extend_from_slice(extra);
    // The file holds only the admin section; everything else comes over xDS.
    let p = proxy_with("", &args);

    let mut web = None;
    until("the xDS listener", Duration::from_secs(5), async || {
        web = listener_addr(&p, "web").await;
        web.is_some()
    })
    .await;
    let url = |path: &str| format!("http://{}{path}", web.unwrap());
    assert_eq!(get(&url("/")).await.served_by(), "a");
    assert_eq!(p.metric("trellis_xds_connected").await, 1.0);

    // A route change reaches the proxy within a second.
    let t = std::time::Instant::now();
    cache.set(NODE, view("b", a.addr, b.addr));
    until("the new route", Duration::from_secs(1), async || {
        get(&url("/version")).await.body == "b"
    })
    .await;
    assert_eq!(get(&url("/")).await.served_by(), "b");
    eprintln!("route change applied in {:?}", t.elapsed());

    // Something the proxy cannot honour is NACKed; the previous config keeps serving.
    let mut bad = view("b", a.addr, b.addr);
    {
        use prost::Message;
        use trellis_xds::pb::envoy::config::listener::v3::Listener;
        let l = &bad.resource(trellis_xds::LISTENER, "web").unwrap().body;
        let mut listener = Listener::decode(l.value.as_slice()).unwrap();
        listener.transparent = Some(trellis_xds::pb::google::protobuf::BoolValue { value: true });
        bad.insert(
            "web",
            trellis_xds::pb::google::protobuf::Any {
                type_url: trellis_xds::LISTENER.into(),
                value: listener.encode_to_vec(),
            },
        );
    }
    cache.set(NODE, bad);
    until("the NACK", Duration::from_secs(3), async || {
        plane.stats.nacks.load(std::sync::atomic::Ordering::Relaxed) >= 1
    })
    .await;
    assert_eq!(
        get(&url("/version")).await.body,
        "b",
        "the last good config serves"
    );
    assert_eq!(
        p.metric("trellis_xds_updates_total{result=\"rejected\"}")
            .await,
        1.0
    );
    assert!(p.proc.log().contains("transparent"), "{}", p.proc.log());

    // The control plane goes away: traffic keeps flowing on the last config.
    plane.stop();
    until("the disconnect", Duration::from_secs(3), async || {
        p.metric("trellis_xds_connected").await == 0.0
    })
    .await;
    for _ in 0..20 {
        assert_eq!(get(&url("/")).await.served_by(), "b");
    }

    // It comes back (same address, new config): the proxy reconnects and converges.
    cache.set(NODE, view("a", a.addr, b.addr));
    let plane = ServerThread::start(cache.clone(), xds.parse().unwrap()).unwrap();
    until(
        "reconnection and the new config",
        Duration::from_secs(10),
        async || get(&url("/version")).await.body == "a",
    )
    .await;
    assert_eq!(get(&url("/")).await.served_by(), "a");
    assert_eq!(
        plane
            .stats
            .streams_open
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn delta_xds_routes_nacks_and_survives_the_control_plane() {
    let _quiet = quiet().await;
    follows_the_control_plane(&[]).await;
}

#[tokio::test]
async fn sotw_xds_routes_nacks_and_survives_the_control_plane() {
    let _quiet = quiet().await;
    follows_the_control_plane(&["--xds-sotw"]).await;
}

#[tokio::test]
async fn xds_listeners_sit_beside_the_files_and_name_clashes_are_refused() {
    let (a, b) = (app("a", &[]), app("b", &[]));
    let cache = Cache::new();
    cache.set(NODE, view("a", a.addr, b.addr));
    let plane = ServerThread::start(cache.clone(), "127.0.0.1:0".parse().unwrap()).unwrap();
    let xds = plane.addr.to_string();
    // The file has its own listener and cluster; xDS adds `web`, `a` and `b`.
    let file = "listeners:\n  - name: static\n    address: 127.0.0.1:0\n    tcp: { cluster: s }\nclusters:\n"
        .to_string()
        + &cluster("s", &[b.addr], "");
    let p = proxy_with(&file, &["--xds", &xds, "--node-id", NODE]);
    until("the xDS listener", Duration::from_secs(5), async || {
        listener_addr(&p, "web").await.is_some()
    })
    .await;
    let dump = p.admin_get("/config_dump").await.json();
    let names: Vec<&str> = dump["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["static", "web"], "{dump}");

    // A control plane that sends a cluster the file already has is refused with the name.
    let clash = file
        .replace("name: s\n", "name: a\n")
        .replace("{ cluster: s }", "{ cluster: a }");
    p.write_config(&clash);
    p.wait_log("config refused", Duration::from_secs(3)).await;
    assert!(p.proc.log().contains("\"a\""), "{}", p.proc.log());
    assert!(
        listener_addr(&p, "web").await.is_some(),
        "the xDS part keeps serving"
    );
}

/// An update that changes one cluster decodes that cluster alone and puts it in place
/// under the route that names it; the listener and the other cluster stay as they were.
#[tokio::test]
async fn one_changed_cluster_is_decoded_and_put_in_place_alone() {
    let (a, b, c) = (app("a", &[]), app("b", &[]), app("c", &[]));
    let cache = Cache::new();
    cache.set(NODE, view("a", a.addr, b.addr));
    let plane = ServerThread::start(cache.clone(), "127.0.0.1:0".parse().unwrap()).unwrap();
    let xds = plane.addr.to_string();
    let p = proxy_with("", &["--xds", &xds, "--node-id", NODE]);
    let mut web = None;
    until("the xDS listener", Duration::from_secs(5), async || {
        web = listener_addr(&p, "web").await;
        web.is_some()
    })
    .await;
    let url = format!("http://{}/", web.unwrap());
    assert_eq!(get(&url).await.served_by(), "a");
    const DECODED: &str = "trellis_xds_resources_decoded_total";
    // The listener and both clusters at least (again when what they name arrives later:
    // a cluster is decoded before its endpoints come, and waits).
    let decoded = p.metric(DECODED).await;
    assert!(decoded >= 3.0, "{decoded}");

    // Cluster `a` now has c's address; nothing else changes.
    cache.set(NODE, view("a", c.addr, b.addr));
    until("the moved cluster", Duration::from_secs(3), async || {
        get(&url).await.served_by() == "c"
    })
    .await;
    assert_eq!(
        p.metric(DECODED).await,
        decoded + 1.0,
        "only cluster a decoded"
    );
    let clusters = p.admin_get("/clusters").await.json();
    let names: Vec<&str> = clusters
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
    for _ in 0..10 {
        assert_eq!(get(&url).await.served_by(), "c");
    }
    assert_eq!(
        p.metric("trellis_xds_updates_total{result=\"accepted\"}")
            .await,
        2.0
    );
}

#[test]
fn xds_tls_without_an_identity_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("boot.yaml");
    std::fs::write(&config, "admin: { address: \"127.0.0.1:0\" }\n").unwrap();
    let c = config.display().to_string();
    let mut p = Proc::spawn(
        &["proxy", "--config", &c, "--xds", "127.0.0.1:1", "--xds-tls"],
        dir,
    );
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(1));
    assert!(
        p.log().contains("--xds-tls needs the identity section"),
        "{}",
        p.log()
    );
}
