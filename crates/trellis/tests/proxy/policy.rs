//! Istio security policy through `trellis control` and real sidecars: a policy Trellis
//! cannot honour never opens access, dry-run policies never decide, methods match as
//! Istio matches them, auto mTLS follows the destination's PeerAuthentication, and
//! tightening mTLS reaches connections that were already open.

use super::control::{eventually, sidecar, Workload, SERVICES};
use super::harness::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// productpage (a client sidecar) and reviews-v1 (a sidecar with its app) under a
/// control plane reading `mesh`.
pub(super) struct Mesh {
    mesh: tempfile::TempDir,
    pub page: Workload,
    pub reviews: Workload,
    control: Control,
    pub page_sidecar: Proxy,
    pub reviews_sidecar: Proxy,
    _app: App,
    _dir: tempfile::TempDir,
}

pub(super) async fn mesh(policies: &[(&str, &str)]) -> Mesh {
    let mesh = tempfile::tempdir().unwrap();
    let page = Workload::new(
        "productpage-v1",
        "app: productpage, version: v1",
        "productpage",
    );
    let reviews = Workload::new("reviews-v1", "app: reviews, version: v1", "reviews");
    std::fs::write(mesh.path().join("services.yaml"), SERVICES).unwrap();
    std::fs::write(
        mesh.path().join("workloads.yaml"),
        page.entry() + &reviews.entry(),
    )
    .unwrap();
    for (file, text) in policies {
        std::fs::write(mesh.path().join(file), text).unwrap();
    }
    let app = app_on("reviews-v1", &format!("127.0.0.1:{}", reviews.app), &[]);
    let control = control(mesh.path());
    let dir = tempfile::tempdir().unwrap();
    let page_sidecar = sidecar(&control, &page, dir.path());
    let reviews_sidecar = sidecar(&control, &reviews, dir.path());
    let m = Mesh {
        mesh,
        page,
        reviews,
        control,
        page_sidecar,
        reviews_sidecar,
        _app: app,
        _dir: dir,
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", m.reviews.inbound))
        .await
        .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "reviews' inbound listener never came up:\n{}\n{}",
            m.control.ca.proc.log(),
            m.reviews_sidecar.proc.log()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    m
}

impl Mesh {
    /// The status of `method path` on reviews, through productpage's sidecar.
    async fn status(&self, method: &str, path: &str) -> u16 {
        self.status_with(method, path, &[]).await
    }

    /// The same with request headers.
    pub async fn status_with(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> u16 {
        let mut req = Req::get(&format!("http://127.0.0.1:{}{path}", self.page.outbound))
            .method(method)
            .header("host", "reviews:9080");
        for (k, v) in headers {
            req = req.header(k, v);
        }
        send(req).await.map(|r| r.status).unwrap_or(0)
    }

    pub fn write(&self, file: &str, text: &str) {
        let tmp = self.mesh.path().join(".tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(tmp, self.mesh.path().join(file)).unwrap();
    }

    fn remove(&self, file: &str) {
        std::fs::remove_file(self.mesh.path().join(file)).unwrap();
    }

    pub async fn eventually_status(&self, what: &str, method: &str, path: &str, want: u16) {
        eventually(what, Duration::from_secs(10), async || {
            self.status(method, path).await == want
        })
        .await;
        // And it stays so (not a request that raced an update).
        for _ in 0..5 {
            assert_eq!(self.status(method, path).await, want, "{what}");
        }
    }

    async fn wait_control_log(&self, needle: &str) {
        eventually(
            &format!("the control plane logs {needle:?}"),
            Duration::from_secs(10),
            async || self.control.ca.proc.log().contains(needle),
        )
        .await;
    }
}

fn policy(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{ name: {name}, namespace: default }}\nspec:\n{spec}"
    )
}

/// Istio's JWT test data: its JWK Set and tokens signed with its test key.
fn istio_jwt() -> serde_json::Value {
    let text = include_str!("../fixtures/jwt/istio.json");
    serde_json::from_str(text).unwrap()
}

fn token(name: &str) -> String {
    istio_jwt()["tokens"][name].as_str().unwrap().to_string()
}

/// Istio's `authn-authz` and `authn-only` integration cases on reviews: a
/// RequestAuthentication for test-issuer-1 (keys inline or at `jwks`), and an ALLOW
/// policy for sub-1's GETs.
fn request_authn(jwks: &str) -> String {
    format!(
        r#"apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{ name: reviews, namespace: default }}
spec:
  selector: {{ matchLabels: {{ app: reviews }} }}
  jwtRules:
    - issuer: "test-issuer-1@istio.io"
      {jwks}
      outputPayloadToHeader: x-test-payload
      outputClaimToHeaders:
        - {{ header: x-jwt-iss, claim: iss }}
        - {{ header: x-jwt-iat, claim: iat }}
        - {{ header: x-jwt-nested-claim, claim: nested.nested-2.key2 }}
"#
    )
}

const REQUIRE_SUB_1: &str = r#"  selector: { matchLabels: { app: reviews } }
  rules:
    - to: [{ operation: { methods: ["GET"] } }]
      from: [{ source: { requestPrincipals: ["test-issuer-1@istio.io/sub-1"] } }]
"#;

impl Mesh {
    /// `GET path` on reviews through productpage's sidecar, with `headers`.
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        let mut req = Req::get(&format!("http://127.0.0.1:{}{path}", self.page.outbound))
            .header("host", "reviews:9080");
        for (k, v) in headers {
            req = req.header(k, v);
        }
        send(req).await.unwrap()
    }

    async fn with_token(&self, name: &str) -> Resp {
        let bearer = format!("Bearer {}", token(name));
        self.get("/r", &[("authorization", &bearer)]).await
    }
}

#[tokio::test]
async fn request_authentication_verifies_istio_tokens_and_authorization_reads_them() {
    let jwks = istio_jwt()["jwks"].as_str().unwrap().to_string();
    let ra = request_authn(&format!("jwks: {}", serde_json::to_string(&jwks).unwrap()));
    let m = mesh(&[
        ("ra.yaml", &ra),
        ("require.yaml", &policy("require-sub-1", REQUIRE_SUB_1)),
    ])
    .await;
    m.eventually_status("no token: the policy denies", "GET", "/r", 403)
        .await;

    let r = m.with_token("TokenIssuer1").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = &r.json()["headers"];
    assert!(
        seen.get("authorization").is_none(),
        "the token is not forwarded: {seen}"
    );
    assert_eq!(seen["x-jwt-iss"], "test-issuer-1@istio.io");
    assert_eq!(seen["x-jwt-iat"], "1562182722");
    let payload = token("TokenIssuer1").split('.').nth(1).unwrap().to_string();
    assert_eq!(seen["x-test-payload"], payload.as_str());

    let r = m.with_token("TokenIssuer1WithNestedClaims2").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["headers"]["x-jwt-nested-claim"], "valueC");

    // A client cannot set the claim headers itself.
    let r = m
        .get("/r", &[("x-jwt-iss", "test-issuer-1@istio.io")])
        .await;
    assert_eq!(r.status, 403);

    let r = m.with_token("TokenExpired").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body, "Jwt is expired");
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .starts_with("Bearer realm="));
    let r = m.with_token("TokenIssuer2").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (401, "Jwt issuer is not configured")
    );
    let r = m
        .get("/r", &[("authorization", "Bearer TokenInvalid")])
        .await;
    assert_eq!(r.status, 401);
    // The token in a location no rule reads: no token.
    let r = m
        .get(&format!("/r?token_value={}", token("TokenIssuer1")), &[])
        .await;
    assert_eq!(r.status, 403);
    // `access_token` is a default location.
    let r = m
        .get(&format!("/r?access_token={}", token("TokenIssuer1")), &[])
        .await;
    assert_eq!(r.status, 200);
    let verified = format!(
        "trellis_jwt_authn_requests_total{{listener=\"inbound|{}\",result=\"verified\"}}",
        m.reviews.inbound
    );
    assert!(m.reviews_sidecar.metric(&verified).await >= 3.0);

    // Istio's `aud` case: a rule with audiences answers a token for others with 403.
    m.write(
        "ra.yaml",
        &ra.replace(
            "      outputPayloadToHeader",
            "      audiences: [foo]\n      outputPayloadToHeader",
        ),
    );
    eventually(
        "the audiences are in force",
        Duration::from_secs(10),
        async || m.with_token("TokenIssuer1").await.status == 403,
    )
    .await;
    let r = m.with_token("TokenIssuer1").await;
    assert_eq!(r.body, "Audiences in Jwt are not allowed");
    assert_eq!(m.with_token("TokenIssuer1WithAud").await.status, 200);
}

/// A minimal HTTP server for a JWK Set on its own thread (the test's runtime blocks
/// while the control plane starts), counting the requests it answers.
fn jwks_server(body: String) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = count.clone();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut buf = vec![0u8; 4096];
            let _ = s.read(&mut buf);
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(reply.as_bytes());
        }
    });
    (port, count)
}

#[tokio::test]
async fn the_control_plane_fetches_jwks_uri_and_a_set_it_cannot_fetch_refuses_tokens() {
    let jwks = istio_jwt()["jwks"].as_str().unwrap().to_string();
    let (port, fetches) = jwks_server(jwks);
    let ra = request_authn(&format!("jwksUri: http://127.0.0.1:{port}/jwks.json"));
    let m = mesh(&[
        ("ra.yaml", &ra),
        ("require.yaml", &policy("require-sub-1", REQUIRE_SUB_1)),
    ])
    .await;
    eventually(
        "the fetched keys verify",
        Duration::from_secs(10),
        async || m.with_token("TokenIssuer1").await.status == 200,
    )
    .await;
    assert_eq!(m.with_token("TokenExpired").await.status, 401);
    assert_eq!(
        fetches.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "fetched once, by the control plane, not by each sidecar"
    );

    // Istio's `invalid-jwks` case: nothing answers at the URI; a valid token is refused
    // and a request without one is left to authorization.
    let closed = free_port();
    m.remove("require.yaml");
    m.write(
        "ra.yaml",
        &request_authn(&format!("jwksUri: http://127.0.0.1:{closed}/jwks.json")),
    );
    eventually("tokens are refused", Duration::from_secs(10), async || {
        m.with_token("TokenIssuer1").await.status == 401
    })
    .await;
    assert_eq!(m.get("/r", &[]).await.status, 200);
    m.wait_control_log("JWKS fetch failed").await;
}

#[tokio::test]
async fn a_refused_request_authentication_refuses_tokens_it_might_have_refused() {
    let bad = request_authn("jwks: \"{not json\"");
    let m = mesh(&[("ra.yaml", &bad)]).await;
    m.wait_control_log("refuse requests with a JWT no other rule verifies")
        .await;
    m.eventually_status("no token: allowed", "GET", "/r", 200)
        .await;
    assert_eq!(m.with_token("TokenIssuer1").await.status, 401);
}

#[tokio::test]
async fn an_allow_policy_with_an_unknown_when_key_allows_nothing() {
    let unknown = policy(
        "by-unknown",
        "  selector: { matchLabels: { app: reviews } }\n  rules:\n    - when: [{ key: \"request.auth.unknown\", values: [\"x\"] }]\n",
    );
    let m = mesh(&[("by-unknown.yaml", &unknown)]).await;
    m.eventually_status(
        "by-unknown refused, reviews allows nothing",
        "GET",
        "/r",
        403,
    )
    .await;
    m.wait_control_log("spec.rules[0].when[0].key").await;
}

#[tokio::test]
async fn a_dry_run_policy_is_counted_and_never_enforced() {
    let dry = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: deny-reviews\n  namespace: default\n  annotations: { istio.io/dry-run: \"true\" }\nspec:\n  selector: { matchLabels: { app: reviews } }\n  action: DENY\n  rules: [{ to: [{ operation: { paths: [\"/r*\"] } }] }]\n";
    let m = mesh(&[("dry-run.yaml", dry)]).await;
    let listener = format!("inbound|{}", m.reviews.inbound);
    let would_deny = format!(
        "trellis_rbac_dry_run_decisions_total{{listener=\"{listener}\",result=\"denied\"}}"
    );
    eventually(
        "the dry-run policy counts what it would deny",
        Duration::from_secs(10),
        async || {
            m.status("GET", "/r").await == 200 && m.reviews_sidecar.metric(&would_deny).await > 0.0
        },
    )
    .await;
    for _ in 0..5 {
        assert_eq!(m.status("GET", "/r").await, 200, "never enforced");
    }
    let denied =
        format!("trellis_rbac_decisions_total{{listener=\"{listener}\",result=\"denied\"}}");
    assert_eq!(m.reviews_sidecar.metric(&denied).await, 0.0);
    m.reviews_sidecar
        .wait_log("dry-run: would have been denied", Duration::from_secs(5))
        .await;
}

#[tokio::test]
async fn a_malformed_ip_block_is_refused_by_the_control_plane_not_the_sidecar() {
    // Refused with the proxy's own rules: the sidecar never sees it (before, it
    // refused its whole update), and the refused DENY policy denies everything.
    let bad_ip = policy(
        "deny-range",
        "  selector: { matchLabels: { app: reviews } }\n  action: DENY\n  rules: [{ from: [{ source: { ipBlocks: [\"10.0.0.0/33\"] } }] }]\n",
    );
    let m = mesh(&[]).await;
    m.eventually_status("open", "GET", "/r", 200).await;
    m.write("deny-range.yaml", &bad_ip);
    m.eventually_status("deny-range refused, reviews denies all", "GET", "/r", 403)
        .await;
    m.wait_control_log("spec.rules[0].from[0].source.ipBlocks: \"10.0.0.0/33\"")
        .await;
    let rejected = "trellis_xds_updates_total{result=\"rejected\"}";
    assert_eq!(m.reviews_sidecar.metric(rejected).await, 0.0);
    assert_eq!(m.page_sidecar.metric(rejected).await, 0.0);
}

#[tokio::test]
async fn methods_match_exactly_by_prefix_and_by_regex() {
    let vs = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: reviews, namespace: default }
spec:
  hosts: [reviews]
  http:
    - match: [{ method: { regex: "P(UT|OST)" } }]
      directResponse: { status: 405 }
    - match: [{ method: { prefix: "DEL" } }]
      directResponse: { status: 403 }
    - match: [{ method: { exact: "PATCH" } }]
      directResponse: { status: 409 }
    - route: [{ destination: { host: reviews, subset: v1 } }]
"#;
    let m = mesh(&[("vs.yaml", vs)]).await;
    m.eventually_status("routes are in", "POST", "/r", 405)
        .await;
    for (method, status) in [
        ("GET", 200),
        ("PUT", 405),
        ("POST", 405),
        ("POS", 200),
        ("DELETE", 403),
        ("PATCH", 409),
        ("HEAD", 200),
    ] {
        assert_eq!(m.status(method, "/r").await, status, "{method}");
    }
}

/// A plaintext HTTP/1.1 keep-alive connection straight to reviews' inbound port:
/// sends one request and reads the response; false when the connection is closed.
async fn keep_alive_request(stream: &mut tokio::net::TcpStream) -> bool {
    let req = b"GET /r HTTP/1.1\r\nhost: reviews\r\n\r\n";
    if stream.write_all(req).await.is_err() {
        return false;
    }
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return false,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
        let text = String::from_utf8_lossy(&got);
        if let Some(head_end) = text.find("\r\n\r\n") {
            let len: usize = text[..head_end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if got.len() >= head_end + 4 + len {
                return text.starts_with("HTTP/1.1 200");
            }
        }
    }
}

fn peer_authentication(mode: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{ name: reviews, namespace: default }}\nspec:\n  selector: {{ matchLabels: {{ app: reviews }} }}\n  mtls: {{ mode: {mode} }}\n"
    )
}

#[tokio::test]
async fn a_disable_destination_is_reached_in_plaintext() {
    // DISABLE: reviews takes plaintext only, and productpage's sidecar sends it
    // plaintext (before, it kept originating mutual TLS and got 503).
    let m = mesh(&[("pa.yaml", &peer_authentication("DISABLE"))]).await;
    m.eventually_status("reviews reached in plaintext", "GET", "/r", 200)
        .await;
    let r = send(
        Req::get(&format!("http://127.0.0.1:{}/headers", m.page.outbound))
            .header("host", "reviews:9080"),
    )
    .await
    .unwrap();
    assert!(
        !r.body.contains("spiffe://"),
        "no client certificate: {}",
        r.body
    );
}

#[tokio::test]
async fn strict_drains_plaintext_connections_opened_under_permissive() {
    let m = mesh(&[("pa.yaml", &peer_authentication("PERMISSIVE"))]).await;
    let mut conn = None;
    eventually(
        "a plaintext keep-alive connection is served",
        Duration::from_secs(10),
        async || {
            let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", m.reviews.inbound)).await
            else {
                return false;
            };
            let ok = keep_alive_request(&mut s).await && keep_alive_request(&mut s).await;
            if ok {
                conn = Some(s);
            }
            ok
        },
    )
    .await;
    let mut conn = conn.unwrap();
    m.eventually_status("mutual TLS between the sidecars", "GET", "/r", 200)
        .await;

    // STRICT: the open plaintext connection is drained, not served on.
    m.write("pa.yaml", &peer_authentication("STRICT"));
    eventually(
        "STRICT applies to new connections",
        Duration::from_secs(10),
        async || {
            let Ok(mut fresh) =
                tokio::net::TcpStream::connect(("127.0.0.1", m.reviews.inbound)).await
            else {
                return false;
            };
            !keep_alive_request(&mut fresh).await
        },
    )
    .await;
    let t = std::time::Instant::now();
    assert!(
        !keep_alive_request(&mut conn).await,
        "a connection accepted under PERMISSIVE was served after STRICT"
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(m
        .reviews_sidecar
        .proc
        .log()
        .contains("listener security changed; draining"));
    assert_eq!(m.status("GET", "/r").await, 200, "mutual TLS still served");
}
