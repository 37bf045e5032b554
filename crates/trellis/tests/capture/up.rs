//! `trellis up --netns`: the example mesh with every workload on a host of its own,
//! captured; an unmodified curl in the client's host reaches productpage by name, and
//! everything is gone after Ctrl-C.

use crate::hosts::{eventually, require_netns, BIN};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn netns_list() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_example_mesh_runs_captured_on_hosts_of_its_own() {
    require_netns!();
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready.json");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/bookinfo");
    let log = std::fs::File::create(dir.path().join("up.log")).unwrap();
    let mut up = Command::new(BIN)
        .args(["up", "--netns", "--duration", "60s", "--ready-file"])
        .arg(&ready)
        .arg(&example)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let read_log = || std::fs::read_to_string(dir.path().join("up.log")).unwrap_or_default();
    let ok = eventually(Duration::from_secs(60), || {
        ready.exists() || up.try_wait().unwrap().is_some()
    });
    assert!(ok && ready.exists(), "not ready:\n{}", read_log());
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ready).unwrap()).unwrap();
    let client_ns = doc["netns"]["client"].as_str().unwrap().to_string();
    let product_ns = doc["netns"]["workloads"]["productpage-v1"]
        .as_str()
        .unwrap();
    assert!(netns_list().contains(&client_ns));

    // An app that knows nothing of the mesh: curl by name, in the client's host.
    let curl = |url: &str| {
        let out = Command::new("ip")
            .args(["netns", "exec", &client_ns, "curl", "-s", "--max-time", "5"])
            .args(["-o", "/dev/stdout", "-w", "\n%{http_code}", url])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let body = curl("http://productpage:9080/productpage");
    assert!(body.ends_with("\n200"), "{body}\n{}", read_log());
    assert!(body.contains("productpage-v1"), "{body}");
    assert!(
        body.contains("URI=spiffe://cluster.local/ns/default/sa/client"),
        "the server's sidecar saw the client's certificate: {body}"
    );
    // The example's AuthorizationPolicy and routes apply to captured traffic.
    let denied = curl("http://details:9080/admin/config");
    assert!(denied.ends_with("\n403"), "{denied}");
    // The ingress gateway, on a host of its own, from the client's host.
    let gateway_admin = doc["sidecars"]["ingressgateway"].as_str().unwrap();
    let gateway_ip = gateway_admin.rsplit_once(':').unwrap().0;
    let through = curl(&format!("http://{gateway_ip}:8080/productpage"));
    assert!(through.ends_with("\n200"), "{through}");
    assert!(through.contains("productpage-v1"), "{through}");
    // productpage's own host has its capture rules.
    let rules = Command::new("ip")
        .args(["netns", "exec", product_ns, "iptables-save", "-t", "nat"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&rules.stdout).contains("TRELLIS_REDIRECT"));

    // Ctrl-C: the summary counts the built-in client's requests; the hosts are gone.
    let ok = Command::new("kill")
        .args(["-INT", &up.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    assert!(
        eventually(Duration::from_secs(20), || up.try_wait().unwrap().is_some()),
        "trellis up did not stop:\n{}",
        read_log()
    );
    let summary = read_log();
    let sent: u64 = summary
        .split("trellis up: stopped after ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        sent >= 1,
        "the built-in client sent from the client's host: {summary}"
    );
    let list = netns_list();
    assert!(!list.contains(&client_ns), "{list}");
    assert!(!Path::new("/etc/netns").join(&client_ns).exists());
}
