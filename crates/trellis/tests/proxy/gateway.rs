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

/// `trellis gateway` for a workload; returns it once its admin port is up.
fn gateway(c: &Control, name: &str, identity: &str) -> Proc {
    let dir = tempfile::tempdir().unwrap();
    let root = c.ca.root_file(dir.path());
    let token = c.ca.token_file(dir.path(), identity);
    let ready = dir.path().join("ready.json");
    let ca = c.ca.addr.to_string();
    let ready_arg = ready.display().to_string();
    let mut p = Proc::spawn(
        &[
            "gateway",
            "--control",
            &ca,
            "--ca-root",
            &root,
            "--token-file",
            &token,
            "--name",
            name,
            "--namespace",
            "default",
            "--admin",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--ready-file",
            &ready_arg,
        ],
        dir,
    );
    p.wait_ready(&ready);
    p
}

/// TLS PASSTHROUGH: the gateway reads the SNI of the client's ClientHello and splices
/// the still-encrypted connection to the backend the VirtualService's `tls` route
/// names, which terminates TLS with its own certificate (the gateway has none); a name
/// no route has is closed. A TCP server splices to the `tcp` route's destination.
#[tokio::test]
async fn a_gateway_passes_tls_through_by_sni_and_splices_tcp() {
    let _quiet = quiet().await;
    let pki = Pki::new("backend-ca");
    let dir = tempfile::tempdir().unwrap();
    let (a_port, b_port, tls_port, tcp_port) = (free_port(), free_port(), free_port(), free_port());
    let a = pki.leaf("a-backend", &["DNS:a.example.test"], false);
    let b = pki.leaf("b-backend", &["DNS:b.example.test"], true);
    let _a = SServer::start(a_port, &["-cert", &a.cert, "-key", &a.key], dir.path());
    let _b = SServer::start(b_port, &["-cert", &b.cert, "-key", &b.key], dir.path());
    let echo = app_on("echo", "127.0.0.1:0", &[]);
    let mesh = tempfile::tempdir().unwrap();
    let config = format!(
        r#"apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{ name: edge, namespace: default }}
spec: {{ address: 127.0.0.1, labels: {{ istio: edge }}, serviceAccount: edge }}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{ name: a, namespace: default }}
spec:
  hosts: [a.example.test]
  resolution: STATIC
  ports: [{{ number: 443, name: tls, protocol: TLS, targetPort: {a_port} }}]
  endpoints: [{{ address: 127.0.0.1 }}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{ name: b, namespace: default }}
spec:
  hosts: [b.example.test]
  resolution: STATIC
  ports: [{{ number: 443, name: https, protocol: HTTPS, targetPort: {b_port} }}]
  endpoints: [{{ address: 127.0.0.1 }}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{ name: echo, namespace: default }}
spec:
  hosts: [echo.internal]
  resolution: STATIC
  ports: [{{ number: 7000, name: tcp, protocol: TCP, targetPort: {echo_port} }}]
  endpoints: [{{ address: 127.0.0.1 }}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{ name: edge, namespace: default }}
spec:
  selector: {{ istio: edge }}
  servers:
    - port: {{ number: {tls_port}, name: tls, protocol: TLS }}
      hosts: ["*.example.test"]
      tls: {{ mode: PASSTHROUGH }}
    - port: {{ number: {tcp_port}, name: tcp, protocol: TCP }}
      hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{ name: backends, namespace: default }}
spec:
  hosts: [a.example.test, b.example.test, echo.internal]
  gateways: [edge]
  tls:
    - match: [{{ sniHosts: [a.example.test] }}]
      route: [{{ destination: {{ host: a.example.test }} }}]
    - match: [{{ sniHosts: [b.example.test] }}]
      route: [{{ destination: {{ host: b.example.test, port: {{ number: 443 }} }} }}]
  tcp:
    - route: [{{ destination: {{ host: echo.internal }} }}]
"#,
        echo_port = echo.addr.port(),
    );
    std::fs::write(mesh.path().join("edge.yaml"), config).unwrap();
    let c = control(mesh.path());
    let _gw = gateway(&c, "edge", "spiffe://cluster.local/ns/default/sa/edge");

    // Each name reaches its own backend, whose certificate (not the gateway's) curl
    // verifies against the backends' CA and the name.
    for (host, subject) in [
        ("a.example.test", "a-backend"),
        ("b.example.test", "b-backend"),
    ] {
        let resolve = format!("{host}:{tls_port}:127.0.0.1");
        let url = format!("https://{host}:{tls_port}/");
        let mut last = (String::new(), String::new());
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::time::Instant::now() < deadline {
            last = curl(&["--cacert", &pki.root_path(), "--resolve", &resolve, &url]);
            if last.1.starts_with("200") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(last.1.starts_with("200"), "{host}: {last:?}");
        // s_server's page is the session it terminated: TLS 1.3 with curl.
        assert!(last.0.contains("TLSv1.3"), "{host}: {}", last.0);
        let shown = s_client(
            format!("127.0.0.1:{tls_port}").parse().unwrap(),
            &[
                "-servername",
                host,
                "-CAfile",
                &pki.root_path(),
                "-verify_return_error",
            ],
        );
        let peer = shown
            .lines()
            .find(|l| l.starts_with("subject="))
            .unwrap_or_default();
        assert!(peer.contains(subject), "{host}: {shown}");
        assert!(
            shown.contains("Verify return code: 0 (ok)"),
            "{host}: {shown}"
        );
    }
    // A name no route has, and no name at all: closed, nothing reaches a backend.
    let resolve = format!("c.example.test:{tls_port}:127.0.0.1");
    let (_, code) = curl(&[
        "-k",
        "--resolve",
        &resolve,
        &format!("https://c.example.test:{tls_port}/"),
    ]);
    assert!(!code.starts_with("200"), "unrouted name: {code}");
    let (_, code) = curl(&["-k", &format!("https://127.0.0.1:{tls_port}/")]);
    assert!(!code.starts_with("200"), "no SNI: {code}");

    // TCP: HTTP spoken over the spliced connection reaches the echo app.
    let (body, code) = curl(&[&format!("http://127.0.0.1:{tcp_port}/hello")]);
    assert!(code.starts_with("200"), "{code} {body}");
    assert!(body.contains("echo"), "{body}");
}
