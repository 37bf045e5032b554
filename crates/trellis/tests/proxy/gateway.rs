//! An Istio Gateway served by `trellis proxy` as a gateway (node type `router`): the
//! VirtualService bound to it routes requests from outside the mesh to a workload's
//! sidecar over mutual TLS; an HTTPS server terminates TLS with its certificate files;
//! an HTTP server redirects to HTTPS. Checked with curl.

use super::control::{sidecar, Workload, SERVICES};
use super::harness::*;
use super::pki::Pki;
use std::process::Command;
use std::time::Duration;

fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            "-o",
            "/dev/stdout",
            "-w",
            "\n%{http_code}",
        ])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, ""));
    (
        body.to_string(),
        code.to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test]
async fn a_gateway_routes_what_its_virtual_services_bind_over_mtls_http_and_https() {
    let _quiet = quiet().await;
    let pki = Pki::new("gateway-ca");
    let cert = pki.leaf("bookinfo", &["DNS:bookinfo.example.test"], false);
    let client = pki.leaf("partner", &["DNS:partner.example.test"], false);
    let (http, https, redirect, mutual) = (free_port(), free_port(), free_port(), free_port());
    let mesh = tempfile::tempdir().unwrap();
    let page = Workload::new(
        "productpage-v1",
        "app: productpage, version: v1",
        "productpage",
    );
    let gateway = format!(
        r#"apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{ name: ingressgateway, namespace: default }}
spec: {{ address: 127.0.0.1, labels: {{ istio: ingressgateway }}, serviceAccount: ingressgateway }}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{ name: bookinfo-gateway, namespace: default }}
spec:
  selector: {{ istio: ingressgateway }}
  servers:
    - port: {{ number: {http}, name: http, protocol: HTTP }}
      hosts: ["*"]
    - port: {{ number: {https}, name: https, protocol: HTTPS }}
      hosts: [bookinfo.example.test]
      tls: {{ mode: SIMPLE, serverCertificate: {}, privateKey: {} }}
    - port: {{ number: {redirect}, name: http-redirect, protocol: HTTP }}
      hosts: [bookinfo.example.test]
      tls: {{ httpsRedirect: true }}
    - port: {{ number: {mutual}, name: https-mutual, protocol: HTTPS }}
      hosts: [bookinfo.example.test]
      tls: {{ mode: MUTUAL, serverCertificate: {cert}, privateKey: {key}, caCertificates: {root} }}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{ name: bookinfo, namespace: default }}
spec:
  hosts: ["*"]
  gateways: [bookinfo-gateway]
  http:
    - match: [{{ uri: {{ prefix: /productpage }} }}]
      route: [{{ destination: {{ host: productpage, port: {{ number: 9080 }} }} }}]
"#,
        cert.cert,
        cert.key,
        cert = cert.cert,
        key = cert.key,
        root = pki.root_path(),
    );
    std::fs::write(mesh.path().join("services.yaml"), SERVICES).unwrap();
    std::fs::write(mesh.path().join("workloads.yaml"), page.entry()).unwrap();
    std::fs::write(mesh.path().join("gateway.yaml"), gateway).unwrap();
    let _app = app_on("productpage-v1", &format!("127.0.0.1:{}", page.app), &[]);
    let c = control(mesh.path());
    let dir = tempfile::tempdir().unwrap();
    let _page = sidecar(&c, &page, dir.path());
    let boot = format!(
        "identity:\n  ca_address: \"{}\"\n  ca_root: \"{}\"\n  token_file: \"{}\"\n",
        c.ca.addr,
        c.ca.root_file(dir.path()),
        c.ca.token_file(
            dir.path(),
            "spiffe://cluster.local/ns/default/sa/ingressgateway"
        ),
    );
    let xds = c.ca.addr.to_string();
    let _gw = proxy_with(
        &boot,
        &[
            "--xds",
            &xds,
            "--xds-tls",
            "--node-id",
            "router~127.0.0.1~ingressgateway.default~default.svc.cluster.local",
        ],
    );

    // HTTP: bound routes reach productpage over mTLS (its sidecar saw the gateway's
    // identity); what the VirtualService does not route is 404.
    let url = format!("http://127.0.0.1:{http}/productpage");
    let mut last = (String::new(), String::new());
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        last = curl(&[&url]);
        if last.1.starts_with("200") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(last.1.starts_with("200"), "{last:?}");
    assert!(last.0.contains("productpage-v1"), "{}", last.0);
    assert!(
        last.0
            .contains("URI=spiffe://cluster.local/ns/default/sa/ingressgateway"),
        "{}",
        last.0
    );
    let (_, code) = curl(&[&format!("http://127.0.0.1:{http}/reviews")]);
    assert!(code.starts_with("404"), "{code}");

    // HTTPS: the server's certificate, verified by curl against its CA and name.
    let resolve = format!("bookinfo.example.test:{https}:127.0.0.1");
    let (body, code) = curl(&[
        "--cacert",
        &pki.root_path(),
        "--resolve",
        &resolve,
        &format!("https://bookinfo.example.test:{https}/productpage"),
    ]);
    assert!(code.starts_with("200"), "{code} {body}");
    assert!(body.contains("productpage-v1"), "{body}");

    // httpsRedirect: 301 to https.
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
        ])
        .args(["-H", "host: bookinfo.example.test"])
        .arg(format!("http://127.0.0.1:{redirect}/productpage"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        said.starts_with("301 https://bookinfo.example.test"),
        "{said}"
    );

    // MUTUAL: a client certificate from the server's caCertificates is required.
    let resolve = format!("bookinfo.example.test:{mutual}:127.0.0.1");
    let url = format!("https://bookinfo.example.test:{mutual}/productpage");
    let (body, code) = curl(&[
        "--cacert",
        &pki.root_path(),
        "--resolve",
        &resolve,
        "--cert",
        &client.cert,
        "--key",
        &client.key,
        &url,
    ]);
    assert!(code.starts_with("200"), "{code} {body}");
    let (_, code) = curl(&["--cacert", &pki.root_path(), "--resolve", &resolve, &url]);
    assert!(!code.starts_with("200"), "no client certificate: {code}");
}
