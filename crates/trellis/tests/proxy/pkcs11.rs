//! Keys in a PKCS#11 token (SoftHSM2, tokens in a directory of this test binary's own):
//! the CA signing with a token key, sidecars whose workload keys are generated and
//! used in the token, and what a user of the token sees with `pkcs11-tool` (Debian
//! `opensc`), an independent client.

use super::harness::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use trellis_pkcs11::softhsm::TestTokens;
pub use trellis_pkcs11::softhsm::MODULE;

/// This test binary's SoftHSM2 tokens (the module reads its configuration from
/// SOFTHSM2_CONF, which every trellis process the tests start inherits), or None where
/// SoftHSM2 or pkcs11-tool is missing (a failure under CI=true).
pub fn softhsm() -> Option<&'static TestTokens> {
    static TOKENS: OnceLock<Option<TestTokens>> = OnceLock::new();
    TOKENS
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap().keep();
            let tool = Command::new("pkcs11-tool").arg("--help").output().is_ok();
            match TestTokens::new(&dir) {
                Ok(t) if tool => {
                    std::fs::write(dir.join("wrong-pin"), "9999\n").unwrap();
                    Some(t)
                }
                other => {
                    let e = other
                        .err()
                        .unwrap_or_else(|| "pkcs11-tool (Debian opensc) is not installed".into());
                    assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true: {e}");
                    eprintln!("skipped: {e}");
                    None
                }
            }
        })
        .as_ref()
}

/// A fresh token `label` (user PIN 1234): the URI of `object` in it.
pub fn token(label: &str, object: &str) -> Option<String> {
    let t = softhsm()?;
    t.init(label).unwrap();
    Some(t.uri(label, Some(object)))
}

/// `pkcs11-tool` on token `label`, logged in with its user PIN, with `args`.
pub fn pkcs11_tool(label: &str, args: &[&str]) -> std::process::Output {
    Command::new("pkcs11-tool")
        .args(["--module", MODULE, "--token-label", label, "--login"])
        .args(["--pin", trellis_pkcs11::softhsm::PIN])
        .args(args)
        .output()
        .unwrap()
}

/// What `pkcs11-tool --list-objects` shows of the token's private keys, logged in.
pub fn private_keys(label: &str) -> String {
    let out = pkcs11_tool(label, &["--list-objects", "--type", "privkey"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn the_ca_signs_with_a_key_that_stays_in_the_token() {
    let Some(uri) = token("ca", "mesh-root") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let listen = format!("127.0.0.1:{}", free_port());
    let ca = ca_at(
        tempfile::tempdir().unwrap(),
        state.clone(),
        &listen,
        &["--signing-key", &uri],
    );
    // The key was generated in the token: sensitive, never extractable; no key file.
    let listed = private_keys("ca");
    assert!(listed.contains("label:      mesh-root"), "{listed}");
    assert!(listed.contains("Private Key Object; RSA"), "{listed}");
    assert!(
        listed.contains("Access:     sensitive, always sensitive, never extractable, local"),
        "{listed}"
    );
    assert!(!state.join("root-key.pem").exists());
    assert!(
        std::fs::read_dir(&state)
            .unwrap()
            .flatten()
            .all(|e| !std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .contains("PRIVATE KEY")),
        "no key material on disk"
    );
    // Certificates it issues verify under its root.
    let id = "spiffe://cluster.local/ns/default/sa/reviews";
    let issue = |ca: &Ca| {
        let token = ca.token(id, "1h");
        let client = super::ca::client(ca);
        async move {
            let key = super::ca::ec();
            client
                .create_certificate(
                    &super::ca::csr(&key, id),
                    Duration::from_secs(600),
                    trellis_ca::Credential::Token(&token),
                )
                .await
                .unwrap()
        }
    };
    let chain = issue(&ca).await;
    let root = boring::x509::X509::from_pem(ca.root_pem.as_bytes()).unwrap();
    let leaf = boring::x509::X509::from_pem(chain[0].as_bytes()).unwrap();
    assert!(leaf.verify(&root.public_key().unwrap()).unwrap());
    assert!(
        root.verify(&root.public_key().unwrap()).unwrap(),
        "self-signed in the token"
    );

    // A restart reuses the key and the root.
    let first_root = ca.root_pem.clone();
    drop(ca);
    let ca = ca_at(
        tempfile::tempdir().unwrap(),
        state.clone(),
        &listen,
        &["--signing-key", &uri],
    );
    assert_eq!(ca.root_pem, first_root);
    let leaf = boring::x509::X509::from_pem(issue(&ca).await[0].as_bytes()).unwrap();
    assert!(leaf.verify(&root.public_key().unwrap()).unwrap());
    assert_eq!(private_keys("ca").matches("Private Key Object").count(), 1);
    drop(ca);

    // A wrong PIN refuses to start, naming the token, never the PIN.
    let dir = softhsm().unwrap().dir();
    let wrong = uri.replace(
        &dir.join("pin").display().to_string(),
        &dir.join("wrong-pin").display().to_string(),
    );
    let out = Command::new(BIN)
        .args(["ca", "--state-dir"])
        .arg(&state)
        .args(["--listen", "127.0.0.1:0", "--signing-key", &wrong])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("token=ca") && err.contains("PIN is incorrect"),
        "{err}"
    );
    assert!(!err.contains("9999"), "{err}");
}

/// The bootstrap lines that put a workload's keys in the token (`object`: its label).
fn token_identity(uri: &str) -> String {
    format!("  private_key_provider: {{ pkcs11: {{ uri: \"{uri}\" }} }}\n  cert_ttl: 20s\n")
}

/// Every readable mapping of `pid` searched for `needle`.
fn memory_contains(pid: u32, needle: &[u8]) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    for line in maps.lines() {
        let mut parts = line.split_whitespace();
        let (range, perms) = (parts.next().unwrap(), parts.next().unwrap());
        if !perms.starts_with('r') {
            continue;
        }
        let (from, to) = range.split_once('-').unwrap();
        let (from, to) = (
            u64::from_str_radix(from, 16).unwrap(),
            u64::from_str_radix(to, 16).unwrap(),
        );
        if to - from > 1 << 30 || mem.seek(SeekFrom::Start(from)).is_err() {
            continue;
        }
        let mut buf = vec![0u8; (to - from) as usize];
        if mem.read_exact(&mut buf).is_err() {
            continue;
        }
        if buf.windows(needle.len()).any(|w| w == needle) {
            return true;
        }
    }
    false
}

#[tokio::test]
async fn sidecars_sign_and_rotate_with_keys_generated_in_the_token() {
    use super::control::{eventually, sidecar_with, Workload, SERVICES};
    let _quiet = quiet().await;
    let Some(page_uri) = token("mesh", "productpage") else {
        return;
    };
    let reviews_uri = page_uri.replace("object=productpage", "object=reviews");
    let mesh = tempfile::tempdir().unwrap();
    let page = Workload::new(
        "productpage-v1",
        "app: productpage, version: v1",
        "productpage",
    );
    let reviews = Workload::new("reviews-v1", "app: reviews, version: v1", "reviews");
    std::fs::write(mesh.path().join("services.yaml"), SERVICES).unwrap();
    std::fs::write(
        mesh.path().join("workloads.yaml"),
        page.entry() + &reviews.entry(),
    )
    .unwrap();
    let _app = app_on("reviews-v1", &format!("127.0.0.1:{}", reviews.app), &[]);
    let c = control_with(&[
        "--config-dir",
        &mesh.path().display().to_string(),
        "--max-cert-ttl",
        "20s",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let s_page = sidecar_with(&c, &page, dir.path(), &token_identity(&page_uri));
    let s_reviews = sidecar_with(&c, &reviews, dir.path(), &token_identity(&reviews_uri));

    // mTLS between the two, each handshake signed in the token, with a real client.
    let curl = |path: &str| {
        Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-x"])
            .arg(format!("http://127.0.0.1:{}", page.outbound))
            .arg(format!("http://reviews:9080{path}"))
            .output()
            .unwrap()
    };
    eventually(
        "productpage reaches reviews",
        Duration::from_secs(15),
        async || curl("/r").stdout == b"200",
    )
    .await;
    let r = send(
        Req::get(&format!("http://127.0.0.1:{}/headers", page.outbound))
            .header("host", "reviews:9080"),
    )
    .await
    .unwrap();
    assert!(
        r.body
            .contains("spiffe://cluster.local/ns/default/sa/productpage"),
        "{}",
        r.body
    );
    for s in [&s_page, &s_reviews] {
        assert!(
            s.metric("trellis_private_key_operations_total{provider=\"pkcs11\",op=\"sign\",result=\"success\"}")
                .await
                > 0.0,
            "handshakes signed by the token"
        );
    }
    // pkcs11-tool sees one key per workload, sensitive and never extractable.
    let listed = private_keys("mesh");
    for label in ["productpage", "reviews"] {
        assert!(listed.contains(&format!("label:      {label}")), "{listed}");
    }
    assert_eq!(
        listed.matches("never extractable").count(),
        2,
        "{listed}\n{}",
        s_page.proc.log()
    );
    // No private key on disk, in open files or in the sidecars' memory.
    for s in [&s_page, &s_reviews] {
        let pid = s.proc.pid();
        for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
        {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if target.starts_with(softhsm().unwrap().dir()) || !target.is_file() {
                continue;
            }
            let text = std::fs::read(&target).unwrap_or_default();
            assert!(
                !text.windows(11).any(|w| w == b"PRIVATE KEY"),
                "{} holds a private key",
                target.display()
            );
        }
        assert!(!memory_contains(pid, b"-----BEGIN PRIVATE KEY"));
        assert!(!memory_contains(pid, b"-----BEGIN RSA PRIVATE KEY"));
    }
    for e in walk(dir.path()) {
        let text = std::fs::read(&e).unwrap_or_default();
        assert!(
            !text.windows(11).any(|w| w == b"PRIVATE KEY"),
            "{}",
            e.display()
        );
    }

    // Rotation under load (20 s certificates: a new key at about 10 s): no request
    // fails, and each replaced key is destroyed in the token.
    let (mut sent, mut failed) = (0, 0);
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(16) {
        let r = send(
            Req::get(&format!("http://127.0.0.1:{}/r", page.outbound))
                .header("host", "reviews:9080"),
        )
        .await;
        sent += 1;
        if !r.is_ok_and(|r| r.status == 200) {
            failed += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(failed, 0, "of {sent} requests during rotation");
    s_reviews
        .wait_log(
            "replaced workload key destroyed in the token",
            Duration::from_secs(15),
        )
        .await;
    s_page
        .wait_log(
            "replaced workload key destroyed in the token",
            Duration::from_secs(15),
        )
        .await;
    let rotations = s_reviews
        .metric("trellis_identity_cert_requests_total{result=\"success\"}")
        .await;
    assert!(rotations >= 2.0, "{rotations}");
    eventually(
        "one key per workload in the token",
        Duration::from_secs(15),
        async || private_keys("mesh").matches("Private Key Object").count() == 2,
    )
    .await;
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// `trellis up` with Istio's ProxyConfig forms: one workload signs in cryptomb batches,
/// another with keys generated in a token, the rest in memory, in one mesh.
#[tokio::test]
async fn a_mesh_chooses_each_workloads_key_provider_as_istio_does() {
    let _quiet = quiet().await;
    let Some(uri) = token("up", "unused") else {
        return;
    };
    let token_uri = uri.replace(";object=unused", "");
    let dir = tempfile::tempdir().unwrap();
    let mesh = format!(
        r#"namespace: default
default_config:
  privateKeyProvider: {{}}
services:
  - name: web
    port: 8080
    workloads:
      - version: v1
        proxy_config:
          privateKeyProvider: {{ cryptomb: {{ pollDelay: 1ms, fallback: true }} }}
  - name: api
    port: 8080
    workloads:
      - version: v1
        proxy_config:
          privateKeyProvider: {{ pkcs11: {{ uri: "{token_uri}" }} }}
traffic:
  rps: 20
  requests: [{{ url: "http://web:8080/" }}, {{ url: "http://api:8080/" }}]
"#
    );
    std::fs::write(dir.path().join("mesh.yaml"), mesh).unwrap();
    let ready = dir.path().join("up.json");
    let base = free_ports(100).to_string();
    let up = Proc::spawn(
        &[
            "up",
            &dir.path().join("mesh.yaml").display().to_string(),
            "--base-port",
            &base,
            "--ready-file",
            &ready.display().to_string(),
            "--duration",
            "60s",
        ],
        tempfile::tempdir().unwrap(),
    );
    let mut up = up;
    let doc = up.wait_ready_for(&ready, Duration::from_secs(60));
    let client: std::net::SocketAddr = doc["client"].as_str().unwrap().parse().unwrap();
    for host in ["web:8080", "api:8080"] {
        let r = send(Req::get(&format!("http://{client}/")).header("host", host))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{host}: {}", r.body);
    }
    let metric = |sidecar: &str, provider: &str| {
        let admin = doc["sidecars"][sidecar].as_str().unwrap().to_string();
        let provider = provider.to_string();
        async move {
            let text = get(&format!("http://{admin}/stats/prometheus")).await.body;
            let prefix = format!(
                "trellis_private_key_operations_total{{provider=\"{provider}\",op=\"sign\",result=\"success\"}}"
            );
            text.lines()
                .filter(|l| l.starts_with(&prefix))
                .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                .sum::<f64>()
        }
    };
    assert!(
        metric("web-v1", "cryptomb").await > 0.0,
        "web signs in cryptomb batches"
    );
    assert!(
        metric("api-v1", "pkcs11").await > 0.0,
        "api signs in the token"
    );
    assert_eq!(metric("api-v1", "memory").await, 0.0);
    let listed = private_keys("up");
    assert!(listed.contains("label:      api-v1"), "{listed}");
    assert_eq!(listed.matches("Private Key Object").count(), 1, "{listed}");
    up.signal("INT");
    assert!(up.wait_exit(Duration::from_secs(10)).is_some());
}
