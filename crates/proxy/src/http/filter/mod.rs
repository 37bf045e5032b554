//! The HTTP filter chain: each concern of the request path is one filter, in its own
//! file, and the connection manager only selects the route and runs the chain (Envoy's
//! shape: `envoy.filters.http.jwt_authn`, `rbac`, `fault`, `router`).
//!
//! A filter sees the request on the way in ([`Step::Continue`] passes it on;
//! [`Step::Respond`] answers locally and ends the way in), and the response on the way
//! out, in reverse order, for every filter the request reached. The router is always
//! last and always answers. The chain is built once per listener config from what it
//! uses: a listener without policies, faults or header mutations runs the router alone.
//!
//! Filters are an enum, not trait objects: dispatch is a match, the futures are not
//! boxed, and the chain costs what the inline code did.
//!
//! Per-route configuration (Envoy's `typed_per_filter_config`) is [`PerRoute`]: each
//! filter that has some reads its part from the selected route.

mod cors;
mod fault;
mod header_mutation;
mod jwt_authn;
mod rbac;
pub mod router;

use std::net::SocketAddr;
use std::sync::Arc;

use http::request::Parts;
use http::Response;
use hyper::body::Incoming;

pub use cors::Cors;
pub use fault::Fault;
pub use header_mutation::HeaderMutation;
pub use jwt_authn::JwtAuthn;
pub use rbac::Rbac;
pub use router::Router;

use prometheus_client::metrics::counter::Counter;

use super::flags::Flags;
use super::route_table::{RouteEntry, VirtualHost};
use crate::body::Body;
use crate::conn::ConnInfo;

/// What a filter does with the request.
pub enum Step {
    /// Pass it to the next filter.
    Continue,
    /// Answer with this response; later filters never see the request.
    Respond(Response<Body>),
}

/// One request on its way through the chain, with what filters learn about it.
pub struct Exchange<'a> {
    /// The listener's routes, which `selected` indexes.
    pub routes: &'a [VirtualHost],
    /// Counts requests no route matched.
    pub no_route: &'a Counter,
    /// The largest request body held for retries and mirroring.
    pub buffer_limit: usize,
    pub conn: &'a ConnInfo,
    pub parts: Parts,
    /// Taken by the filter that sends the request on (the router).
    pub body: Option<Incoming>,
    /// The request's authority (`:authority` or `Host`).
    pub authority: String,
    /// The selected virtual host and route, by index; None when no route matched.
    pub selected: Option<(usize, usize)>,
    pub flags: Flags,
    pub upstream: Option<SocketAddr>,
    /// The request's verified JWT (set by `jwt_authn`, read by `rbac`).
    pub request_auth: Option<Arc<trellis_jwt::Verified>>,
    /// The request's `Origin`, when the route's CORS policy allows it (set by `cors`
    /// on the way in, answered on the way out).
    pub cors_origin: Option<http::HeaderValue>,
    /// This workload's peer metadata, sent to mesh services (the client's side).
    pub metadata: Option<&'a crate::istio_stats::OwnHeaders>,
    /// The cluster the request went to.
    pub upstream_cluster: Option<Arc<crate::cluster::Cluster>>,
}

impl<'a> Exchange<'a> {
    pub fn route(&self) -> Option<(&'a VirtualHost, &'a RouteEntry)> {
        let (vh, r) = self.selected?;
        let vh = &self.routes[vh];
        Some((vh, &vh.routes[r]))
    }
}

pub enum Filter {
    JwtAuthn(JwtAuthn),
    Rbac(Rbac),
    Cors(Cors),
    HeaderMutation(HeaderMutation),
    Fault(Fault),
    Router(Router),
}

impl Filter {
    async fn on_request(&self, x: &mut Exchange<'_>) -> Step {
        match self {
            Filter::JwtAuthn(f) => f.on_request(x),
            Filter::Rbac(f) => f.on_request(x),
            Filter::Cors(f) => f.on_request(x),
            Filter::HeaderMutation(f) => f.on_request(x),
            Filter::Fault(f) => f.on_request(x).await,
            Filter::Router(f) => f.on_request(x).await,
        }
    }

    fn on_response(&self, x: &Exchange<'_>, response: &mut Response<Body>) {
        match self {
            Filter::HeaderMutation(f) => f.on_response(x, response),
            Filter::Cors(f) => f.on_response(x, response),
            _ => {}
        }
    }
}

/// The filters of one listener's HTTP connection manager, in order.
pub struct Chain(Vec<Filter>);

impl Chain {
    /// Envoy's order for what the listener uses: JWT authentication, RBAC, CORS, header
    /// mutation, fault, router.
    pub fn new(
        jwt: Option<JwtAuthn>,
        rbac: Option<Arc<crate::authz::ListenerAuthz>>,
        virtual_hosts: &[VirtualHost],
    ) -> Chain {
        let routes = || virtual_hosts.iter().flat_map(|vh| vh.routes.iter());
        let mut filters = Vec::new();
        if let Some(jwt) = jwt {
            filters.push(Filter::JwtAuthn(jwt));
        }
        if let Some(authz) = rbac {
            filters.push(Filter::Rbac(Rbac::new(authz)));
        }
        if routes().any(|r| r.per_filter.cors.is_some()) {
            filters.push(Filter::Cors(Cors));
        }
        let mutates = virtual_hosts
            .iter()
            .any(|vh| !vh.request.is_empty() || !vh.response.is_empty())
            || routes().any(|r| !r.request.is_empty() || !r.response.is_empty());
        if mutates {
            filters.push(Filter::HeaderMutation(HeaderMutation));
        }
        if routes().any(|r| r.per_filter.fault.is_some()) {
            filters.push(Filter::Fault(Fault));
        }
        filters.push(Filter::Router(Router));
        Chain(filters)
    }

    /// The filters' names, in order (for the config dump and tests).
    pub fn names(&self) -> Vec<&'static str> {
        self.0
            .iter()
            .map(|f| match f {
                Filter::JwtAuthn(_) => jwt_authn::NAME,
                Filter::Rbac(_) => rbac::NAME,
                Filter::Cors(_) => cors::NAME,
                Filter::HeaderMutation(_) => header_mutation::NAME,
                Filter::Fault(_) => fault::NAME,
                Filter::Router(_) => router::NAME,
            })
            .collect()
    }

    pub async fn run(&self, x: &mut Exchange<'_>) -> Response<Body> {
        for (i, f) in self.0.iter().enumerate() {
            if let Step::Respond(mut response) = f.on_request(x).await {
                for g in self.0[..=i].iter().rev() {
                    g.on_response(x, &mut response);
                }
                return response;
            }
        }
        unreachable!("the router is last and always answers")
    }
}

#[cfg(test)]
mod tests {
    //! The chain without sockets: a listener config parsed as a user writes it, a
    //! request's parts, and what comes back.

    use super::*;
    use crate::http::HttpManager;
    use http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use std::collections::HashMap;

    fn manager(yaml: &str, authz: Option<&str>) -> HttpManager {
        manager_with_jwt(yaml, authz, None)
    }

    fn manager_with_jwt(yaml: &str, authz: Option<&str>, jwt: Option<&str>) -> HttpManager {
        let jwt = jwt.map(|j| {
            let j: trellis_config::JwtAuthn = serde_json::from_str(j).unwrap();
            Arc::new(trellis_jwt::Authenticator::new(&j).unwrap())
        });
        let config = trellis_config::Config::parse(yaml, "test.yaml").unwrap();
        let l = &config.listeners[0];
        let metrics = crate::stats::Metrics::new();
        let authz = authz.map(|policies| {
            let a: trellis_config::Authorization = serde_json::from_str(policies).unwrap();
            Arc::new(crate::authz::ListenerAuthz {
                listener: l.name.clone(),
                engine: trellis_authz::Engine::new(&a).unwrap(),
                counters: metrics.rbac(&l.name),
            })
        });
        HttpManager::build(
            &l.name,
            l.http.as_ref().unwrap(),
            jwt,
            authz,
            &config.limits,
            &config.matcher,
            &crate::cluster::ClusterManager::default().build(&[], &metrics, false),
            &metrics,
            &mut HashMap::new(),
            None,
            None,
        )
        .unwrap()
    }

    fn conn() -> ConnInfo {
        ConnInfo {
            original_dst: None,
            peer: "10.0.0.1:5000".parse().unwrap(),
            local: "10.0.0.2:8080".parse().unwrap(),
            tls: false,
            peer_identity: None,
            client_cert_details: None,
            server_name: None,
            peer_metadata: None,
        }
    }

    /// Runs `method path` (Host `web`) through the chain of `m`.
    async fn run(m: &HttpManager, method: &str, path: &str) -> (Response<Body>, Flags) {
        run_with(m, method, path, &[]).await
    }

    async fn run_with(
        m: &HttpManager,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (Response<Body>, Flags) {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "web");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let (parts, ()) = b.body(()).unwrap().into_parts();
        let view = trellis_routing::RequestView {
            method: &parts.method,
            authority: "web",
            path: parts.uri.path(),
            query: parts.uri.query(),
            headers: &parts.headers,
        };
        let selected = m
            .matcher
            .select_virtual_host("web")
            .and_then(|vh| Some((vh, m.matcher.select_route(vh, &view)?)));
        let conn = conn();
        let mut x = Exchange {
            routes: &m.virtual_hosts,
            no_route: &m.stats.no_route,
            buffer_limit: m.buffer_limit,
            conn: &conn,
            parts,
            body: None,
            authority: "web".into(),
            selected,
            flags: Flags::default(),
            upstream: None,
            request_auth: None,
            cors_origin: None,
            metadata: None,
            upstream_cluster: None,
        };
        let response = m.chain.run(&mut x).await;
        (response, x.flags)
    }

    async fn text(r: Response<Body>) -> String {
        String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    const ROUTES: &str = r#"
listeners:
  - name: web
    address: "127.0.0.1:0"
    http:
      virtual_hosts:
        - name: web
          domains: ["*"]
          response_headers_to_add: [{ name: x-vh, value: "1" }]
          routes:
            - match: { prefix: /abort }
              direct_response: { status: 200, body: never }
              fault: { abort: { status: 418, percent: 100 } }
            - match: { prefix: /old }
              redirect: { path: /new, response_code: 308 }
            - match: { prefix: /hello }
              direct_response: { status: 200, body: hi }
              response_headers_to_add: [{ name: x-route, value: hello }]
"#;

    #[tokio::test]
    async fn the_chain_is_what_the_listener_uses_and_the_router_ends_it() {
        let m = manager(ROUTES, None);
        assert_eq!(m.filters(), ["header_mutation", "fault", "router"]);
        let bare = manager(
            &ROUTES
                .replace(
                    "          response_headers_to_add: [{ name: x-vh, value: \"1\" }]\n",
                    "",
                )
                .replace(
                    "              response_headers_to_add: [{ name: x-route, value: hello }]\n",
                    "",
                )
                .replace(
                    "              fault: { abort: { status: 418, percent: 100 } }\n",
                    "",
                ),
            None,
        );
        assert_eq!(bare.filters(), ["router"]);
        let with_policy = manager(ROUTES, Some(r#"{"policies": []}"#));
        assert_eq!(
            with_policy.filters(),
            ["rbac", "header_mutation", "fault", "router"]
        );
    }

    #[tokio::test]
    async fn router_answers_direct_redirect_and_no_route() {
        let m = manager(ROUTES, None);
        let (r, flags) = run(&m, "GET", "/hello").await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["x-route"], "hello");
        assert_eq!(r.headers()["x-vh"], "1");
        assert_eq!(flags, Flags::default());
        assert_eq!(text(r).await, "hi");

        let (r, _) = run(&m, "GET", "/old?x=1").await;
        assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(r.headers()["location"], "http://web/new?x=1");

        let (r, flags) = run(&m, "GET", "/nowhere").await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(flags.render(), "NR");
        assert!(
            r.headers().get("x-vh").is_none(),
            "no route, no virtual host headers"
        );
    }

    #[tokio::test]
    async fn a_fault_abort_answers_with_the_route_headers() {
        let m = manager(ROUTES, None);
        let (r, flags) = run(&m, "GET", "/abort").await;
        assert_eq!(r.status(), StatusCode::IM_A_TEAPOT);
        assert_eq!(flags.render(), "FI");
        assert_eq!(r.headers()["x-vh"], "1", "header mutation sees the abort");
        assert_eq!(text(r).await, "fault filter abort");
    }

    #[tokio::test]
    async fn rbac_denies_before_anything_else() {
        let deny_abort = r#"{"policies": [{"name": "no-abort", "action": "DENY",
            "rules": [{"to": [{"operation": {"paths": ["/abort"]}}]}]}]}"#;
        let m = manager(ROUTES, Some(deny_abort));
        let (r, flags) = run(&m, "GET", "/abort").await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(flags.render(), "RBAC", "the fault never ran");
        assert!(
            r.headers().get("x-vh").is_none(),
            "later filters never saw it"
        );
        assert_eq!(text(r).await, "RBAC: access denied");
        let (r, _) = run(&m, "GET", "/hello").await;
        assert_eq!(r.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn jwt_authn_runs_first_and_lets_cors_preflights_through() {
        // A rule whose keys no token can match: any token is refused.
        let jwt = r#"{"rules": [{"issuer": "iss", "jwks": ""}]}"#;
        let m = manager_with_jwt(ROUTES, Some(r#"{"policies": []}"#), Some(jwt));
        assert_eq!(
            m.filters(),
            ["jwt_authn", "rbac", "header_mutation", "fault", "router"]
        );
        let token = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJpc3MifQ.c2ln";
        let bearer = format!("Bearer {token}");
        let (r, _) = run_with(&m, "GET", "/hello", &[("authorization", &bearer)]).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("error=\"invalid_token\""));
        let (r, _) = run(&m, "GET", "/hello").await;
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "no token: authorization decides"
        );
        let preflight = [
            ("authorization", bearer.as_str()),
            ("origin", "https://istio.io"),
            ("access-control-request-method", "POST"),
        ];
        let (r, _) = run_with(&m, "OPTIONS", "/hello", &preflight).await;
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "a CORS preflight is not checked"
        );
        let (r, _) = run_with(&m, "OPTIONS", "/hello", &preflight[..2]).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "not a preflight");
    }

    #[tokio::test]
    async fn header_mutation_edits_the_request_on_its_way_in() {
        let yaml = ROUTES.replace(
            "              response_headers_to_add: [{ name: x-route, value: hello }]\n",
            "              request_headers_to_add: [{ name: x-added, value: yes }]\n              request_headers_to_remove: [x-secret]\n",
        );
        let m = manager(&yaml, None);
        let (parts, ()) = Request::builder()
            .uri("/hello")
            .header("x-secret", "s")
            .body(())
            .unwrap()
            .into_parts();
        let conn = conn();
        let mut x = Exchange {
            routes: &m.virtual_hosts,
            no_route: &m.stats.no_route,
            buffer_limit: m.buffer_limit,
            conn: &conn,
            parts,
            body: None,
            authority: "web".into(),
            selected: Some((0, 2)),
            flags: Flags::default(),
            upstream: None,
            request_auth: None,
            cors_origin: None,
            metadata: None,
            upstream_cluster: None,
        };
        assert!(matches!(HeaderMutation.on_request(&mut x), Step::Continue));
        assert_eq!(x.parts.headers["x-added"], "yes");
        assert!(x.parts.headers.get("x-secret").is_none());
    }
}
