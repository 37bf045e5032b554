//! TLS through the real binary: termination checked with curl and `openssl s_client`,
//! mutual TLS between two proxies with SPIFFE identities, refused peers, and bad
//! certificate files refused while the old config keeps serving.

use crate::harness::*;
use crate::pki::{spiffe, Leaf, Pki};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Runs curl; returns (exit code, stdout).
fn curl(args: &[&str]) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A certificate's files as flow-map entries: `certificate_chain: "…", private_key: "…"`.
fn cert_inline(leaf: &Leaf) -> String {
    format!(
        "certificate_chain: \"{}\", private_key: \"{}\"",
        leaf.cert, leaf.key
    )
}

/// A cluster's `tls` block: mutual TLS with `leaf`, expecting the server to be `expect`.
fn upstream_tls(pki: &Pki, leaf: &Leaf, expect: &str) -> String {
    format!(
        "tls:\n  trusted_ca: \"{}\"\n  certificate: {{ {} }}\n  match_identities: [\"{expect}\"]\n",
        pki.root_path(),
        cert_inline(leaf)
    )
}

fn https_listener(name: &str, leaf: &Leaf, tls_extra: &str, cluster: &str) -> String {
    format!(
        r#"  - name: {name}
    address: 127.0.0.1:0
    tls:
      certificates:
        - {{ certificate_chain: "{}", private_key: "{}" }}
{}    http:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
            - match: {{ prefix: "/" }}
              route: {{ cluster: {cluster} }}
"#,
        leaf.cert,
        leaf.key,
        indent(tls_extra, 6)
    )
}

#[tokio::test]
async fn termination_alpn_versions_and_sni_with_real_clients() {
    let pki = Pki::new("root");
    let rsa = pki.leaf(
        "web-rsa",
        &["DNS:localhost", &format!("URI:{}", spiffe("web"))],
        false,
    );
    let ec = pki.leaf("web-ec", &["DNS:ec.localhost"], true);
    let app = app("web", &[]);
    let sni_cert = format!(
        "- {{ certificate_chain: \"{}\", private_key: \"{}\", server_names: [\"ec.localhost\"] }}",
        ec.cert, ec.key
    );
    let mut yaml = "listeners:\n".to_string()
        + &https_listener("tls13", &rsa, "", "app")
        + &https_listener("tls12", &rsa, "min_version: \"1.2\"", "app")
        + &https_listener(
            "no_resumption",
            &rsa,
            "min_version: \"1.2\"\nsession_resumption: false",
            "app",
        );
    // The SNI certificate joins the first listener's list.
    yaml = yaml.replacen(
        "\n    http:",
        &format!("\n{}\n    http:", indent(&sni_cert, 8).trim_end()),
        1,
    );
    yaml += &format!("clusters:\n{}", cluster("app", &[app.addr], ""));
    let p = proxy(&yaml);
    let a13 = p.addr("tls13");
    let root = pki.root_path();
    let resolve = format!("localhost:{}:127.0.0.1", a13.port());
    let url = format!("https://localhost:{}/hello", a13.port());

    // curl over HTTP/2 (ALPN h2) and HTTP/1.1, verifying the chain against the root.
    let (code, out) = curl(&[
        "--cacert",
        &root,
        "--resolve",
        &resolve,
        "--http2",
        "-w",
        "\n%{http_version}",
        &url,
    ]);
    assert_eq!(code, 0, "{out}\n{}", p.proc.log());
    assert!(out.ends_with("\n2"), "{out}");
    assert!(out.contains("\"service\":\"web\""), "{out}");
    assert!(out.contains("\"x-forwarded-proto\":\"https\""), "{out}");
    let (code, out) = curl(&[
        "--cacert",
        &root,
        "--resolve",
        &resolve,
        "--http1.1",
        "-w",
        "\n%{http_version}",
        &url,
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.ends_with("\n1.1"), "{out}");

    // An independent TLS peer sees TLS 1.3, ALPN h2 and the configured chain.
    let out = s_client(a13, &["-alpn", "h2", "-showcerts"]);
    assert!(out.contains("TLSv1.3"), "{out}");
    assert!(out.contains("ALPN protocol: h2"), "{out}");
    assert!(
        out.contains("CN = web-rsa") || out.contains("CN=web-rsa"),
        "{out}"
    );
    assert!(!out.contains("Verify return code: 0 (ok)"), "{out}");
    let verified = s_client(a13, &["-CAfile", &root, "-verify_return_error"]);
    assert!(
        verified.contains("Verify return code: 0 (ok)"),
        "{verified}"
    );

    // The leaf's SANs as an independent parser reads them.
    let pem_start = out.find("-----BEGIN CERTIFICATE-----").unwrap();
    let pem_end = out.find("-----END CERTIFICATE-----").unwrap() + 25;
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    x509.stdin
        .take()
        .unwrap()
        .write_all(&out.as_bytes()[pem_start..pem_end])
        .unwrap();
    let sans = String::from_utf8(x509.wait_with_output().unwrap().stdout).unwrap();
    assert!(
        sans.contains("DNS:localhost") && sans.contains(&format!("URI:{}", spiffe("web"))),
        "{sans}"
    );
    // SNI selects the ECDSA certificate for its name; others get the default.
    let out = s_client(a13, &["-servername", "ec.localhost"]);
    assert!(
        out.contains("CN = web-ec") || out.contains("CN=web-ec"),
        "{out}"
    );

    // Nothing older than TLS 1.2, and 1.2 only where configured.
    let refused = |out: &str| out.contains("Cipher is (NONE)") && out.contains("protocol version");
    for old in ["-tls1", "-tls1_1", "-tls1_2"] {
        let out = s_client(a13, &[old]);
        assert!(refused(&out), "{old}: {out}");
    }
    let a12 = p.addr("tls12");
    let out = s_client(a12, &["-tls1_2"]);
    assert!(out.contains("New, TLSv1.2"), "{out}");
    let out = s_client(a12, &["-tls1_1"]);
    assert!(refused(&out), "{out}");

    // Session resumption: on by default, off where configured (every handshake full).
    let session = tempfile::tempdir().unwrap();
    let file = session.path().join("session.pem").display().to_string();
    for (listener, resumed) in [("tls12", true), ("no_resumption", false)] {
        let addr = p.addr(listener);
        let first = s_client(addr, &["-tls1_2", "-sess_out", &file]);
        assert!(first.contains("New, TLSv1.2"), "{first}");
        let second = s_client(addr, &["-tls1_2", "-sess_in", &file]);
        assert_eq!(
            second.contains("Reused, TLSv1.2"),
            resumed,
            "{listener}: {second}"
        );
    }

    // Plaintext HTTP to a TLS port fails the handshake and is counted.
    let (code, _) = curl(&[&format!("http://127.0.0.1:{}/", a13.port())]);
    assert_ne!(code, 0);
    assert!(
        p.metric("trellis_downstream_tls_handshakes_total{listener=\"tls13\",result=\"failure\"}")
            .await
            >= 1.0
    );
    assert!(
        p.metric("trellis_private_key_operations_total{provider=\"memory\",op=\"sign\",result=\"success\"}")
            .await
            >= 4.0
    );
}

struct Mesh {
    pki: Pki,
    frontend: Leaf,
    inbound: Proxy,
    _app: App,
}

/// A server-side sidecar (`reviews`) with STRICT mutual TLS in front of an app.
fn inbound_sidecar() -> Mesh {
    let pki = Pki::new("mesh-root");
    let frontend = pki.leaf("frontend", &[&format!("URI:{}", spiffe("frontend"))], false);
    let reviews = pki.leaf("reviews", &[&format!("URI:{}", spiffe("reviews"))], true);
    let app = app("reviews", &[]);
    let tls_extra = format!("trusted_ca: \"{}\"", pki.root_path());
    let yaml = "listeners:\n".to_string()
        + &https_listener("inbound", &reviews, &tls_extra, "app")
        + &format!(
            "  - name: inbound_tcp\n    address: 127.0.0.1:0\n    tls:\n      certificates: [{{ {} }}]\n      trusted_ca: \"{}\"\n    tcp: {{ cluster: app }}\n",
            cert_inline(&reviews),
            pki.root_path()
        )
        + &format!("clusters:\n{}", cluster("app", &[app.addr], ""));
    let inbound = proxy(&yaml);
    Mesh {
        pki,
        frontend,
        inbound,
        _app: app,
    }
}

/// A client-side sidecar whose `reviews` cluster originates mTLS to `target`.
fn outbound_sidecar(
    mesh: &Mesh,
    target: SocketAddr,
    expect: &str,
    tcp_target: SocketAddr,
) -> Proxy {
    let tls = upstream_tls(&mesh.pki, &mesh.frontend, expect);
    let yaml = http_listener("- match: { prefix: \"/\" }\n  route: { cluster: reviews }")
        + "  - name: tcp_out\n    address: 127.0.0.1:0\n    tcp: { cluster: reviews_tcp }\n"
        + "clusters:\n"
        + &cluster(
            "reviews",
            &[target],
            &(tls.clone() + "  sni: reviews.default.svc"),
        )
        + &cluster("reviews_tcp", &[tcp_target], &tls);
    proxy(&yaml)
}

#[tokio::test]
async fn mutual_tls_between_sidecars_with_spiffe_identities() {
    let mesh = inbound_sidecar();
    let inbound = mesh.inbound.addr("inbound");
    let inbound_tcp = mesh.inbound.addr("inbound_tcp");
    let outbound = outbound_sidecar(&mesh, inbound, &spiffe("reviews"), inbound_tcp);

    // app → sidecar → mTLS → sidecar → app; the server app learns the caller's
    // verified identity, and a forged identity header from the client is dropped.
    let r = send(Req::get(&outbound.url("web", "/reviews/1")).header(
        "x-forwarded-client-cert",
        "URI=spiffe://cluster.local/ns/default/sa/admin",
    ))
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}\n{}", r.body, outbound.proc.log());
    let echoed = r.json();
    assert_eq!(
        echoed["headers"]["x-forwarded-client-cert"],
        format!("URI={}", spiffe("frontend")),
        "{echoed}"
    );
    assert_eq!(echoed["headers"]["x-forwarded-proto"], "http");

    // The same path over the TCP proxy, TLS on both sides of the hop.
    let (code, out) = curl(&[&format!("http://{}/tcp", outbound.addr("tcp_out"))]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"service\":\"reviews\""), "{out}");

    // Both proxies signed with the in-memory provider.
    for p in [&outbound, &mesh.inbound] {
        assert!(
            p.metric("trellis_private_key_operations_total{provider=\"memory\",op=\"sign\",result=\"success\"}")
                .await
                >= 1.0
        );
    }

    // STRICT: plaintext and certificate-less clients are refused.
    let root = mesh.pki.root_path();
    let url = format!("https://127.0.0.1:{}/", inbound.port());
    let (code, _) = curl(&[&format!("http://{inbound}/")]);
    assert_ne!(code, 0, "plaintext accepted");
    let (code, _) = curl(&["--cacert", &root, "-k", &url]);
    assert_ne!(code, 0, "client without certificate accepted");

    // A client certificate from another root is refused, even with the right identity.
    let rogue = Pki::new("rogue-root");
    let forged = rogue.leaf("forged", &[&format!("URI:{}", spiffe("frontend"))], false);
    let (code, _) = curl(&["-k", "--cert", &forged.cert, "--key", &forged.key, &url]);
    assert_ne!(code, 0, "client from another root accepted");
    // Same root, but another trust domain: refused.
    let other_td = mesh.pki.leaf(
        "other-td",
        &["URI:spiffe://other.domain/ns/default/sa/frontend"],
        false,
    );
    let (code, _) = curl(&["-k", "--cert", &other_td.cert, "--key", &other_td.key, &url]);
    assert_ne!(code, 0, "client from another trust domain accepted");
    // The genuine client certificate works with curl too.
    let (code, out) = curl(&[
        "-k",
        "--cert",
        &mesh.frontend.cert,
        "--key",
        &mesh.frontend.key,
        &url,
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        mesh.inbound
            .metric(
                "trellis_downstream_tls_handshakes_total{listener=\"inbound\",result=\"failure\"}"
            )
            .await
            >= 4.0
    );

    // The client side refuses a server whose identity is not the expected one.
    let wrong = outbound_sidecar(&mesh, inbound, &spiffe("ratings"), inbound_tcp);
    let r = get(&wrong.url("web", "/reviews/1")).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        wrong
            .metric("trellis_upstream_tls_handshake_fail_total{cluster=\"reviews\"}")
            .await
            >= 1.0
    );
    assert!(wrong.proc.log().contains("not one the cluster expects"));
}

#[tokio::test]
async fn a_server_identity_from_another_trust_domain_is_refused() {
    let pki = Pki::new("root");
    let other = pki.leaf(
        "other",
        &["URI:spiffe://other.domain/ns/default/sa/reviews"],
        false,
    );
    let client = pki.leaf("frontend", &[&format!("URI:{}", spiffe("frontend"))], false);
    let app = app("reviews", &[]);
    let server = proxy(
        &("listeners:\n".to_string()
            + &https_listener(
                "inbound",
                &other,
                &format!("trusted_ca: \"{}\"", pki.root_path()),
                "app",
            )
            + &format!("clusters:\n{}", cluster("app", &[app.addr], ""))),
    );
    let tls = upstream_tls(&pki, &client, &spiffe("reviews"));
    let outbound = proxy(
        &(http_listener("- match: { prefix: \"/\" }\n  route: { cluster: reviews }")
            + "clusters:\n"
            + &cluster("reviews", &[server.addr("inbound")], &tls)),
    );
    let r = get(&outbound.url("web", "/")).await;
    assert_eq!(r.status, 503, "{}", r.body);
}

#[tokio::test]
async fn bad_certificate_files_are_refused_and_the_old_config_keeps_serving() {
    let pki = Pki::new("root");
    let leaf = pki.leaf("web", &["DNS:localhost"], false);
    let other = pki.leaf("other", &["DNS:localhost"], false);
    let app = app("web", &[]);
    let good = "listeners:\n".to_string()
        + &https_listener("secure", &leaf, "", "app")
        + &format!("clusters:\n{}", cluster("app", &[app.addr], ""));
    let p = proxy(&good);
    let path = p.config_path().display().to_string();
    let url = format!("https://localhost:{}/", p.addr("secure").port());
    let resolve = format!("localhost:{}:127.0.0.1", p.addr("secure").port());
    let root = pki.root_path();
    let ok = || curl(&["--cacert", &root, "--resolve", &resolve, &url]).0 == 0;
    assert!(ok());

    let cases = [
        (
            good.replace(&leaf.cert, "/nonexistent/cert.pem"),
            "listeners \"secure\": tls.certificates[0].certificate_chain: /nonexistent/cert.pem: No such file".to_string(),
        ),
        (
            good.replace(&leaf.key, &other.key),
            format!("listeners \"secure\": tls.certificates[0].private_key: {}: private key does not match the certificate", other.key),
        ),
        (
            good.replace(&leaf.cert, &leaf.key),
            format!("tls.certificates[0].certificate_chain: {}: no certificate in the file", leaf.key),
        ),
        (
            good.replace("tls:\n", "tls:\n      min_version: \"1.1\"\n"),
            "listeners[0].tls.min_version: unknown variant `1.1`".to_string(),
        ),
    ];
    for (i, (yaml, want)) in cases.iter().enumerate() {
        p.write_config(yaml);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let log = p.proc.log();
            if log.contains(want.as_str()) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "case {i}: want {want:?} in\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(p.proc.log().contains(&path));
        assert!(ok(), "case {i}: old config stopped serving");
    }
}

/// PERMISSIVE PeerAuthentication plus AuthorizationPolicy on an inbound sidecar:
/// mTLS and plaintext on one port; policies see the verified principal.
#[tokio::test]
async fn permissive_mode_and_authorization_policies() {
    let pki = Pki::new("mesh-root");
    let frontend = pki.leaf("frontend", &[&format!("URI:{}", spiffe("frontend"))], false);
    let ratings = pki.leaf("ratings", &[&format!("URI:{}", spiffe("ratings"))], true);
    let reviews = pki.leaf("reviews", &[&format!("URI:{}", spiffe("reviews"))], true);
    let app = app("reviews", &[]);
    let policies = r#"authorization:
  policies:
    - name: deny-admin
      action: DENY
      rules: [{ to: [{ operation: { paths: ["/admin*"] } }] }]
    - name: frontend-reads
      rules:
        - from: [{ source: { principals: ["cluster.local/ns/default/sa/frontend"] } }]
          to: [{ operation: { methods: ["GET", "HEAD"] } }]
    - name: health-from-anyone
      rules: [{ to: [{ operation: { paths: ["/healthz"] } }] }]
    - name: audit-exports
      action: AUDIT
      rules: [{ to: [{ operation: { paths: ["/export*"] } }] }]
"#;
    let mut inbound_yaml = "listeners:\n".to_string()
        + &https_listener(
            "inbound",
            &reviews,
            &format!("mode: permissive\ntrusted_ca: \"{}\"", pki.root_path()),
            "app",
        );
    inbound_yaml = inbound_yaml.replacen("    http:\n", &(indent(policies, 4) + "    http:\n"), 1);
    inbound_yaml += &format!(
        "  - name: inbound_tcp\n    address: 127.0.0.1:0\n    tls:\n      certificates: [{{ {} }}]\n      trusted_ca: \"{}\"\n    authorization:\n      policies: [{{ name: frontend-only, rules: [{{ from: [{{ source: {{ principals: [\"cluster.local/ns/default/sa/frontend\"] }} }}] }}] }}]\n    tcp: {{ cluster: app }}\n",
        cert_inline(&reviews),
        pki.root_path()
    );
    inbound_yaml += &format!("clusters:\n{}", cluster("app", &[app.addr], ""));
    // Routing sees the verified caller identity (set before route selection).
    inbound_yaml = inbound_yaml.replacen(
        "          routes:\n",
        "          routes:\n            - match: { prefix: \"/whoami\", headers: [{ name: x-forwarded-client-cert, exact: \"URI=spiffe://cluster.local/ns/default/sa/frontend\" }] }\n              direct_response: { status: 200, body: \"hello frontend\" }\n",
        1,
    );
    let inbound = proxy(&inbound_yaml);
    let sidecar = |leaf: &Leaf| {
        let tls = upstream_tls(&pki, leaf, &spiffe("reviews"));
        proxy(
            &(http_listener("- match: { prefix: \"/\" }\n  route: { cluster: reviews }")
                + "  - name: tcp_out\n    address: 127.0.0.1:0\n    tcp: { cluster: reviews_tcp }\n"
                + "clusters:\n"
                + &cluster("reviews", &[inbound.addr("inbound")], &tls)
                + &cluster("reviews_tcp", &[inbound.addr("inbound_tcp")], &tls)),
        )
    };
    let from_frontend = sidecar(&frontend);
    let from_ratings = sidecar(&ratings);
    let plain = |path: &str| format!("http://{}{path}", inbound.addr("inbound"));

    let cases: [(&Proxy, &str, &str, u16); 6] = [
        (&from_frontend, "GET", "/reviews/1", 200),
        (&from_frontend, "POST", "/reviews/1", 403),
        (&from_frontend, "GET", "/admin/users", 403),
        (&from_ratings, "GET", "/reviews/1", 403),
        (&from_ratings, "GET", "/healthz", 200),
        (&from_frontend, "GET", "/export/all", 200),
    ];
    for (p, method, path, want) in cases {
        let r = send(Req::get(&p.url("web", path)).method(method))
            .await
            .unwrap();
        assert_eq!(r.status, want, "{method} {path}: {}", r.body);
        if want == 403 {
            assert_eq!(r.body, "RBAC: access denied");
        }
    }
    let r = get(&from_frontend.url("web", "/whoami")).await;
    assert_eq!((r.status, r.body.as_str()), (200, "hello frontend"));
    // PERMISSIVE: plaintext reaches the same port, without a principal.
    assert_eq!(get(&plain("/healthz")).await.status, 200);
    let r = get(&plain("/reviews/1")).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        inbound
            .metric("trellis_rbac_decisions_total{listener=\"inbound\",result=\"denied\"}")
            .await
            == 4.0
    );
    assert!(inbound
        .proc
        .log()
        .contains("AUDIT: AuthorizationPolicy matched"));
    assert!(inbound.proc.log().contains("audit-exports"));

    // TCP: the L4 subset; the wrong principal's connection is closed.
    let (code, out) = curl(&[&format!("http://{}/tcp", from_frontend.addr("tcp_out"))]);
    assert_eq!(code, 0, "{out}");
    let (code, _) = curl(&[&format!("http://{}/tcp", from_ratings.addr("tcp_out"))]);
    assert_ne!(code, 0, "ratings passed the TCP policy");
    assert!(
        inbound
            .metric("trellis_rbac_decisions_total{listener=\"inbound_tcp\",result=\"denied\"}")
            .await
            >= 1.0
    );
}
