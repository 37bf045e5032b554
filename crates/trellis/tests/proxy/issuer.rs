//! `trellis issuer`, the Trusted Certificate Service, as a cluster's users meet it: the
//! CRDs applied with kubectl to the test API server, issuers whose CA keys are made in a
//! SoftHSM2 token, CSRs created and approved with kubectl and checked with `openssl
//! verify`, cert-manager CertificateRequests as cert-manager writes them, and a signer
//! killed in the middle of a batch.

use super::harness::*;
use super::pkcs11::{pkcs11_tool, softhsm};
use base64::Engine as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use trellis_kube::fake::{FakeApiServer, Kubectl};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

struct Cluster {
    fake: FakeApiServer,
    kubectl: Kubectl,
    dir: tempfile::TempDir,
    /// The token's URI, without an object.
    token: String,
    label: String,
}

/// A test API server with the issuer CRDs and namespace `shop`, and a fresh token.
fn cluster(label: &str) -> Option<Cluster> {
    let uri = softhsm()?.init(label).unwrap();
    let fake = FakeApiServer::empty(Some("k8s-token")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubectl = Kubectl::new(&fake, dir.path())?;
    let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds");
    kubectl.ok(&["apply", "-f", crds.to_str().unwrap()]);
    kubectl.ok(&["create", "namespace", "shop"]);
    Some(Cluster {
        fake,
        kubectl,
        dir,
        token: uri,
        label: label.into(),
    })
}

impl Cluster {
    fn signer(&self) -> Proc {
        let kubeconfig = self.kubectl.kubeconfig().to_str().unwrap().to_string();
        let token = format!("tcs={}", self.token);
        Proc::spawn(
            &["issuer", "--kubeconfig", &kubeconfig, "--token", &token],
            tempfile::tempdir().unwrap(),
        )
    }

    /// `trellis control` in RA mode over the mesh in `mesh`, its workloads' certificates
    /// from the cluster issuer `mesh` (whose root is in `root_file`).
    fn ra_control(&self, mesh: &Path, root_file: &Path, extra: &[&str]) -> Control {
        let mut args = vec![
            "--config-dir",
            mesh.to_str().unwrap(),
            "--kubeconfig",
            self.kubectl.kubeconfig().to_str().unwrap(),
            "--ca-mode",
            "kubernetes-csr",
            "--signer",
            "clusterissuers.trellis.io/mesh",
            "--signer-root",
            root_file.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        control_with(&args)
    }

    fn get(&self, args: &[&str]) -> String {
        self.kubectl.ok(args)
    }

    /// Waits until `kubectl args` prints something `done` accepts.
    fn until(
        &self,
        what: &str,
        args: &[&str],
        done: impl Fn(&str) -> bool,
        signer: &Proc,
    ) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.kubectl.run(args, None);
            if out.success && done(&out.stdout) {
                return out.stdout;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: kubectl {args:?} printed {:?} {:?}\nsigner:\n{}",
                out.stdout,
                out.stderr,
                signer.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn ready(&self, kind: &str, name: &str, signer: &Proc) -> String {
        let args = [
            "get",
            kind,
            name,
            "-n",
            "shop",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ];
        self.until(
            &format!("{kind} {name} ready"),
            &args,
            |s| s == "True",
            signer,
        );
        self.get(&[
            "get",
            kind,
            name,
            "-n",
            "shop",
            "-o",
            "jsonpath={.status.caCertificate}",
        ])
    }
}

/// A PEM CSR for `cn` with a DNS name, from openssl; `key` picks the key
/// (`ec:P-256`, `rsa:1024`, ...).
fn csr(dir: &Path, cn: &str, key: &str) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args(["req", "-new", "-nodes", "-subj", &format!("/CN={cn}")]);
    cmd.args(["-addext", &format!("subjectAltName=DNS:{cn}.shop.svc")]);
    match key.split_once(':') {
        Some(("ec", curve)) => cmd.args([
            "-newkey",
            "ec",
            "-pkeyopt",
            &format!("ec_paramgen_curve:{curve}"),
        ]),
        _ => cmd.args(["-newkey", key]),
    };
    cmd.arg("-keyout").arg(dir.join(format!("{cn}.key")));
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn csr_yaml(name: &str, pem: &str, signer: &str, usages: &str, seconds: u32) -> String {
    format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata: {{name: {name}}}\n\
         spec:\n  request: {}\n  signerName: {signer}\n  expirationSeconds: {seconds}\n  usages: [{usages}]\n",
        B64.encode(pem)
    )
}

/// `openssl verify` of `cert` (leaf first, then intermediates) against `root`.
fn verify(dir: &Path, root: &str, chain: &str, purpose: &str) -> String {
    let (r, c, u) = (
        dir.join("root.pem"),
        dir.join("leaf.pem"),
        dir.join("untrusted.pem"),
    );
    std::fs::write(&r, root).unwrap();
    let blocks: Vec<&str> = chain
        .split_inclusive("-----END CERTIFICATE-----\n")
        .collect();
    std::fs::write(&c, blocks[0]).unwrap();
    std::fs::write(&u, blocks[1..].concat()).unwrap();
    let mut cmd = Command::new("openssl");
    cmd.arg("verify")
        .arg("-CAfile")
        .arg(&r)
        .args(["-purpose", purpose]);
    if blocks.len() > 1 {
        cmd.arg("-untrusted").arg(&u);
    }
    let out = cmd.arg(&c).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn text(pem_file: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(pem_file)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn csr_status(c: &Cluster, name: &str) -> serde_json::Value {
    c.fake
        .object(
            "certificates.k8s.io/v1",
            "CertificateSigningRequest",
            "",
            name,
        )
        .unwrap()["status"]
        .clone()
}

#[test]
fn kubectl_csrs_are_signed_by_a_token_key_once_approved() {
    let Some(c) = cluster("tcs-csr") else {
        return;
    };
    c.kubectl
        .apply("apiVersion: trellis.io/v1alpha1\nkind: TrellisIssuer\nmetadata: {name: ca, namespace: shop}\n\
                spec: {token: tcs, maxTTL: 48h, subject: {commonName: shop CA, organization: Example}}\n");
    let signer = c.signer();
    let root = c.ready("trellisissuer", "ca", &signer);
    assert!(root.starts_with("-----BEGIN CERTIFICATE-----"), "{root}");

    let dir = c.dir.path();
    let good = csr(dir, "reviews", "ec:prime256v1");
    let yaml = csr_yaml(
        "reviews",
        &good,
        "trellis.io/shop.ca",
        "digital signature, key encipherment, client auth, server auth",
        30 * 86400,
    );
    c.kubectl.apply(&yaml);
    c.kubectl.apply(&csr_yaml(
        "other-signer",
        &good,
        "example.com/other",
        "client auth",
        3600,
    ));
    c.kubectl.apply(&csr_yaml(
        "denied",
        &good,
        "trellis.io/shop.ca",
        "client auth",
        3600,
    ));
    c.kubectl.apply(&csr_yaml(
        "cert-sign",
        &good,
        "trellis.io/shop.ca",
        "cert sign",
        3600,
    ));
    c.kubectl.apply(&csr_yaml(
        "weak",
        &csr(dir, "weak", "rsa:1024"),
        "trellis.io/shop.ca",
        "client auth",
        3600,
    ));
    // A CSR whose signature does not verify: its last signature byte changed.
    let der = B64
        .decode(
            good.lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>(),
        )
        .unwrap();
    let mut broken = der.clone();
    *broken.last_mut().unwrap() ^= 1;
    let broken = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        B64.encode(&broken)
    );
    c.kubectl.apply(&csr_yaml(
        "broken",
        &broken,
        "trellis.io/shop.ca",
        "client auth",
        3600,
    ));

    // Not approved yet: not signed.
    std::thread::sleep(Duration::from_millis(500));
    assert!(csr_status(&c, "reviews")["certificate"].is_null());

    for name in ["reviews", "other-signer", "cert-sign", "weak", "broken"] {
        c.kubectl.ok(&["certificate", "approve", name]);
    }
    c.kubectl.ok(&["certificate", "deny", "denied"]);
    let chain = c.until(
        "reviews signed",
        &[
            "get",
            "csr",
            "reviews",
            "-o",
            "jsonpath={.status.certificate}",
        ],
        |s| !s.is_empty(),
        &signer,
    );
    let chain = String::from_utf8(B64.decode(chain.trim()).unwrap()).unwrap();
    assert_eq!(
        verify(dir, &root, &chain, "sslclient").trim_end(),
        format!("{}: OK", dir.join("leaf.pem").display())
    );
    let leaf = text(&dir.join("leaf.pem"));
    assert!(leaf.contains("Subject: CN = reviews"), "{leaf}");
    assert!(leaf.contains("DNS:reviews.shop.svc"), "{leaf}");
    assert!(leaf.contains("TLS Web Client Authentication"), "{leaf}");
    assert!(leaf.contains("Issuer: O = Example, CN = shop CA"), "{leaf}");
    // Asked for 30 days, clamped to the issuer's 48 hours.
    let out = Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-checkend",
            &(49 * 3600).to_string(),
            "-in",
        ])
        .arg(dir.join("leaf.pem"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "valid past 49 h: {leaf}");

    for (name, reason) in [
        ("cert-sign", "UsageNotAllowed"),
        ("weak", "KeyNotAllowed"),
        ("broken", "InvalidCSR"),
    ] {
        let got = c.until(
            &format!("{name} failed"),
            &[
                "get",
                "csr",
                name,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Failed\")].reason}",
            ],
            |s| !s.is_empty(),
            &signer,
        );
        assert_eq!(got, reason, "{name}");
        assert!(csr_status(&c, name)["certificate"].is_null(), "{name}");
    }
    // Another signer's CSR and a denied one are never touched.
    std::thread::sleep(Duration::from_millis(500));
    for name in ["other-signer", "denied"] {
        let s = csr_status(&c, name);
        assert!(s["certificate"].is_null(), "{name}: {s}");
        assert!(!s.to_string().contains("Failed"), "{name}: {s}");
    }

    // The CA key and its certificate are in the token, as pkcs11-tool (an independent
    // client) sees them: generated there, never extractable.
    let out = pkcs11_tool(&c.label, &["--list-objects"]);
    let objects = String::from_utf8_lossy(&out.stdout);
    assert!(
        objects.contains("label:      trellis-issuer.shop.ca"),
        "{objects}"
    );
    assert!(objects.contains("Certificate Object"), "{objects}");
    let private = objects
        .split("Private Key Object")
        .nth(1)
        .unwrap_or_default();
    let access = private
        .lines()
        .find(|l| l.trim_start().starts_with("Access:"))
        .unwrap_or_default();
    for attribute in [
        "sensitive",
        "always sensitive",
        "never extractable",
        "local",
    ] {
        assert!(access.contains(attribute), "{attribute}: {objects}");
    }
}

/// Sets `status` of the CertificateRequest `name` in `shop` as cert-manager's approver
/// does (through the status subresource).
async fn set_cr_status(c: &Cluster, name: &str, status: serde_json::Value) {
    use kube::api::{DynamicObject, GroupVersionKind, Patch, PatchParams};
    let client = trellis_kube::client(Some(c.kubectl.kubeconfig()))
        .await
        .unwrap();
    let ar = kube::api::ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cert-manager.io", "v1", "CertificateRequest"),
        "certificaterequests",
    );
    let api: kube::Api<DynamicObject> = kube::Api::namespaced_with(client, "shop", &ar);
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": status })),
    )
    .await
    .unwrap();
}

fn approved() -> serde_json::Value {
    // As cert-manager's approver controller writes it.
    serde_json::json!({"conditions": [{"type": "Approved", "status": "True",
        "reason": "cert-manager.io", "message": "Certificate request has been approved by cert-manager.io",
        "lastTransitionTime": "2026-12-07T00:00:00Z"}]})
}

#[tokio::test]
async fn cert_manager_requests_get_certificates_under_its_contract() {
    let Some(c) = cluster("tcs-cm") else {
        return;
    };
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cert-manager");
    c.kubectl.ok(&[
        "apply",
        "-f",
        fixtures
            .join("certificaterequests-crd.yaml")
            .to_str()
            .unwrap(),
    ]);
    c.kubectl.apply(
        "apiVersion: trellis.io/v1alpha1\nkind: TrellisClusterIssuer\nmetadata: {name: root}\n\
         spec: {token: tcs, keyAlgorithm: RSA-2048}\n---\n\
         apiVersion: trellis.io/v1alpha1\nkind: TrellisIssuer\nmetadata: {name: ca, namespace: shop}\n\
         spec: {token: tcs, parent: {kind: TrellisClusterIssuer, name: root}}\n---\n\
         apiVersion: trellis.io/v1alpha1\nkind: TrellisIssuer\nmetadata: {name: absent, namespace: shop}\n\
         spec: {token: no-such-token}\n",
    );
    let signer = c.signer();
    let root = c.ready("trellisclusterissuer", "root", &signer);
    // The intermediate's chain ends in the cluster issuer's root.
    assert_eq!(c.ready("trellisissuer", "ca", &signer), root);
    let reason = c.until(
        "the issuer without its token says why",
        &[
            "get",
            "trellisissuer",
            "absent",
            "-n",
            "shop",
            "-o",
            "jsonpath={.status.conditions[0].reason}",
        ],
        |s| !s.is_empty(),
        &signer,
    );
    assert_eq!(reason, "TokenNotConfigured");
    let message = c.get(&[
        "get",
        "trellisissuer",
        "absent",
        "-n",
        "shop",
        "-o",
        "jsonpath={.status.conditions[0].message}",
    ]);
    assert!(
        message.contains("spec.token") && message.contains("no-such-token"),
        "{message}"
    );

    let template = std::fs::read_to_string(fixtures.join("certificaterequest.yaml")).unwrap();
    let dir = c.dir.path();
    let request = |name: &str| {
        template
            .replace("name: NAME", &format!("name: {name}"))
            .replace("REQUEST", &B64.encode(csr(dir, name, "ec:prime256v1")))
    };
    for name in ["reviews-tls-1", "denied-1", "waiting-1"] {
        let out = c.kubectl.apply(&request(name));
        assert!(out.success, "{}", out.stderr);
    }
    let absent = request("absent-1").replace("name: ca\n", "name: absent\n");
    c.kubectl.apply(&absent);
    let other = request("other-1")
        .replace("group: trellis.io", "group: cert-manager.io")
        .replace("kind: TrellisIssuer", "kind: Issuer");
    c.kubectl.apply(&other);

    set_cr_status(&c, "reviews-tls-1", approved()).await;
    set_cr_status(&c, "absent-1", approved()).await;
    set_cr_status(&c, "other-1", approved()).await;
    set_cr_status(
        &c,
        "denied-1",
        serde_json::json!({"conditions": [{"type": "Denied", "status": "True", "reason": "policy.cert-manager.io",
            "message": "denied by policy", "lastTransitionTime": "2026-12-07T00:00:00Z"}]}),
    )
    .await;

    let ready = |name: &str, reason: &str| {
        let args = [
            "get",
            "certificaterequest",
            name,
            "-n",
            "shop",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].reason}",
        ];
        c.until(
            &format!("{name} Ready reason {reason}"),
            &args,
            |s| s == reason,
            &signer,
        );
    };
    ready("reviews-tls-1", "Issued");
    let cr = c
        .fake
        .object(
            "cert-manager.io/v1",
            "CertificateRequest",
            "shop",
            "reviews-tls-1",
        )
        .unwrap();
    let status = &cr["status"];
    let chain =
        String::from_utf8(B64.decode(status["certificate"].as_str().unwrap()).unwrap()).unwrap();
    let ca = String::from_utf8(B64.decode(status["ca"].as_str().unwrap()).unwrap()).unwrap();
    assert_eq!(ca, root, "status.ca is the root");
    assert_eq!(
        chain.matches("BEGIN CERTIFICATE").count(),
        2,
        "leaf and intermediate: {chain}"
    );
    assert!(verify(dir, &ca, &chain, "sslserver")
        .trim_end()
        .ends_with(": OK"));
    let leaf = text(&dir.join("leaf.pem"));
    assert!(
        leaf.contains("TLS Web Server Authentication") && leaf.contains("Digital Signature"),
        "{leaf}"
    );
    let ready_condition = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert_eq!(ready_condition["status"], "True");
    assert!(ready_condition["lastTransitionTime"].is_string());

    ready("denied-1", "Denied");
    let denied = c
        .fake
        .object(
            "cert-manager.io/v1",
            "CertificateRequest",
            "shop",
            "denied-1",
        )
        .unwrap();
    assert!(denied["status"]["certificate"].is_null());
    assert!(denied["status"]["failureTime"].is_string());
    ready("waiting-1", "Pending");
    ready("absent-1", "Pending");
    let absent = c
        .fake
        .object(
            "cert-manager.io/v1",
            "CertificateRequest",
            "shop",
            "absent-1",
        )
        .unwrap();
    assert!(
        absent
            .to_string()
            .contains("Waiting for TrellisIssuer shop/absent to be ready"),
        "{absent}"
    );
    // Another issuer's request: untouched.
    let other = c
        .fake
        .object(
            "cert-manager.io/v1",
            "CertificateRequest",
            "shop",
            "other-1",
        )
        .unwrap();
    assert_eq!(
        other["status"]["conditions"].as_array().unwrap().len(),
        1,
        "{other}"
    );

    // Approved later: issued then.
    set_cr_status(&c, "waiting-1", approved()).await;
    ready("waiting-1", "Issued");
}

#[test]
fn an_imported_key_fails_attestation_and_signs_nothing() {
    let Some(c) = cluster("tcs-attest") else {
        return;
    };
    // A key made outside the token and imported with pkcs11-tool under the label the
    // issuer's key would have: CKA_LOCAL is false.
    let dir = c.dir.path();
    let key = dir.join("imported.der");
    let out = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-outform",
            "DER",
            "-out",
        ])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = pkcs11_tool(
        &c.label,
        &[
            "--write-object",
            key.to_str().unwrap(),
            "--type",
            "privkey",
            "--label",
            "trellis-issuer.shop.imported",
            "--id",
            "01",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.kubectl.apply(
        "apiVersion: trellis.io/v1alpha1\nkind: TrellisIssuer\nmetadata: {name: imported, namespace: shop}\nspec: {token: tcs}\n",
    );
    let signer = c.signer();
    let args = [
        "get",
        "trellisissuer",
        "imported",
        "-n",
        "shop",
        "-o",
        "jsonpath={.status.conditions[0].reason}",
    ];
    c.until(
        "attestation refuses the key",
        &args,
        |s| s == "KeyAttestationFailed",
        &signer,
    );
    let message = c.get(&[
        "get",
        "trellisissuer",
        "imported",
        "-n",
        "shop",
        "-o",
        "jsonpath={.status.conditions[0].message}",
    ]);
    assert!(message.contains("CKA_LOCAL is false"), "{message}");
    c.kubectl.apply(&csr_yaml(
        "x",
        &csr(dir, "x", "ec:prime256v1"),
        "trellis.io/shop.imported",
        "client auth",
        3600,
    ));
    c.kubectl.ok(&["certificate", "approve", "x"]);
    std::thread::sleep(Duration::from_secs(1));
    assert!(csr_status(&c, "x")["certificate"].is_null());
}

#[test]
fn a_signer_killed_mid_batch_loses_nothing_and_signs_nothing_twice() {
    let Some(c) = cluster("tcs-restart") else {
        return;
    };
    c.kubectl.apply(
        "apiVersion: trellis.io/v1alpha1\nkind: TrellisClusterIssuer\nmetadata: {name: mesh}\nspec: {token: tcs, keyAlgorithm: RSA-2048}\n",
    );
    let dir = c.dir.path();
    let pem = csr(dir, "batch", "ec:prime256v1");
    const N: usize = 40;
    let yaml: String = (0..N)
        .map(|i| {
            csr_yaml(
                &format!("batch-{i}"),
                &pem,
                "clusterissuers.trellis.io/mesh",
                "client auth",
                3600,
            ) + "---\n"
        })
        .collect();
    let out = c.kubectl.apply(&yaml);
    assert!(out.success, "{}", out.stderr);
    // Approved as `kubectl certificate approve` does it (the approval subresource), by
    // kube-rs: kubectl's client-side rate limit (5 requests/s) would take 15 s for 40.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
        let client = trellis_kube::client(Some(c.kubectl.kubeconfig()))
            .await
            .unwrap();
        let api: kube::Api<CertificateSigningRequest> = kube::Api::all(client);
        let approval = serde_json::json!({"status": {"conditions": [{"type": "Approved",
            "status": "True", "reason": "Test", "message": "approved by the test"}]}});
        for i in 0..N {
            let patch = kube::api::Patch::Merge(&approval);
            api.patch_approval(&format!("batch-{i}"), &Default::default(), &patch)
                .await
                .unwrap();
        }
    });

    let signed = |c: &Cluster| {
        (0..N)
            .filter(|i| !csr_status(c, &format!("batch-{i}"))["certificate"].is_null())
            .count()
    };
    let first = c.signer();
    let deadline = Instant::now() + Duration::from_secs(30);
    while signed(&c) < 3 {
        assert!(
            Instant::now() < deadline,
            "nothing signed:\n{}",
            first.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    first.signal("KILL");
    let before = signed(&c);
    let mut first = first;
    first.wait_exit(Duration::from_secs(5));
    let second = c.signer();
    let deadline = Instant::now() + Duration::from_secs(60);
    while signed(&c) < N {
        assert!(
            Instant::now() < deadline,
            "{} of {N} signed:\n{}",
            signed(&c),
            second.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Each CSR's certificate was written once and never replaced, and none failed:
    // in the API server's history of every CSR, a certificate appears and every later
    // version holds that same one.
    assert!(
        before < N,
        "the first signer finished before it was killed; the test proves nothing"
    );
    for i in 0..N {
        let name = format!("batch-{i}");
        let history = c.fake.history(
            "certificates.k8s.io/v1",
            "CertificateSigningRequest",
            "",
            &name,
        );
        let certificates: Vec<&serde_json::Value> = history
            .iter()
            .map(|v| &v["status"]["certificate"])
            .filter(|c| !c.is_null())
            .collect();
        assert!(!certificates.is_empty(), "{name} was never signed");
        assert!(
            certificates.iter().all(|c| *c == certificates[0]),
            "{name} signed twice"
        );
        assert!(
            !history.iter().any(|v| v.to_string().contains("\"Failed\"")),
            "{name} failed"
        );
    }
    let root = c.get(&[
        "get",
        "trellisclusterissuer",
        "mesh",
        "-o",
        "jsonpath={.status.caCertificate}",
    ]);
    for i in [0, N / 2, N - 1] {
        let chain = String::from_utf8(
            B64.decode(
                csr_status(&c, &format!("batch-{i}"))["certificate"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        assert!(verify(dir, &root, &chain, "sslclient")
            .trim_end()
            .ends_with(": OK"));
    }
}

/// RA mode: `trellis control --ca-mode kubernetes-csr` forwards each sidecar's CSR to
/// the Kubernetes API for a TrellisClusterIssuer, approves it, and hands the signed
/// chain back; the sidecars talk mutual TLS with those certificates; a CSR naming
/// anyone but the caller is refused before it reaches the cluster.
#[tokio::test]
async fn ra_mode_sidecars_get_their_certificates_from_a_kubernetes_signer() {
    use super::control::{call_reviews, reaches_reviews, sidecar, Workload, SERVICES};
    let _quiet = quiet().await;
    let Some(c) = cluster("tcs-ra") else {
        return;
    };
    c.kubectl.apply(
        "apiVersion: trellis.io/v1alpha1\nkind: TrellisClusterIssuer\nmetadata: {name: mesh}\nspec: {token: tcs, maxTTL: 24h}\n",
    );
    let signer = c.signer();
    let signer_root = c.ready("trellisclusterissuer", "mesh", &signer);
    let dir = c.dir.path();
    let root_file = dir.join("signer-root.pem");
    std::fs::write(&root_file, &signer_root).unwrap();

    let mesh = tempfile::tempdir().unwrap();
    let page = Workload::new(
        "productpage-v1",
        "app: productpage, version: v1",
        "productpage",
    );
    let r1 = Workload::new("reviews-v1", "app: reviews, version: v1", "reviews");
    std::fs::write(mesh.path().join("services.yaml"), SERVICES).unwrap();
    std::fs::write(
        mesh.path().join("workloads.yaml"),
        page.entry() + &r1.entry(),
    )
    .unwrap();
    let _app = app_on("reviews-v1", &format!("127.0.0.1:{}", r1.app), &[]);
    let control = c.ra_control(mesh.path(), &root_file, &[]);
    assert!(
        control.ca.root_pem.contains(signer_root.trim()),
        "the bundle carries the signer's root"
    );
    let sidecars = tempfile::tempdir().unwrap();
    let _s_page = sidecar(&control, &page, sidecars.path());
    let _s1 = sidecar(&control, &r1, sidecars.path());
    reaches_reviews(page.outbound, Duration::from_secs(20)).await;
    assert!(call_reviews(page.outbound, 5)
        .await
        .iter()
        .all(|s| s == "reviews-v1"));
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

    // The sidecars' certificates are the signer's, whose key is in the token: the
    // signer answered their CSRs, and the control plane deleted them afterwards.
    let answered = signer
        .log()
        .matches("CertificateSigningRequest answered")
        .count();
    assert!(answered >= 2, "{}", signer.log());
    let left = c.get(&["get", "csr", "-o", "name"]);
    assert!(left.trim().is_empty(), "answered CSRs are deleted: {left}");

    // A CSR that names someone else is refused by the RA; nothing reaches the cluster.
    let ca = super::ca::client(&control.ca);
    let token = control
        .ca
        .token("spiffe://cluster.local/ns/default/sa/productpage", "1h");
    let key = super::ca::ec();
    let e = ca
        .create_certificate(
            &super::ca::csr(&key, "spiffe://cluster.local/ns/default/sa/admin"),
            Duration::from_secs(3600),
            trellis_ca::Credential::Token(&token),
        )
        .await
        .unwrap_err();
    assert!(
        e.contains("PermissionDenied") && e.contains("exactly the caller's identity"),
        "{e}"
    );
    // Named right, it is signed by the signer, and the chain ends in its root.
    let chain = ca
        .create_certificate(
            &super::ca::csr(&key, "spiffe://cluster.local/ns/default/sa/productpage"),
            Duration::from_secs(3600),
            trellis_ca::Credential::Token(&token),
        )
        .await
        .unwrap();
    assert_eq!(chain.last().unwrap().trim(), signer_root.trim());
    let pem = chain.join("");
    assert!(verify(
        dir,
        &signer_root,
        &pem[..pem.rfind("-----BEGIN").unwrap()],
        "sslclient"
    )
    .trim_end()
    .ends_with(": OK"));
}

/// RA mode with workload attestation: the control plane approves a workload's CSR only
/// when the request carries a quote bound to the CSR's key and the caller's identity.
/// The verifier here is the insecure test double (no SGX on these machines); the path
/// (evidence in the request's metadata, checked before anything reaches the cluster) is
/// the one an SGX quote verifier takes.
#[tokio::test]
async fn ra_mode_approves_only_attested_workloads_when_asked() {
    use trellis_ca::workload_attestation::InsecureTestDoubleQuotes;
    let Some(c) = cluster("tcs-quote") else {
        return;
    };
    c.kubectl.apply(
        "apiVersion: trellis.io/v1alpha1\nkind: TrellisClusterIssuer\nmetadata: {name: mesh}\nspec: {token: tcs}\n",
    );
    let signer = c.signer();
    let signer_root = c.ready("trellisclusterissuer", "mesh", &signer);
    let dir = c.dir.path();
    let (root_file, key_file) = (dir.join("signer-root.pem"), dir.join("quote-key"));
    std::fs::write(&root_file, &signer_root).unwrap();
    let quote_key = [7u8; 32];
    std::fs::write(&key_file, quote_key).unwrap();
    let mesh = tempfile::tempdir().unwrap();
    let control = c.ra_control(
        mesh.path(),
        &root_file,
        &[
            "--insecure-test-double-workload-quotes",
            key_file.to_str().unwrap(),
        ],
    );
    let id = "spiffe://cluster.local/ns/default/sa/enclave-app";
    let token = control.ca.token(id, "1h");
    let ca = super::ca::client(&control.ca);
    let key = super::ca::ec();
    let csr = super::ca::csr(&key, id);
    let spki = key.public_key_to_der().unwrap();
    let ask = |quote: Option<String>| {
        let (ca, csr, token) = (&ca, &csr, &token);
        async move {
            let metadata: Vec<(&str, &str)> = quote
                .iter()
                .map(|q| ("WorkloadQuote", q.as_str()))
                .collect();
            ca.create_certificate_with(
                csr,
                Duration::from_secs(3600),
                trellis_ca::Credential::Token(token),
                &metadata,
            )
            .await
        }
    };
    let e = ask(None).await.unwrap_err();
    assert!(
        e.contains("PermissionDenied") && e.contains("no WorkloadQuote"),
        "{e}"
    );
    let for_other_key = InsecureTestDoubleQuotes::quote(
        &quote_key,
        id,
        &super::ca::ec().public_key_to_der().unwrap(),
    );
    let e = ask(Some(B64.encode(for_other_key))).await.unwrap_err();
    assert!(e.contains("does not verify"), "{e}");
    let for_other_id = InsecureTestDoubleQuotes::quote(
        &quote_key,
        "spiffe://cluster.local/ns/default/sa/x",
        &spki,
    );
    assert!(ask(Some(B64.encode(for_other_id))).await.is_err());
    assert!(
        !signer.log().contains("CertificateSigningRequest answered"),
        "refused requests never reached the cluster:\n{}",
        signer.log()
    );
    let chain = ask(Some(
        B64.encode(InsecureTestDoubleQuotes::quote(&quote_key, id, &spki)),
    ))
    .await
    .unwrap();
    assert_eq!(chain.last().unwrap().trim(), signer_root.trim());
    assert!(control.ca.proc.log().contains("INSECURE TEST DOUBLE"));
}
