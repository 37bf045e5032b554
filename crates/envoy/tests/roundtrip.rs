//! Trellis config → Envoy resources → Trellis config gives back the same config, and
//! what Trellis cannot honour is refused naming the resource and field.

use std::collections::BTreeMap;

use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use trellis_config::{Config, Endpoint};
use trellis_envoy::{decode, encode, Resources};

const CONFIG: &str = r#"
identity: { ca_address: "127.0.0.1:15012", ca_root: /etc/certs/root.pem, token_file: /etc/token }
listeners:
  - name: outbound
    addresses: ["127.0.0.1:15001", "[::1]:15001"]
    istio_stats:
      reporter: source
      overrides:
        - { metric: ALL_METRICS, remove_labels: [source_principal, destination_principal] }
        - { metric: REQUEST_DURATION, disabled: true }
        - { metric: TCP_SENT_BYTES, disabled: false, remove_labels: [response_flags] }
    http:
      codec: auto
      access_log: { path: /dev/stdout, json_format: { code: "%RESPONSE_CODE%", path: "%REQ(:PATH)%" } }
      tracing:
        span_kind: client
        random_sampling: 2.5
        tags: { istio.canonical_service: productpage, istio.namespace: default }
        provider: { opentelemetry: { cluster: reviews-v1, service_name: productpage.default } }
      virtual_hosts:
        - name: reviews
          domains: ["reviews", "reviews.default.svc.cluster.local", "reviews:9080"]
          request_headers_to_add: [{ name: x-mesh, value: trellis, append: false }]
          response_headers_to_remove: [x-internal]
          routes:
            - name: canary
              operation: "reviews.default.svc.cluster.local:9080/reviews*"
              match:
                prefix: /reviews
                ignore_case: true
                methods: [GET, HEAD]
                headers:
                  - { name: x-user, exact: jason }
                  - { name: x-debug, present: false }
                  - { name: x-tier, regex: "gold|silver", invert: true }
                query_params: [{ name: v, prefix: "2" }]
              route:
                weighted_clusters: [{ name: reviews-v1, weight: 80 }, { name: reviews-v2, weight: 20, request_headers_to_add: [{ name: x-canary, value: "yes" }], request_headers_to_remove: [x-debug], response_headers_to_add: [{ name: x-version, value: v2, append: true }], response_headers_to_remove: [server] }]
                timeout: 3s
                retry_policy: { retry_on: "5xx,reset", num_retries: 3, per_try_timeout: 500ms, retriable_status_codes: [409] }
                request_mirror: { cluster: reviews-v2, percent: 12.5 }
                hash_policy: [{ header: x-user }, { source_ip: true }]
              fault:
                delay: { fixed: 200ms, percent: 10 }
                abort: { status: 503, percent: 5.5 }
              cors:
                allow_origins: [{ exact: "https://shop.example" }, { regex: "https://.*[.]example" }]
                allow_methods: [GET, POST]
                allow_headers: [x-user]
                expose_headers: [x-trace]
                max_age: 86400s
                allow_credentials: true
                forward_unmatched_preflights: false
            - match: { path: /old }
              redirect: { host: new.example, path: /new, response_code: 308, strip_query: true }
            - match: { regex: "/health(z)?" }
              direct_response: { status: 200, body: ok }
            - match: { prefix: / }
              route: { cluster: reviews-v1, prefix_rewrite: /v1/, host_rewrite: reviews.internal, timeout: 0 }
  - name: inbound
    address: "0.0.0.0:15006"
    istio_stats:
      reporter: destination
      workload: { name: reviews-v1, namespace: default, app: reviews, version: v1, cluster: Kubernetes, principal: "spiffe://cluster.local/ns/default/sa/reviews" }
    tls:
      mode: permissive
      certificates: [{ certificate_chain: "sds://default" }]
      trusted_ca: "sds://ROOTCA"
      trust_domains: [cluster.local, other.local]
      alpn: [h2, http/1.1]
      min_version: "1.2"
      cipher_suites: [ECDHE-RSA-AES128-GCM-SHA256, ECDHE-ECDSA-AES128-GCM-SHA256]
      session_resumption: false
      handshake_timeout: 5s
      metadata_exchange: true
    authorization:
      policies:
        - name: deny-admin
          action: DENY
          rules: [{ to: [{ operation: { paths: ["/admin*"] } }], from: [{ source: { request_principals: ["iss/*"] } }] }]
    jwt:
      rules:
        - issuer: iss
          audiences: [app]
          jwks: '{"keys": []}'
          from_headers: [{ name: x-jwt, prefix: "Bearer " }]
          from_params: [token]
          from_cookies: [session]
          output_payload_to_header: x-payload
          forward_original_token: true
          output_claim_to_headers: [{ header: x-sub, claim: sub }]
          space_delimited_claims: [roles]
        - {}
    # Both: the protocol is detected (http_inspector, four chains with PERMISSIVE).
    tcp: { cluster: inbound-app }
    http:
      access_log: { path: /var/log/inbound.log, text_format: "[%START_TIME%] %RESPONSE_CODE% %REQ(:AUTHORITY)%\n" }
      tracing:
        span_kind: server
        client_sampling: 50
        overall_sampling: 90
        provider: { opentelemetry: { cluster: reviews-v1, service_name: reviews.default } }
      virtual_hosts:
        - name: local
          domains: ["*"]
          routes: [{ match: { prefix: / }, route: { cluster: inbound-app } }]
  - name: db
    address: "127.0.0.1:3306"
    tls:
      certificates:
        - certificate_chain: /etc/certs/db.pem
          private_key: /etc/certs/db.key
          private_key_provider: { cryptomb: { poll_delay: 2ms, fallback: false } }
      trust_bundles:
        - { trust_domain: a.example, roots: /etc/certs/a-roots.pem }
        - { trust_domain: b.example, roots: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n" }
    tcp: { cluster: mysql, access_log: { path: /var/log/db.log, text_format: "%DOWNSTREAM_REMOTE_ADDRESS% %UPSTREAM_HOST% %BYTES_SENT%\n" } }
  - name: virtualOutbound
    addresses: ["0.0.0.0:15001", "[::]:15001"]
    use_original_dst: true
    tcp: { cluster: PassthroughCluster }
  - name: 0.0.0.0_3306
    addresses: ["0.0.0.0:3306", "[::]:3306"]
    bind_to_port: false
    tcp: { cluster: mysql }
  # TLS passthrough: tls_inspector, a chain per route by server_names, the default chain.
  - name: 0.0.0.0_443
    addresses: ["0.0.0.0:443", "[::]:443"]
    sni_routes:
      - { server_names: [a.example.com, "*.b.example.com"], tcp: { cluster: mysql } }
      - { server_names: ["*"], tcp: { weighted_clusters: [{ name: mysql, weight: 3 }, { name: inbound-app, weight: 1 }] } }
    tcp: { cluster: PassthroughCluster }
  # A gateway's credentials over SDS, chosen by SNI (a filter chain each), and the
  # client CA.
  - name: gateway-https
    address: "0.0.0.0:8443"
    tls:
      certificates:
        - { certificate_chain: "sds://kubernetes://edge/shop-cert" }
        - { certificate_chain: /etc/certs/api.pem, private_key: /etc/certs/api.key, server_names: [api.example.com, "*.api.example.com"] }
      trusted_ca: "sds://kubernetes://edge/shop-cert-cacert"
      require_client_certificate: true
      trust_domains: ["*"]
      client_sans: [spiffe://partner.example/ns/a/sa/b, client.partner.example]
    tcp: { cluster: mysql }
secrets:
  - name: kubernetes://edge/shop-cert
    tls_certificate:
      certificate_chain: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
      private_key: "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"
  - name: kubernetes://edge/shop-cert-cacert
    validation_context:
      trusted_ca: "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n"
clusters:
  - name: reviews-v1
    service: { host: reviews.default.svc.cluster.local, name: reviews, namespace: default }
    endpoints: ["10.0.0.1:9080", { address: "[fd00::2]:9080", weight: 3 }, { address: "10.0.0.3:9080", plaintext: true }, { address: "10.0.0.4:9080", additional_addresses: ["[fd00::4]:9080"] }]
    lb_policy: least_request
    connect_timeout: 1s
    http2: true
    circuit_breakers: { max_connections: 10, max_pending_requests: 20, max_requests: 30, max_retries: 2 }
    outlier_detection: { consecutive_5xx: 3, consecutive_gateway_failure: 2, interval: 5s, base_ejection_time: 15s, max_ejection_time: 60s, max_ejection_percent: 50 }
    tls:
      trusted_ca: "sds://ROOTCA"
      certificate: { certificate_chain: "sds://default" }
      match_identities: ["spiffe://cluster.local/ns/default/sa/reviews"]
      sni: outbound_.9080_._.reviews.default.svc.cluster.local
      metadata_exchange: true
  - name: reviews-v2
    endpoints: ["10.0.0.2:9080"]
    lb_policy: ring_hash
    tls:
      certificate: { certificate_chain: "sds://default" }
      trust_bundles: [{ trust_domain: b.example, roots: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n" }]
      match_identities: ["spiffe://b.example/ns/team-b/sa/reviews"]
  - name: inbound-app
    endpoints: ["127.0.0.1:9080"]
  - name: mysql
    type: dns
    endpoints: ["mysql.internal:3306"]
    dns_refresh_rate: 30s
    lb_policy: maglev
    tls: { trusted_ca: /etc/certs/root.pem, match_identities: [mysql.internal] }
  - name: PassthroughCluster
    type: original_dst
"#;

fn by_name<M: Message>(
    type_url: &str,
    items: &[M],
    name: impl Fn(&M) -> String,
) -> BTreeMap<String, Any> {
    items
        .iter()
        .map(|m| {
            (
                name(m),
                Any {
                    type_url: type_url.into(),
                    value: m.encode_to_vec(),
                },
            )
        })
        .collect()
}

fn maps(r: &Resources) -> [BTreeMap<String, Any>; 5] {
    [
        by_name(trellis_envoy::LISTENER, &r.listeners, |l| l.name.clone()),
        by_name(trellis_envoy::ROUTE, &r.routes, |r| r.name.clone()),
        by_name(trellis_envoy::CLUSTER, &r.clusters, |c| c.name.clone()),
        by_name(trellis_envoy::ENDPOINT, &r.endpoints, |e| {
            e.cluster_name.clone()
        }),
        by_name(trellis_envoy::SECRET, &r.secrets, |s| s.name.clone()),
    ]
}

/// The forms that mean the same: `address` is the first of `addresses`; weight 1
/// without plaintext is the plain endpoint form; names sort as the maps do.
fn normalise(mut c: Config) -> Config {
    for l in &mut c.listeners {
        if let Some(a) = l.address.take() {
            l.addresses.insert(0, a);
        }
    }
    for cl in &mut c.clusters {
        for e in &mut cl.endpoints {
            *e = Endpoint::with_additional(
                e.address().to_string(),
                e.weight(),
                e.plaintext(),
                e.additional_addresses().to_vec(),
            );
        }
    }
    c.listeners.sort_by(|a, b| a.name.cmp(&b.name));
    c.clusters.sort_by(|a, b| a.name.cmp(&b.name));
    c
}

#[test]
fn a_config_survives_the_round_trip_through_envoy_resources() {
    let config = Config::parse(CONFIG, "roundtrip.yaml").unwrap();
    let resources = encode(&config).unwrap();
    assert_eq!(resources.listeners.len(), 7);
    let https = resources
        .listeners
        .iter()
        .find(|l| l.name == "gateway-https")
        .unwrap();
    let names: Vec<Vec<String>> = https
        .filter_chains
        .iter()
        .map(|c| c.filter_chain_match.clone().unwrap().server_names)
        .collect();
    assert_eq!(
        names,
        [
            vec![],
            vec!["api.example.com".to_string(), "*.api.example.com".into()]
        ]
    );
    assert_eq!(resources.secrets.len(), 2);
    // The key is in the Secret resource, never printed.
    assert!(!format!("{resources:?}").contains("PRIVATE KEY"));
    let passthrough = resources
        .listeners
        .iter()
        .find(|l| l.name == "0.0.0.0_443")
        .unwrap();
    assert_eq!(
        passthrough.listener_filters[0].name,
        "envoy.filters.listener.tls_inspector"
    );
    let names: Vec<Vec<String>> = passthrough
        .filter_chains
        .iter()
        .map(|c| c.filter_chain_match.clone().unwrap().server_names)
        .collect();
    assert_eq!(
        names,
        [
            vec!["a.example.com".to_string(), "*.b.example.com".into()],
            vec![]
        ]
    );
    assert!(passthrough.default_filter_chain.is_some());
    // Protocol detection under PERMISSIVE: tls and raw_buffer, each for detected HTTP
    // and for the rest, after Envoy's http_inspector.
    let inbound = resources
        .listeners
        .iter()
        .find(|l| l.name == "inbound")
        .unwrap();
    assert_eq!(inbound.filter_chains.len(), 4);
    assert_eq!(
        inbound.listener_filters[0].name,
        "envoy.filters.listener.http_inspector"
    );
    let matched: Vec<(String, Vec<String>)> = inbound
        .filter_chains
        .iter()
        .map(|c| {
            let m = c.filter_chain_match.clone().unwrap_or_default();
            (m.transport_protocol, m.application_protocols)
        })
        .collect();
    let http = vec!["http/1.0".to_string(), "http/1.1".into(), "h2c".into()];
    assert_eq!(
        matched,
        [
            ("tls".to_string(), http.clone()),
            ("raw_buffer".into(), http),
            ("tls".into(), vec![]),
            ("raw_buffer".into(), vec![])
        ]
    );
    assert_eq!(
        resources.routes.len(),
        2,
        "one route configuration per HTTP listener"
    );
    assert_eq!(
        resources.endpoints.len(),
        3,
        "EDS for static clusters, inline for DNS"
    );
    let ignores_port: Vec<(&str, bool)> = resources
        .routes
        .iter()
        .map(|r| (r.name.as_str(), r.ignore_port_in_host_matching))
        .collect();
    assert_eq!(
        ignores_port,
        [("outbound", false), ("inbound", true)],
        "Envoy ignores the port unless a domain names one (`reviews:9080`)"
    );
    metadata_exchange_as_istiod_writes_it(&resources);
    let [l, r, c, e, sec] = maps(&resources);
    let decoded = decode(&l, &r, &c, &e, &sec).unwrap();
    assert!(decoded.waiting_for.is_empty(), "{:?}", decoded.waiting_for);
    let back = Config {
        listeners: decoded.listeners,
        clusters: decoded.clusters,
        secrets: decoded.secrets,
        identity: config.identity.clone(),
        ..Default::default()
    };
    back.check("decoded").unwrap();
    let want = normalise(config);
    let got = normalise(back);
    for (w, g) in want.listeners.iter().zip(&got.listeners) {
        assert_eq!(w, g, "listener {}", w.name);
    }
    for (w, g) in want.clusters.iter().zip(&got.clusters) {
        assert_eq!(w, g, "cluster {}", w.name);
    }
    assert_eq!(want, got);
}

/// Istio's TCP metadata exchange: `istio.metadata_exchange` first on each inbound chain
/// and on the cluster, `istio-peer-exchange` first in ALPN (istiod's
/// `ALPNDownstreamWithMxc` and `ALPNInMeshH2WithMxc`).
fn metadata_exchange_as_istiod_writes_it(resources: &Resources) {
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
    let inbound = resources
        .listeners
        .iter()
        .find(|l| l.name == "inbound")
        .unwrap();
    for chain in &inbound.filter_chains {
        assert_eq!(chain.filters[0].name, "istio.metadata_exchange");
    }
    let socket = inbound.filter_chains[0].transport_socket.as_ref().unwrap();
    let Some(envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(
        any,
    )) = &socket.config_type
    else {
        panic!("no TLS context");
    };
    let d = tls::DownstreamTlsContext::decode(any.value.as_slice()).unwrap();
    assert_eq!(
        d.common_tls_context.unwrap().alpn_protocols,
        ["istio-peer-exchange", "h2", "http/1.1"]
    );
    let reviews = resources
        .clusters
        .iter()
        .find(|c| c.name == "reviews-v1")
        .unwrap();
    assert_eq!(reviews.filters.len(), 1);
    assert_eq!(reviews.filters[0].name, "istio.metadata_exchange");
    let config = reviews.filters[0].typed_config.as_ref().unwrap();
    assert_eq!(
        config.type_url,
        "type.googleapis.com/xds.type.v3.TypedStruct"
    );
    let Some(envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(
        any,
    )) = &reviews.transport_socket.as_ref().unwrap().config_type
    else {
        panic!("no TLS context");
    };
    let u = tls::UpstreamTlsContext::decode(any.value.as_slice()).unwrap();
    assert_eq!(
        u.common_tls_context.unwrap().alpn_protocols,
        ["istio-peer-exchange", "istio", "h2"]
    );
}

#[test]
fn missing_routes_and_endpoints_are_waited_for_not_refused() {
    let config = Config::parse(CONFIG, "roundtrip.yaml").unwrap();
    let [l, _, c, _, _] = maps(&encode(&config).unwrap());
    let none = BTreeMap::new();
    let decoded = decode(&l, &none, &c, &none, &none).unwrap();
    let mut waiting = decoded.waiting_for.clone();
    waiting.sort();
    assert_eq!(
        waiting,
        [
            "ClusterLoadAssignment/inbound-app",
            "ClusterLoadAssignment/reviews-v1",
            "ClusterLoadAssignment/reviews-v2",
            "RouteConfiguration/inbound",
            "RouteConfiguration/outbound",
            "Secret/kubernetes://edge/shop-cert",
            "Secret/kubernetes://edge/shop-cert-cacert",
        ]
    );
    // What is complete still decodes: the TCP listeners, the DNS and the original
    // destination clusters.
    assert_eq!(decoded.listeners.len(), 5);
    assert_eq!(decoded.clusters.len(), 2);
}

#[test]
fn what_trellis_cannot_honour_is_refused_by_resource_and_field() {
    use envoy_types::pb::envoy::config::cluster::v3 as cl;
    use envoy_types::pb::envoy::config::listener::v3 as lis;
    let config = Config::parse(CONFIG, "roundtrip.yaml").unwrap();
    let mut resources = encode(&config).unwrap();

    let mut bad = resources.clone();
    let inbound = bad
        .listeners
        .iter_mut()
        .find(|l| l.name == "inbound")
        .unwrap();
    if let Some(m) = inbound.filter_chains[0].filter_chain_match.as_mut() {
        m.application_protocols = vec!["istio-peer-exchange".into()];
    }
    let [l, r, c, e, sec] = maps(&bad);
    let err = decode(&l, &r, &c, &e, &sec).unwrap_err().to_string();
    assert!(
        err.contains("application_protocols: [\"istio-peer-exchange\"]: only HTTP detection"),
        "{err}"
    );

    // The exchange's ALPN without its filter: the proxy would take a frame off that
    // Envoy passes on.
    let mut bad = resources.clone();
    let inbound = bad
        .listeners
        .iter_mut()
        .find(|l| l.name == "inbound")
        .unwrap();
    for chain in &mut inbound.filter_chains {
        chain.filters.remove(0);
    }
    let [l, r, c, e, sec] = maps(&bad);
    let err = decode(&l, &r, &c, &e, &sec).unwrap_err().to_string();
    assert!(
        err.contains("alpn_protocols: istio-peer-exchange is offered without the istio.metadata_exchange filter"),
        "{err}"
    );
    let mut bad = resources.clone();
    let reviews = bad
        .clusters
        .iter_mut()
        .find(|c| c.name == "reviews-v1")
        .unwrap();
    reviews.filters[0].name = "envoy.filters.network.upstream.proxy_protocol".into();
    let [l, r, c, e, sec] = maps(&bad);
    let err = decode(&l, &r, &c, &e, &sec).unwrap_err().to_string();
    assert!(
        err.contains("filters[0]: envoy.filters.network.upstream.proxy_protocol: upstream network filters other than istio.metadata_exchange are not supported"),
        "{err}"
    );

    let mut bad = resources.clone();
    bad.listeners[0].transparent =
        Some(envoy_types::pb::google::protobuf::BoolValue { value: true });
    let [l, r, c, e, sec] = maps(&bad);
    let err = decode(&l, &r, &c, &e, &sec).unwrap_err().to_string();
    assert!(err.starts_with("Listener outbound: transparent:"), "{err}");

    let mut bad = resources.clone();
    bad.listeners[0].filter_chains[0].filter_chain_match = Some(lis::FilterChainMatch {
        server_names: vec!["example.com".into()],
        ..Default::default()
    });
    let [l, r, c, e, sec] = maps(&bad);
    let err = decode(&l, &r, &c, &e, &sec).unwrap_err().to_string();
    // Chains by server name are TLS passthrough, which an HTTP manager is not.
    assert!(
        err.contains("filter_chains[0]: a TLS passthrough chain holds a tcp_proxy"),
        "{err}"
    );

    bad = resources.clone();
    bad.clusters[0].lb_policy = cl::cluster::LbPolicy::ClusterProvided as i32;
    let [l, r, c, e, sec] = maps(&bad);
    let err = decode(&l, &r, &c, &e, &sec).unwrap_err().to_string();
    assert!(err.starts_with("Cluster reviews-v1: lb_policy:"), "{err}");

    // A certificate validator other than SPIFFE's is refused, not ignored.
    bad = resources.clone();
    let tls_any = bad.clusters[1].transport_socket.as_mut().unwrap();
    use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
    let Some(ConfigType::TypedConfig(any)) = &mut tls_any.config_type else {
        panic!("reviews-v2 has TLS")
    };
    let mut ctx = tls::UpstreamTlsContext::decode(any.value.as_slice()).unwrap();
    // Narrowed TLS parameters and peer checks that Trellis would not apply are refused.
    type Narrow = fn(&mut tls::CommonTlsContext);
    let cases: [(Narrow, &str); 3] = [
        (
            |c| c.tls_params.as_mut().unwrap().ecdh_curves = vec!["P-384".into()],
            "tls_params.ecdh_curves: is not supported",
        ),
        (
            |c| c.tls_params.as_mut().unwrap().cipher_suites = vec!["AES128-SHA".into()],
            "tls_params.cipher_suites: restricting an upstream's cipher suites is not supported",
        ),
        (
            |c| {
                let Some(tls::common_tls_context::ValidationContextType::ValidationContext(v)) =
                    c.validation_context_type.as_mut()
                else {
                    panic!("a validation context")
                };
                v.verify_certificate_hash =
                    vec!["df6ff72fe9116521268f6f2dd4966f51df479883fe7037b39f75916ac3049d1a".into()];
            },
            "validation_context.verify_certificate_hash: is not supported",
        ),
    ];
    for (narrow, says) in cases {
        let mut narrowed = ctx.clone();
        narrow(narrowed.common_tls_context.as_mut().unwrap());
        let mut bad = resources.clone();
        let socket = bad.clusters[1].transport_socket.as_mut().unwrap();
        let Some(ConfigType::TypedConfig(any)) = &mut socket.config_type else {
            panic!("reviews-v2 has TLS")
        };
        any.value = narrowed.encode_to_vec();
        let [l, r, c, e, sec] = maps(&bad);
        let err = decode(&l, &r, &c, &e, &sec).unwrap_err().to_string();
        assert!(
            err.starts_with("Cluster reviews-v2: ") && err.contains(says),
            "{err}"
        );
    }
    let Some(tls::common_tls_context::ValidationContextType::ValidationContext(v)) = ctx
        .common_tls_context
        .as_mut()
        .unwrap()
        .validation_context_type
        .as_mut()
    else {
        panic!("a validation context")
    };
    v.custom_validator_config.as_mut().unwrap().typed_config = Some(Any {
        type_url: "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.PlatformProvidedCertValidatorConfig".into(),
        value: Vec::new(),
    });
    any.value = ctx.encode_to_vec();
    let [l, r, c, e, sec] = maps(&bad);
    let err = decode(&l, &r, &c, &e, &sec).unwrap_err().to_string();
    assert!(
        err.starts_with("Cluster reviews-v2: ")
            && err.contains("custom_validator_config")
            && err.contains("is not supported"),
        "{err}"
    );

    // Tracing the proxy cannot do: another tracer, a tag read from a header.
    use envoy_types::pb::envoy::config::trace::v3 as trace;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
    // The outbound connection manager changed by `change`, decoded: the error.
    let with_hcm = |change: &dyn Fn(&mut hcm::HttpConnectionManager)| {
        let mut bad = resources.clone();
        let outbound = bad
            .listeners
            .iter_mut()
            .find(|l| l.name == "outbound")
            .unwrap();
        let filter = &mut outbound.filter_chains[0].filters[0];
        let Some(lis::filter::ConfigType::TypedConfig(any)) = filter.config_type.as_mut() else {
            panic!("an HCM")
        };
        let mut m = hcm::HttpConnectionManager::decode(any.value.as_slice()).unwrap();
        change(&mut m);
        any.value = m.encode_to_vec();
        let [l, r, c, e, sec] = maps(&bad);
        decode(&l, &r, &c, &e, &sec).unwrap_err().to_string()
    };
    let with_tracing = |change: &dyn Fn(&mut hcm::http_connection_manager::Tracing)| {
        with_hcm(&|m| change(m.tracing.as_mut().unwrap()))
    };
    let err = with_tracing(&|t| {
        t.provider = Some(trace::tracing::Http {
            name: "envoy.tracers.zipkin".into(),
            config_type: None,
        })
    });
    assert!(
        err.contains(
            "tracing.provider.name: \"envoy.tracers.zipkin\": only envoy.tracers.opentelemetry"
        ),
        "{err}"
    );
    let err = with_tracing(&|t| {
        use envoy_types::pb::envoy::r#type::tracing::v3 as tag;
        t.custom_tags.push(tag::CustomTag {
            tag: "user".into(),
            r#type: Some(tag::custom_tag::Type::RequestHeader(
                tag::custom_tag::Header {
                    name: "x-user".into(),
                    ..Default::default()
                },
            )),
        })
    });
    assert!(
        err.contains("tracing.custom_tags[2]: only literal tags"),
        "{err}"
    );
    let err = with_tracing(&|t| t.verbose = true);
    assert!(err.contains("tracing.verbose"), "{err}");
    // An access log filter would log fewer requests.
    let err = with_hcm(&|m| m.access_log[0].filter = Some(Default::default()));
    assert!(err.contains("access_log[0].filter"), "{err}");

    // A route with an unknown per-filter config names the route's path.
    resources.routes[0].virtual_hosts[0].routes[0]
        .typed_per_filter_config
        .insert("envoy.filters.http.lua".into(), Any::default());
    let [l, r, c, e, sec] = maps(&resources);
    let err = decode(&l, &r, &c, &e, &sec).unwrap_err().to_string();
    assert!(
        err.starts_with("RouteConfiguration outbound: virtual_hosts[0].routes[0].typed_per_filter_config[envoy.filters.http.lua]"),
        "{err}"
    );
}

/// The resources of `CONFIG` with the DownstreamTlsContext of every filter chain of
/// `gateway-https` changed by `change`.
fn with_gateway_tls(
    change: impl Fn(
        &mut envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::DownstreamTlsContext,
    ),
) -> Resources {
    use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
    let config = Config::parse(CONFIG, "roundtrip.yaml").unwrap();
    let mut resources = encode(&config).unwrap();
    let https = resources
        .listeners
        .iter_mut()
        .find(|l| l.name == "gateway-https")
        .unwrap();
    for chain in &mut https.filter_chains {
        let Some(ConfigType::TypedConfig(any)) = chain
            .transport_socket
            .as_mut()
            .and_then(|t| t.config_type.as_mut())
        else {
            panic!("a TLS chain")
        };
        let mut d = tls::DownstreamTlsContext::decode(any.value.as_slice()).unwrap();
        change(&mut d);
        any.value = d.encode_to_vec();
    }
    resources
}

/// A Gateway's subjectAltNames as Istio writes them: exact names in the untyped (deprecated)
/// `match_subject_alt_names`, which match any SAN type; read as the client names they are.
#[test]
fn untyped_client_names_decode_as_client_sans() {
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
    use envoy_types::pb::envoy::r#type::matcher::v3 as m;
    let resources = with_gateway_tls(|d| {
        let Some(tls::common_tls_context::ValidationContextType::CombinedValidationContext(c)) = d
            .common_tls_context
            .as_mut()
            .unwrap()
            .validation_context_type
            .as_mut()
        else {
            panic!("the CA over SDS")
        };
        let v = c.default_validation_context.as_mut().unwrap();
        v.match_typed_subject_alt_names.clear();
        #[allow(deprecated)]
        {
            v.match_subject_alt_names = [
                "spiffe://partner.example/ns/a/sa/b",
                "client.partner.example",
            ]
            .map(|n| m::StringMatcher {
                match_pattern: Some(m::string_matcher::MatchPattern::Exact(n.into())),
                ignore_case: false,
            })
            .to_vec();
        }
    });
    let [l, r, c, e, sec] = maps(&resources);
    let decoded = decode(&l, &r, &c, &e, &sec).unwrap();
    let tls = decoded
        .listeners
        .iter()
        .find(|l| l.name == "gateway-https")
        .and_then(|l| l.tls.as_ref())
        .unwrap();
    assert_eq!(
        tls.client_sans,
        [
            "spiffe://partner.example/ns/a/sa/b",
            "client.partner.example"
        ]
    );
    assert_eq!(tls.trust_domains, ["*"]);
}

/// Istio's form of auto mTLS decodes to the same cluster as Trellis's: every sidecar
/// endpoint labelled `tlsMode: istio`, TLS only in a match, and a catch-all match to
/// `raw_buffer` (Trellis labels only the endpoints without a sidecar).
#[test]
fn endpoints_without_tls_decode_from_either_form_of_socket_matches() {
    use envoy_types::pb::envoy::config::cluster::v3 as cl;
    use envoy_types::pb::envoy::config::core::v3 as core;
    use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
    let config = Config::parse(CONFIG, "roundtrip.yaml").unwrap();
    let resources = encode(&config).unwrap();
    let [l, r, c, e, sec] = maps(&resources);
    let want = decode(&l, &r, &c, &e, &sec).unwrap().clusters;
    let reviews = want.iter().find(|c| c.name == "reviews-v1").unwrap();
    let plain: Vec<bool> = reviews.endpoints.iter().map(|e| e.plaintext()).collect();
    assert_eq!(plain, [false, false, true, false]);

    let mode = |m: &str| Struct {
        fields: [(
            "tlsMode".to_string(),
            Value {
                kind: Some(Kind::StringValue(m.into())),
            },
        )]
        .into(),
    };
    let mut istio = resources.clone();
    let cluster = istio.clusters.iter_mut().find(|c| c.name == "reviews-v1");
    let cluster = cluster.unwrap();
    let raw = cluster.transport_socket_matches[0].transport_socket.clone();
    cluster.transport_socket_matches = vec![
        cl::cluster::TransportSocketMatch {
            name: "tlsMode-istio".into(),
            r#match: Some(mode("istio")),
            transport_socket: cluster.transport_socket.take(),
        },
        cl::cluster::TransportSocketMatch {
            name: "tlsMode-disabled".into(),
            r#match: Some(Struct::default()),
            transport_socket: raw,
        },
    ];
    let cla = istio
        .endpoints
        .iter_mut()
        .find(|e| e.cluster_name == "reviews-v1");
    for e in &mut cla.unwrap().endpoints[0].lb_endpoints {
        e.metadata = match e.metadata {
            Some(_) => None,
            None => Some(core::Metadata {
                filter_metadata: [("envoy.transport_socket_match".to_string(), mode("istio"))]
                    .into(),
                ..Default::default()
            }),
        };
    }
    let [l, r, c, e, sec] = maps(&istio);
    assert_eq!(decode(&l, &r, &c, &e, &sec).unwrap().clusters, want);

    // Two TLS settings in one cluster are refused, naming the field.
    let cluster = istio.clusters.iter_mut().find(|c| c.name == "reviews-v1");
    let cluster = cluster.unwrap();
    cluster.transport_socket_matches[1].transport_socket = resources
        .clusters
        .iter()
        .find(|c| c.name == "mysql")
        .unwrap()
        .transport_socket
        .clone();
    let [l, r, c, e, sec] = maps(&istio);
    let err = decode(&l, &r, &c, &e, &sec).unwrap_err().to_string();
    assert!(
        err.starts_with("Cluster reviews-v1: transport_socket_matches: endpoints of one cluster with different TLS settings"),
        "{err}"
    );
}

/// A listener that requires SNI is refused: read without it, clients without SNI would
/// be let in.
#[test]
fn a_listener_requiring_sni_is_refused() {
    use envoy_types::pb::google::protobuf::BoolValue;
    let resources = with_gateway_tls(|d| d.require_sni = Some(BoolValue { value: true }));
    let [l, r, c, e, sec] = maps(&resources);
    let err = decode(&l, &r, &c, &e, &sec).unwrap_err().to_string();
    assert!(
        err.starts_with("Listener gateway-https: ")
            && err.contains("require_sni: is not supported"),
        "{err}"
    );
}

mod hostile {
    //! Resources corrupted byte by byte (what a broken or hostile control plane might
    //! send) are decoded or refused; the decoder never panics.
    use super::*;
    use proptest::prelude::*;
    use proptest::sample::Index;

    /// The bytes of one resource of `m[kind]`, picked by `which`.
    fn pick<'a>(
        m: &'a mut [BTreeMap<String, Any>; 5],
        kind: usize,
        which: &Index,
    ) -> Option<&'a mut Vec<u8>> {
        let map = &mut m[kind];
        let key = map.keys().nth(which.index(map.len().max(1)))?.clone();
        map.get_mut(&key).map(|a| &mut a.value)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]
        #[test]
        fn corrupted_resources_are_refused_never_a_panic(
            edits in proptest::collection::vec((0usize..5, any::<Index>(), any::<Index>(), any::<u8>()), 1..6),
            cut in proptest::option::of((0usize..5, any::<Index>(), any::<Index>())),
        ) {
            let config = Config::parse(CONFIG, "roundtrip.yaml").unwrap();
            let mut m = maps(&encode(&config).unwrap());
            for (kind, which, at, byte) in &edits {
                if let Some(v) = pick(&mut m, *kind, which).filter(|v| !v.is_empty()) {
                    let i = at.index(v.len());
                    v[i] = *byte;
                }
            }
            if let Some((kind, which, at)) = &cut {
                if let Some(v) = pick(&mut m, *kind, which).filter(|v| !v.is_empty()) {
                    let len = at.index(v.len());
                    v.truncate(len);
                }
            }
            let _ = decode(&m[0], &m[1], &m[2], &m[3], &m[4]);
        }
    }
}

/// Resource bodies as a client holds them, by type and name.
struct Held(BTreeMap<(&'static str, String), prost::bytes::Bytes>);

impl Held {
    fn of(r: &Resources) -> Held {
        let types = [
            trellis_envoy::LISTENER,
            trellis_envoy::ROUTE,
            trellis_envoy::CLUSTER,
            trellis_envoy::ENDPOINT,
            trellis_envoy::SECRET,
        ];
        let mut held = BTreeMap::new();
        for (t, map) in types.into_iter().zip(maps(r)) {
            for (name, any) in map {
                held.insert((t, name), any.value.into());
            }
        }
        Held(held)
    }

    fn decode(
        &self,
        decoder: &mut trellis_envoy::Decoder,
    ) -> Result<trellis_envoy::SharedDecoded, trellis_envoy::DecodeError> {
        decoder.decode(self)
    }
}

impl trellis_envoy::Lookup for Held {
    fn body(&self, type_url: &'static str, name: &str) -> Option<prost::bytes::Bytes> {
        self.0.get(&(type_url, name.to_string())).cloned()
    }

    fn for_each(
        &self,
        type_url: &'static str,
        f: &mut dyn FnMut(&prost::bytes::Bytes, &prost::bytes::Bytes),
    ) {
        for ((t, name), body) in &self.0 {
            if *t == type_url {
                f(&prost::bytes::Bytes::from(name.clone()), body);
            }
        }
    }
}

fn cluster_of(
    d: &trellis_envoy::SharedDecoded,
    name: &str,
) -> std::sync::Arc<trellis_config::Cluster> {
    d.clusters.iter().find(|c| c.name == name).unwrap().clone()
}

fn listener_of(
    d: &trellis_envoy::SharedDecoded,
    name: &str,
) -> std::sync::Arc<trellis_config::Listener> {
    d.listeners.iter().find(|l| l.name == name).unwrap().clone()
}

#[test]
fn a_decoder_decodes_again_only_what_changed_or_what_it_names_changed() {
    use std::sync::Arc;
    let config = Config::parse(CONFIG, "roundtrip.yaml").unwrap();
    let resources = encode(&config).unwrap();
    let mut held = Held::of(&resources);
    let mut decoder = trellis_envoy::Decoder::default();
    let first = held.decode(&mut decoder).unwrap();
    assert_eq!(
        decoder.decoded,
        resources.listeners.len() + resources.clusters.len()
    );
    // The same as decoding the whole set at once.
    let [l, r, c, e, s] = maps(&resources);
    let whole = decode(&l, &r, &c, &e, &s).unwrap();
    assert_eq!(
        first
            .listeners
            .iter()
            .map(|l| (**l).clone())
            .collect::<Vec<_>>(),
        whole.listeners
    );
    assert_eq!(
        first
            .clusters
            .iter()
            .map(|c| (**c).clone())
            .collect::<Vec<_>>(),
        whole.clusters
    );

    // Nothing changed: nothing decoded, every value the same allocation.
    let again = held.decode(&mut decoder).unwrap();
    assert_eq!(decoder.decoded, 0);
    assert!(again
        .clusters
        .iter()
        .zip(&first.clusters)
        .all(|(a, b)| Arc::ptr_eq(a, b)));

    // One endpoint assignment changes: its cluster alone is decoded again.
    let mut cla = resources
        .endpoints
        .iter()
        .find(|e| e.cluster_name == "reviews-v1")
        .unwrap()
        .clone();
    cla.endpoints[0].lb_endpoints.truncate(1);
    held.0.insert(
        (trellis_envoy::ENDPOINT, "reviews-v1".into()),
        cla.encode_to_vec().into(),
    );
    let changed = held.decode(&mut decoder).unwrap();
    assert_eq!(decoder.decoded, 1);
    assert!(!Arc::ptr_eq(
        &cluster_of(&changed, "reviews-v1"),
        &cluster_of(&first, "reviews-v1")
    ));
    assert!(Arc::ptr_eq(
        &cluster_of(&changed, "reviews-v2"),
        &cluster_of(&first, "reviews-v2")
    ));
    assert!(changed
        .listeners
        .iter()
        .zip(&first.listeners)
        .all(|(a, b)| Arc::ptr_eq(a, b)));

    // A route configuration changes: the listener that names it is decoded again.
    let mut routes = resources
        .routes
        .iter()
        .find(|r| r.name == "outbound")
        .unwrap()
        .clone();
    routes.virtual_hosts[0].domains.push("extra.example".into());
    held.0.insert(
        (trellis_envoy::ROUTE, "outbound".into()),
        routes.encode_to_vec().into(),
    );
    let rerouted = held.decode(&mut decoder).unwrap();
    assert_eq!(decoder.decoded, 1);
    assert!(!Arc::ptr_eq(
        &listener_of(&rerouted, "outbound"),
        &listener_of(&first, "outbound")
    ));

    // What it names goes away: the cluster waits for it (not refused, not kept).
    held.0
        .remove(&(trellis_envoy::ENDPOINT, "reviews-v2".into()));
    let waiting = held.decode(&mut decoder).unwrap();
    assert_eq!(waiting.waiting_for, ["ClusterLoadAssignment/reviews-v2"]);
    assert!(!waiting.clusters.iter().any(|c| c.name == "reviews-v2"));

    // A resource that cannot be decoded refuses the set; the next good one decodes.
    held.0.insert(
        (trellis_envoy::CLUSTER, "reviews-v1".into()),
        prost::bytes::Bytes::from_static(b"\xff\xff\xff"),
    );
    let refused = held.decode(&mut decoder).unwrap_err();
    assert_eq!(refused.resource, "Cluster reviews-v1");
    let good = Held::of(&resources);
    let back = good.decode(&mut decoder).unwrap();
    assert!(back.waiting_for.is_empty());
    assert_eq!(back.clusters.len(), first.clusters.len());
}
