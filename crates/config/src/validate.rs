//! Semantic checks that serde cannot express: references between sections,
//! one-of fields, ranges, addresses and regexes that must compile.

use crate::schema::*;
use crate::FieldError;
use std::collections::HashSet;
use std::net::SocketAddr;

/// Regexes larger than this (compiled size) are refused rather than risking memory.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

struct Checker<'a> {
    config: &'a Config,
    /// The secrets in place of the config's own.
    secrets: &'a [Secret],
    /// Every cluster, for the references to them.
    all_clusters: &'a [(&'a Cluster, bool)],
    /// Their names, made when a reference is first checked (a view holds thousands,
    /// and an update that changes no listener checks none).
    cluster_names: std::cell::OnceCell<rustc_hash::FxHashSet<&'a str>>,
    errors: Vec<FieldError>,
}

impl Checker<'_> {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn cluster_exists(&mut self, path: String, name: &str) {
        let names = self.cluster_names.get_or_init(|| {
            self.all_clusters
                .iter()
                .map(|(c, _)| c.name.as_str())
                .collect()
        });
        if !names.contains(name) {
            self.err(path, format!("cluster {name:?} is not defined in clusters"));
        }
    }

    fn percent(&mut self, path: String, p: f64) {
        if !(0.0..=100.0).contains(&p) {
            self.err(path, format!("percent {p} is outside 0..=100"));
        }
    }

    fn regex(&mut self, path: String, pattern: &str) {
        if let Err(e) = regex::RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
        {
            self.err(path, format!("invalid regex {pattern:?}: {e}"));
        }
    }

    fn header_name(&mut self, path: String, name: &str) {
        if !is_http_token(name) {
            self.err(path, format!("{name:?} is not a valid header name"));
        }
    }

    fn header_values(&mut self, base: &str, add: &[HeaderValue], remove: &[String]) {
        for (i, h) in add.iter().enumerate() {
            self.header_name(format!("{base}_to_add[{i}].name"), &h.name);
            if h.value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                self.err(
                    format!("{base}_to_add[{i}].value"),
                    format!("{:?} contains CR, LF or NUL", h.value),
                );
            }
        }
        for (i, h) in remove.iter().enumerate() {
            self.header_name(format!("{base}_to_remove[{i}]"), h);
        }
    }
}

/// Whether `s` is an HTTP token (RFC 9110): what a header name may be.
pub fn is_http_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

pub(crate) fn validate(config: &Config) -> Vec<FieldError> {
    let listeners: Vec<_> = config.listeners.iter().map(|l| (l, true)).collect();
    let clusters: Vec<_> = config.clusters.iter().map(|c| (c, true)).collect();
    validate_parts(config, &config.secrets, &listeners, &clusters)
}

/// `config`'s settings with `secrets`, `listeners` and `clusters` in place of its own, each checked
/// in full where marked (changed), the rest only for what involves them all: unique
/// names and addresses. An unmarked listener must have been checked against clusters
/// that all still exist.
pub(crate) fn validate_parts<'a>(
    config: &'a Config,
    secrets: &'a [Secret],
    listeners: &[(&Listener, bool)],
    clusters: &[(&Cluster, bool)],
) -> Vec<FieldError> {
    let mut c = Checker {
        config,
        secrets,
        all_clusters: clusters,
        cluster_names: Default::default(),
        errors: Vec::new(),
    };
    cluster_names(&mut c, clusters);
    if config.admin.address.parse::<SocketAddr>().is_err() {
        c.err(
            "admin.address",
            format!("{:?} is not an IP:port address", config.admin.address),
        );
    }
    limits(&mut c, &config.limits);
    matcher(&mut c, &config.matcher);
    if let Some(id) = &config.identity {
        if id.ca_address.is_empty() {
            c.err("identity.ca_address", "must not be empty");
        }
        if id.ca_root.is_empty() {
            c.err("identity.ca_root", "must not be empty");
        }
        if id.cert_ttl.get() < std::time::Duration::from_secs(10) {
            c.err("identity.cert_ttl", "must be at least 10s");
        }
        poll_delay(&mut c, "identity", &id.private_key_provider);
        pkcs11_identity(&mut c, &id.private_key_provider);
    }
    let mut secret_names = HashSet::new();
    for (i, s) in secrets.iter().enumerate() {
        let p = format!("secrets[{i}]");
        if s.name.is_empty() || s.name == "default" || s.name == "ROOTCA" {
            c.err(
                format!("{p}.name"),
                format!(
                    "{:?}: a name other than the identity agent's (default, ROOTCA)",
                    s.name
                ),
            );
        } else if !secret_names.insert(s.name.as_str()) {
            c.err(
                format!("{p}.name"),
                format!("duplicate secret name {:?}", s.name),
            );
        }
        match (&s.tls_certificate, &s.validation_context) {
            (Some(_), Some(_)) | (None, None) => {
                c.err(p.clone(), "one of tls_certificate or validation_context")
            }
            (Some(t), None) => {
                if !t.certificate_chain.contains("-----BEGIN")
                    || !t.private_key.contains("-----BEGIN")
                {
                    c.err(
                        format!("{p}.tls_certificate"),
                        "PEM certificate_chain and private_key",
                    );
                }
            }
            (None, Some(v)) => {
                if !v.trusted_ca.contains("-----BEGIN") {
                    c.err(
                        format!("{p}.validation_context.trusted_ca"),
                        "PEM certificates",
                    );
                }
            }
        }
    }
    let mut names = HashSet::new();
    let mut bound = HashSet::new();
    for (i, (l, full)) in listeners.iter().enumerate() {
        let p = format!("listeners[{i}]");
        if l.name.is_empty() {
            c.err(format!("{p}.name"), "must not be empty");
        } else if !names.insert(l.name.as_str()) {
            c.err(
                format!("{p}.name"),
                format!("duplicate listener name {:?}", l.name),
            );
        }
        listener_addresses(&mut c, &p, l, &mut bound);
        if *full {
            listener(&mut c, &p, l);
        }
    }
    // Unique names were found while collecting them, above.
    for (i, (cl, full)) in clusters.iter().enumerate() {
        if *full {
            cluster(&mut c, &format!("clusters[{i}]"), cl);
        }
    }
    c.errors
}

/// Every cluster named, and no name twice. Unmarked clusters were checked together
/// before: an update with a few changed clusters compares only theirs with the rest.
fn cluster_names(c: &mut Checker, clusters: &[(&Cluster, bool)]) {
    let twice = |c: &mut Checker, i: usize, name: &str| {
        c.err(
            format!("clusters[{i}].name"),
            format!("duplicate cluster name {name:?}"),
        )
    };
    if clusters.iter().filter(|(_, m)| *m).count() <= 8 {
        for (i, (cl, _)) in clusters.iter().enumerate().filter(|(_, (_, m))| *m) {
            let name = cl.name.as_str();
            if name.is_empty() {
                c.err(format!("clusters[{i}].name"), "must not be empty");
            } else if clusters[..i].iter().any(|(o, _)| o.name == name)
                || clusters[i + 1..].iter().any(|(o, m)| !*m && o.name == name)
            {
                twice(c, i, name);
            }
        }
        return;
    }
    let mut names = rustc_hash::FxHashSet::default();
    for (i, (cl, _)) in clusters.iter().enumerate() {
        if cl.name.is_empty() {
            c.err(format!("clusters[{i}].name"), "must not be empty");
        } else if !names.insert(cl.name.as_str()) {
            twice(c, i, &cl.name);
        }
    }
}

fn limits(c: &mut Checker, l: &Limits) {
    if l.max_request_headers_kb == 0 || l.max_request_headers_kb > 8192 {
        c.err(
            "limits.max_request_headers_kb",
            format!("{} is outside 1..=8192", l.max_request_headers_kb),
        );
    }
    if l.max_request_headers_count == 0 {
        c.err("limits.max_request_headers_count", "must be at least 1");
    }
    if l.max_downstream_connections == 0 {
        c.err("limits.max_downstream_connections", "must be at least 1");
    }
    if l.request_headers_timeout.is_zero() {
        c.err("limits.request_headers_timeout", "must be greater than 0");
    }
}

fn matcher(c: &mut Checker, m: &Matcher) {
    if !(1..=4096).contains(&m.max_regex_program_mb) {
        c.err(
            "matcher.max_regex_program_mb",
            format!("{} is outside 1..=4096", m.max_regex_program_mb),
        );
    }
}

/// Each listener's own addresses, and none shared between listeners.
fn listener_addresses(c: &mut Checker, p: &str, l: &Listener, bound: &mut HashSet<SocketAddr>) {
    let mut any = false;
    let addr_fields = l
        .address
        .iter()
        .map(|a| (format!("{p}.address"), a))
        .chain(
            l.addresses
                .iter()
                .enumerate()
                .map(|(i, a)| (format!("{p}.addresses[{i}]"), a)),
        )
        .collect::<Vec<_>>();
    for (path, a) in addr_fields {
        any = true;
        match a.parse::<SocketAddr>() {
            Ok(sa) => {
                if sa.port() != 0 && !bound.insert(sa) {
                    c.err(path, format!("address {a:?} is used by another listener"));
                } else if sa.port() == 0 && !l.bind_to_port {
                    c.err(
                        path,
                        "a listener that is not bound (bind_to_port: false) needs a port: capture listeners hand it connections by address",
                    );
                }
            }
            Err(_) => c.err(
                path,
                format!("{a:?} is not an IP:port address (IPv6: \"[::1]:80\")"),
            ),
        }
    }
    if !any {
        c.err(
            format!("{p}.address"),
            "a listener needs address or addresses",
        );
    }
}

fn listener(c: &mut Checker, p: &str, l: &Listener) {
    // Both: the protocol is detected per connection (HTTP to http, the rest to tcp).
    if let Some(t) = &l.tcp {
        tcp_proxy(c, &format!("{p}.tcp"), t);
    }
    for (i, o) in l.istio_stats.iter().flat_map(|s| &s.overrides).enumerate() {
        for (j, label) in o.remove_labels.iter().enumerate() {
            if !ISTIO_LABELS.contains(&label.as_str()) {
                c.err(
                    format!("{p}.istio_stats.overrides[{i}].remove_labels[{j}]"),
                    format!("{label:?} is not one of Istio's labels"),
                );
            }
        }
    }
    for (i, r) in l.sni_routes.iter().enumerate() {
        let rp = format!("{p}.sni_routes[{i}]");
        if r.server_names.is_empty() {
            c.err(
                format!("{rp}.server_names"),
                "at least one name (`*` for any)",
            );
        }
        for (j, n) in r.server_names.iter().enumerate() {
            let bare = n.strip_prefix("*.").unwrap_or(n);
            if n != "*" && (bare.is_empty() || bare.contains('*') || bare.contains('/')) {
                c.err(
                    format!("{rp}.server_names[{j}]"),
                    format!("{n:?} is not a host name, *.suffix or *"),
                );
            }
        }
        tcp_proxy(c, &format!("{rp}.tcp"), &r.tcp);
    }
    if !l.sni_routes.is_empty() && (l.http.is_some() || l.tls.is_some()) {
        c.err(
            format!("{p}.sni_routes"),
            "TLS passthrough does not terminate TLS: it goes without http and tls",
        );
    }
    if let Some(h) = &l.http {
        http_manager(c, &format!("{p}.http"), h);
    }
    if l.tcp.is_none() && l.http.is_none() && l.sni_routes.is_empty() {
        c.err(
            p.to_string(),
            "a listener needs tcp, http (or both: protocol detection) or sni_routes",
        );
    }
    if let Some(t) = &l.tls {
        downstream_tls(c, &format!("{p}.tls"), t);
    }
    if l.use_original_dst && !l.bind_to_port {
        c.err(
            format!("{p}.use_original_dst"),
            "a capture listener must be bound (bind_to_port: false leaves it no socket to capture on)",
        );
    }
}

fn tls_versions(c: &mut Checker, p: &str, min: TlsVersion, max: TlsVersion) {
    if min > max {
        c.err(format!("{p}.min_version"), "is newer than max_version");
    }
}

fn certificate(c: &mut Checker, p: &str, cert: &TlsCertificate) {
    if cert.certificate_chain.is_empty() {
        c.err(format!("{p}.certificate_chain"), "must not be empty");
    }
    if let Some(name) = sds_name(&cert.certificate_chain) {
        if cert.certificate_chain != SDS_WORKLOAD_CERT {
            let found = c.secrets.iter().find(|s| s.name == name);
            if found.is_none_or(|s| s.tls_certificate.is_none()) {
                c.err(
                    format!("{p}.certificate_chain"),
                    format!(
                        "{:?}: no secret {name:?} with a tls_certificate (nor the workload certificate {SDS_WORKLOAD_CERT:?})",
                        cert.certificate_chain
                    ),
                );
            }
            if cert.private_key.is_some() {
                c.err(format!("{p}.private_key"), "the secret holds the key");
            }
            return;
        } else if c.config.identity.is_none() {
            c.err(
                format!("{p}.certificate_chain"),
                format!("{SDS_WORKLOAD_CERT:?} needs the identity section"),
            );
        }
        if cert.private_key.is_some() {
            c.err(
                format!("{p}.private_key"),
                "the workload certificate's key is the identity agent's",
            );
        }
        return;
    }
    match &cert.private_key {
        None => c.err(
            format!("{p}.private_key"),
            "a private_key file or pkcs11: URI is needed",
        ),
        Some(k) if k.is_empty() => c.err(format!("{p}.private_key"), "must not be empty"),
        Some(k)
            if k.starts_with("pkcs11:")
                && cert.private_key_provider != PrivateKeyProvider::Memory =>
        {
            c.err(
                format!("{p}.private_key_provider"),
                "a key in a token signs in the token: leave private_key_provider out",
            );
        }
        _ => {}
    }
    if let PrivateKeyProvider::Pkcs11(_) = &cert.private_key_provider {
        c.err(
            format!("{p}.private_key_provider.pkcs11"),
            "name the token key in private_key (a pkcs11: URI); the pkcs11 provider is for identity",
        );
    }
    poll_delay(c, p, &cert.private_key_provider);
}

fn pkcs11_identity(c: &mut Checker, provider: &PrivateKeyProvider) {
    if let PrivateKeyProvider::Pkcs11(t) = provider {
        let p = "identity.private_key_provider.pkcs11";
        if !t.uri.starts_with("pkcs11:") {
            c.err(format!("{p}.uri"), "a pkcs11: URI (RFC 7512)");
        } else if !t.uri.split('?').next().unwrap_or("").contains("object=") {
            c.err(
                format!("{p}.uri"),
                "needs object=<label>: the label this workload's keys get in the token",
            );
        }
        if !(1..=64).contains(&t.sessions) {
            c.err(format!("{p}.sessions"), "1 to 64");
        }
    }
}

fn poll_delay(c: &mut Checker, p: &str, provider: &PrivateKeyProvider) {
    if let PrivateKeyProvider::Cryptomb(mb) = provider {
        if mb.poll_delay.is_zero() || mb.poll_delay.get() > std::time::Duration::from_secs(1) {
            c.err(
                format!("{p}.private_key_provider.cryptomb.poll_delay"),
                "must be above 0 and at most 1s",
            );
        }
    }
}

fn trusted_ca(c: &mut Checker, p: &str, ca: &str) {
    if let Some(name) = sds_name(ca) {
        if ca != SDS_ROOT_CA {
            let found = c.secrets.iter().find(|s| s.name == name);
            if found.is_none_or(|s| s.validation_context.is_none()) {
                c.err(
                    p.to_string(),
                    format!("{ca:?}: no secret {name:?} with a validation_context (nor the mesh roots {SDS_ROOT_CA:?})"),
                );
            }
        } else if c.config.identity.is_none() {
            c.err(
                p.to_string(),
                format!("{SDS_ROOT_CA:?} needs the identity section"),
            );
        }
    }
}

fn trust_bundles(c: &mut Checker, p: &str, bundles: &[TrustBundle], trusted_ca: bool) {
    if trusted_ca && !bundles.is_empty() {
        c.err(
            format!("{p}.trust_bundles"),
            "set trusted_ca or trust_bundles, not both",
        );
    }
    let mut seen = std::collections::HashSet::new();
    for (i, b) in bundles.iter().enumerate() {
        let d = &b.trust_domain;
        if d.is_empty()
            || !d
                .bytes()
                .all(|x| x.is_ascii_alphanumeric() || matches!(x, b'.' | b'-' | b'_'))
        {
            c.err(
                format!("{p}.trust_bundles[{i}].trust_domain"),
                format!("{d:?} is not a trust domain"),
            );
        } else if !seen.insert(d) {
            c.err(
                format!("{p}.trust_bundles[{i}].trust_domain"),
                format!("{d:?} has two bundles"),
            );
        }
        if b.roots.trim().is_empty() {
            c.err(format!("{p}.trust_bundles[{i}].roots"), "must not be empty");
        }
    }
}

fn tcp_proxy(c: &mut Checker, p: &str, t: &TcpProxy) {
    if t.access_log.as_ref().is_some_and(|a| a.path.is_empty()) {
        c.err(format!("{p}.access_log.path"), "must not be empty");
    }
    match (t.cluster.is_empty(), t.weighted_clusters.is_empty()) {
        (false, false) => c.err(p.to_string(), "cluster or weighted_clusters, not both"),
        (true, true) => c.err(format!("{p}.cluster"), "required (or weighted_clusters)"),
        _ => {}
    }
    if !t.cluster.is_empty() {
        c.cluster_exists(format!("{p}.cluster"), &t.cluster);
    }
    for (i, w) in t.weighted_clusters.iter().enumerate() {
        c.cluster_exists(format!("{p}.weighted_clusters[{i}].name"), &w.name);
    }
    if !t.weighted_clusters.is_empty() && t.weighted_clusters.iter().all(|w| w.weight == 0) {
        c.err(format!("{p}.weighted_clusters"), "the weights add up to 0");
    }
}

fn downstream_tls(c: &mut Checker, p: &str, t: &DownstreamTls) {
    if let Some(ca) = &t.trusted_ca {
        trusted_ca(c, &format!("{p}.trusted_ca"), ca);
    }
    trust_bundles(c, p, &t.trust_bundles, t.trusted_ca.is_some());
    if t.certificates.is_empty() {
        c.err(
            format!("{p}.certificates"),
            "at least one certificate is required",
        );
    }
    for (i, cert) in t.certificates.iter().enumerate() {
        certificate(c, &format!("{p}.certificates[{i}]"), cert);
        for (j, n) in cert.server_names.iter().enumerate() {
            let bare = n.strip_prefix("*.").unwrap_or(n);
            if bare.is_empty() || bare.contains('*') || bare.contains(':') {
                c.err(
                    format!("{p}.certificates[{i}].server_names[{j}]"),
                    format!("{n:?} is not a host name or *.suffix"),
                );
            }
        }
    }
    for (i, a) in t.alpn.iter().flatten().enumerate() {
        if a.is_empty() || a.len() > 255 {
            c.err(
                format!("{p}.alpn[{i}]"),
                format!("{a:?} must be 1..255 bytes"),
            );
        }
    }
    tls_versions(c, p, t.min_version, t.max_version);
    // Names to check on a certificate nobody verifies would check nothing.
    if !t.client_sans.is_empty() && t.trusted_ca.is_none() && t.trust_bundles.is_empty() {
        c.err(
            format!("{p}.client_sans"),
            "needs trusted_ca or trust_bundles (client certificates are not verified without them)",
        );
    }
    if t.client_sans.iter().any(String::is_empty) {
        c.err(
            format!("{p}.client_sans"),
            "an empty name matches no certificate",
        );
    }
    if t.handshake_timeout.is_zero() {
        c.err(format!("{p}.handshake_timeout"), "must be greater than 0");
    }
}

fn upstream_tls(c: &mut Checker, p: &str, t: &UpstreamTls) {
    if t.trusted_ca.is_empty() && t.trust_bundles.is_empty() {
        c.err(
            format!("{p}.trusted_ca"),
            "must not be empty (or give trust_bundles)",
        );
    }
    trusted_ca(c, &format!("{p}.trusted_ca"), &t.trusted_ca);
    trust_bundles(c, p, &t.trust_bundles, !t.trusted_ca.is_empty());
    if let Some(cert) = &t.certificate {
        certificate(c, &format!("{p}.certificate"), cert);
        if !cert.server_names.is_empty() {
            c.err(
                format!("{p}.certificate.server_names"),
                "only downstream certificates are selected by SNI",
            );
        }
    }
    if let Some(sni) = &t.sni {
        if sni.is_empty() || sni.parse::<http::uri::Authority>().is_err() || sni.contains(':') {
            c.err(format!("{p}.sni"), format!("{sni:?} is not a host name"));
        }
    }
    tls_versions(c, p, t.min_version, t.max_version);
}

fn http_manager(c: &mut Checker, p: &str, h: &HttpManager) {
    if h.virtual_hosts.is_empty() {
        c.err(
            format!("{p}.virtual_hosts"),
            "at least one virtual host is required",
        );
    }
    if let Some(a) = &h.access_log {
        if a.path.is_empty() {
            c.err(format!("{p}.access_log.path"), "must not be empty");
        }
    }
    let mut domains = HashSet::new();
    for (i, vh) in h.virtual_hosts.iter().enumerate() {
        let vp = format!("{p}.virtual_hosts[{i}]");
        if vh.domains.is_empty() {
            c.err(format!("{vp}.domains"), "at least one domain is required");
        }
        for (j, d) in vh.domains.iter().enumerate() {
            let dp = format!("{vp}.domains[{j}]");
            let stars = d.matches('*').count();
            let valid = !d.is_empty()
                && (stars == 0
                    || d == "*"
                    || (stars == 1 && (d.starts_with('*') || d.ends_with('*'))));
            if !valid {
                c.err(
                    dp.clone(),
                    format!("{d:?}: a domain is a name, `*`, or has one `*` at its start or end"),
                );
            }
            if !domains.insert(d.to_ascii_lowercase()) {
                c.err(
                    dp,
                    format!("domain {d:?} appears in more than one virtual host"),
                );
            }
        }
        c.header_values(
            &format!("{vp}.request_headers"),
            &vh.request_headers_to_add,
            &vh.request_headers_to_remove,
        );
        c.header_values(
            &format!("{vp}.response_headers"),
            &vh.response_headers_to_add,
            &vh.response_headers_to_remove,
        );
        if vh.routes.is_empty() {
            c.err(format!("{vp}.routes"), "at least one route is required");
        }
        for (j, r) in vh.routes.iter().enumerate() {
            route(c, &format!("{vp}.routes[{j}]"), r);
        }
    }
}

fn route(c: &mut Checker, p: &str, r: &Route) {
    route_match(c, &format!("{p}.match"), &r.matches);
    let actions = [
        r.route.is_some(),
        r.redirect.is_some(),
        r.direct_response.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if actions != 1 {
        c.err(
            p.to_string(),
            "a route needs exactly one of route, redirect or direct_response",
        );
    }
    if let Some(a) = &r.route {
        route_action(c, &format!("{p}.route"), a);
    }
    if let Some(rd) = &r.redirect {
        if ![301, 302, 303, 307, 308].contains(&rd.response_code) {
            c.err(
                format!("{p}.redirect.response_code"),
                format!("{} is not one of 301, 302, 303, 307, 308", rd.response_code),
            );
        }
        if let Some(s) = &rd.scheme {
            if s != "http" && s != "https" {
                c.err(
                    format!("{p}.redirect.scheme"),
                    format!("{s:?} is not http or https"),
                );
            }
        }
        if rd.path.is_some() && rd.prefix_rewrite.is_some() {
            c.err(
                format!("{p}.redirect"),
                "path and prefix_rewrite are exclusive",
            );
        }
    }
    if let Some(d) = &r.direct_response {
        if !(100..=599).contains(&d.status) {
            c.err(
                format!("{p}.direct_response.status"),
                format!("{} is not an HTTP status", d.status),
            );
        }
    }
    if let Some(cors) = &r.cors {
        for (i, o) in cors.allow_origins.iter().enumerate() {
            value_matcher(
                c,
                &format!("{p}.cors.allow_origins[{i}]"),
                &o.on_header("origin"),
            );
        }
        for (field, names) in [
            ("allow_headers", &cors.allow_headers),
            ("expose_headers", &cors.expose_headers),
        ] {
            for (i, n) in names.iter().filter(|n| *n != "*").enumerate() {
                c.header_name(format!("{p}.cors.{field}[{i}]"), n);
            }
        }
    }
    if let Some(f) = &r.fault {
        if let Some(d) = &f.delay {
            c.percent(format!("{p}.fault.delay.percent"), d.percent);
        }
        if let Some(a) = &f.abort {
            c.percent(format!("{p}.fault.abort.percent"), a.percent);
            if !(200..=599).contains(&a.status) {
                c.err(
                    format!("{p}.fault.abort.status"),
                    format!("{} is outside 200..=599", a.status),
                );
            }
        }
    }
    c.header_values(
        &format!("{p}.request_headers"),
        &r.request_headers_to_add,
        &r.request_headers_to_remove,
    );
    c.header_values(
        &format!("{p}.response_headers"),
        &r.response_headers_to_add,
        &r.response_headers_to_remove,
    );
}

fn route_match(c: &mut Checker, p: &str, m: &RouteMatch) {
    let kinds = [m.prefix.is_some(), m.path.is_some(), m.regex.is_some()]
        .iter()
        .filter(|x| **x)
        .count();
    if kinds != 1 {
        c.err(
            p.to_string(),
            "a match needs exactly one of prefix, path or regex",
        );
    }
    for (field, v) in [("prefix", &m.prefix), ("path", &m.path)] {
        if let Some(v) = v {
            if !v.starts_with('/') {
                c.err(format!("{p}.{field}"), format!("{v:?} must start with '/'"));
            }
        }
    }
    if let Some(re) = &m.regex {
        c.regex(format!("{p}.regex"), re);
    }
    for (i, method) in m.methods.iter().enumerate() {
        if !is_http_token(method) {
            c.err(
                format!("{p}.methods[{i}]"),
                format!("{method:?} is not an HTTP method"),
            );
        }
    }
    for (i, h) in m.headers.iter().enumerate() {
        let hp = format!("{p}.headers[{i}]");
        // Matchers may read the pseudo-headers the router knows (Envoy's too).
        if !matches!(h.name.as_str(), ":authority" | ":method" | ":path") {
            c.header_name(format!("{hp}.name"), &h.name);
        }
        value_matcher(c, &hp, h);
    }
    for (i, q) in m.query_params.iter().enumerate() {
        let qp = format!("{p}.query_params[{i}]");
        if q.name.is_empty() {
            c.err(format!("{qp}.name"), "must not be empty");
        }
        value_matcher(c, &qp, q);
    }
}

fn value_matcher(c: &mut Checker, p: &str, h: &HeaderMatcher) {
    let forms = [
        h.exact.is_some(),
        h.prefix.is_some(),
        h.suffix.is_some(),
        h.regex.is_some(),
        h.present.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if forms != 1 {
        c.err(
            p.to_string(),
            "needs exactly one of exact, prefix, suffix, regex or present",
        );
    }
    if let Some(re) = &h.regex {
        c.regex(format!("{p}.regex"), re);
    }
}

pub const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "connect-failure",
    "reset",
    "retriable-status-codes",
];

fn route_action(c: &mut Checker, p: &str, a: &RouteAction) {
    if let Some(rw) = &a.regex_rewrite {
        if a.prefix_rewrite.is_some() {
            c.err(
                format!("{p}.regex_rewrite"),
                "prefix_rewrite and regex_rewrite are exclusive",
            );
        }
        if let Err(e) = regex::Regex::new(&rw.pattern) {
            c.err(
                format!("{p}.regex_rewrite.pattern"),
                format!("{:?}: {e}", rw.pattern),
            );
        }
    }
    match (&a.cluster, a.weighted_clusters.is_empty()) {
        (Some(name), true) => c.cluster_exists(format!("{p}.cluster"), name),
        (None, false) => {
            let mut total: u64 = 0;
            for (i, w) in a.weighted_clusters.iter().enumerate() {
                let wp = format!("{p}.weighted_clusters[{i}]");
                c.cluster_exists(format!("{wp}.name"), &w.name);
                c.header_values(
                    &format!("{wp}.request_headers"),
                    &w.request_headers_to_add,
                    &w.request_headers_to_remove,
                );
                c.header_values(
                    &format!("{wp}.response_headers"),
                    &w.response_headers_to_add,
                    &w.response_headers_to_remove,
                );
                total += u64::from(w.weight);
            }
            if total == 0 {
                c.err(format!("{p}.weighted_clusters"), "weights add up to 0");
            }
        }
        _ => c.err(
            p.to_string(),
            "a route action needs exactly one of cluster or weighted_clusters",
        ),
    }
    if let Some(h) = &a.host_rewrite {
        if h.is_empty() || h.parse::<http::uri::Authority>().is_err() {
            c.err(
                format!("{p}.host_rewrite"),
                format!("{h:?} is not a valid authority"),
            );
        }
    }
    if let Some(r) = &a.retry_policy {
        for token in r.retry_on.split(',').map(str::trim) {
            if !RETRY_ON.contains(&token) {
                c.err(
                    format!("{p}.retry_policy.retry_on"),
                    format!(
                        "unknown condition {token:?} (known: {})",
                        RETRY_ON.join(", ")
                    ),
                );
            }
        }
        if r.num_retries > 10 {
            c.err(
                format!("{p}.retry_policy.num_retries"),
                format!("{} is more than 10", r.num_retries),
            );
        }
    }
    if let Some(m) = &a.request_mirror {
        c.cluster_exists(format!("{p}.request_mirror.cluster"), &m.cluster);
        c.percent(format!("{p}.request_mirror.percent"), m.percent);
    }
    for (i, h) in a.hash_policy.iter().enumerate() {
        if h.header.is_some() == h.source_ip {
            c.err(
                format!("{p}.hash_policy[{i}]"),
                "needs exactly one of header or source_ip: true",
            );
        }
    }
}

fn cluster(c: &mut Checker, p: &str, cl: &Cluster) {
    if let Some(t) = &cl.tls {
        upstream_tls(c, &format!("{p}.tls"), t);
    }
    // No endpoints is a service scaled to zero (or not yet started): its requests get
    // 503 "no healthy upstream", as with Envoy, and the rest of the config serves.
    if cl.discovery == DiscoveryType::OriginalDst && !cl.endpoints.is_empty() {
        c.err(
            format!("{p}.endpoints"),
            "an original_dst cluster has no endpoints of its own (each connection goes to its original destination)",
        );
    }
    for (i, e) in cl.endpoints.iter().enumerate() {
        let ep = format!("{p}.endpoints[{i}]");
        let a = e.address();
        let ok = match cl.discovery {
            DiscoveryType::Static | DiscoveryType::OriginalDst => a.parse::<SocketAddr>().is_ok(),
            DiscoveryType::Dns => a
                .rsplit_once(':')
                .is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok()),
        };
        if !ok {
            let want = match cl.discovery {
                DiscoveryType::Static | DiscoveryType::OriginalDst => {
                    "an IP:port address (IPv6: \"[::1]:80\")"
                }
                DiscoveryType::Dns => "a host:port name",
            };
            c.err(ep.clone(), format!("{a:?} is not {want}"));
        }
        if e.weight() == 0 {
            c.err(format!("{ep}.weight"), "must be at least 1");
        }
        for (j, extra) in e.additional_addresses().iter().enumerate() {
            if cl.discovery != DiscoveryType::Static {
                c.err(
                    format!("{ep}.additional_addresses"),
                    "only endpoints of static clusters have additional addresses (a DNS name resolves to every family itself)",
                );
                break;
            }
            if extra.parse::<SocketAddr>().is_err() {
                c.err(
                    format!("{ep}.additional_addresses[{j}]"),
                    format!("{extra:?} is not an IP:port address (IPv6: \"[::1]:80\")"),
                );
            }
        }
        if e.plaintext() && cl.tls.is_none() {
            c.err(
                format!("{ep}.plaintext"),
                "the cluster originates no TLS to leave out (it has no tls)",
            );
        }
    }
    if cl.connect_timeout.is_zero() {
        c.err(format!("{p}.connect_timeout"), "must be greater than 0");
    }
    if cl.discovery == DiscoveryType::Dns && cl.dns_refresh_rate.is_zero() {
        c.err(format!("{p}.dns_refresh_rate"), "must be greater than 0");
    }
    if let Some(o) = &cl.outlier_detection {
        if o.max_ejection_percent > 100 {
            c.err(
                format!("{p}.outlier_detection.max_ejection_percent"),
                format!("{} is more than 100", o.max_ejection_percent),
            );
        }
        if o.interval.is_zero() {
            c.err(
                format!("{p}.outlier_detection.interval"),
                "must be greater than 0",
            );
        }
    }
}
