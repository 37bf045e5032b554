//! CSRs signed per second by `trellis issuer` with its CA key in a SoftHSM2 token
//! (RSA-2048 and ECDSA P-256), and the latency from a CSR's creation (approved at once)
//! to its certificate, through the test API server, as a signer in a cluster sees them.
//!
//! The signer is the release binary (`TRELLIS_BIN`, default target/release/trellis) in
//! a process of its own, so its CPU time per CSR is read from /proc/PID/stat; the API
//! server and the clients run in this process.
//!
//! Throughput: a batch of CSRs is created and approved while the signer is stopped
//! (SIGSTOP), then timed from SIGCONT until every one has its certificate.
//!
//! Usage: cargo bench -p trellis-issuer --bench signing -- [batch size, default 200]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition, CertificateSigningRequestStatus,
};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::Api;
use trellis_kube::fake::FakeApiServer;
use trellis_pkcs11::softhsm::TestTokens;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// utime + stime of a process, in seconds.
fn cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|t| t.parse::<f64>().ok()).sum()
    });
    ticks / 100.0
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

struct Signer(Child);

impl Drop for Signer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn csr_pem(dir: &Path) -> Vec<u8> {
    let out = Command::new("openssl")
        .args([
            "req",
            "-new",
            "-nodes",
            "-subj",
            "/CN=bench",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-keyout",
        ])
        .arg(dir.join("bench.key"))
        .output()
        .expect("openssl");
    assert!(out.status.success());
    out.stdout
}

fn csr(name: &str, signer: &str, pem: &[u8]) -> CertificateSigningRequest {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {"request": base64::engine::general_purpose::STANDARD.encode(pem),
                 "signerName": signer, "usages": ["digital signature", "client auth"],
                 "expirationSeconds": 3600}
    }))
    .unwrap()
}

async fn approve(api: &Api<CertificateSigningRequest>, name: &str) {
    let mut c = api.get(name).await.unwrap();
    c.status = Some(CertificateSigningRequestStatus {
        conditions: Some(vec![CertificateSigningRequestCondition {
            type_: "Approved".into(),
            status: "True".into(),
            reason: Some("Bench".into()),
            ..Default::default()
        }]),
        ..Default::default()
    });
    api.patch_approval(
        name,
        &Default::default(),
        &kube::api::Patch::Merge(serde_json::json!({"status": c.status})),
    )
    .await
    .unwrap();
}

fn signed(fake: &FakeApiServer, name: &str) -> bool {
    fake.object(
        "certificates.k8s.io/v1",
        "CertificateSigningRequest",
        "",
        name,
    )
    .is_some_and(|o| o["status"]["certificate"].is_string())
}

#[tokio::main]
async fn main() {
    let batch: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200);
    let bin = std::env::var("TRELLIS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("target/release/trellis"));
    assert!(
        bin.exists(),
        "{} is missing: cargo build --release -p trellis",
        bin.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let tokens = TestTokens::new(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let token = format!("tcs={}", tokens.init("bench").unwrap());

    let fake = FakeApiServer::empty(Some("bench")).unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig()).unwrap();
    let client = trellis_kube::client(Some(&kubeconfig)).await.unwrap();
    let crd = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
        "customresourcedefinitions",
    );
    let crds: Api<DynamicObject> = Api::all_with(client.clone(), &crd);
    for f in ["trellis.io_trellisclusterissuers.yaml"] {
        let yaml = std::fs::read_to_string(root().join("deploy/crds").join(f)).unwrap();
        let o: DynamicObject = serde_yaml::from_str(&yaml).unwrap();
        crds.create(&PostParams::default(), &o).await.unwrap();
    }
    let issuers: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("trellis.io", "v1alpha1", "TrellisClusterIssuer"),
            "trellisclusterissuers",
        ),
    );
    let signer = Signer(
        Command::new(&bin)
            .args([
                "issuer",
                "--kubeconfig",
                kubeconfig.to_str().unwrap(),
                "--token",
                &token,
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = signer.0.id();
    let csrs: Api<CertificateSigningRequest> = Api::all(client.clone());
    let pem = csr_pem(dir.path());
    println!(
        "trellis issuer, CA key in SoftHSM2 {}; {batch} CSRs (P-256 keys) per batch",
        env!("CARGO_PKG_VERSION")
    );
    for (issuer, algorithm) in [("rsa", "RSA-2048"), ("ec", "ECDSA-P256")] {
        let o: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "trellis.io/v1alpha1", "kind": "TrellisClusterIssuer",
            "metadata": {"name": issuer}, "spec": {"token": "tcs", "keyAlgorithm": algorithm}
        }))
        .unwrap();
        issuers.create(&PostParams::default(), &o).await.unwrap();
        let ready = Instant::now();
        while !fake
            .object("trellis.io/v1alpha1", "TrellisClusterIssuer", "", issuer)
            .is_some_and(|o| o.to_string().contains("\"status\":\"True\""))
        {
            assert!(
                ready.elapsed() < Duration::from_secs(60),
                "issuer {issuer} not ready"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let signer_name = format!("clusterissuers.trellis.io/{issuer}");

        // Throughput: a batch created and approved while the signer is stopped
        // (SIGSTOP), then signed as fast as it goes once it continues.
        let names: Vec<String> = (0..batch).map(|i| format!("{issuer}-batch-{i}")).collect();
        signal(pid, "STOP");
        for n in &names {
            csrs.create(&PostParams::default(), &csr(n, &signer_name, &pem))
                .await
                .unwrap();
            approve(&csrs, n).await;
        }
        let (start, cpu0) = (Instant::now(), cpu(pid));
        signal(pid, "CONT");
        while !names.iter().all(|n| signed(&fake, n)) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let (elapsed, cpu_used) = (start.elapsed(), cpu(pid) - cpu0);
        println!(
            "{algorithm:>10} CA: {batch} CSRs in {:.2} s = {:.0} CSRs/s; signer CPU {:.2} ms per CSR",
            elapsed.as_secs_f64(),
            batch as f64 / elapsed.as_secs_f64(),
            cpu_used * 1000.0 / batch as f64
        );

        // Latency: one CSR at a time, created and approved, until its certificate.
        let mut lat = Vec::new();
        for i in 0..50 {
            let n = format!("{issuer}-one-{i}");
            let t = Instant::now();
            csrs.create(&PostParams::default(), &csr(&n, &signer_name, &pem))
                .await
                .unwrap();
            approve(&csrs, &n).await;
            while !signed(&fake, &n) {
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        lat.sort_by(f64::total_cmp);
        println!(
            "{algorithm:>10} CA: create + approve -> certificate: p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms (50 CSRs)",
            lat[25], lat[45], lat[49]
        );
    }
}
