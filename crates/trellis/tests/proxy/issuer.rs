//! `trellis issuer`, the Trusted Certificate Service, as a cluster's users meet it: the
//! CRDs applied with kubectl to the test API server, issuers whose CA keys are made in a
//! SoftHSM2 token, CSRs created and approved with kubectl and checked with `openssl
//! verify`, cert-manager CertificateRequests as cert-manager writes them, and a signer
//! killed in the middle of a batch.

use super::harness::*;
use super::pkcs11::{softhsm, token, MODULE};
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
    softhsm()?;
    let uri = token(label, "unused")?;
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
        token: uri.replace(";object=unused", ""),
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
    let out = Command::new("pkcs11-tool")
        .args([
            "--module",
            MODULE,
            "--token-label",
            &c.label,
            "--login",
            "--pin",
            "1234",
            "--list-objects",
        ])
        .output()
        .unwrap();
    let objects = String::from_utf8_lossy(&out.stdout);
    assert!(
        objects.contains("label:      trellis-issuer.shop.ca"),
        "{objects}"
    );
    assert!(objects.contains("Certificate Object"), "{objects}");
    let private = objects.split("Private Key Object").nth(1).unwrap_or_default();
    let access = private
        .lines()
        .find(|l| l.trim_start().starts_with("Access:"))
        .unwrap_or_default();
    for attribute in ["sensitive", "always sensitive", "never extractable", "local"] {
        assert!(access.contains(attribute), "{attribute}: {objects}");
    }
}
