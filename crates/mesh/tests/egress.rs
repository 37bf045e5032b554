//! DestinationRule TLS origination (SIMPLE / MUTUAL): what a sidecar's cluster gets, and
//! what is refused because it would verify less than written.

use trellis_mesh::{generate, load_str, Loaded, Registry};

const REGISTRY: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: api, namespace: default }
spec:
  hosts: [api.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{ number: 443, name: https, protocol: HTTP }]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: app
  namespace: default
  annotations: { sidecar.trellis.dev/app-ports: "http=18000" }
spec: { address: 127.0.0.1, ports: { http: 28000 }, labels: { app: app } }
"#;

fn dr(tls: &str) -> Loaded {
    let mut loaded = Loaded::default();
    load_str(REGISTRY, "registry.yaml", &mut loaded);
    load_str(
        &format!("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{ name: api, namespace: default }}\nspec:\n  host: api.example.com\n  trafficPolicy:\n    tls: {tls}\n"),
        "dr.yaml",
        &mut loaded,
    );
    loaded
}

#[test]
fn simple_and_mutual_originate_tls_to_the_service() {
    let loaded = dr("{ mode: SIMPLE }");
    assert!(loaded.refused.is_empty(), "{:?}", loaded.refused);
    let registry = Registry::from_inputs(&loaded.inputs);
    let c = generate(&loaded.inputs, &registry, "default", "app").unwrap();
    let cluster = c
        .clusters
        .iter()
        .find(|c| c.name == "outbound|443||api.example.com")
        .unwrap();
    let tls = cluster.tls.as_ref().unwrap();
    // Without caCertificates: the system's roots; the SNI and the name checked are the host.
    assert_eq!(tls.trusted_ca, "/etc/ssl/certs/ca-certificates.crt");
    assert_eq!(tls.sni.as_deref(), Some("api.example.com"));
    assert_eq!(tls.match_identities, ["api.example.com"]);
    assert!(tls.certificate.is_none());

    let loaded = dr("{ mode: MUTUAL, clientCertificate: /c.pem, privateKey: /c.key, caCertificates: /ca.pem, sni: edge.example.com, subjectAltNames: [api.internal] }");
    assert!(loaded.refused.is_empty(), "{:?}", loaded.refused);
    let registry = Registry::from_inputs(&loaded.inputs);
    let c = generate(&loaded.inputs, &registry, "default", "app").unwrap();
    let tls = c
        .clusters
        .iter()
        .find(|c| c.name == "outbound|443||api.example.com")
        .unwrap()
        .tls
        .clone()
        .unwrap();
    assert_eq!(tls.trusted_ca, "/ca.pem");
    assert_eq!(tls.sni.as_deref(), Some("edge.example.com"));
    assert_eq!(tls.match_identities, ["api.internal"]);
    let cert = tls.certificate.unwrap();
    assert_eq!(
        (cert.certificate_chain.as_str(), cert.private_key.as_deref()),
        ("/c.pem", Some("/c.key"))
    );
}

#[test]
fn what_would_verify_less_than_written_is_refused() {
    for (tls, says) in [
        (
            "{ mode: SIMPLE, insecureSkipVerify: true }",
            "insecureSkipVerify: true is not supported",
        ),
        (
            "{ mode: SIMPLE, caCertificates: /ca.pem, caCrl: /crl.pem }",
            "caCrl: certificate revocation lists",
        ),
        (
            "{ mode: SIMPLE, credentialName: api-cacert }",
            "credentialName: \"api-cacert\"",
        ),
        (
            "{ mode: MUTUAL, caCertificates: /ca.pem }",
            "client certificate required for mutual tls",
        ),
        (
            "{ mode: ISTIO_MUTUAL, caCertificates: /ca.pem }",
            "caCertificates: only for mode SIMPLE or MUTUAL",
        ),
    ] {
        let loaded = dr(tls);
        assert_eq!(loaded.refused.len(), 1, "{tls}: {:?}", loaded.refused);
        assert!(
            loaded.refused[0].message.contains(says),
            "{tls}: {}",
            loaded.refused[0].message
        );
    }
}
