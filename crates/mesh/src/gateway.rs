//! Istio's Gateway: what a gateway proxy (node type `router`) serves. Each port of the
//! Gateways that select the gateway's workload becomes a listener bound on both
//! wildcards; its virtual hosts are the hosts of the VirtualServices bound to that
//! Gateway (`gateways: [<namespace>/<name>]`) that the server's `hosts` admit, with those
//! VirtualServices' routes; clusters are the mesh's (auto mTLS to sidecars). HTTPS
//! servers terminate TLS with their certificate files, chosen by SNI.

use std::collections::BTreeMap;

use trellis_config as tc;
use trellis_config::Dur;

use crate::generate::Gen;
use crate::inputs::{selects, Inputs, Resource};
use crate::istio::{Gateway, GatewayServer, ServerTls, VirtualService};
use crate::Registry;

/// Istio's rules for a Gateway, and what Trellis refuses of it (anything it cannot
/// honour would serve differently than written).
pub fn validate(gw: &Gateway) -> Vec<String> {
    let mut errors = Vec::new();
    if gw.servers.is_empty() {
        errors.push("spec.servers: at least one server is required".into());
    }
    if gw.selector.is_empty() {
        errors.push(
            "spec.selector: required by Trellis (it names the gateway proxies the servers are on)"
                .into(),
        );
    }
    // One port, one kind of listener: plaintext HTTP or TLS.
    let mut kinds: BTreeMap<u32, (usize, bool)> = BTreeMap::new();
    for (i, s) in gw.servers.iter().enumerate() {
        if let Some(port) = &s.port {
            let tls = port.protocol.eq_ignore_ascii_case("HTTPS");
            let (first, first_tls) = *kinds.entry(port.number).or_insert((i, tls));
            if first_tls != tls {
                errors.push(format!(
                    "spec.servers[{i}].port: {} is {} here but {} in servers[{first}]; one port serves one of them",
                    port.number,
                    if tls { "HTTPS" } else { "plaintext" },
                    if first_tls { "HTTPS" } else { "plaintext" },
                ));
            }
        }
    }
    for (i, s) in gw.servers.iter().enumerate() {
        let p = format!("spec.servers[{i}]");
        match &s.port {
            None => errors.push(format!("{p}.port: required")),
            Some(port) => {
                if port.number == 0 || port.number > 65535 {
                    errors.push(format!("{p}.port.number: {} is not 1-65535", port.number));
                }
                let proto = port.protocol.to_ascii_uppercase();
                match proto.as_str() {
                    "HTTP" | "HTTP2" | "GRPC" => {
                        if s.tls.as_ref().is_some_and(|t| !t.https_redirect || t.mode.is_some()) {
                            errors.push(format!("{p}.tls: only httpsRedirect goes with protocol {proto}"));
                        }
                    }
                    "HTTPS" => match &s.tls {
                        None => errors.push(format!("{p}.tls: required for protocol HTTPS")),
                        Some(t) => server_tls(&format!("{p}.tls"), t, &mut errors),
                    },
                    "TCP" | "TLS" | "MONGO" | "MYSQL" | "REDIS" => errors.push(format!(
                        "{p}.port.protocol: {proto} gateway servers are not supported by Trellis yet (HTTP, HTTP2, GRPC and HTTPS are)"
                    )),
                    other => errors.push(format!("{p}.port.protocol: {other:?} is not a protocol Istio knows")),
                }
                if port.target_port.is_some() {
                    errors.push(format!("{p}.port.targetPort: not supported by Trellis (the gateway listens on number)"));
                }
            }
        }
        if s.hosts.is_empty() {
            errors.push(format!("{p}.hosts: at least one host is required"));
        }
        for (j, h) in s.hosts.iter().enumerate() {
            let (ns, host) = h.split_once('/').unwrap_or(("*", h));
            if ns.is_empty() || host.is_empty() || host.contains('/') {
                errors.push(format!(
                    "{p}.hosts[{j}]: {h:?} is not <host> or <namespace>/<host>"
                ));
            }
        }
        if s.bind.is_some() {
            errors.push(format!(
                "{p}.bind: not supported by Trellis yet (servers listen on every address)"
            ));
        }
        if s.default_endpoint.is_some() {
            errors.push(format!("{p}.defaultEndpoint: not supported by Trellis"));
        }
    }
    errors
}

fn server_tls(p: &str, t: &ServerTls, errors: &mut Vec<String>) {
    if t.https_redirect {
        errors.push(format!(
            "{p}.httpsRedirect: goes on the HTTP server, not the HTTPS one"
        ));
    }
    let mode = t.mode.as_deref().unwrap_or("SIMPLE");
    match mode {
        "SIMPLE" | "MUTUAL" => {}
        other => errors.push(format!(
            "{p}.mode: {other} is not supported by Trellis yet (SIMPLE and MUTUAL are)"
        )),
    }
    if t.credential_name.is_some() || !t.credential_names.is_empty() {
        errors.push(format!("{p}.credentialName: credentials from Kubernetes Secrets are not served yet; use serverCertificate and privateKey files"));
    } else {
        if t.server_certificate.is_none() {
            errors.push(format!(
                "{p}.serverCertificate: required when credentialName is not set"
            ));
        }
        if t.private_key.is_none() {
            errors.push(format!(
                "{p}.privateKey: required when credentialName is not set"
            ));
        }
        if mode == "MUTUAL" && t.ca_certificates.is_none() {
            errors.push(format!(
                "{p}.caCertificates: required for MUTUAL when credentialName is not set"
            ));
        }
    }
    for (field, set) in [
        ("subjectAltNames", !t.subject_alt_names.is_empty()),
        ("cipherSuites", !t.cipher_suites.is_empty()),
        ("caCrl", t.ca_crl.is_some()),
    ] {
        if set {
            errors.push(format!(
                "{p}.{field}: not supported by Trellis yet; refused rather than ignored"
            ));
        }
    }
    for (field, v) in [
        ("minProtocolVersion", &t.min_protocol_version),
        ("maxProtocolVersion", &t.max_protocol_version),
    ] {
        if let Some(v) = v {
            if tls_version(v).is_none() {
                errors.push(format!(
                    "{p}.{field}: {v} is not supported (TLSV1_2, TLSV1_3, TLS_AUTO)"
                ));
            }
        }
    }
}

fn tls_version(v: &str) -> Option<Option<tc::TlsVersion>> {
    match v {
        "TLS_AUTO" => Some(None),
        "TLSV1_2" => Some(Some(tc::TlsVersion::V1_2)),
        "TLSV1_3" => Some(Some(tc::TlsVersion::V1_3)),
        _ => None,
    }
}

/// Whether a VirtualService in `vs_ns` binds to the Gateway `gw`.
fn binds(vs: &Resource<VirtualService>, gw: &Resource<Gateway>) -> bool {
    vs.spec.gateways.iter().any(|g| match g.split_once('/') {
        Some((ns, name)) => ns == gw.namespace && name == gw.name,
        None => vs.namespace == gw.namespace && g == &gw.name,
    })
}

/// Whether a server's `hosts` admit `host` of a VirtualService in `vs_ns`.
fn admits(server: &GatewayServer, gw_ns: &str, vs_ns: &str, host: &str) -> bool {
    server.hosts.iter().any(|h| {
        let (ns, pattern) = h.split_once('/').unwrap_or(("*", h));
        let ns_ok = ns == "*" || (ns == "." && vs_ns == gw_ns) || ns == vs_ns;
        ns_ok && host_matches(pattern, host)
    })
}

fn host_matches(pattern: &str, host: &str) -> bool {
    pattern == "*"
        || pattern == host
        || pattern
            .strip_prefix('*')
            .is_some_and(|suffix| host.ends_with(suffix))
        || host
            .strip_prefix('*')
            .is_some_and(|suffix| pattern.ends_with(suffix))
}

/// What the servers of one port make: the HTTPS servers' TLS (with their host names,
/// for SNI), and the virtual hosts.
#[derive(Default)]
struct Port(Vec<(ServerTls, Vec<String>)>, Vec<tc::VirtualHost>);

/// A gateway proxy's listeners and clusters.
pub fn generate_gateway(
    inputs: &Inputs,
    registry: &Registry,
    namespace: &str,
    name: &str,
) -> Result<tc::Config, String> {
    let w = registry.known_workload(namespace, name)?;
    let mut g = Gen::new(inputs, registry, w);
    let mut ports: BTreeMap<u16, Port> = BTreeMap::new();
    let gateways = inputs
        .gateways
        .iter()
        .filter(|gw| selects(&gw.spec.selector, &w.labels));
    for gw in gateways {
        for server in &gw.spec.servers {
            let Some(port) = &server.port else { continue };
            let number = port.number as u16;
            let entry = ports.entry(number).or_default();
            let https = port.protocol.eq_ignore_ascii_case("HTTPS");
            let redirect = server.tls.as_ref().is_some_and(|t| t.https_redirect);
            if https {
                if let Some(t) = &server.tls {
                    let names = server
                        .hosts
                        .iter()
                        .map(|h| h.split_once('/').map_or(h.as_str(), |(_, n)| n).to_string())
                        .filter(|h| h != "*")
                        .collect();
                    entry.0.push((t.clone(), names));
                }
            }
            for vs in inputs.virtual_services.iter().filter(|vs| binds(vs, gw)) {
                for host in &vs.spec.hosts {
                    if !admits(server, &gw.namespace, &vs.namespace, host) {
                        continue;
                    }
                    let routes = if redirect {
                        vec![https_redirect()]
                    } else {
                        g.gateway_routes(vs, number)
                    };
                    let domains = if host == "*" {
                        vec!["*".to_string()]
                    } else {
                        vec![host.clone(), format!("{host}:{number}")]
                    };
                    entry.1.push(tc::VirtualHost::new(
                        format!("{host}:{number}"),
                        domains,
                        routes,
                    ));
                }
            }
        }
    }
    let mut listeners = Vec::new();
    for (port, Port(tls, mut virtual_hosts)) in ports {
        // One virtual host per name: the first server's (Istio keeps the first too).
        let mut seen = std::collections::BTreeSet::new();
        virtual_hosts.retain(|vh| seen.insert(vh.name.clone()));
        let mut l = tc::Listener::new(format!("0.0.0.0_{port}"), format!("0.0.0.0:{port}"));
        l.address = None;
        l.addresses = vec![format!("0.0.0.0:{port}"), format!("[::]:{port}")];
        l.http = Some(tc::HttpManager {
            codec: tc::Codec::Auto,
            virtual_hosts,
            access_log: None,
        });
        l.tls = downstream(&tls);
        listeners.push(l);
    }
    Ok(tc::Config {
        listeners,
        clusters: g.clusters.into_values().collect(),
        ..Default::default()
    })
}

/// The TLS of a port's HTTPS servers: their certificates, picked by SNI (the first
/// without names is the default); client certificates for MUTUAL.
fn downstream(servers: &[(ServerTls, Vec<String>)]) -> Option<tc::DownstreamTls> {
    let (first, _) = servers.first()?;
    let mutual = first.mode.as_deref() == Some("MUTUAL");
    let version = |v: &Option<String>| v.as_deref().and_then(|v| tls_version(v).flatten());
    Some(tc::DownstreamTls {
        mode: tc::TlsMode::Strict,
        certificates: servers
            .iter()
            .map(|(t, names)| tc::TlsCertificate {
                certificate_chain: t.server_certificate.clone().unwrap_or_default(),
                private_key: t.private_key.clone(),
                private_key_provider: tc::PrivateKeyProvider::Memory,
                server_names: if servers.len() > 1 {
                    names.clone()
                } else {
                    Vec::new()
                },
            })
            .collect(),
        alpn: None,
        min_version: version(&first.min_protocol_version).unwrap_or(tc::TlsVersion::V1_2),
        max_version: version(&first.max_protocol_version).unwrap_or(tc::TlsVersion::V1_3),
        trusted_ca: mutual.then(|| first.ca_certificates.clone().unwrap_or_default()),
        require_client_certificate: mutual,
        trust_domains: vec!["*".into()],
        trust_bundles: Vec::new(),
        session_resumption: true,
        handshake_timeout: Dur::secs(10),
    })
}

fn https_redirect() -> tc::Route {
    let mut r = tc::Route::new(Some("https_redirect".into()), tc::RouteMatch::prefix("/"));
    r.redirect = Some(tc::Redirect {
        scheme: Some("https".into()),
        host: None,
        port: None,
        path: None,
        prefix_rewrite: None,
        response_code: 301,
        strip_query: false,
    });
    r
}

impl Gen<'_> {
    /// A gateway-bound VirtualService's HTTP routes for the listener on `port`: a match
    /// naming another port does not apply there.
    fn gateway_routes(&mut self, vs: &Resource<VirtualService>, port: u16) -> Vec<tc::Route> {
        let mut routes = Vec::new();
        for (i, r) in vs.spec.http.iter().enumerate() {
            let name = r
                .name
                .clone()
                .unwrap_or_else(|| format!("{}.{}.{i}", vs.namespace, vs.name));
            let mut r = r.clone();
            if !r.matches.is_empty() {
                r.matches
                    .retain(|m| m.port.is_none_or(|p| p == 0 || p == port));
                if r.matches.is_empty() {
                    continue;
                }
            }
            routes.extend(self.http_route(&vs.namespace, &name, &r, None));
        }
        routes
    }
}
