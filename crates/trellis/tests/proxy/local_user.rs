//! What another (unprivileged) user of the machine can do to a `trellis up` mesh:
//! nothing. Its work directory is new, random and owner-only; its secrets are
//! owner-only; a bootstrap token is good for one key; xDS is served only over mutual
//! TLS. The other user is played by `setpriv` as `nobody`.

use super::ca::{csr, ec};
use super::harness::*;
use boring::x509::X509;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use trellis_ca::{CaClient, Credential};

const MESH: &str = "namespace: default\nservices:\n  - name: web\n    port: 8080\n    workloads: [{ version: v1 }]\ntraffic:\n  rps: 1\n  requests: [{ url: \"http://web:8080/\" }]\n";

/// Runs `args` as `nobody` (uid/gid 65534, no groups, no capabilities).
fn as_nobody(args: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .args(args)
        .output()
        .expect("setpriv (util-linux) runs")
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn another_local_user_cannot_read_the_mesh_or_take_its_identities() {
    let _quiet = quiet().await;
    if skip_without_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A shared directory as /tmp is (sticky, everyone may create in it).
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let mesh = dir.path().join("mesh.yaml");
    std::fs::write(&mesh, MESH).unwrap();

    // A work directory another user made first (with a CA key of theirs in it) is
    // never adopted: trellis up refuses to start.
    let planted = dir.path().join("planted");
    let out = as_nobody(&["mkdir", "-p", &format!("{}/ca", planted.display())]);
    assert!(out.status.success(), "{out:?}");
    let out = as_nobody(&[
        "sh",
        "-c",
        &format!("echo not-a-key > {}/ca/root-key.pem", planted.display()),
    ]);
    assert!(out.status.success(), "{out:?}");
    let out = Command::new(BIN)
        .args(["up"])
        .arg(&mesh)
        .arg("--work-dir")
        .arg(&planted)
        .args(["--duration", "1s"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "started in a planted directory: {err}"
    );
    assert!(err.contains("already exists"), "{err}");

    // The default work directory: new, random, owner-only.
    let ready = dir.path().join("up.json");
    let base = free_ports(100).to_string();
    let mut up = Proc::spawn(
        &[
            "up",
            &mesh.display().to_string(),
            "--base-port",
            &base,
            "--ready-file",
            &ready.display().to_string(),
            "--duration",
            "60s",
        ],
        tempfile::tempdir().unwrap(),
    );
    let doc = up.wait_ready_for(&ready, Duration::from_secs(60));
    let logs = Path::new(doc["logs"].as_str().unwrap()).to_path_buf();
    let work = logs.parent().unwrap();
    let name = work.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        name.starts_with("trellis-up-") && name != format!("trellis-up-{}", up.pid()),
        "{name}: not a name another user could guess"
    );
    assert_eq!(mode(work), 0o700, "{}", work.display());
    assert_eq!(std::fs::metadata(work).unwrap().uid(), 0);
    let token = work.join("sidecars/web-v1/token");
    let bootstrap = work.join("sidecars/web-v1/bootstrap.yaml");
    for secret in [&token, &bootstrap, &work.join("ca/root-key.pem")] {
        assert_eq!(mode(secret), 0o600, "{}", secret.display());
    }
    for target in [
        work.to_path_buf(),
        token.clone(),
        work.join("ca/root-key.pem"),
    ] {
        let out = as_nobody(&["cat", &target.display().to_string()]);
        assert!(!out.status.success(), "nobody read {}", target.display());
        let out = as_nobody(&["ls", &target.display().to_string()]);
        assert!(!out.status.success(), "nobody listed {}", target.display());
    }

    // The token has been used by web-v1's sidecar: with any other key it is worthless.
    let ca = doc["ca"].as_str().unwrap().to_string();
    let root = std::fs::read_to_string(work.join("root.pem")).unwrap();
    let client = CaClient {
        address: ca.clone(),
        server_name: "localhost".into(),
        roots: X509::stack_from_pem(root.as_bytes()).unwrap(),
    };
    let stolen = std::fs::read_to_string(&token).unwrap();
    let e = client
        .create_certificate(
            &csr(&ec(), "spiffe://cluster.local/ns/default/sa/web"),
            Duration::from_secs(600),
            Credential::Token(stolen.trim()),
        )
        .await
        .unwrap_err();
    assert!(e.contains("already used with another key"), "{e}");

    // xDS is served only over mutual TLS on the CA port: no plaintext port at all.
    assert_eq!(doc["xds"].as_str(), Some(ca.as_str()));
    let control_log = std::fs::read_to_string(logs.join("control.log")).unwrap();
    assert!(!control_log.contains("plaintext xDS"), "{control_log}");

    up.signal("INT");
    assert!(up.wait_exit(Duration::from_secs(10)).is_some());
    assert!(
        !work.exists(),
        "the default work directory is removed on exit"
    );
}

/// Root is needed to be another user; without it (a laptop) say so and skip, except
/// in CI.
fn skip_without_root() -> bool {
    let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    if !root {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true: this test needs root (setpriv to another user)"
        );
        eprintln!("skipped: needs root to act as another local user");
    }
    !root
}
