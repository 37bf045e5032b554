//! The eBPF same-host bypass, driven through `trellis bypass` and real sockets of
//! processes placed in a cgroup of the test's own. Needs root; skipped with a printed
//! reason elsewhere.

mod host;

use host::{eventually, require_bpf, stderr, Mesh};
use std::time::Duration;

const MIB: u64 = 1024 * 1024;

#[test]
fn same_host_traffic_is_redirected_byte_exact_over_ipv4_and_ipv6() {
    require_bpf!();
    let mut mesh = Mesh::enabled();
    let (v4, v6, _) = mesh.echo_server(true);
    let mut sent = 0;
    for addr in [v4, v6] {
        for (bytes, conns) in [(1, 4), (1000, 4), (65_543, 4), (MIB, 4), (16 * MIB, 1)] {
            mesh.transfer(true, addr, bytes, conns);
            sent += bytes * u64::from(conns);
        }
    }
    let status = mesh.status();
    let c = &status["counters"];
    let redirected = c["bytes_redirected"].as_u64().unwrap();
    let passed = c["bytes_passed"].as_u64().unwrap();
    // The echo always goes by the redirect (the client is recorded before the server
    // can send); a client that wins the race with accept sends by the normal path.
    assert!(redirected >= sent, "{status}");
    assert!(redirected + passed >= 2 * sent, "{status}");
    assert_eq!(c["sockets_add_failed"], 0, "{status}");
    // 2 probes x 5 sizes, 4 or 1 connections each, 2 sockets per connection.
    assert_eq!(c["sockets_added"], 2 * (2 * (4 * 4 + 1)), "{status}");
}

#[test]
fn sockets_are_tracked_while_open_and_leave_the_map_when_closed() {
    require_bpf!();
    let mut mesh = Mesh::enabled();
    let (v4, _, _) = mesh.echo_server(true);
    mesh.spawn_probe(
        true,
        &["pingpong", "--to", &v4.to_string(), "--count", "100000000"],
    );
    let mut pair = serde_json::Value::Null;
    assert!(
        eventually(Duration::from_secs(10), || {
            pair = mesh.status()["sockets"].clone();
            pair.as_array().is_some_and(|s| s.len() == 2)
        }),
        "both ends of the connection are tracked: {pair}"
    );
    let ends = pair.as_array().unwrap();
    assert_eq!(ends[0]["local"], ends[1]["remote"], "{pair}");
    assert_eq!(ends[0]["remote"], ends[1]["local"], "{pair}");
    assert!(ends.iter().any(|e| e["local"] == v4.to_string()), "{pair}");
    assert!(mesh.counter("msgs_redirected") > 0);

    mesh.stop_processes();
    assert!(
        eventually(Duration::from_secs(5), || mesh.status()["sockets_tracked"]
            == 0),
        "closed sockets leave the map: {}",
        mesh.status()
    );
    assert!(mesh.counter("sockets_closed") >= 2);
}

#[test]
fn many_connections_half_close_and_reset() {
    require_bpf!();
    let mut mesh = Mesh::enabled();
    let (v4, v6, echo_log) = mesh.echo_server(true);
    mesh.transfer(true, v6, 262_144, 64);

    // Each client sends 1 MiB, reads one byte of echo, and aborts with RST.
    let before = mesh.counter("sockets_closed");
    let report = mesh.probe(
        true,
        &[
            "transfer",
            "--to",
            &v4.to_string(),
            "--bytes",
            "0",
            "--reset-after",
            "1048576",
            "--conns",
            "8",
        ],
    );
    assert_eq!(report["ok"], 8, "{report}");
    assert!(
        eventually(Duration::from_secs(5), || {
            std::fs::read_to_string(&echo_log)
                .unwrap()
                .matches("Connection reset by peer")
                .count()
                == 8
        }),
        "the server sees each reset: {}",
        std::fs::read_to_string(&echo_log).unwrap()
    );
    assert!(mesh.counter("sockets_closed") >= before + 16);
    // The server goes on serving, byte-exact, after the resets.
    mesh.transfer(true, v4, 3_000_000, 2);
    assert!(
        eventually(Duration::from_secs(5), || mesh.status()["sockets_tracked"]
            == 0),
        "{}",
        mesh.status()
    );
}

#[test]
fn processes_outside_the_cgroup_are_untouched() {
    require_bpf!();
    let mut mesh = Mesh::enabled();
    let (inside, _, _) = mesh.echo_server(true);
    let (outside, _, _) = mesh.echo_server(false);

    // Both ends outside: nothing is recorded or counted.
    mesh.transfer(false, outside, 2_000_000, 2);
    let status = mesh.status();
    assert_eq!(status["counters"]["sockets_added"], 0, "{status}");
    assert_eq!(status["counters"]["msgs_passed"], 0, "{status}");

    // A client outside talking to a server inside: only the server's socket is
    // recorded, and its replies take the normal path (the client is not in the map).
    mesh.spawn_probe(
        false,
        &[
            "pingpong",
            "--to",
            &inside.to_string(),
            "--count",
            "100000000",
        ],
    );
    let mut sockets = serde_json::Value::Null;
    assert!(
        eventually(Duration::from_secs(10), || {
            let s = mesh.status();
            sockets = s["sockets"].clone();
            s["counters"]["msgs_passed"].as_u64().unwrap() > 100
        }),
        "{}",
        mesh.status()
    );
    let sockets = sockets.as_array().unwrap();
    assert_eq!(sockets.len(), 1, "{sockets:?}");
    assert_eq!(sockets[0]["local"], inside.to_string(), "{sockets:?}");
    assert_eq!(mesh.counter("msgs_redirected"), 0);
    mesh.transfer(false, inside, 5_000_000, 1);
    assert_eq!(mesh.counter("msgs_redirected"), 0);
}

#[test]
fn disable_detaches_and_unpins_everything() {
    require_bpf!();
    let mut mesh = Mesh::enabled();
    let cgroup = mesh.cgroup.to_str().unwrap().to_string();
    let attached = |cgroup: &str| -> Vec<u64> {
        // bpftool lists what is attached to exactly this cgroup.
        let out = std::process::Command::new("bpftool")
            .args(["-j", "cgroup", "show", cgroup])
            .output()
            .expect("bpftool (Debian package bpftool) runs");
        let list: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::json!([]));
        list.as_array()
            .map(|l| l.iter().filter_map(|p| p["id"].as_u64()).collect())
            .unwrap_or_default()
    };
    let ids = attached(&cgroup);
    assert_eq!(ids.len(), 1, "sockops is attached to the test cgroup");
    let (v4, _, _) = mesh.echo_server(true);
    mesh.transfer(true, v4, 100_000, 1);
    assert!(mesh.counter("msgs_redirected") > 0);

    let out = mesh.cli(&["disable"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!mesh.pin_dir.exists(), "pin directory removed");
    assert!(
        attached(&cgroup).is_empty(),
        "nothing attached after disable"
    );
    assert!(
        eventually(Duration::from_secs(5), || {
            !std::process::Command::new("bpftool")
                .args(["prog", "show", "id", &ids[0].to_string()])
                .output()
                .unwrap()
                .status
                .success()
        }),
        "the sockops program is unloaded"
    );
    // Traffic in the cgroup is unaffected by the removal.
    mesh.transfer(true, v4, 100_000, 1);
    let out = mesh.cli(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["enabled"], false, "{status}");
    // A second disable says there is nothing to disable.
    let out = mesh.cli(&["disable"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not enabled"), "{}", stderr(&out));
}

#[test]
fn bad_targets_are_refused_with_the_reason() {
    require_bpf!();
    let mesh = Mesh::new();
    let enable = |cgroup: &str| mesh.cli(&["enable", "--cgroup", cgroup]);

    let root = host::cgroup2_mount().unwrap();
    let out = enable(root.to_str().unwrap());
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("root of the cgroup v2 hierarchy") && e.contains(root.to_str().unwrap()),
        "{e}"
    );

    let plain = tempfile::tempdir().unwrap();
    let e = stderr(&enable(plain.path().to_str().unwrap()));
    assert!(e.contains("not cgroup v2"), "{e}");
    let e = stderr(&enable("/no/such/cgroup"));
    assert!(e.contains("/no/such/cgroup"), "{e}");
    assert!(
        !mesh.pin_dir.exists(),
        "a refused enable leaves nothing pinned"
    );

    let cgroup = mesh.cgroup.to_str().unwrap();
    assert!(enable(cgroup).status.success());
    let e = stderr(&enable(cgroup));
    assert!(
        e.contains("already enabled on cgroup") && e.contains(cgroup),
        "{e}"
    );

    // Without privileges the CLI says what it needs (setpriv drops them).
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(host::BIN)
        .args(["bypass", "enable", "--cgroup", cgroup, "--pin-dir"])
        .arg(&mesh.pin_dir)
        .output()
        .expect("setpriv (util-linux) runs");
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains("needs root"), "{e}");
}

#[test]
fn trellis_up_runs_the_mesh_in_its_own_cgroup_with_the_bypass_and_removes_both() {
    require_bpf!();
    let work = tempfile::tempdir().unwrap();
    let ready = work.path().join("up.json");
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/bookinfo");
    let base = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut up = host::Interrupt(
        std::process::Command::new(host::BIN)
            .arg("up")
            .arg(&example)
            .args([
                "--bypass",
                "--duration",
                "60s",
                "--base-port",
                &base.to_string(),
                "--ready-file",
            ])
            .arg(&ready)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(
        eventually(Duration::from_secs(60), || ready.exists()),
        "trellis up did not come up"
    );
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&ready).unwrap()).unwrap();
    let cgroup = std::path::PathBuf::from(doc["bypass"]["cgroup"].as_str().unwrap());
    let pin_dir = std::path::PathBuf::from(doc["bypass"]["pin_dir"].as_str().unwrap());
    let pids = std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap();
    assert!(
        pids.lines().count() >= 10,
        "every mesh process is in the cgroup: {pids}"
    );

    // The built-in client's traffic crosses sidecars; the hops between local sockets
    // take the redirect.
    let status = || -> serde_json::Value {
        let out = std::process::Command::new(host::BIN)
            .args(["bypass", "status", "--json", "--pin-dir"])
            .arg(&pin_dir)
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert!(
        eventually(Duration::from_secs(10), || status()["counters"]
            ["msgs_redirected"]
            .as_u64()
            .unwrap_or(0)
            > 100),
        "{}",
        status()
    );

    // Ctrl-C: processes, bypass and cgroup all go.
    assert!(
        up.interrupt(Duration::from_secs(15)),
        "trellis up stops on Ctrl-C"
    );
    assert!(!pin_dir.exists(), "{} still pinned", pin_dir.display());
    assert!(!cgroup.exists(), "{} still there", cgroup.display());
}
