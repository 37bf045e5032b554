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
    let optional = free_port();
    let stranger = pki.leaf("stranger", &["DNS:stranger.example.test"], false);
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
      tls: {{ mode: SIMPLE, serverCertificate: {}, privateKey: {}, maxProtocolVersion: TLSV1_2, cipherSuites: [ECDHE-RSA-AES128-GCM-SHA256, not-a-cipher-suite] }}
    - port: {{ number: {redirect}, name: http-redirect, protocol: HTTP }}
      hosts: [bookinfo.example.test]
      tls: {{ httpsRedirect: true }}
    - port: {{ number: {mutual}, name: https-mutual, protocol: HTTPS }}
      hosts: [bookinfo.example.test]
      tls: {{ mode: MUTUAL, serverCertificate: {cert}, privateKey: {key}, caCertificates: {root}, subjectAltNames: [partner.example.test] }}
    - port: {{ number: {optional}, name: https-optional, protocol: HTTPS }}
      hosts: [bookinfo.example.test]
      tls: {{ mode: OPTIONAL_MUTUAL, serverCertificate: {cert}, privateKey: {key}, caCertificates: {root} }}
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
    // h2load over cleartext HTTP/2 (prior knowledge), 2 connections x 10 streams.
    let run = h2load(&["-n", "200", "-c", "2", "-m", "10", &url]);
    assert_eq!(
        (
            run.protocol.as_str(),
            run.succeeded,
            run.failed,
            run.status_2xx
        ),
        ("h2c", 200, 0, 200),
        "{}",
        run.out
    );

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
    // cipherSuites (TLS 1.2): the one named is negotiated, another one is refused.
    let addr = format!("127.0.0.1:{https}").parse().unwrap();
    let named = s_client(addr, &["-servername", "bookinfo.example.test"]);
    assert!(
        named.contains("Cipher is ECDHE-RSA-AES128-GCM-SHA256"),
        "{named}"
    );
    let other = s_client(
        addr,
        &[
            "-servername",
            "bookinfo.example.test",
            "-cipher",
            "ECDHE-RSA-AES256-GCM-SHA384",
        ],
    );
    assert!(other.contains("Cipher is (NONE)"), "{other}");

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
    // subjectAltNames: a certificate from the same CA with another name is refused.
    let root = pki.root_path();
    let with = |leaf: &super::pki::Leaf, resolve: &str, url: &str| {
        let args = ["--cacert", &root, "--resolve", resolve];
        curl(&[&args[..], &["--cert", &leaf.cert, "--key", &leaf.key, url]].concat()).1
    };
    let code = with(&stranger, &resolve, &url);
    assert!(!code.starts_with("200"), "a name not listed: {code}");

    // OPTIONAL_MUTUAL: no certificate is fine; one that is presented is verified.
    let resolve = format!("bookinfo.example.test:{optional}:127.0.0.1");
    let url = format!("https://bookinfo.example.test:{optional}/productpage");
    let (body, code) = curl(&["--cacert", &pki.root_path(), "--resolve", &resolve, &url]);
    assert!(code.starts_with("200"), "{code} {body}");
    assert!(with(&stranger, &resolve, &url).starts_with("200"));
    let outsiders = Pki::new("outsider-ca");
    let outsider = outsiders.leaf("outsider", &["DNS:partner.example.test"], false);
    let code = with(&outsider, &resolve, &url);
    assert!(
        !code.starts_with("200"),
        "a certificate from another CA: {code}"
    );
}

/// `trellis gateway` for a workload of the default namespace.
fn gateway(c: &Control, name: &str, identity: &str) -> Proc {
    gateway_in(c, "default", name, identity)
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

/// A `kubernetes.io/tls` Secret with the certificate and key of `leaf` (and `ca`).
pub(super) fn tls_secret(name: &str, leaf: &super::pki::Leaf, ca: Option<&str>) -> String {
    use base64::Engine as _;
    let b64 =
        |path: &str| base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).unwrap());
    let ca = ca
        .map(|p| format!("\n  ca.crt: {}", b64(p)))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{ name: {name}, namespace: default }}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}{ca}\n",
        b64(&leaf.cert),
        b64(&leaf.key)
    )
}

/// The subject of the certificate a TLS server at `port` presents for `name`.
fn served_subject(port: u16, name: &str) -> String {
    let out = s_client(
        format!("127.0.0.1:{port}").parse().unwrap(),
        &["-servername", name],
    );
    out.lines()
        .find(|l| l.starts_with("subject="))
        .unwrap_or_default()
        .to_string()
}

/// `credentialName`: the gateway's certificates come from Secrets over SDS (never a
/// file on the gateway's machine); a new version of the Secret is served to new
/// connections without a restart and without a failed request; a server whose Secret
/// is missing is not served while the others are.
#[tokio::test]
async fn gateway_credentials_come_from_secrets_and_rotate_under_load() {
    let _quiet = quiet().await;
    let pki = Pki::new("credential-ca");
    let v1 = pki.leaf("bookinfo-v1", &["DNS:bookinfo.example.test"], false);
    let v2 = pki.leaf("bookinfo-v2", &["DNS:bookinfo.example.test"], true);
    let partner = pki.leaf("partner-server", &["DNS:partner.example.test"], false);
    let shop = pki.leaf("shop-server", &["DNS:shop.example.test"], true);
    let client_pki = Pki::new("partner-clients");
    let client = client_pki.leaf("partner", &["DNS:client.partner.test"], false);
    let (https, mutual, missing) = (free_port(), free_port(), free_port());
    let mesh = tempfile::tempdir().unwrap();
    let page = Workload::new(
        "productpage-v1",
        "app: productpage, version: v1",
        "productpage",
    );
    let gateway_yaml = format!(
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
    - port: {{ number: {https}, name: https, protocol: HTTPS }}
      hosts: [bookinfo.example.test]
      tls: {{ mode: SIMPLE, credentialName: bookinfo-credential }}
    - port: {{ number: {https}, name: https-shop, protocol: HTTPS }}
      hosts: [shop.example.test]
      tls: {{ mode: SIMPLE, credentialName: shop-credential }}
    - port: {{ number: {mutual}, name: https-mutual, protocol: HTTPS }}
      hosts: [partner.example.test]
      tls: {{ mode: MUTUAL, credentialName: partner-credential }}
    - port: {{ number: {missing}, name: https-missing, protocol: HTTPS }}
      hosts: [other.example.test]
      tls: {{ mode: SIMPLE, credentialName: not-there }}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{ name: bookinfo, namespace: default }}
spec:
  hosts: ["*"]
  gateways: [bookinfo-gateway]
  http:
    - route: [{{ destination: {{ host: productpage, port: {{ number: 9080 }} }} }}]
"#
    );
    std::fs::write(mesh.path().join("services.yaml"), SERVICES).unwrap();
    std::fs::write(mesh.path().join("workloads.yaml"), page.entry()).unwrap();
    std::fs::write(mesh.path().join("gateway.yaml"), gateway_yaml).unwrap();
    std::fs::write(
        mesh.path().join("bookinfo-credential.yaml"),
        tls_secret("bookinfo-credential", &v1, None),
    )
    .unwrap();
    std::fs::write(
        mesh.path().join("shop-credential.yaml"),
        tls_secret("shop-credential", &shop, None),
    )
    .unwrap();
    std::fs::write(
        mesh.path().join("partner-credential.yaml"),
        tls_secret(
            "partner-credential",
            &partner,
            Some(&client_pki.root_path()),
        ),
    )
    .unwrap();
    let _app = app_on("productpage-v1", &format!("127.0.0.1:{}", page.app), &[]);
    let c = control(mesh.path());
    let dir = tempfile::tempdir().unwrap();
    let _page = sidecar(&c, &page, dir.path());
    let gw = gateway(
        &c,
        "ingressgateway",
        "spiffe://cluster.local/ns/default/sa/ingressgateway",
    );

    let resolve = format!("bookinfo.example.test:{https}:127.0.0.1");
    let url = format!("https://bookinfo.example.test:{https}/productpage");
    let root = pki.root_path();
    let get = |extra: &[&str]| {
        let mut args = vec!["--cacert", &root, "--resolve", &resolve];
        args.extend_from_slice(extra);
        args.push(&url);
        curl(&args)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut last = get(&[]);
    while !last.1.starts_with("200") && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        last = get(&[]);
    }
    assert!(last.1.starts_with("200"), "{last:?}\n{}", gw.log());
    // Two servers on one port, each with its certificate, chosen by SNI.
    assert!(served_subject(https, "bookinfo.example.test").contains("bookinfo-v1"));
    assert!(served_subject(https, "shop.example.test").contains("shop-server"));
    // HTTP/2 by ALPN, as curl and openssl negotiate it.
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
            "--http2",
        ])
        .args(["--cacert", &root, "--resolve", &resolve, &url])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 200");
    let alpn = s_client(
        format!("127.0.0.1:{https}").parse().unwrap(),
        &[
            "-servername",
            "bookinfo.example.test",
            "-alpn",
            "h2,http/1.1",
        ],
    );
    assert!(alpn.contains("ALPN protocol: h2"), "{alpn}");
    // h2load over TLS: HTTP/2 by ALPN, 4 connections x 10 streams, every request 200.
    let connect = format!("--connect-to=127.0.0.1:{https}");
    let run = h2load(&["-n", "400", "-c", "4", "-m", "10", &connect, &url]);
    assert_eq!(
        (
            run.protocol.as_str(),
            run.succeeded,
            run.failed,
            run.status_2xx
        ),
        ("h2", 400, 0, 400),
        "{}",
        run.out
    );
    let shop_resolve = format!("shop.example.test:{https}:127.0.0.1");
    let (_, code) = curl(&[
        "--cacert",
        &root,
        "--resolve",
        &shop_resolve,
        &format!("https://shop.example.test:{https}/productpage"),
    ]);
    assert!(code.starts_with("200"), "{code}");
    // The key never went to a file on the gateway's side.
    assert!(
        !gw.log().contains("BEGIN"),
        "key material in the gateway's log"
    );

    // MUTUAL: the client CA comes from the Secret's ca.crt.
    let m_resolve = format!("partner.example.test:{mutual}:127.0.0.1");
    let m_url = format!("https://partner.example.test:{mutual}/productpage");
    let (_, code) = curl(&[
        "--cacert",
        &root,
        "--resolve",
        &m_resolve,
        "--cert",
        &client.cert,
        "--key",
        &client.key,
        &m_url,
    ]);
    assert!(code.starts_with("200"), "{code}");
    let (_, code) = curl(&["--cacert", &root, "--resolve", &m_resolve, &m_url]);
    assert!(!code.starts_with("200"), "no client certificate: {code}");
    // The server whose Secret is missing is not served; the control plane said why.
    let out = s_client(format!("127.0.0.1:{missing}").parse().unwrap(), &[]);
    assert!(!out.contains("subject="), "{out}");
    assert!(c
        .ca
        .proc
        .log()
        .contains("credentialName: no Secret \"not-there\""));

    // Rotation under load: new connections one after another (a handshake each) while
    // the Secret is replaced; every request succeeds, and the new certificate is served.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, root, resolve, url) = (stop.clone(), root.clone(), resolve.clone(), url.clone());
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0u32, Vec::new());
            for _ in 0..2000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let (_, code) = curl(&["--cacert", &root, "--resolve", &resolve, &url]);
                if code.starts_with("200") {
                    ok += 1;
                } else {
                    failed.push(code);
                }
            }
            (ok, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::write(
        mesh.path().join("bookinfo-credential.yaml"),
        tls_secret("bookinfo-credential", &v2, None),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !served_subject(https, "bookinfo.example.test").contains("bookinfo-v2") {
        assert!(
            std::time::Instant::now() < deadline,
            "still the old certificate\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = load.join().unwrap();
    eprintln!(
        "rotation under load: {ok} requests, {} failed",
        failed.len()
    );
    assert!(failed.is_empty(), "{failed:?}");
    assert!(ok >= 10, "only {ok} requests");
}

/// The egress gateway pattern (Istio's "egress gateway with TLS origination"): the app
/// speaks plain HTTP to an external host; its sidecar sends the request over mutual TLS
/// to the egress gateway (a VirtualService route whose match names `mesh`), whose
/// ISTIO_MUTUAL server takes it and routes it (the route whose match names the gateway)
/// to the external server over TLS it originates (DestinationRule SIMPLE with SNI and
/// CA). The external server is `openssl s_server`, which prints the SNI it got.
#[tokio::test]
async fn sidecars_reach_an_external_service_through_an_egress_gateway_that_originates_tls() {
    let _quiet = quiet().await;
    let ext_pki = Pki::new("external-ca");
    let api = ext_pki.leaf("api", &["DNS:api.example.test"], false);
    let dir = tempfile::tempdir().unwrap();
    let (ext, egress) = (free_port(), free_port());
    let server = SServer::start(ext, &["-cert", &api.cert, "-key", &api.key], dir.path());
    let app = Workload::new("app", "app: app", "app");
    let mesh = tempfile::tempdir().unwrap();
    let config = format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{ name: api, namespace: default }}
spec:
  hosts: [api.example.test]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports:
    - {{ number: 80, name: http, protocol: HTTP }}
    - {{ number: 443, name: https, protocol: HTTPS, targetPort: {ext} }}
  endpoints: [{{ address: 127.0.0.1 }}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{ name: egressgateway, namespace: default }}
spec: {{ address: 127.0.0.1, labels: {{ istio: egressgateway }}, serviceAccount: egressgateway }}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{ name: egressgateway, namespace: default }}
spec:
  hosts: [istio-egressgateway.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{ number: {egress}, name: https, protocol: HTTPS }}]
  workloadSelector: {{ labels: {{ istio: egressgateway }} }}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{ name: istio-egressgateway, namespace: default }}
spec:
  selector: {{ istio: egressgateway }}
  servers:
    - port: {{ number: {egress}, name: https-port-for-tls-origination, protocol: HTTPS }}
      hosts: [api.example.test]
      tls: {{ mode: ISTIO_MUTUAL }}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{ name: egressgateway-for-api, namespace: default }}
spec:
  host: istio-egressgateway.default.svc.cluster.local
  trafficPolicy: {{ tls: {{ mode: ISTIO_MUTUAL }} }}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{ name: direct-api-through-egress-gateway, namespace: default }}
spec:
  hosts: [api.example.test]
  gateways: [istio-egressgateway, mesh]
  http:
    - match: [{{ gateways: [mesh], port: 80 }}]
      route: [{{ destination: {{ host: istio-egressgateway.default.svc.cluster.local, port: {{ number: {egress} }} }} }}]
    - match: [{{ gateways: [istio-egressgateway], port: {egress} }}]
      route: [{{ destination: {{ host: api.example.test, port: {{ number: 443 }} }} }}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{ name: originate-tls-for-api, namespace: default }}
spec:
  host: api.example.test
  trafficPolicy:
    portLevelSettings:
      - port: {{ number: 443 }}
        tls: {{ mode: SIMPLE, caCertificates: {ca} }}
"#,
        ca = ext_pki.root_path(),
    );
    std::fs::write(mesh.path().join("egress.yaml"), config).unwrap();
    std::fs::write(mesh.path().join("app.yaml"), app.entry()).unwrap();
    let c = control(mesh.path());
    let _s = sidecar(&c, &app, dir.path());
    let mut gw = gateway(
        &c,
        "egressgateway",
        "spiffe://cluster.local/ns/default/sa/egressgateway",
    );

    let url = format!("http://127.0.0.1:{}/", app.outbound);
    let mut last = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        let r = send(Req::get(&url).header("host", "api.example.test")).await;
        if r.as_ref().is_ok_and(|r| r.status == 200) {
            last = r.ok();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = last.unwrap_or_else(|| panic!("never through the egress gateway\n{}", gw.log()));
    // s_server's page: the TLS it had, which the gateway originated with the SNI.
    assert!(r.body.contains("TLSv1.3"), "{}", r.body);
    let sni = server.sni();
    assert!(sni.ends_with("api.example.test"), "SNI {sni:?}");
    // The sidecar went to the gateway over mutual TLS (the gateway's ISTIO_MUTUAL
    // listener counted the handshake), not to the external server directly.
    let admin = gw.wait_ready(&gw.dir.path().join("ready.json"))["admin"]
        .as_str()
        .unwrap()
        .to_string();
    let stats = get(&format!("http://{admin}/stats/prometheus")).await.body;
    let handshakes: f64 = stats
        .lines()
        .filter(|l| {
            l.starts_with("trellis_downstream_tls_handshakes_total")
                && l.contains("result=\"success\"")
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert!(handshakes >= 1.0, "{stats}");
}

/// A GRPCRoute (Kubernetes Gateway API, from the config directory): gRPC calls over h2c
/// reach the backend its method match names over HTTP/2; another method has no route.
#[tokio::test]
async fn a_grpc_route_sends_a_service_s_methods_to_its_backend() {
    let _quiet = quiet().await;
    let port = free_port();
    let backend = app_on("greeter-v1", "127.0.0.1:0", &[]);
    let mesh = tempfile::tempdir().unwrap();
    let config = format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{ name: greeter, namespace: default }}
spec:
  hosts: [greeter.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{ number: 50051, name: grpc, protocol: GRPC, targetPort: {backend_port} }}]
  endpoints: [{{ address: 127.0.0.1 }}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{ name: edge, namespace: default }}
spec: {{ address: 127.0.0.1, labels: {{ gateway.networking.k8s.io/gateway-name: edge }}, serviceAccount: edge }}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{ name: edge, namespace: default }}
spec:
  gatewayClassName: trellis
  listeners: [{{ name: grpc, port: {port}, protocol: HTTP }}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{ name: greeter, namespace: default }}
spec:
  parentRefs: [{{ name: edge }}]
  rules:
    - matches: [{{ method: {{ service: helloworld.Greeter, method: SayHello }} }}]
      filters:
        - type: ResponseHeaderModifier
          responseHeaderModifier: {{ set: [{{ name: x-route, value: greeter }}] }}
      backendRefs: [{{ name: greeter, port: 50051 }}]
"#,
        backend_port = backend.addr.port(),
    );
    std::fs::write(mesh.path().join("grpc.yaml"), config).unwrap();
    let c = control(mesh.path());
    let gw = gateway(&c, "edge", "spiffe://cluster.local/ns/default/sa/edge");
    // One gRPC message: uncompressed, 5 bytes.
    let frame: &[u8] = &[0, 0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o'];
    let call = |method: &str| {
        Req::get(&format!(
            "http://127.0.0.1:{port}/helloworld.Greeter/{method}"
        ))
        .method("POST")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(bytes::Bytes::from_static(frame))
        .h2()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut last = None;
    while std::time::Instant::now() < deadline {
        last = send(call("SayHello")).await.ok();
        if last.as_ref().is_some_and(|r| r.status == 200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = last.unwrap_or_else(|| panic!("no answer\n{}", gw.log()));
    assert_eq!(r.status, 200, "{}", gw.log());
    assert_eq!(r.header("x-route"), Some("greeter"));
    assert_eq!(r.header("x-served-by"), Some("greeter-v1"));
    assert_eq!(r.body.as_bytes(), frame, "the message echoed");
    // Another method of the service: no route.
    assert_eq!(send(call("SayGoodbye")).await.unwrap().status, 404);
}

/// A TLSRoute (Kubernetes Gateway API) on a TLS listener in Passthrough mode: each
/// hostname reaches its own backend, which terminates TLS with its own certificate.
#[tokio::test]
async fn tls_routes_pass_tls_through_by_sni() {
    let _quiet = quiet().await;
    let pki = Pki::new("tlsroute-ca");
    let dir = tempfile::tempdir().unwrap();
    let (a_port, b_port, tls_port) = (free_port(), free_port(), free_port());
    let a = pki.leaf("a-backend", &["DNS:a.example.test"], false);
    let b = pki.leaf("b-backend", &["DNS:b.example.test"], true);
    let _a = SServer::start(a_port, &["-cert", &a.cert, "-key", &a.key], dir.path());
    let _b = SServer::start(b_port, &["-cert", &b.cert, "-key", &b.key], dir.path());
    let mesh = tempfile::tempdir().unwrap();
    let mut config = format!(
        r#"apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{ name: edge, namespace: default }}
spec: {{ address: 127.0.0.1, labels: {{ gateway.networking.k8s.io/gateway-name: edge }}, serviceAccount: edge }}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{ name: edge, namespace: default }}
spec:
  gatewayClassName: trellis
  listeners:
    - name: tls
      port: {tls_port}
      protocol: TLS
      hostname: "*.example.test"
      tls: {{ mode: Passthrough }}
"#
    );
    for (name, port) in [("a", a_port), ("b", b_port)] {
        config += &format!(
            r#"---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{ name: {name}, namespace: default }}
spec:
  hosts: [{name}.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{ number: 443, name: tls, protocol: TLS, targetPort: {port} }}]
  endpoints: [{{ address: 127.0.0.1 }}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {{ name: {name}, namespace: default }}
spec:
  parentRefs: [{{ name: edge }}]
  hostnames: [{name}.example.test]
  rules: [{{ backendRefs: [{{ name: {name}, port: 443 }}] }}]
"#
        );
    }
    std::fs::write(mesh.path().join("edge.yaml"), config).unwrap();
    let c = control(mesh.path());
    let gw = gateway(&c, "edge", "spiffe://cluster.local/ns/default/sa/edge");
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
        assert!(last.1.starts_with("200"), "{host}: {last:?}\n{}", gw.log());
        assert!(served_subject(tls_port, host).contains(subject), "{host}");
    }
    let resolve = format!("c.example.test:{tls_port}:127.0.0.1");
    let (_, code) = curl(&[
        "-k",
        "--resolve",
        &resolve,
        &format!("https://c.example.test:{tls_port}/"),
    ]);
    assert!(!code.starts_with("200"), "unrouted name: {code}");
}

/// Gateway API TCPRoutes on a TCP listener and on a TLS listener in Terminate mode: the
/// bytes go to the route's backend as they are, or after the gateway's handshake with
/// the listener's certificate (from a Secret). The backend here speaks HTTP, so curl can
/// tell where its requests went.
#[tokio::test]
async fn tcp_routes_carry_tcp_and_terminated_tls_to_their_backend() {
    let _quiet = quiet().await;
    let pki = Pki::new("tcproute-ca");
    let cert = pki.leaf("db-gateway", &["DNS:db.example.test"], false);
    let (app_port, tcp_port, tls_port) = (free_port(), free_port(), free_port());
    let _app = app_on("db-v1", &format!("127.0.0.1:{app_port}"), &[]);
    let mesh = tempfile::tempdir().unwrap();
    let config = format!(
        r#"apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{ name: edge, namespace: default }}
spec: {{ address: 127.0.0.1, labels: {{ gateway.networking.k8s.io/gateway-name: edge }}, serviceAccount: edge }}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{ name: db, namespace: default }}
spec:
  hosts: [db.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{ number: 7000, name: tcp, protocol: TCP, targetPort: {app_port} }}]
  endpoints: [{{ address: 127.0.0.1 }}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{ name: edge, namespace: default }}
spec:
  gatewayClassName: trellis
  listeners:
    - {{ name: tcp, port: {tcp_port}, protocol: TCP }}
    - name: tls
      port: {tls_port}
      protocol: TLS
      tls: {{ mode: Terminate, certificateRefs: [{{ name: db-credential }}] }}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {{ name: db, namespace: default }}
spec:
  parentRefs: [{{ name: edge }}]
  rules: [{{ backendRefs: [{{ name: db, port: 7000 }}] }}]
"#
    );
    std::fs::write(mesh.path().join("edge.yaml"), config).unwrap();
    std::fs::write(
        mesh.path().join("db-credential.yaml"),
        tls_secret("db-credential", &cert, None),
    )
    .unwrap();
    let c = control(mesh.path());
    let gw = gateway(&c, "edge", "spiffe://cluster.local/ns/default/sa/edge");
    let resolve = format!("db.example.test:{tls_port}:127.0.0.1");
    let root = pki.root_path();
    let tcp_url = format!("http://127.0.0.1:{tcp_port}/");
    let tls_url = format!("https://db.example.test:{tls_port}/");
    for args in [
        vec![tcp_url.as_str()],
        vec!["--cacert", &root, "--resolve", &resolve, &tls_url],
    ] {
        let mut last = (String::new(), String::new());
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::time::Instant::now() < deadline {
            last = curl(&args);
            if last.1.starts_with("200") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            last.1.starts_with("200"),
            "{args:?}: {last:?}\n{}",
            gw.log()
        );
        assert!(last.0.contains("db-v1"), "{}", last.0);
    }
    // The TLS listener presented the Secret's certificate.
    assert!(served_subject(tls_port, "db.example.test").contains("db-gateway"));
}

/// AUTO_PASSTHROUGH, Istio's east-west gateway: a caller outside the gateway's network
/// speaks mutual TLS with the destination's sidecar through it, naming the service by
/// the SNI a sidecar sends (`outbound_.<port>_._.<host>`). Here the caller is
/// `openssl s_client` with a mesh certificate from the CA, as a remote sidecar would
/// have; the gateway terminates nothing, so the destination sidecar sees the caller's
/// identity and the caller the destination's.
#[tokio::test]
async fn an_auto_passthrough_gateway_carries_mutual_tls_to_the_service_the_sni_names() {
    let _quiet = quiet().await;
    let port = free_port();
    let mesh = tempfile::tempdir().unwrap();
    let page = Workload::new(
        "productpage-v1",
        "app: productpage, version: v1",
        "productpage",
    );
    let gateway_yaml = format!(
        r#"apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{ name: eastwestgateway, namespace: default }}
spec: {{ address: 127.0.0.1, labels: {{ istio: eastwestgateway }}, serviceAccount: eastwestgateway }}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{ name: cross-network-gateway, namespace: default }}
spec:
  selector: {{ istio: eastwestgateway }}
  servers:
    - port: {{ number: {port}, name: tls, protocol: TLS }}
      hosts: ["*.local"]
      tls: {{ mode: AUTO_PASSTHROUGH }}
"#
    );
    std::fs::write(mesh.path().join("services.yaml"), SERVICES).unwrap();
    std::fs::write(mesh.path().join("workloads.yaml"), page.entry()).unwrap();
    std::fs::write(mesh.path().join("gateway.yaml"), gateway_yaml).unwrap();
    let _app = app_on("productpage-v1", &format!("127.0.0.1:{}", page.app), &[]);
    let c = control(mesh.path());
    let dir = tempfile::tempdir().unwrap();
    let _page = sidecar(&c, &page, dir.path());
    let gw = gateway(
        &c,
        "eastwestgateway",
        "spiffe://cluster.local/ns/default/sa/eastwestgateway",
    );

    // The remote caller's certificate, from the mesh CA.
    let caller = "spiffe://cluster.local/ns/default/sa/remote-caller";
    let key = super::ca::ec();
    let chain = super::ca::client(&c.ca)
        .create_certificate(
            &super::ca::csr(&key, caller),
            Duration::from_secs(3600),
            trellis_ca::Credential::Token(&c.ca.token(caller, "1h")),
        )
        .await
        .unwrap();
    let (cert, key_file) = (dir.path().join("caller.pem"), dir.path().join("caller.key"));
    std::fs::write(&cert, chain[0].as_bytes()).unwrap();
    std::fs::write(&key_file, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let root = c.ca.root_file(dir.path());
    let call = |sni: &str| {
        let mut child = Command::new("openssl")
            .args(["s_client", "-quiet", "-verify_return_error", "-connect"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-servername", sni, "-CAfile", &root])
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key_file)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("openssl");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(
                b"GET /productpage HTTP/1.1\r\nHost: productpage\r\nConnection: close\r\n\r\n",
            )
            .unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let sni = "outbound_.9080_._.productpage.default.svc.cluster.local";
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut said = call(sni);
    while !said.contains("HTTP/1.1 200") && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        said = call(sni);
    }
    assert!(said.contains("HTTP/1.1 200"), "{said}\n{}", gw.log());
    // The destination sidecar terminated the caller's TLS (verified against the mesh
    // root): it saw the caller's identity, not the gateway's.
    assert!(said.contains("productpage-v1"), "{said}");
    assert!(said.contains(&format!("URI={caller}")), "{said}");
    assert!(!said.contains("sa/eastwestgateway"), "{said}");
    // A name the gateway has no service for is closed, not routed anywhere.
    let unknown = call("outbound_.9080_._.nothing.default.svc.cluster.local");
    assert!(!unknown.contains("HTTP/1.1"), "{unknown}");
}
