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
use crate::istio::{
    Gateway, GatewayServer, HandshakePolicy, RouteDestination, ServerKind, ServerTls,
    VirtualService,
};
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
    // One port, one kind of listener, one handshake.
    let mut kinds: BTreeMap<u32, (usize, ServerKind)> = BTreeMap::new();
    for (i, s) in gw.servers.iter().enumerate() {
        let (Some(port), Some(kind)) = (&s.port, s.kind()) else {
            continue;
        };
        let (first, first_kind) = *kinds.entry(port.number).or_insert((i, kind));
        if first_kind != kind {
            errors.push(format!(
                "spec.servers[{i}].port: {} is {kind} here but {first_kind} in servers[{first}]; one port serves one of them",
                port.number,
            ));
        } else if s.handshake() != gw.servers[first].handshake() {
            errors.push(format!(
                "spec.servers[{i}].tls: {}",
                HandshakePolicy::differs(port.number, &format!("servers[{first}]"))
            ));
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
                    "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB" => {
                        if s.tls
                            .as_ref()
                            .is_some_and(|t| !t.https_redirect || t.mode.is_some())
                        {
                            errors.push(format!(
                                "{p}.tls: only httpsRedirect goes with protocol {proto}"
                            ));
                        }
                    }
                    "HTTPS" | "TLS" => match &s.tls {
                        None => errors.push(format!(
                            "{p}.tls: server must have TLS settings for HTTPS/TLS protocols"
                        )),
                        Some(t) => server_tls(&format!("{p}.tls"), t, &mut errors),
                    },
                    "TCP" | "MONGO" | "MYSQL" | "REDIS" => {
                        if s.tls.is_some() {
                            errors.push(format!(
                                "{p}.tls: server cannot have TLS settings for non HTTPS/TLS ports"
                            ));
                        }
                    }
                    other => errors.push(format!(
                        "{p}.port.protocol: {other:?} is not a protocol Istio knows"
                    )),
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
    let credential = t.credential_name.is_some() || !t.credential_names.is_empty();
    match mode {
        "SIMPLE" | "MUTUAL" | "OPTIONAL_MUTUAL" => {
            if !t.credential_names.is_empty() {
                errors.push(format!("{p}.credentialNames: several credentials per server are not supported by Trellis yet (credentialName is)"));
            }
            let files = t.server_certificate.is_some() || t.private_key.is_some();
            if t.credential_name.is_some() && files {
                errors.push(format!("{p}: only one of credentialName or serverCertificate/privateKey should be specified"));
            }
            if credential {
                // The certificate, key and CA come from the Secret (and `<name>-cacert`).
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
                if mode != "SIMPLE" && t.ca_certificates.is_none() {
                    errors.push(format!(
                        "{p}.caCertificates: required for {mode} when credentialName is not set"
                    ));
                }
            }
        }
        "ISTIO_MUTUAL" => {
            // The mesh's own certificate and roots (Istio's rule).
            for (field, set) in [
                ("serverCertificate", t.server_certificate.is_some()),
                ("privateKey", t.private_key.is_some()),
                ("caCertificates", t.ca_certificates.is_some()),
                ("credentialName", credential),
            ] {
                if set {
                    errors.push(format!(
                        "{p}.{field}: ISTIO_MUTUAL TLS cannot have associated {field}"
                    ));
                }
            }
        }
        // Not terminated: certificates, if any, are not used (Istio warns).
        "PASSTHROUGH" | "AUTO_PASSTHROUGH" => return,
        other => errors.push(format!("{p}.mode: {other:?} is not a TLS mode Istio knows")),
    }
    if t.ca_crl.is_some() {
        errors.push(format!(
            "{p}.caCrl: not supported by Trellis yet; refused rather than ignored"
        ));
    }
    let (ciphers, _) = t.cipher_suites();
    if !t.cipher_suites.is_empty() && ciphers.is_empty() {
        // Istio would drop them all and offer the defaults: more than was asked.
        errors.push(format!(
            "{p}.cipherSuites: none of {:?} is a cipher suite Istio knows ({}); refused rather than offering the defaults",
            t.cipher_suites,
            crate::istio::VALID_CIPHER_SUITES.join(", ")
        ));
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

fn auto_passthrough(server: &GatewayServer) -> bool {
    server.tls.as_ref().and_then(|t| t.mode.as_deref()) == Some("AUTO_PASSTHROUGH")
}

fn tls_version(v: &str) -> Option<Option<tc::TlsVersion>> {
    match v {
        "TLS_AUTO" => Some(None),
        "TLSV1_2" => Some(Some(tc::TlsVersion::V1_2)),
        "TLSV1_3" => Some(Some(tc::TlsVersion::V1_3)),
        _ => None,
    }
}

/// Whether a VirtualService binds to the Gateway `gw`.
fn binds(vs: &Resource<VirtualService>, gw: &Resource<Gateway>) -> bool {
    vs.spec.gateways.iter().any(|g| names(g, &vs.namespace, gw))
}

/// Whether `g` (`<name>` in `vs_ns`, or `<namespace>/<name>`) names the Gateway `gw`.
fn names(g: &str, vs_ns: &str, gw: &Resource<Gateway>) -> bool {
    match g.split_once('/') {
        Some((ns, name)) => ns == gw.namespace && name == gw.name,
        None => vs_ns == gw.namespace && g == gw.name,
    }
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

/// What the servers of one port make: the terminating servers' TLS (with their host
/// names, for SNI), and the virtual hosts, SNI routes or TCP route of the port's kind.
#[derive(Default)]
struct Port {
    kind: Option<ServerKind>,
    tls: Vec<(ServerTls, Vec<String>)>,
    virtual_hosts: Vec<tc::VirtualHost>,
    sni_routes: Vec<tc::SniRoute>,
    tcp: Option<tc::TcpProxy>,
}

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
    let mut secrets: BTreeMap<String, tc::Secret> = BTreeMap::new();
    let gateways = inputs
        .gateways
        .iter()
        .filter(|gw| selects(&gw.spec.selector, &w.labels));
    for gw in gateways {
        for server in &gw.spec.servers {
            let (Some(port), Some(kind)) = (&server.port, server.kind()) else {
                continue;
            };
            let number = port.number as u16;
            let entry = ports.entry(number).or_default();
            if *entry.kind.get_or_insert(kind) != kind {
                continue; // refused in validation; the first kind keeps the port
            }
            if matches!(kind, ServerKind::Https | ServerKind::TlsTerminated) {
                // A credential that is not there yet: the server waits for it (the
                // control plane warns); the port's other servers serve on.
                let credential = server
                    .tls
                    .as_ref()
                    .and_then(|t| t.credential_name.as_deref());
                if let Some(name) = credential {
                    let mutual = server.tls.as_ref().is_some_and(ServerTls::verifies_clients);
                    match credential_secrets(inputs, &w.namespace, name) {
                        // MUTUAL needs the CA that client certificates are checked against.
                        Some(found) if !mutual || found.len() == 2 => secrets.extend(found),
                        _ => continue,
                    }
                }
                if let Some(t) = &server.tls {
                    let names = server
                        .hosts
                        .iter()
                        .map(|h| h.split_once('/').map_or(h.as_str(), |(_, n)| n).to_string())
                        .filter(|h| h != "*")
                        .collect();
                    entry.tls.push((t.clone(), names));
                }
            }
            let bound = inputs.virtual_services.iter().filter(|vs| binds(vs, gw));
            match kind {
                ServerKind::Http | ServerKind::Https => {
                    let redirect = server.tls.as_ref().is_some_and(|t| t.https_redirect);
                    for vs in bound {
                        http_hosts(&mut g, gw, server, vs, number, redirect, entry);
                    }
                }
                ServerKind::Passthrough if auto_passthrough(server) => {
                    entry
                        .sni_routes
                        .extend(g.auto_passthrough_routes(gw, server));
                }
                ServerKind::Passthrough => {
                    for vs in bound {
                        entry
                            .sni_routes
                            .extend(g.sni_routes(gw, server, vs, number));
                    }
                }
                ServerKind::Tcp | ServerKind::TlsTerminated => {
                    for vs in bound {
                        let admitted = vs
                            .spec
                            .hosts
                            .iter()
                            .any(|h| admits(server, &gw.namespace, &vs.namespace, h));
                        if entry.tcp.is_none() && admitted {
                            entry.tcp = g.tcp_route(vs, number);
                        }
                    }
                }
            }
        }
    }
    let mut listeners = Vec::new();
    for (port, mut p) in ports {
        // One virtual host per name: the first server's (Istio keeps the first too).
        let mut seen = std::collections::BTreeSet::new();
        p.virtual_hosts.retain(|vh| seen.insert(vh.name.clone()));
        let mut l = tc::Listener::new(format!("0.0.0.0_{port}"), format!("0.0.0.0:{port}"));
        l.address = None;
        l.addresses = vec![format!("0.0.0.0:{port}"), format!("[::]:{port}")];
        match p.kind {
            Some(ServerKind::Http | ServerKind::Https) => {
                // A port no route is bound to yet still listens, and answers 404 (Istio's
                // blackhole virtual host).
                if p.virtual_hosts.is_empty() {
                    let mut r =
                        tc::Route::new(Some("blackhole".into()), tc::RouteMatch::prefix("/"));
                    r.direct_response = Some(tc::DirectResponse {
                        status: 404,
                        body: String::new(),
                    });
                    p.virtual_hosts.push(tc::VirtualHost::new(
                        format!("blackhole:{port}"),
                        vec!["*".into()],
                        vec![r],
                    ));
                }
                l.http = Some(tc::HttpManager {
                    tracing: None,
                    codec: tc::Codec::Auto,
                    virtual_hosts: p.virtual_hosts,
                    access_log: None,
                });
            }
            Some(ServerKind::Passthrough) => {
                if p.sni_routes.is_empty() {
                    continue; // nothing routed: no listener, as in Istio
                }
                l.sni_routes = p.sni_routes;
            }
            Some(ServerKind::Tcp | ServerKind::TlsTerminated) => match p.tcp {
                Some(t) => l.tcp = Some(t),
                None => continue,
            },
            None => continue,
        }
        let terminates = matches!(p.kind, Some(ServerKind::Https | ServerKind::TlsTerminated));
        l.tls = downstream(&g, &p.tls);
        if terminates && l.tls.is_none() {
            continue; // never plaintext on a TLS port (its credentials are missing)
        }
        l.istio_stats = g.stats(tc::Reporter::Source, true);
        listeners.push(l);
    }
    // Tracing: the collectors' clusters, the client's kind of spans, Istio's operations.
    for (host, port) in crate::trace::collectors(inputs) {
        g.cluster(&host, port, None);
    }
    for l in &mut listeners {
        crate::generate::observe_listener(inputs, registry, w, l);
        let port = l
            .address
            .as_deref()
            .and_then(|a| a.rsplit(':').next()?.parse().ok())
            .unwrap_or(0);
        for vh in l.http.iter_mut().flat_map(|h| h.virtual_hosts.iter_mut()) {
            for r in &mut vh.routes {
                r.operation = Some(crate::trace::operation(r, &vh.name, port));
            }
        }
    }
    Ok(tc::Config {
        listeners,
        clusters: g.clusters.into_values().collect(),
        secrets: secrets.into_values().collect(),
        ..Default::default()
    })
}

/// The virtual hosts a VirtualService bound to an HTTP or HTTPS server adds to its port.
fn http_hosts(
    g: &mut Gen,
    gw: &Resource<Gateway>,
    server: &GatewayServer,
    vs: &Resource<VirtualService>,
    number: u16,
    redirect: bool,
    entry: &mut Port,
) {
    for host in &vs.spec.hosts {
        if !admits(server, &gw.namespace, &vs.namespace, host) {
            continue;
        }
        let routes = if redirect {
            vec![https_redirect()]
        } else {
            g.gateway_routes(gw, vs, number)
        };
        // The Gateway API matches hostnames whatever the port in the Host header.
        let domains = if host == "*" {
            vec!["*".to_string()]
        } else if vs.source == crate::gateway_api::SOURCE {
            vec![host.clone()]
        } else {
            vec![host.clone(), format!("{host}:{number}")]
        };
        entry.virtual_hosts.push(tc::VirtualHost::new(
            format!("{host}:{number}"),
            domains,
            routes,
        ));
    }
}

/// The certificates of a port's servers, chosen by SNI among the server names; servers
/// with the same certificate share one entry, and one certificate for every server is
/// the port's only one (no SNI table).
fn certificates(
    servers: &[(ServerTls, Vec<String>)],
    sds: impl Fn(&str) -> String,
) -> Vec<tc::TlsCertificate> {
    let mut out: Vec<tc::TlsCertificate> = Vec::new();
    for (t, names) in servers {
        let cert = tc::TlsCertificate {
            certificate_chain: match &t.credential_name {
                Some(name) => sds(name),
                None => t.server_certificate.clone().unwrap_or_default(),
            },
            private_key: match t.credential_name {
                Some(_) => None,
                None => t.private_key.clone(),
            },
            private_key_provider: tc::PrivateKeyProvider::Memory,
            server_names: names.clone(),
        };
        match out.iter_mut().find(|c| {
            c.certificate_chain == cert.certificate_chain && c.private_key == cert.private_key
        }) {
            Some(same) => same.server_names.extend(cert.server_names),
            None => out.push(cert),
        }
    }
    if out.len() == 1 {
        out[0].server_names.clear();
    }
    out
}

/// The SDS secrets of a server's `credentialName`, read from the gateway's namespace:
/// the certificate with its key, and a CA (from the Secret's `ca.crt`, or the Secret
/// `<name>-cacert`) when there is one. `None` while the Secret is missing.
fn credential_secrets(
    inputs: &Inputs,
    namespace: &str,
    name: &str,
) -> Option<Vec<(String, tc::Secret)>> {
    // `<namespace>/<name>`: a Gateway API listener's Secret in another namespace.
    let (namespace, name) = name.split_once('/').unwrap_or((namespace, name));
    let find = |n: &str| {
        inputs
            .credentials
            .iter()
            .find(|c| c.namespace == namespace && c.name == n)
    };
    let c = find(name)?;
    let (chain, key) = (
        c.spec.certificate_chain.clone()?,
        c.spec.private_key.clone()?,
    );
    let sds = crate::credentials::sds_name(namespace, name);
    let mut out = vec![(
        sds.clone(),
        tc::Secret {
            name: sds.clone(),
            tls_certificate: Some(tc::SecretCertificate {
                certificate_chain: chain,
                private_key: key,
            }),
            validation_context: None,
        },
    )];
    let ca = c
        .spec
        .ca
        .clone()
        .or_else(|| find(&format!("{name}-cacert")).and_then(|c| c.spec.ca.clone()));
    if let Some(ca) = ca {
        let name = format!("{sds}-cacert");
        out.push((
            name.clone(),
            tc::Secret {
                name,
                tls_certificate: None,
                validation_context: Some(tc::SecretValidation { trusted_ca: ca }),
            },
        ));
    }
    Some(out)
}

/// The TLS of a port's terminating servers: their certificates, picked by SNI (the
/// first without names is the default), client certificates for MUTUAL; ISTIO_MUTUAL
/// is the gateway's own workload certificate and the mesh's roots, as a sidecar's
/// inbound.
fn downstream(g: &Gen, servers: &[(ServerTls, Vec<String>)]) -> Option<tc::DownstreamTls> {
    let (first, _) = servers.first()?;
    if first.mode.as_deref() == Some("ISTIO_MUTUAL") {
        return Some(g.mesh_tls(tc::TlsMode::Strict));
    }
    let mutual = first.verifies_clients();
    let version = |v: &Option<String>| v.as_deref().and_then(|v| tls_version(v).flatten());
    let ns = &g.w.namespace;
    let sds_ref = |name: &str| {
        let (ns, name) = name.split_once('/').unwrap_or((ns, name));
        crate::credentials::sds_name(ns, name)
    };
    let sds = |name: &str| format!("sds://{}", sds_ref(name));
    let trusted_ca = match &first.credential_name {
        Some(name) => mutual.then(|| format!("sds://{}-cacert", sds_ref(name))),
        None => mutual.then(|| first.ca_certificates.clone().unwrap_or_default()),
    };
    Some(tc::DownstreamTls {
        mode: tc::TlsMode::Strict,
        certificates: certificates(servers, sds),
        alpn: None,
        min_version: version(&first.min_protocol_version).unwrap_or(tc::TlsVersion::V1_2),
        max_version: version(&first.max_protocol_version).unwrap_or(tc::TlsVersion::V1_3),
        trusted_ca,
        require_client_certificate: first.mode.as_deref() == Some("MUTUAL"),
        client_sans: if mutual {
            first.subject_alt_names.clone()
        } else {
            Vec::new()
        },
        trust_domains: vec!["*".into()],
        trust_bundles: Vec::new(),
        session_resumption: true,
        handshake_timeout: Dur::secs(10),
        cipher_suites: first.cipher_suites().0,
        metadata_exchange: false,
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
    /// A passthrough server's routes from a bound VirtualService's `tls` routes: each
    /// match for this port (or none) with the SNI hosts the server admits.
    fn sni_routes(
        &mut self,
        gw: &Resource<Gateway>,
        server: &GatewayServer,
        vs: &Resource<VirtualService>,
        port: u16,
    ) -> Vec<tc::SniRoute> {
        let mut out = Vec::new();
        for r in &vs.spec.tls {
            for m in &r.matches {
                if m.port.is_some_and(|p| p != 0 && p != port) {
                    continue;
                }
                let server_names: Vec<String> = m
                    .sni_hosts
                    .iter()
                    .filter(|h| admits(server, &gw.namespace, &vs.namespace, h))
                    .cloned()
                    .collect();
                if server_names.is_empty() {
                    continue;
                }
                if let Some(tcp) = self.tcp_proxy(&vs.namespace, &r.route) {
                    out.push(tc::SniRoute { server_names, tcp });
                }
            }
        }
        out
    }

    /// AUTO_PASSTHROUGH (Istio's east-west gateway): a route per port (and subset) of
    /// each service the server's hosts admit, matched by the SNI a sidecar sends when it
    /// calls that service (`outbound_.<port>_.<subset>_.<host>`), to the service's
    /// endpoints, passed through untouched. The TLS is the calling sidecar's with the
    /// destination's, which the gateway cannot check; so, as Istio does, only endpoints
    /// whose sidecar takes mutual TLS are reached, and a service the mesh would not call
    /// over its mutual TLS (no sidecar, DestinationRule TLS of its own) is not.
    fn auto_passthrough_routes(
        &mut self,
        gw: &Resource<Gateway>,
        server: &GatewayServer,
    ) -> Vec<tc::SniRoute> {
        let mut out = Vec::new();
        let registry = self.registry;
        for s in &registry.services {
            if !admits(server, &gw.namespace, &s.namespace, &s.host) {
                continue;
            }
            let subsets: Vec<Option<String>> = std::iter::once(None)
                .chain(
                    self.destination_rule(&s.host)
                        .into_iter()
                        .flat_map(|dr| &dr.spec.subsets)
                        .map(|sub| Some(sub.name.clone())),
                )
                .collect();
            for p in &s.ports {
                for subset in &subsets {
                    if let Some(route) = self.auto_passthrough(&s.host, p.number, subset.as_deref())
                    {
                        out.push(route);
                    }
                }
            }
        }
        out
    }

    /// The passthrough route and cluster for one SNI of [`Self::auto_passthrough_routes`].
    fn auto_passthrough(
        &mut self,
        host: &str,
        port: u16,
        subset: Option<&str>,
    ) -> Option<tc::SniRoute> {
        let sni = format!("outbound_.{port}_.{}_.{host}", subset.unwrap_or(""));
        let mesh_name = crate::generate::cluster_name(port, subset, host);
        let made_here = !self.clusters.contains_key(&mesh_name);
        let mesh = self
            .cluster(host, port, subset)
            .and_then(|n| self.clusters.get(&n).cloned());
        if made_here {
            self.clusters.remove(&mesh_name);
        }
        let mut c = mesh?;
        if c.tls.as_ref().and_then(|t| t.sni.as_deref()) != Some(sni.as_str()) {
            return None;
        }
        c.name = sni.clone();
        c.tls = None;
        c.http2 = false;
        c.endpoints.retain(|e| !e.plaintext());
        self.clusters.insert(sni.clone(), c);
        Some(tc::SniRoute {
            server_names: vec![sni.clone()],
            tcp: tc::TcpProxy::to(sni),
        })
    }

    /// The first `tcp` route of a bound VirtualService for this port.
    fn tcp_route(&mut self, vs: &Resource<VirtualService>, port: u16) -> Option<tc::TcpProxy> {
        let r = vs.spec.tcp.iter().find(|r| {
            r.matches.is_empty()
                || r.matches
                    .iter()
                    .any(|m| m.port.is_none_or(|p| p == 0 || p == port))
        })?;
        self.tcp_proxy(&vs.namespace, &r.route)
    }

    /// A route's destinations as a TCP proxy: weights as in HTTP routes (without one, all
    /// of it alone and none of it beside others); a destination with no cluster gets
    /// nothing, and a route left with nothing is no route.
    fn tcp_proxy(&mut self, ns: &str, route: &[RouteDestination]) -> Option<tc::TcpProxy> {
        let mut weights = Vec::new();
        for d in route {
            let alone = if route.len() == 1 { 100 } else { 0 };
            let weight = d.weight.unwrap_or(alone);
            if weight == 0 {
                continue;
            }
            if let Some(name) = self.destination_cluster(ns, &d.destination, None) {
                weights.push(tc::ClusterWeight { name, weight });
            }
        }
        match weights.len() {
            0 => None,
            1 => Some(tc::TcpProxy::to(weights.remove(0).name)),
            _ => Some(tc::TcpProxy {
                cluster: String::new(),
                weighted_clusters: weights,
                access_log: None,
            }),
        }
    }

    /// A gateway-bound VirtualService's HTTP routes for the listener on `port` of `gw`:
    /// a match naming another port, or other gateways, does not apply there.
    fn gateway_routes(
        &mut self,
        gw: &Resource<Gateway>,
        vs: &Resource<VirtualService>,
        port: u16,
    ) -> Vec<tc::Route> {
        let mut routes = Vec::new();
        for (i, r) in vs.spec.http.iter().enumerate() {
            let name = r
                .name
                .clone()
                .unwrap_or_else(|| format!("{}.{}.{i}", vs.namespace, vs.name));
            let mut r = r.clone();
            if !r.matches.is_empty() {
                r.matches.retain(|m| {
                    m.port.is_none_or(|p| p == 0 || p == port)
                        && (m.gateways.is_empty()
                            || m.gateways.iter().any(|g| names(g, &vs.namespace, gw)))
                });
                if r.matches.is_empty() {
                    continue;
                }
                for m in &mut r.matches {
                    m.gateways.clear();
                }
            }
            routes.extend(self.http_route(&vs.namespace, &name, &r, None));
        }
        routes
    }
}
