//! Tenants' CAs in the control plane (in-process, as `trellis control` runs it): a
//! tenant whose CA cannot be used (an expired certificate, a malformed or missing
//! root, a key that is not the certificate's, the mesh's own trust domain) is refused
//! with the field at fault and the previous tenant map keeps serving, in the status,
//! in the CA and in the views.

use std::time::Duration;

use boring::asn1::Asn1Time;
use boring::bn::BigNum;
use boring::ec::{EcGroup, EcKey};
use boring::hash::MessageDigest;
use boring::nid::Nid;
use boring::pkey::{PKey, Private};
use boring::x509::extension::BasicConstraints;
use boring::x509::{X509Name, X509};
use trellis_ca::CaConfig;
use trellis_control::{serve, Options, Serving};

fn key() -> PKey<Private> {
    PKey::from_ec_key(
        EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
    )
    .unwrap()
}

/// A self-signed CA certificate valid from `from` to `to` (Unix seconds).
fn root(key: &PKey<Private>, from: i64, to: i64) -> X509 {
    let mut name = X509Name::builder().unwrap();
    name.append_entry_by_text("O", "tenant a").unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&BigNum::from_u32(7).unwrap().to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::from_unix(from).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_unix(to).unwrap()).unwrap();
    b.append_extension(&BasicConstraints::new().critical().ca().build().unwrap())
        .unwrap();
    b.sign(key, MessageDigest::sha256()).unwrap();
    b.build()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn tenant(extra: &str) -> String {
    format!(
        "apiVersion: trellis.io/v1alpha1\nkind: Tenant\nmetadata: {{ name: a }}\nspec:\n  namespaces: [team-a]\n  trustDomain: a.example\n{extra}"
    )
}

async fn start(dir: &std::path::Path, state: &std::path::Path) -> Serving {
    serve(Options {
        config_dirs: vec![dir.to_path_buf()],
        kube: None,
        plaintext_xds: None,
        ca: Some((
            CaConfig {
                state_dir: state.to_path_buf(),
                trust_domain: "cluster.local".into(),
                server_names: vec!["localhost".into()],
                signing: None,
                max_cert_ttl: Duration::from_secs(3600),
                kube_review: None,
                ra: None,
            },
            "127.0.0.1:0".parse().unwrap(),
        )),
        poll_interval: Duration::from_millis(20),
        status_listen: None,
        dashboard: None,
    })
    .await
    .unwrap()
}

/// Writes the tenant and waits for the reload that read it.
async fn edit(serving: &Serving, file: &std::path::Path, text: &str) -> trellis_control::Status {
    let mut rx = serving.plane.status();
    let generation = rx.borrow().generation;
    std::fs::write(file, text).unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            rx.changed().await.unwrap();
            if rx.borrow().generation > generation {
                return rx.borrow().clone();
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no reload; a reload now says {:?}", serving.plane.reload()))
}

#[tokio::test]
async fn an_unusable_tenant_ca_is_refused_by_field_and_the_previous_map_serves() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let file = dir.path().join("tenants.yaml");
    std::fs::write(&file, tenant("")).unwrap();
    let serving = start(dir.path(), state.path()).await;
    let status = serving.plane.status().borrow().clone();
    assert!(status.refused.is_empty(), "{:?}", status.refused);
    let names: Vec<&str> = status.tenants.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["default", "a"]);
    let good_root = status.tenants[1].roots[0].sha256.clone();
    assert_eq!(status.tenants[1].namespaces, ["team-a"]);
    assert!(status.tenants[1].roots[0].signing);

    let k = key();
    let expired = root(&k, now() - 7200, now() - 3600);
    let cert = certs.path().join("ca.pem");
    let key_file = certs.path().join("ca.key");
    std::fs::write(&cert, expired.to_pem().unwrap()).unwrap();
    std::fs::write(&key_file, k.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let other_key = certs.path().join("other.key");
    std::fs::write(&other_key, key().private_key_to_pem_pkcs8().unwrap()).unwrap();
    let garbage = certs.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let valid = root(&k, now() - 60, now() + 86400);
    let valid_file = certs.path().join("valid.pem");
    std::fs::write(&valid_file, valid.to_pem().unwrap()).unwrap();

    let (c, kf, ok, g) = (
        cert.display(),
        key_file.display(),
        valid_file.display(),
        garbage.display(),
    );
    let other = other_key.display();
    for (extra, want) in [
        (
            format!("  ca: {{ certFile: {c}, keyFile: {kf} }}\n"),
            "spec.ca.certFile: certificate \"tenant a\" expired on",
        ),
        (
            format!("  ca: {{ certFile: {ok}, keyFile: {other} }}\n"),
            "spec.ca: ",
        ),
        (
            format!("  previousRoots: [{{ rootFile: {g} }}]\n"),
            "spec.previousRoots[0].rootFile: no PEM certificate",
        ),
        (
            "  previousRoots: [{ pem: \"-----BEGIN CERTIFICATE-----\\nAAAA\\n-----END CERTIFICATE-----\\n\" }]\n".to_string(),
            "spec.previousRoots[0].pem: no PEM certificate",
        ),
        (
            format!("  previousRoots: [{{ rootFile: {c} }}]\n"),
            "spec.previousRoots[0].rootFile: certificate \"tenant a\" expired on",
        ),
        (
            "  previousRoots: [{ generated: never-made }]\n".to_string(),
            "spec.previousRoots[0].generated: no root \"never-made\" was generated for tenant \"a\"",
        ),
        (
            "  ca: { certFile: /nonexistent/ca.pem, keyFile: /nonexistent/ca.key }\n".to_string(),
            "spec.ca: /nonexistent/ca.key",
        ),
    ] {
        let status = edit(&serving, &file, &tenant(&extra)).await;
        assert_eq!(status.refused.len(), 1, "{extra}: {:?}", status.refused);
        let r = &status.refused[0];
        assert!(r.starts_with(&format!("{}#1 Tenant", file.display())), "{r}");
        assert!(r.contains(want), "{extra}: {r} lacks {want:?}");
        assert!(r.contains("the previous version keeps serving"), "{r}");
        // The previous tenant map still serves.
        assert_eq!(status.tenants.len(), 2);
        assert_eq!(status.tenants[1].roots[0].sha256, good_root);
    }

    // The mesh's own trust domain is not a tenant's.
    let status = edit(
        &serving,
        &file,
        &tenant("").replace("a.example", "cluster.local"),
    )
    .await;
    assert!(
        status.refused[0]
            .contains("spec.trustDomain: \"cluster.local\" is the control plane's own"),
        "{:?}",
        status.refused
    );

    // A good given CA replaces the generated one; the generated root stays trusted
    // through the rotation when asked for.
    let status = edit(
        &serving,
        &file,
        &tenant(&format!(
            "  ca: {{ certFile: {ok}, keyFile: {kf} }}\n  previousRoots: [{{ generated: root }}]\n"
        )),
    )
    .await;
    assert!(status.refused.is_empty(), "{:?}", status.refused);
    let roots: Vec<&str> = status.tenants[1]
        .roots
        .iter()
        .map(|r| r.sha256.as_str())
        .collect();
    assert_eq!(roots.len(), 2);
    assert_ne!(roots[0], good_root);
    assert_eq!(roots[1], good_root);
    assert!(status.tenants[1].roots[0].signing && !status.tenants[1].roots[1].signing);
}

#[tokio::test]
async fn istios_mesh_config_is_refused_where_it_cannot_be_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tenants.yaml"),
        tenant("  certSigner: signer-a\n"),
    )
    .unwrap();
    let file = dir.path().join("mesh-config.yaml");
    let mesh = |body: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{ name: istio, namespace: istio-system }}\ndata:\n  mesh: |\n{}",
            body.lines().map(|l| format!("    {l}\n")).collect::<String>()
        )
    };
    let k = key();
    let partner = root(&k, now() - 60, now() + 86400);
    let pem = String::from_utf8(partner.to_pem().unwrap()).unwrap();
    let pem_block: String = pem.lines().map(|l| format!("    {l}\n")).collect();
    let good = mesh(&format!(
        "trustDomain: cluster.local\ntrustDomainAliases: [old.local]\ndefaultConfig:\n  proxyMetadata: {{ CERT_SIGNER: mesh-signer }}\ncaCertificates:\n- pem: |\n{pem_block}  trustDomains: [partner.example]\n  certSigners: [signer-a]\n"
    ));
    std::fs::write(&file, &good).unwrap();
    let serving = start(dir.path(), state.path()).await;
    let status = serving.plane.status().borrow().clone();
    assert!(status.refused.is_empty(), "{:?}", status.refused);
    let (default, a) = (&status.tenants[0], &status.tenants[1]);
    assert_eq!(default.aliases, ["old.local"]);
    assert_eq!(default.cert_signer.as_deref(), Some("mesh-signer"));
    assert!(default.external_trust_domains.is_empty());
    assert_eq!(a.external_trust_domains, ["partner.example"]);

    let expired = root(&k, now() - 7200, now() - 3600);
    let expired_block: String = String::from_utf8(expired.to_pem().unwrap())
        .unwrap()
        .lines()
        .map(|l| format!("    {l}\n"))
        .collect();
    for (body, want) in [
        (
            "trustDomain: other.local\n".to_string(),
            "trustDomain: \"other.local\", but the control plane's CA issues in \"cluster.local\"",
        ),
        (
            format!("caCertificates:\n- pem: |\n{pem_block}  trustDomains: [a.example]\n"),
            "caCertificates[0].trustDomains[0]: \"a.example\" is a tenant's trust domain",
        ),
        (
            format!("caCertificates:\n- pem: |\n{expired_block}"),
            "caCertificates[0].pem: certificate \"tenant a\" expired on",
        ),
    ] {
        let status = edit(&serving, &file, &mesh(&body)).await;
        assert_eq!(status.refused.len(), 1, "{body}: {:?}", status.refused);
        let r = &status.refused[0];
        assert!(r.contains(want), "{r} lacks {want:?}");
        assert!(r.contains("the previous version keeps serving"), "{r}");
        assert_eq!(
            status.tenants[1].external_trust_domains,
            ["partner.example"]
        );
    }
}
