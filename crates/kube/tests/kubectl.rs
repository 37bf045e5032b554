//! The test API server driven by the real kubectl: discovery, CRDs and their schemas,
//! create / get / apply / patch / delete, CertificateSigningRequests approved with
//! `kubectl certificate approve` (protobuf on the wire) and their status rules. If
//! kubectl works against it, clients written against it work against a cluster.

use std::path::{Path, PathBuf};
use std::process::Command;

use trellis_kube::fake::{FakeApiServer, Kubectl, Output};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn csr_yaml(name: &str, request_pem: &str) -> String {
    use base64::Engine as _;
    let request = base64::engine::general_purpose::STANDARD.encode(request_pem);
    format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata: {{name: {name}}}\n\
         spec:\n  request: {request}\n  signerName: example.com/signer\n  usages: [digital signature, client auth]\n"
    )
}

fn a_csr_pem() -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-subj", "/CN=alice", "-keyout"])
        .arg(dir.path().join("key.pem"))
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn custom_resources_follow_their_crd() {
    let fake = FakeApiServer::empty(Some("s3cret")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let Some(k) = Kubectl::new(&fake, dir.path()) else {
        return;
    };
    let crd = std::fs::read_to_string(fixtures().join("crd/widgets.yaml")).unwrap();
    let Output {
        success: ok,
        stdout: out,
        stderr: err,
    } = k.apply(&crd);
    assert!(ok, "{err}");
    assert!(out.contains("widgets.example.com created"), "{out}");

    // Discovery now knows the kind, by plural, singular and short name.
    let w = "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1, namespace: shop}\n\
             spec: {size: 3, colour: red, shape: round}\nstatus: {ready: true}\n";
    let Output {
        success: ok,
        stdout: _,
        stderr: err,
    } = k.apply(w);
    assert!(!ok, "no namespace shop yet");
    assert!(err.contains("namespaces \"shop\" not found"), "{err}");
    k.ok(&["create", "namespace", "shop"]);
    let Output {
        success: ok,
        stdout: _,
        stderr: err,
    } = k.apply(w);
    assert!(ok, "{err}");
    let got = k.ok(&["get", "wd", "w1", "-n", "shop", "-o", "json"]);
    let got: serde_json::Value = serde_json::from_str(&got).unwrap();
    assert_eq!(
        got["spec"],
        serde_json::json!({"size": 3, "colour": "red"}),
        "unknown field pruned"
    );
    assert!(
        got["status"].is_null(),
        "status is the subresource's: {got}"
    );

    // The schema refuses wrong types, values outside the enum and missing fields.
    let Output {
        success: ok,
        stdout: _,
        stderr: err,
    } = k.apply(&w.replace("size: 3", "size: three").replace("w1", "w2"));
    assert!(!ok);
    assert!(
        err.contains("spec.size") && err.contains("must be of type integer"),
        "{err}"
    );
    let Output {
        success: ok,
        stdout: _,
        stderr: err,
    } = k.apply(
        &w.replace("colour: red", "colour: green")
            .replace("w1", "w3"),
    );
    assert!(!ok);
    assert!(
        err.contains("spec.colour: Unsupported value: \"green\""),
        "{err}"
    );
    let Output {
        success: ok,
        stdout: _,
        stderr: err,
    } = k.apply(&w.replace("size: 3, ", "").replace("w1", "w4"));
    assert!(!ok);
    assert!(err.contains("spec.size: Required value"), "{err}");

    // apply again with a change: a patch of the stored object.
    let Output {
        success: ok,
        stdout: out,
        stderr: err,
    } = k.apply(&w.replace("size: 3", "size: 5"));
    assert!(ok, "{err}");
    assert!(out.contains("widget.example.com/w1 configured"), "{out}");
    let size = k.ok(&[
        "get",
        "widget",
        "w1",
        "-n",
        "shop",
        "-o",
        "jsonpath={.spec.size}",
    ]);
    assert_eq!(size, "5");
    let names = k.ok(&["get", "widgets", "-A", "-o", "name"]);
    assert_eq!(names.trim(), "widget.example.com/w1");
    k.ok(&["delete", "widget", "w1", "-n", "shop"]);
    let Output {
        success: ok,
        stdout: _,
        stderr: err,
    } = k.run(&["get", "widget", "w1", "-n", "shop"], None);
    assert!(!ok);
    assert!(
        err.contains("NotFound") && err.contains("\"w1\" not found"),
        "{err}"
    );

    // Without the token, nothing.
    std::fs::write(k.kubeconfig(), fake.kubeconfig().replace("s3cret", "wrong")).unwrap();
    let Output {
        success: ok,
        stdout: _,
        stderr: err,
    } = k.run(&["get", "widgets", "-A"], None);
    assert!(!ok);
    assert!(
        err.contains("Unauthorized") || err.contains("credentials"),
        "{err}"
    );
}

#[test]
fn certificate_signing_requests_keep_the_api_servers_rules() {
    let fake = FakeApiServer::empty(Some("s3cret")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let Some(k) = Kubectl::new(&fake, dir.path()) else {
        return;
    };
    let Output {
        success: ok,
        stdout: out,
        stderr: err,
    } = k.apply(&csr_yaml("alice", &a_csr_pem()));
    assert!(ok, "{err}");
    assert!(out.contains("certificatesigningrequest.certificates.k8s.io/alice created"));
    let user = k.ok(&["get", "csr", "alice", "-o", "jsonpath={.spec.username}"]);
    assert_eq!(user, "kubernetes-admin", "the requester, set by the server");

    // A request that is not a PEM CSR is refused at create.
    let Output {
        success: ok,
        stdout: _,
        stderr: err,
    } = k.apply(&csr_yaml("bob", "not a CSR"));
    assert!(!ok);
    assert!(err.contains("spec.request"), "{err}");

    // kubectl certificate approve writes protobuf to the approval subresource.
    let out = k.ok(&["certificate", "approve", "alice"]);
    assert!(out.contains("approved"), "{out}");
    let conditions = k.ok(&[
        "get",
        "csr",
        "alice",
        "-o",
        "jsonpath={.status.conditions[*].type}",
    ]);
    assert_eq!(conditions, "Approved");

    // The status subresource (as a signer writes it) cannot remove the approval, and
    // takes a certificate once, as PEM.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
        let client = trellis_kube::client(Some(k.kubeconfig())).await.unwrap();
        let api: kube::Api<CertificateSigningRequest> = kube::Api::all(client);
        let pp = kube::api::PostParams::default();
        let mut csr = fake
            .object(
                "certificates.k8s.io/v1",
                "CertificateSigningRequest",
                "",
                "alice",
            )
            .unwrap();
        csr["status"] = serde_json::json!({"certificate": "bm90IFBFTQ=="});
        let err = api
            .replace_status("alice", &pp, &serde_json::from_value(csr.clone()).unwrap())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("CERTIFICATE PEM block"), "{err}");

        let pem = "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
        use base64::Engine as _;
        let cert = base64::engine::general_purpose::STANDARD.encode(pem);
        csr["status"] = serde_json::json!({"certificate": cert});
        let stored = api
            .replace_status("alice", &pp, &serde_json::from_value(csr.clone()).unwrap())
            .await
            .unwrap();
        let status = stored.status.unwrap();
        assert_eq!(status.conditions.unwrap()[0].type_, "Approved", "kept");
        assert_eq!(status.certificate.unwrap().0, pem.as_bytes());

        // Written with the old resourceVersion: a conflict.
        let err = api
            .replace_status("alice", &pp, &serde_json::from_value(csr.clone()).unwrap())
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("the object has been modified"),
            "{err}"
        );
        // With the current one, a different certificate is refused.
        csr["metadata"]["resourceVersion"] = stored.metadata.resource_version.unwrap().into();
        csr["status"]["certificate"] = base64::engine::general_purpose::STANDARD
            .encode(pem.replace("MAA=", "MAE="))
            .into();
        let err = api
            .replace_status("alice", &pp, &serde_json::from_value(csr.clone()).unwrap())
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("may not modify existing certificate"),
            "{err}"
        );
    });
}
