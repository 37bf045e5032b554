//! Multi-CA tenancy through `trellis up`: two tenants (namespaces team-a and team-b,
//! trust domains a.example and b.example), each with its own generated root. Traffic
//! stays inside a tenant unless a federation lets it cross; the CA signs for the
//! namespace's tenant only; a tenant's root rotates under load.

use super::ca::{csr, ec};
use super::harness::*;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use trellis_ca::{CaClient, Credential};

const TENANT_A: &str = "apiVersion: trellis.io/v1alpha1
kind: Tenant
metadata: { name: a }
spec:
  namespaces: [team-a]
  trustDomain: a.example
  certSigner: signer-a
";

const TENANT_B: &str = "apiVersion: trellis.io/v1alpha1
kind: Tenant
metadata: { name: b }
spec:
  namespaces: [team-b]
  trustDomain: b.example
  certSigner: signer-b
";

struct Mesh {
    up: Proc,
    doc: Value,
    work: PathBuf,
    tenants_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Mesh {
    /// `trellis up` stops its control plane, sidecars and apps on Ctrl-C; killed
    /// outright, it would leave them running.
    fn drop(&mut self) {
        self.up.signal("INT");
        if self.up.wait_exit(Duration::from_secs(15)).is_none() {
            eprintln!("trellis up did not stop on SIGINT:\n{}", self.up.log());
        }
    }
}

impl Mesh {
    /// a-web and a-api in team-a, b-web and b-api in team-b; `tenant_a` is tenant a's
    /// document.
    fn start(tenant_a: &str, certificate_ttl: Option<&str>) -> Mesh {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        std::fs::create_dir_all(&config).unwrap();
        let tenants_file = config.join("tenants.yaml");
        std::fs::write(&tenants_file, format!("{tenant_a}---\n{TENANT_B}")).unwrap();
        let ttl = certificate_ttl
            .map(|t| format!("certificate_ttl: {t}\n"))
            .unwrap_or_default();
        let mut services = String::new();
        // a-web's sidecar names its signer as Istio's proxy metadata does.
        let signer = "proxy_config: { proxyMetadata: { ISTIO_META_CERT_SIGNER: signer-a } }";
        for (name, ns, port, extra) in [
            ("a-web", "team-a", 8080, signer),
            ("a-api", "team-a", 8081, ""),
            ("b-web", "team-b", 8082, ""),
            ("b-api", "team-b", 8083, ""),
        ] {
            services.push_str(&format!(
                "  - {{ name: {name}, namespace: {ns}, port: {port}, workloads: [{{ version: v1, {extra} }}] }}\n"
            ));
        }
        std::fs::write(
            dir.path().join("mesh.yaml"),
            format!("config: config\n{ttl}services:\n{services}"),
        )
        .unwrap();
        let ready = dir.path().join("up.json");
        let work = dir.path().join("work");
        let base = free_ports(60).to_string();
        let mut up = Proc::spawn(
            &[
                "up",
                &dir.path().display().to_string(),
                "--base-port",
                &base,
                "--ready-file",
                &ready.display().to_string(),
                "--work-dir",
                &work.display().to_string(),
                "--duration",
                "170s",
            ],
            tempfile::tempdir().unwrap(),
        );
        let doc = up.wait_ready_for(&ready, Duration::from_secs(90));
        Mesh {
            up,
            doc,
            work,
            tenants_file,
            _dir: dir,
        }
    }

    /// The workload (v1) of service `name`.
    fn workload(&self, name: &str) -> &Value {
        &self.doc["workloads"][format!("{name}-v1")]
    }

    fn outbound(&self, name: &str) -> SocketAddr {
        self.workload(name)["outbound"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    fn admin(&self, name: &str) -> String {
        self.doc["sidecars"][name].as_str().unwrap().to_string()
    }

    /// `from`'s application calls `to`'s service through `from`'s sidecar.
    async fn call(&self, from: &str, to: &str) -> Resp {
        let host = self.workload(to)["host"].as_str().unwrap();
        send(Req::get(&format!("http://{}/", self.outbound(from))).header("host", host))
            .await
            .unwrap_or_else(|e| Resp {
                status: 0,
                headers: Default::default(),
                body: e,
                trailers: None,
            })
    }

    async fn reaches(&self, from: &str, to: &str) -> bool {
        let r = self.call(from, to).await;
        r.status == 200 && r.served_by() == format!("{to}-v1")
    }

    async fn status(&self) -> Value {
        let addr = self.doc["control_status"].as_str().unwrap();
        get(&format!("http://{addr}/status")).await.json()
    }

    async fn tenant_roots(&self, tenant: &str) -> Vec<String> {
        let status = self.status().await;
        let t = status["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == tenant)
            .unwrap_or_else(|| panic!("no tenant {tenant} in {status}"))
            .clone();
        t["roots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["sha256"].as_str().unwrap().to_string())
            .collect()
    }

    async fn metric(&self, sidecar: &str, prefix: &str) -> f64 {
        let text = get(&format!("http://{}/stats/prometheus", self.admin(sidecar)))
            .await
            .body;
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }

    async fn certs(&self, sidecar: &str) -> Value {
        get(&format!("http://{}/certs", self.admin(sidecar)))
            .await
            .json()
    }

    fn ca_client(&self) -> CaClient {
        let root = std::fs::read(self.work.join("root.pem")).unwrap();
        CaClient {
            address: self.doc["ca"].as_str().unwrap().to_string(),
            server_name: "localhost".into(),
            roots: boring::x509::X509::stack_from_pem(&root).unwrap(),
        }
    }

    /// A bootstrap token for `identity`, minted with the mesh CA's secret.
    fn token(&self, identity: &str) -> String {
        let out = Command::new(BIN)
            .args(["ca", "--state-dir"])
            .arg(self.work.join("ca"))
            .args(["token", "--identity", identity, "--ttl", "5m"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn set_tenant_a(&self, doc: &str) {
        std::fs::write(&self.tenants_file, format!("{doc}---\n{TENANT_B}")).unwrap();
    }
}

/// Calls `from` → `to` in a loop until stopped; counts failures.
fn keep_calling(
    mesh: &Arc<Mesh>,
    from: &'static str,
    to: &'static str,
    stop: &Arc<AtomicBool>,
) -> (Arc<AtomicU64>, Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (m, s, o, f) = (mesh.clone(), stop.clone(), ok.clone(), failed.clone());
    let task = tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
            let r = m.call(from, to).await;
            if r.status == 200 {
                o.fetch_add(1, Ordering::Relaxed);
            } else {
                f.fetch_add(1, Ordering::Relaxed);
                eprintln!("{from} -> {to}: {} {}", r.status, r.body);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    (ok, failed, task)
}

async fn until(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < timeout, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[tokio::test]
async fn tenants_stay_apart_and_the_ca_signs_only_for_the_callers_tenant() {
    let _quiet = quiet().await;
    let mesh = Mesh::start(TENANT_A, None);

    // Inside a tenant traffic flows; across tenants it fails the handshake.
    assert!(mesh.reaches("a-web", "a-api").await);
    assert!(mesh.reaches("b-web", "b-api").await);
    let across = mesh.call("a-web", "b-api").await;
    assert_ne!(across.status, 200, "{}", across.body);
    assert!(!mesh.reaches("b-web", "a-api").await);
    assert!(
        mesh.metric("a-web-v1", "trellis_upstream_tls_handshake_fail_total{cluster=\"outbound|8083||b-api.team-b.svc.cluster.local\"}")
            .await
            >= 1.0
    );

    // Each workload has its tenant's identity; the status lists both tenants.
    let certs = mesh.certs("a-web-v1").await;
    assert_eq!(
        certs["certificates"][0]["identity"],
        "spiffe://a.example/ns/team-a/sa/a-web"
    );
    assert_eq!(
        mesh.certs("b-api-v1").await["certificates"][0]["identity"],
        "spiffe://b.example/ns/team-b/sa/b-api"
    );
    let (roots_a, roots_b) = (mesh.tenant_roots("a").await, mesh.tenant_roots("b").await);
    assert_eq!(
        certs["certificates"][0]["root_sha256"].as_str().unwrap(),
        roots_a[0]
    );
    assert_eq!(mesh.workload("a-web")["tenant"], "a");

    // A sidecar of a holds no root of b: its bundles are a.example's only.
    let bundles = certs["trust_bundles"].as_array().unwrap();
    assert!(!bundles.is_empty(), "{certs}");
    for b in bundles {
        assert_eq!(b["trust_domain"], "a.example", "{b}");
        for r in b["roots"].as_array().unwrap() {
            let sha = r["sha256"].as_str().unwrap().to_string();
            assert!(roots_a.contains(&sha) && !roots_b.contains(&sha), "{b}");
        }
    }

    // The CA: a caller of team-a gets an a.example certificate from a's root ...
    let ca = mesh.ca_client();
    let me = "spiffe://a.example/ns/team-a/sa/a-web";
    let key = ec();
    let chain = ca
        .create_certificate(
            &csr(&key, me),
            Duration::from_secs(600),
            Credential::Token(&mesh.token(me)),
        )
        .await
        .unwrap();
    let leaf = boring::x509::X509::from_pem(chain[0].as_bytes()).unwrap();
    assert_eq!(trellis_tls::peer_identities(&leaf), vec![me.to_string()]);
    let root = boring::x509::X509::from_pem(chain.last().unwrap().as_bytes()).unwrap();
    assert_eq!(trellis_tls::fingerprint_hex(&root), roots_a[0]);

    // ... and asking for b's identity, b's trust domain or a namespace of b is refused.
    let before = mesh.status().await["ca"]["refused_cross_tenant"]
        .as_u64()
        .unwrap();
    for asked in [
        "spiffe://b.example/ns/team-b/sa/b-api",
        "spiffe://b.example/ns/team-a/sa/a-web",
        "spiffe://a.example/ns/team-b/sa/b-api",
        "spiffe://cluster.local/ns/team-a/sa/a-web",
    ] {
        let e = ca
            .create_certificate(
                &csr(&ec(), asked),
                Duration::from_secs(600),
                Credential::Token(&mesh.token(me)),
            )
            .await
            .unwrap_err();
        assert!(
            e.contains("PermissionDenied") && e.contains("tenant"),
            "{asked}: {e}"
        );
    }
    // Istio's CERT_SIGNER metadata must name the caller's tenant's signer.
    let signed = |signer: &'static str| {
        let (ca, token) = (&ca, mesh.token(me));
        async move {
            ca.create_certificate_with(
                &csr(&ec(), me),
                Duration::from_secs(600),
                Credential::Token(&token),
                &[("CertSigner", signer)],
            )
            .await
        }
    };
    signed("signer-a").await.unwrap();
    let e = signed("signer-b").await.unwrap_err();
    assert!(
        e.contains("PermissionDenied")
            && e.contains("CERT_SIGNER \"signer-b\" is tenant \"b\"'s signer"),
        "{e}"
    );
    let after = mesh.status().await["ca"]["refused_cross_tenant"]
        .as_u64()
        .unwrap();
    assert_eq!(after - before, 5);

    // openssl s_client with a's certificate against b's inbound: refused, and b's
    // sidecar counts why. With b's own certificate the same handshake passes.
    let dir = tempfile::tempdir().unwrap();
    let a_cert = write(dir.path(), "a.pem", &chain[..chain.len() - 1].concat());
    let a_key = write(
        dir.path(),
        "a.key",
        &String::from_utf8(key.private_key_to_pem_pkcs8().unwrap()).unwrap(),
    );
    let b_inbound: SocketAddr = mesh.workload("b-api")["inbound"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let rejected = "trellis_downstream_tls_peer_rejected_total{listener=\"inbound|";
    assert_eq!(mesh.metric("b-api-v1", rejected).await, 0.0);
    let out = s_client(
        b_inbound,
        &["-cert", &a_cert, "-key", &a_key, "-tls1_3", "-ign_eof"],
    );
    assert!(
        out.contains("alert unknown ca") || out.contains("alert number 48"),
        "{out}"
    );
    until(
        "b counts the unknown CA",
        Duration::from_secs(5),
        async || mesh.metric("b-api-v1", rejected).await >= 1.0,
    )
    .await;
    let by_reason = get(&format!(
        "http://{}/stats/prometheus",
        mesh.admin("b-api-v1")
    ))
    .await
    .body;
    assert!(by_reason.contains("reason=\"unknown_ca\""), "{by_reason}");

    let b_id = "spiffe://b.example/ns/team-b/sa/b-web";
    let b_key = ec();
    let b_chain = ca
        .create_certificate(
            &csr(&b_key, b_id),
            Duration::from_secs(600),
            Credential::Token(&mesh.token(b_id)),
        )
        .await
        .unwrap();
    let b_cert = write(dir.path(), "b.pem", &b_chain[..b_chain.len() - 1].concat());
    let b_key = write(
        dir.path(),
        "b.key",
        &String::from_utf8(b_key.private_key_to_pem_pkcs8().unwrap()).unwrap(),
    );
    let ok_before = mesh
        .metric(
            "b-api-v1",
            "trellis_downstream_tls_handshakes_total{listener=\"inbound|",
        )
        .await;
    let out = s_client(b_inbound, &["-cert", &b_cert, "-key", &b_key, "-tls1_3"]);
    assert!(!out.contains("alert"), "{out}");
    until(
        "b counts the handshake",
        Duration::from_secs(5),
        async || {
            mesh.metric(
                "b-api-v1",
                "trellis_downstream_tls_handshakes_total{listener=\"inbound|",
            )
            .await
                > ok_before
        },
    )
    .await;
    assert_eq!(mesh.metric("b-api-v1", rejected).await, 1.0);
}

#[tokio::test]
async fn a_federation_opens_one_direction_live_and_closes_again() {
    let _quiet = quiet().await;
    let mesh = Arc::new(Mesh::start(TENANT_A, None));
    assert!(mesh.reaches("a-web", "a-api").await);
    assert!(!mesh.reaches("a-web", "b-api").await);

    let stop = Arc::new(AtomicBool::new(false));
    let (a_ok, a_failed, a_task) = keep_calling(&mesh, "a-web", "a-api", &stop);
    let (b_ok, b_failed, b_task) = keep_calling(&mesh, "b-web", "b-api", &stop);

    // a may call b: from then on a → b works, b → a still does not.
    let federated =
        format!("{TENANT_A}  federation:\n    - {{ tenant: b, direction: Outbound }}\n");
    mesh.set_tenant_a(&federated);
    let opened = until("a reaches b", Duration::from_secs(20), async || {
        mesh.reaches("a-web", "b-api").await
    })
    .await;
    assert!(!mesh.reaches("b-web", "a-api").await);
    // b's inbound now trusts a's root for a.example; a's bundles hold b's for calls.
    let certs = mesh.certs("b-api-v1").await;
    let domains: Vec<&str> = certs["trust_bundles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["trust_domain"].as_str().unwrap())
        .collect();
    assert!(domains.contains(&"a.example"), "{certs}");
    let status = mesh.status().await;
    let a = status["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "a")
        .unwrap();
    assert_eq!(a["calls"], serde_json::json!(["b"]), "{status}");

    // Policies name identities across trust domains: b-api admits a-web by its
    // a.example identity and its own b-web as Istio's docs write it (cluster.local: the
    // local trust domain); a-api, federated too, is denied.
    let policy = mesh.tenants_file.with_file_name("policy.yaml");
    std::fs::write(
        &policy,
        r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: b-api-callers, namespace: team-b }
spec:
  selector: { matchLabels: { app: b-api } }
  action: ALLOW
  rules:
    - from: [{ source: { principals: ["a.example/ns/team-a/sa/a-web", "cluster.local/ns/team-b/sa/b-web"] } }]
"#,
    )
    .unwrap();
    until(
        "a-api denied by b-api's policy",
        Duration::from_secs(20),
        async || mesh.call("a-api", "b-api").await.status == 403,
    )
    .await;
    assert!(mesh.reaches("a-web", "b-api").await);
    assert!(mesh.reaches("b-web", "b-api").await);
    std::fs::remove_file(&policy).unwrap();
    until("a-api allowed again", Duration::from_secs(20), async || {
        mesh.reaches("a-api", "b-api").await
    })
    .await;

    // Switched off: refused again.
    mesh.set_tenant_a(TENANT_A);
    let closed = until(
        "a no longer reaches b",
        Duration::from_secs(20),
        async || !mesh.reaches("a-web", "b-api").await,
    )
    .await;
    // Stays closed (no pooled connection carries on).
    for _ in 0..20 {
        assert!(!mesh.reaches("a-web", "b-api").await);
    }

    stop.store(true, Ordering::Relaxed);
    a_task.await.unwrap();
    b_task.await.unwrap();
    eprintln!(
        "federation opened after {opened:?}, closed after {closed:?}; a→a {} ok, b→b {} ok",
        a_ok.load(Ordering::Relaxed),
        b_ok.load(Ordering::Relaxed)
    );
    assert!(a_ok.load(Ordering::Relaxed) > 0 && b_ok.load(Ordering::Relaxed) > 0);
    assert_eq!(
        a_failed.load(Ordering::Relaxed),
        0,
        "a → a failed during the changes"
    );
    assert_eq!(
        b_failed.load(Ordering::Relaxed),
        0,
        "b → b failed during the changes"
    );
}

#[tokio::test]
async fn a_tenant_root_rotates_under_load_without_a_failed_request() {
    let _quiet = quiet().await;
    // Certificates of 20 s: sidecars renew every 10 s.
    let mesh = Arc::new(Mesh::start(TENANT_A, Some("20s")));
    let first = mesh.tenant_roots("a").await;
    assert_eq!(first.len(), 1);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, task) = keep_calling(&mesh, "a-web", "a-api", &stop);

    // A new root signs; the old one stays trusted while certificates move over.
    mesh.set_tenant_a(&format!(
        "{TENANT_A}  ca: {{ generated: r2 }}\n  previousRoots: [{{ generated: root }}]\n"
    ));
    until("the new root signs", Duration::from_secs(20), async || {
        let r = mesh.tenant_roots("a").await;
        r.len() == 2 && r[1] == first[0]
    })
    .await;
    let second = mesh.tenant_roots("a").await[0].clone();
    assert_ne!(second, first[0]);
    for sidecar in ["a-web-v1", "a-api-v1"] {
        until(
            &format!("{sidecar} holds a certificate of the new root"),
            Duration::from_secs(30),
            async || mesh.certs(sidecar).await["certificates"][0]["root_sha256"] == second.as_str(),
        )
        .await;
    }
    // The old root goes.
    mesh.set_tenant_a(&format!("{TENANT_A}  ca: {{ generated: r2 }}\n"));
    until(
        "the old root is gone",
        Duration::from_secs(20),
        async || mesh.tenant_roots("a").await == [second.clone()],
    )
    .await;
    until(
        "sidecars trust only the new root",
        Duration::from_secs(20),
        async || {
            let certs = mesh.certs("a-api-v1").await;
            certs["trust_bundles"].as_array().unwrap().iter().all(|b| {
                b["roots"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|r| r["sha256"] == second.as_str())
            })
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    task.await.unwrap();
    assert!(
        ok.load(Ordering::Relaxed) > 100,
        "{}",
        ok.load(Ordering::Relaxed)
    );
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    // b never noticed.
    assert!(mesh.reaches("b-web", "b-api").await);
}

/// Kubernetes mode: Tenants are cluster-scoped custom resources (the CRD in
/// deploy/crds), applied with the real kubectl; the control plane follows them, refuses
/// a bad one by name, and keeps serving the rest.
#[tokio::test]
async fn tenants_from_the_cluster_as_kubectl_applies_them() {
    use trellis_kube::fake::{FakeApiServer, Kubectl};
    let _quiet = quiet().await;
    let fake = FakeApiServer::empty(Some("k8s-token")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let Some(kubectl) = Kubectl::new(&fake, dir.path()) else {
        return;
    };
    let crd =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds/trellis.io_tenants.yaml");
    kubectl.ok(&["apply", "-f", crd.to_str().unwrap()]);
    let out = kubectl.apply(&format!("{TENANT_A}---\n{TENANT_B}"));
    assert!(out.success, "{}", out.stderr);
    // The API server validates against the CRD's schema.
    let out = kubectl.apply(&TENANT_B.replace(
        "b.example",
        "b.example\n  federation: [{ tenant: a, direction: Sideways }]",
    ));
    assert!(!out.success, "{}", out.stdout);

    let status_addr = format!("127.0.0.1:{}", free_port());
    let kubeconfig = kubectl.kubeconfig().to_str().unwrap().to_string();
    let _control = control_with(&["--kubeconfig", &kubeconfig, "--status-listen", &status_addr]);
    let status = || async { get(&format!("http://{status_addr}/status")).await.json() };
    let names = |s: &Value| -> Vec<String> {
        s["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect()
    };
    let s = status().await;
    assert_eq!(names(&s), ["default", "a", "b"], "{s}");
    assert_eq!(s["tenants"][1]["trust_domain"], "a.example");

    // A tenant claiming a's namespace: the API server takes it, the control plane
    // refuses it by name, and a and b keep serving.
    let out = kubectl.apply(
        &TENANT_A
            .replace("name: a", "name: c")
            .replace("a.example", "c.example"),
    );
    assert!(out.success, "{}", out.stderr);
    until("c refused", Duration::from_secs(10), async || {
        status().await["refused"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| {
                let r = r.as_str().unwrap();
                r.contains("Tenant")
                    && r.contains(
                        "Tenant c: spec.namespaces: \"team-a\" already belongs to tenant \"a\"",
                    )
            })
    })
    .await;
    assert_eq!(names(&status().await), ["default", "a", "b"]);
    kubectl.ok(&["delete", "tenant", "c"]);

    // By label: p takes the namespaces labelled tier=pay, and follows a relabel.
    kubectl.ok(&["create", "namespace", "pay-1"]);
    kubectl.ok(&["label", "namespace", "pay-1", "tier=pay"]);
    kubectl.ok(&["create", "namespace", "pay-2"]);
    let out = kubectl.apply(
        "apiVersion: trellis.io/v1alpha1\nkind: Tenant\nmetadata: { name: p }\nspec:\n  trustDomain: p.example\n  namespaceSelector: { matchLabels: { tier: pay } }\n",
    );
    assert!(out.success, "{}", out.stderr);
    let namespaces_of = |s: &Value, name: &str| -> Vec<String> {
        s["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .map(|t| {
                t["namespaces"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n.as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    until("p has pay-1", Duration::from_secs(10), async || {
        namespaces_of(&status().await, "p") == ["pay-1"]
    })
    .await;
    kubectl.ok(&["label", "namespace", "pay-2", "tier=pay"]);
    until("p has pay-2 too", Duration::from_secs(10), async || {
        namespaces_of(&status().await, "p") == ["pay-1", "pay-2"]
    })
    .await;

    // Deleted in the cluster: gone from the mesh.
    kubectl.ok(&["delete", "tenant", "b"]);
    until("b gone", Duration::from_secs(10), async || {
        names(&status().await) == ["default", "a", "p"]
    })
    .await;
}
