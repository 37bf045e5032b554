//! TLS origination to a service outside the mesh (DestinationRule `tls.mode` SIMPLE /
//! MUTUAL): the app speaks plain HTTP to its sidecar, which opens TLS to the external
//! server with the SNI, verifies its certificate against the DestinationRule's CA and
//! names, and presents the client certificate. The server is `openssl s_server`, which
//! prints the SNI it received and the client certificate it verified.

use super::control::{sidecar, Workload};
use super::harness::*;
use super::pki::Pki;
use std::time::Duration;

/// `openssl s_server -www` on `port`, requiring a client certificate from `client_ca`.
fn s_server(port: u16, cert: &str, key: &str, client_ca: &str, dir: &std::path::Path) -> SServer {
    SServer::start(
        port,
        &[
            "-cert", cert, "-key", key, "-CAfile", client_ca, "-Verify", "1",
        ],
        dir,
    )
}

fn mesh(port: u16, tls: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{ name: api, namespace: default }}
spec:
  hosts: [api.example.test]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{ number: 443, name: http-api, protocol: HTTP, targetPort: {port} }}]
  endpoints: [{{ address: 127.0.0.1 }}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{ name: api, namespace: default }}
spec:
  host: api.example.test
  trafficPolicy:
    tls: {tls}
"#
    )
}

#[tokio::test]
async fn sidecars_originate_tls_with_sni_ca_names_and_a_client_certificate() {
    let _quiet = quiet().await;
    let server_pki = Pki::new("external-ca");
    let api = server_pki.leaf("api", &["DNS:api.example.test"], false);
    let client_pki = Pki::new("client-ca");
    let client_cert = client_pki.leaf("mesh-client", &["DNS:client.mesh.test"], false);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = s_server(
        port,
        &api.cert,
        &api.key,
        &client_pki.root_path(),
        dir.path(),
    );

    let config = tempfile::tempdir().unwrap();
    let app = Workload::new("app", "app: app", "app");
    let tls = format!(
        "{{ mode: MUTUAL, clientCertificate: {}, privateKey: {}, caCertificates: {} }}",
        client_cert.cert,
        client_cert.key,
        server_pki.root_path()
    );
    std::fs::write(config.path().join("api.yaml"), mesh(port, &tls)).unwrap();
    std::fs::write(config.path().join("app.yaml"), app.entry()).unwrap();
    let c = control(config.path());
    let _s = sidecar(&c, &app, dir.path());

    let url = format!("http://127.0.0.1:{}/", app.outbound);
    let mut last = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        let r = send(Req::get(&url).header("host", "api.example.test:443")).await;
        if r.as_ref().is_ok_and(|r| r.status == 200) {
            last = r.ok();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = last.expect("the external server never answered through the sidecar");
    // s_server's page describes the TLS session it had with the sidecar.
    assert!(r.body.contains("TLSv1.3"), "{}", r.body);
    let seen = std::fs::read_to_string(&server.out).unwrap();
    assert!(seen.contains("server name"), "SNI sent: {seen}");
    let sni = server.sni();
    assert!(
        sni.ends_with("api.example.test"),
        "the SNI was the host: {sni:?} in {seen}"
    );
    // s_server demanded a client certificate from client-ca (-Verify 1) and describes
    // the one it verified on its page.
    assert!(
        r.body.contains("mesh-client"),
        "client certificate: {}",
        r.body
    );

    // The server's certificate must chain to caCertificates and carry the names: with
    // another CA, or a SAN it does not have, no request gets through.
    for tls in [
        format!(
            "{{ mode: SIMPLE, caCertificates: {} }}",
            client_pki.root_path()
        ),
        format!(
            "{{ mode: MUTUAL, clientCertificate: {}, privateKey: {}, caCertificates: {}, subjectAltNames: [other.example.test] }}",
            client_cert.cert,
            client_cert.key,
            server_pki.root_path()
        ),
    ] {
        std::fs::write(config.path().join("api.yaml"), mesh(port, &tls)).unwrap();
        let mut refused = false;
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::time::Instant::now() < deadline {
            let r = send(Req::get(&url).header("host", "api.example.test:443")).await;
            if r.as_ref().is_ok_and(|r| r.status == 503) {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(refused, "{tls}: the sidecar still reached the server");
    }
}
