//! Istio's own authorization decision tables, through real sidecars: the policy
//! templates of Istio's integration tests (`fixtures/istio-authz`, verbatim; `SOURCE`
//! names the commit) made for a target `reviews` called by `productpage` (namespace
//! `default`), and each request of the test's table with the decision Istio's test
//! expects (`authz_test.go`, transcribed below case by case). A request Istio allows must
//! get 200 and one it denies 403: Trellis's effective access is neither wider nor
//! narrower than Istio's on these tables.
//!
//! Istio's tests call from an allowed and from a denied workload; here the one caller
//! plays each part in turn (the templates are made with it as the allowed, then as the
//! denied identity). Only the HTTP port's cases apply: `reviews` has one port, and the
//! templates' other ports (http2, grpc, tcp) get ports nothing listens on.

use super::policy::{mesh, Mesh};
use std::path::Path;
use std::time::Duration;

/// The caller's identity, namespace and address.
const ME: (&str, &str, &str) = (
    "cluster.local/ns/default/sa/productpage",
    "default",
    "[\"127.0.0.1\"]",
);
/// The other party of Istio's tables (a workload of a second namespace).
const OTHER: (&str, &str, &str) = ("cluster.local/ns/ns2/sa/a", "ns2", "[\"10.255.0.1\"]");

/// Istio's test JWK Set and tokens (`fixtures/istio-authz/jwt.json`).
fn jwt_fixture() -> serde_json::Value {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/istio-authz");
    serde_json::from_str(&std::fs::read_to_string(dir.join("jwt.json")).unwrap()).unwrap()
}

/// A template of `fixtures/istio-authz` with Istio's test parameters filled in.
fn template(
    name: &str,
    m: &Mesh,
    allowed: (&str, &str, &str),
    denied: (&str, &str, &str),
) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/istio-authz");
    let text = std::fs::read_to_string(dir.join(format!("{name}.yaml.tmpl"))).unwrap();
    let http = m.reviews.inbound.to_string();
    let mut out = text;
    for (from, to) in [
        ("{{ .To.ServiceName }}", "reviews"),
        (
            "{{ .To.ClusterLocalFQDN }}",
            "reviews.default.svc.cluster.local",
        ),
        ("{{ (.To.PortForName `http`).WorkloadPort }}", &http),
        ("{{ ( .To.PortForName `http` ).WorkloadPort }}", &http),
        ("{{ (.To.PortForName `http2`).WorkloadPort }}", "17081"),
        ("{{ (.To.PortForName `grpc`).WorkloadPort }}", "17070"),
        ("{{ (.To.PortForName `tcp`).WorkloadPort }}", "17090"),
        (
            "{{ .To.MustWorkloads.Addresses | toJson }}",
            "[\"127.0.0.1\"]",
        ),
        ("{{ .Allowed.SpiffeIdentity }}", allowed.0),
        ("{{ .Allowed.NamespaceName }}", allowed.1),
        ("{{ .Allowed.MustWorkloads.Addresses | toJson }}", allowed.2),
        ("{{ .Denied.SpiffeIdentity }}", denied.0),
        ("{{ .Denied.NamespaceName }}", denied.1),
        ("{{ .Denied.MustWorkloads.Addresses | toJson }}", denied.2),
        // deny-global names the ports of Istio's echo workloads; reviews' is its own.
        ("[ \"18080\", \"18085\" ]", &format!("[ \"{http}\" ]")),
        // jwt fetches the JWK Set from Istio's test JWT server; here it is inline, as
        // Istio's own tests do where there is no server.
        (
            "jwksUri: \"{{ .JWTServer.JwksURI }}\"",
            &format!(
                "jwks: '{}'",
                jwt_fixture()["jwks"].as_str().unwrap().replace('\'', "''")
            ),
        ),
    ] {
        out = out.replace(from, to);
    }
    assert!(
        !out.contains("{{"),
        "{name}: a parameter left unfilled:\n{out}"
    );
    out
}

/// A request of a table: method, path, headers, and whether Istio allows it.
type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], bool);

/// One of Istio's tables: the policies, a name only they have (to know when the sidecar
/// has them), and its requests.
struct Table<'a> {
    name: &'a str,
    policies: String,
    marker: &'a str,
    cases: Vec<Case<'a>>,
}

async fn run(m: &Mesh, t: Table<'_>) {
    // Istio's policies with every document's name made unique to this table, so the
    // sidecar's config shows when this table is in.
    let policies = t
        .policies
        .replace("name: ", &format!("name: {}-", t.marker));
    m.write("policies.yaml", &policies);
    let marker = t.marker.to_string();
    super::control::eventually(
        &format!("{}: the sidecar has the table's policies", t.name),
        Duration::from_secs(15),
        async || {
            m.reviews_sidecar
                .admin_get("/config_dump")
                .await
                .body
                .contains(&marker)
        },
    )
    .await;
    let mut wrong = Vec::new();
    for (method, path, headers, allow) in &t.cases {
        let status = m.status_with(method, path, headers).await;
        let want = if *allow { 200 } else { 403 };
        if status != want {
            wrong.push(format!(
                "{method} {path} {headers:?}: Istio {want}, Trellis {status}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}:\n{}", t.name, wrong.join("\n"));
}

#[tokio::test]
async fn istios_authorization_tables_decide_the_same_through_sidecars() {
    let _quiet = super::harness::quiet().await;
    let m = mesh(&[]).await;
    m.eventually_status("reviews is reachable", "GET", "/", 200)
        .await;
    let t = |name: &str, allowed, denied| template(name, &m, allowed, denied);
    let mtls = t("mtls", ME, OTHER);
    let get = |path, allow| ("GET", path, &[][..], allow);

    // TestAuthz_Principal and TestAuthz_Namespace, with the caller allowed and then not.
    for template_name in ["allow-principal", "allow-namespace"] {
        for (who, allow) in [(ME, true), (OTHER, false)] {
            run(
                &m,
                Table {
                    name: template_name,
                    policies: mtls.clone() + "\n---\n" + &t(template_name, who, OTHER),
                    marker: &format!("{template_name}-{allow}"),
                    cases: vec![
                        get("/allow", allow),
                        get("/allow?param=value", allow),
                        get("/deny", false),
                        get("/deny?param=value", false),
                    ],
                },
            )
            .await;
        }
    }
    // TestAuthz_DenyPrincipal and TestAuthz_DenyNamespace (with deny-global), with the
    // caller denied and then not.
    for template_name in ["deny-principal", "deny-namespace"] {
        for (who, allow) in [(OTHER, true), (ME, false)] {
            run(
                &m,
                Table {
                    name: template_name,
                    policies: mtls.clone()
                        + "\n---\n"
                        + &t("deny-global", ME, OTHER)
                        + "\n---\n"
                        + &t(template_name, ME, who),
                    marker: &format!("{template_name}-{allow}"),
                    cases: vec![
                        get("/deny", allow),
                        get("/deny?param=value", allow),
                        get("/deny/allow", true),
                        get("/deny/allow?param=value", true),
                        get("/allow", true),
                        get("/allow?param=value", true),
                        get("/global-deny", false),
                        get("/global-deny?param=value", false),
                        get("/global-deny/allow", true),
                        get("/global-deny/allow?param=value", true),
                    ],
                },
            )
            .await;
        }
    }
    // TestAuthz_NotMethod.
    run(
        &m,
        Table {
            name: "TestAuthz_NotMethod",
            policies: t("not-method", ME, OTHER),
            marker: "not-method",
            cases: vec![("GET", "/", &[], true), ("PUT", "/", &[], false)],
        },
    )
    .await;
    // TestAuthz_PathPrecedence.
    run(
        &m,
        Table {
            name: "TestAuthz_PathPrecedence",
            policies: t("path-precedence", ME, OTHER),
            marker: "path-precedence",
            cases: vec![
                get("/allow/admin", false),
                get("/allow/admin?param=value", false),
                get("/allow", true),
                get("/allow?param=value", true),
            ],
        },
    )
    .await;
    // TestAuthz_PathTemplating.
    run(
        &m,
        Table {
            name: "TestAuthz_PathTemplating",
            policies: t("path-templating", ME, OTHER),
            marker: "path-templating",
            cases: vec![
                get("/allow/admin/", true),
                get("/allow/admin", false),
                get("/allow/user/", false),
                get("/allow/admin?param=value", false),
                get("/allow", false),
                get("/allow/admin/temp", true),
                get("/allow/admin/temp.txt", true),
                get("/allow/admin/foo/temp.txt", true),
                get("/foo/buzz/bar/bat.txt", true),
                get("/foo/buzz/bar/bat.temp.txt", true),
                get("/foo/buzz/bar/bat/fuzz.txt", true),
                get("/foo/bar/bat.txt", false),
                get("/foo//bar/bat.txt", false),
                get("/foo/buzz/bar/bat", true),
                get("/store//cart", true),
                get("/store/cart", false),
                get("/store/foo/cart", true),
                get("/store/foo/bar/cart", true),
            ],
        },
    )
    .await;
    // TestAuthz_Conditions (with mtls), the caller being the allowed workload.
    let foo: &[(&str, &str)] = &[("x-foo", "foo")];
    let bar: &[(&str, &str)] = &[("x-foo", "bar")];
    run(
        &m,
        Table {
            name: "TestAuthz_Conditions",
            policies: mtls.clone() + "\n---\n" + &t("conditions", ME, OTHER),
            marker: "conditions",
            cases: vec![
                ("GET", "/request-headers", foo, true),
                ("GET", "/request-headers", bar, false),
                get("/request-headers", false),
                ("GET", "/request-headers-notValues", foo, true),
                ("GET", "/request-headers-notValues", bar, false),
                get("/source-ip", true),
                get("/source-ip-notValues", true),
                get("/source-namespace", true),
                get("/source-namespace-notValues", true),
                get("/source-principal", true),
                get("/source-principal-notValues", true),
                get("/source-trust-domain", true),
                get("/source-trust-domain-notValues", true),
                get("/destination-ip-good", true),
                get("/destination-ip-bad", false),
                get("/destination-ip-notValues", false),
                get("/destination-port-good", true),
                get("/destination-port-bad", false),
                get("/destination-port-notValues", false),
                get("/connection-sni-good", true),
                get("/connection-sni-bad", false),
                get("/connection-sni-notValues", false),
                get("/other", false),
            ],
        },
    )
    .await;

    // TestAuthz_JWT: RequestAuthentication and policies on the token's principal, claims
    // (nested, space-delimited), presenter and audiences, with Istio's test tokens. The
    // template fetches the JWK Set from Istio's test JWT server; here it is inline (as
    // Istio's own tests do where there is no server).
    let jwt = jwt_fixture();
    let policies = t("jwt", ME, OTHER);
    let bearer: std::collections::BTreeMap<&str, String> = jwt["tokens"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str(), format!("Bearer {}", v.as_str().unwrap())))
        .collect();
    let with =
        |token: &str| -> Vec<(&str, &str)> { vec![("authorization", bearer[token].as_str())] };
    let cases: Vec<(&str, &str, bool)> = vec![
        ("", "/token1", false),
        ("", "/token2", false),
        ("TokenIssuer1", "/token1", true),
        ("TokenIssuer1", "/token2", false),
        ("TokenIssuer2", "/token1", false),
        ("TokenIssuer2", "/token2", true),
        ("TokenIssuer1", "/token3", false),
        ("TokenIssuer2", "/token3", true),
        ("TokenIssuer1", "/tokenAny", true),
        ("TokenIssuer2", "/tokenAny", true),
        ("TokenIssuer1", "/permission", false),
        ("TokenIssuer2", "/permission", false),
        (
            "TokenIssuer2WithSpaceDelimitedPermission",
            "/permission",
            true,
        ),
        ("TokenIssuer2WithSpaceDelimitedScope", "/scope", true),
        ("TokenIssuer2WithSpaceDelimitedScope", "/otherscope", false),
        (
            "TokenIssuer2WithCustomScopeSpaceDelimitedScope",
            "/custom-scope-admin",
            true,
        ),
        (
            "TokenIssuer2WithCustomScopeSpaceDelimitedScope",
            "/custom-scope-user",
            true,
        ),
        ("", "/custom-scope-admin", false),
        ("", "/custom-scope-user", false),
        ("TokenIssuer1", "/custom-scope-admin", false),
        ("TokenIssuer1", "/custom-scope-user", false),
        ("TokenIssuer1WithNestedClaims1", "/nested-key1", true),
        ("TokenIssuer1WithNestedClaims2", "/nested-key1", false),
        ("TokenIssuer1WithNestedClaims1", "/nested-key2", false),
        ("TokenIssuer1WithNestedClaims2", "/nested-key2", true),
        ("TokenIssuer1WithNestedClaims1", "/nested-2-key1", true),
        ("TokenIssuer1WithNestedClaims2", "/nested-2-key1", false),
        ("TokenIssuer1WithNestedClaims1", "/nested-non-exist", false),
        ("TokenIssuer1WithNestedClaims2", "/nested-non-exist", false),
        ("", "/tokenAny", false),
        ("TokenIssuer1WithAud", "/audiences", true),
        ("TokenIssuer1WithAudList", "/audiences", true),
    ];
    let headers: Vec<Vec<(&str, &str)>> = cases
        .iter()
        .map(|(token, _, _)| {
            if token.is_empty() {
                Vec::new()
            } else {
                with(token)
            }
        })
        .collect();
    run(
        &m,
        Table {
            name: "TestAuthz_JWT",
            policies,
            marker: "jwt",
            cases: cases
                .iter()
                .zip(&headers)
                .map(|((_, path, allow), h)| ("GET", *path, h.as_slice(), *allow))
                .collect(),
        },
    )
    .await;
}
