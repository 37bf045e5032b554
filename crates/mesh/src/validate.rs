//! What makes a resource invalid (refused) beyond its YAML types: each check returns
//! messages that start with the field path.

use crate::dns1123_label;
use std::collections::{BTreeMap, BTreeSet};

use crate::inputs::{Diagnostic, Loaded};
use crate::istio::*;

fn duration(path: &str, d: &Option<String>, errors: &mut Vec<String>) {
    if let Some(d) = d {
        if let Err(e) = trellis_config::parse_duration(d) {
            errors.push(format!("{path}: {d:?}: {e}"));
        }
    }
}

fn percent(path: &str, p: &Option<Percent>, errors: &mut Vec<String>) {
    if let Some(p) = p {
        if !(0.0..=100.0).contains(&p.value) {
            errors.push(format!("{path}.value: {} is outside 0..100", p.value));
        }
    }
}

fn string_match(path: &str, m: &StringMatch, errors: &mut Vec<String>) {
    let set = [m.exact.is_some(), m.prefix.is_some(), m.regex.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if set != 1 {
        errors.push(format!(
            "{path}: exactly one of exact, prefix or regex is required"
        ));
    }
    if let Some(re) = &m.regex {
        if let Err(e) = regex::Regex::new(&format!("^(?:{re})$")) {
            errors.push(format!(
                "{path}.regex: {re:?} is not a valid regular expression: {e}"
            ));
        }
    }
}

/// Istio's header operation checks (ValidateHTTPHeader*OperationName, ValidateHTTPHeaderValue),
/// and what Trellis does not do yet: set the authority through headers, or expand
/// Envoy's `%...%` command operators in values.
fn headers(p: &str, h: &crate::istio::Headers, errors: &mut Vec<String>) {
    for (side, ops) in [("request", &h.request), ("response", &h.response)] {
        let Some(ops) = ops else { continue };
        let sp = format!("{p}.{side}");
        for (kind, names) in [
            ("set", ops.set.keys().collect::<Vec<_>>()),
            ("add", ops.add.keys().collect()),
            ("remove", ops.remove.iter().collect()),
        ] {
            for name in names {
                let np = format!("{sp}.{kind}[{name}]");
                let lower = name.to_ascii_lowercase();
                let authority = lower == ":authority" || lower == "host";
                if name.is_empty() {
                    errors.push(format!("{sp}.{kind}: header name cannot be empty"));
                } else if authority && side == "request" && kind != "remove" {
                    errors.push(format!(
                        "{np}: setting the authority through headers is not supported yet; use rewrite.authority"
                    ));
                } else if lower == "host" {
                    errors.push(format!(
                        "{np}: invalid header {name:?}: cannot set Host header"
                    ));
                } else if name.starts_with(':') {
                    errors.push(format!(
                        "{np}: invalid header {name:?}: header cannot have \":\" prefix"
                    ));
                }
            }
        }
        for (kind, values) in [("set", &ops.set), ("add", &ops.add)] {
            for (name, value) in values {
                let np = format!("{sp}.{kind}[{name}]");
                if value
                    .chars()
                    .any(|c| (c.is_control() && c != '\t') || c == '\u{7f}')
                {
                    errors.push(format!(
                        "{np}: header value configuration {value:?} is invalid"
                    ));
                } else if value.contains('%') {
                    errors.push(format!(
                        "{np}: {value:?}: Envoy's %...% header value operators are not supported yet"
                    ));
                }
            }
        }
    }
}

/// Istio's validateCORSPolicy.
fn cors_policy(p: &str, c: &crate::istio::CorsPolicy, errors: &mut Vec<String>) {
    const METHODS: &[&str] = &[
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "*",
    ];
    for (i, o) in c.allow_origins.iter().enumerate() {
        let op = format!("{p}.allowOrigins[{i}]");
        let value = o
            .exact
            .as_deref()
            .or(o.prefix.as_deref())
            .or(o.regex.as_deref());
        if value.is_none_or(str::is_empty) {
            errors.push(format!(
                "{op}: an empty match is not a valid match for CORS allow origins"
            ));
        } else {
            string_match(&op, o, errors);
        }
    }
    for (i, m) in c.allow_methods.iter().enumerate() {
        if !METHODS.contains(&m.as_str()) {
            errors.push(format!(
                "{p}.allowMethods[{i}]: {m:?} is not a supported HTTP method"
            ));
        }
    }

    for (field, names) in [
        ("allowHeaders", &c.allow_headers),
        ("exposeHeaders", &c.expose_headers),
    ] {
        for (i, n) in names.iter().enumerate() {
            if !trellis_config::is_http_token(n) {
                errors.push(format!(
                    "{p}.{field}[{i}]: {n:?} is not a valid header name"
                ));
            }
        }
    }
    if let Some(age) = &c.max_age {
        match trellis_config::parse_duration(age) {
            Err(e) => errors.push(format!("{p}.maxAge: {e}")),
            Ok(d) if d.subsec_nanos() > 0 => errors.push(format!(
                "{p}.maxAge: {age:?}: max_age duration is accurate only to seconds precision"
            )),
            Ok(_) => {}
        }
    }
    if let Some(u) = &c.unmatched_preflights {
        if !matches!(u.as_str(), "FORWARD" | "IGNORE" | "UNSPECIFIED") {
            errors.push(format!(
                "{p}.unmatchedPreflights: {u:?} is not FORWARD or IGNORE"
            ));
        }
    }
}

/// The retry conditions Istio accepts in `retryOn` (its supportedRetryOnPolicies), besides
/// status codes.
pub const RETRY_ON_ISTIO: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// Those the proxy retries on.
pub const RETRY_ON_HONOURED: &[&str] = &[
    "5xx",
    "gateway-error",
    "connect-failure",
    "reset",
    "retriable-status-codes",
];

/// Istio's ValidateWildcardDomain: a wildcard only in the first label (`*` or
/// `*suffix`), DNS-1123 labels elsewhere, a top-level domain not all digits, a trailing
/// dot allowed.
fn wildcard_domain(domain: &str) -> Result<(), String> {
    if domain.is_empty() {
        return Err("domain name cannot be empty".into());
    }
    if domain.len() > 255 {
        return Err(format!(
            "domain name {domain:?} is longer than 255 characters"
        ));
    }
    let (first, rest) = match domain.split_once('.') {
        Some((f, r)) => (f, Some(r)),
        None => (domain, None),
    };
    let first_ok = first.len() <= 63
        && (first == "*"
            || first.strip_prefix('*').is_some_and(dns1123_label)
            || dns1123_label(first));
    if !first_ok {
        return Err(format!(
            "domain name {domain:?} invalid (label {first:?} invalid)"
        ));
    }
    let Some(rest) = rest else { return Ok(()) };
    let labels: Vec<&str> = rest.split('.').collect();
    let top = labels.last().copied().unwrap_or_default();
    if !top.is_empty() && top.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "domain name {domain:?} invalid (top level domain {top:?} cannot be all-numeric)"
        ));
    }
    for (i, l) in labels.iter().enumerate() {
        if i == labels.len() - 1 && l.is_empty() {
            break; // a trailing dot
        }
        if !dns1123_label(l) {
            return Err(format!(
                "domain name {domain:?} invalid (label {l:?} invalid)"
            ));
        }
    }
    Ok(())
}

/// Istio's `exportTo` values: `*`, `.`, `~` (alone) or namespace names, each once.
fn export_to(values: &[String], errors: &mut Vec<String>) {
    let mut seen = BTreeSet::new();
    for v in values {
        let name_ok = !v.is_empty()
            && v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !v.starts_with('-')
            && !v.ends_with('-');
        if !matches!(v.as_str(), "*" | "." | "~") && !name_ok {
            errors.push(format!(
                "spec.exportTo: {v:?} is not *, ., ~ or a namespace name"
            ));
        }
        if !seen.insert(v) {
            errors.push(format!("spec.exportTo: {v:?} appears twice"));
        }
    }
    if values.len() > 1 && values.iter().any(|v| v == "~") {
        errors.push("spec.exportTo: ~ (exported nowhere) stands alone".into());
    }
}

pub fn virtual_service(vs: &VirtualService) -> Vec<String> {
    let mut errors = Vec::new();
    export_to(&vs.export_to, &mut errors);
    if vs.hosts.is_empty() {
        errors.push("spec.hosts: at least one host is required".into());
    }
    for (i, h) in vs.hosts.iter().enumerate() {
        if h == "*" && applies_to_mesh(vs) {
            errors.push(format!(
                "spec.hosts[{i}]: wildcard host * is not allowed for virtual services bound to the mesh gateway"
            ));
        } else if h != "*" && h.parse::<std::net::IpAddr>().is_err() {
            if let Err(e) = wildcard_domain(h) {
                errors.push(format!("spec.hosts[{i}]: {e}"));
            }
        }
    }
    for (i, g) in vs.gateways.iter().enumerate() {
        // `mesh`, `<name>` (the VirtualService's namespace) or `<namespace>/<name>`.
        let name = g.split_once('/').map_or(g.as_str(), |(_, n)| n);
        if g != "mesh" && (name.is_empty() || g.matches('/').count() > 1) {
            errors.push(format!(
                "spec.gateways[{i}]: {g:?} is not mesh, <name> or <namespace>/<name>"
            ));
        }
    }
    l4_routes(vs, &mut errors);
    for (i, r) in vs.http.iter().enumerate() {
        let p = format!("spec.http[{i}]");
        for (j, m) in r.matches.iter().enumerate() {
            let mp = format!("{p}.match[{j}]");
            for (k, g) in m.gateways.iter().enumerate() {
                let name = g.split_once('/').map_or(g.as_str(), |(_, n)| n);
                if g != "mesh" && (name.is_empty() || g.matches('/').count() > 1) {
                    errors.push(format!(
                        "{mp}.gateways[{k}]: {g:?} is not mesh, <name> or <namespace>/<name>"
                    ));
                }
            }
            for (field, sm) in [
                ("uri", &m.uri),
                ("method", &m.method),
                ("authority", &m.authority),
            ] {
                if let Some(sm) = sm {
                    string_match(&format!("{mp}.{field}"), sm, &mut errors);
                }
            }
            for (field, map) in [("headers", &m.headers), ("queryParams", &m.query_params)] {
                for (name, sm) in map {
                    string_match(&format!("{mp}.{field}.{name}"), sm, &mut errors);
                }
            }
        }
        if let Some(c) = &r.cors_policy {
            cors_policy(&format!("{p}.corsPolicy"), c, &mut errors);
        }
        if let Some(h) = &r.headers {
            headers(&format!("{p}.headers"), h, &mut errors);
        }
        for (j, d) in r.route.iter().enumerate() {
            if let Some(h) = &d.headers {
                headers(&format!("{p}.route[{j}].headers"), h, &mut errors);
            }
        }
        let actions = [
            !r.route.is_empty(),
            r.redirect.is_some(),
            r.direct_response.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if actions != 1 {
            errors.push(format!(
                "{p}: exactly one of route, redirect or directResponse is required"
            ));
        }
        route_destinations(&p, &r.route, &mut errors);
        duration(&format!("{p}.timeout"), &r.timeout, &mut errors);
        if let Some(retry) = &r.retries {
            duration(
                &format!("{p}.retries.perTryTimeout"),
                &retry.per_try_timeout,
                &mut errors,
            );
            for policy in retry
                .retry_on
                .iter()
                .flat_map(|v| v.split(','))
                .map(str::trim)
            {
                let valid = match policy.parse::<u16>() {
                    Ok(code) => (100..=599).contains(&code),
                    Err(_) => RETRY_ON_ISTIO.contains(&policy),
                };
                if !valid {
                    errors.push(format!(
                        "{p}.retries.retryOn: {policy:?} is not a valid retryOn policy"
                    ));
                }
            }
        }
        if let Some(f) = &r.fault {
            if let Some(d) = &f.delay {
                duration(
                    &format!("{p}.fault.delay.fixedDelay"),
                    &Some(d.fixed_delay.clone()),
                    &mut errors,
                );
                percent(
                    &format!("{p}.fault.delay.percentage"),
                    &d.percentage,
                    &mut errors,
                );
            }
            if let Some(a) = &f.abort {
                if !(200..=599).contains(&a.http_status) {
                    errors.push(format!(
                        "{p}.fault.abort.httpStatus: {} is not an HTTP status",
                        a.http_status
                    ));
                }
                percent(
                    &format!("{p}.fault.abort.percentage"),
                    &a.percentage,
                    &mut errors,
                );
            }
        }
        percent(
            &format!("{p}.mirrorPercentage"),
            &r.mirror_percentage,
            &mut errors,
        );
        // Istio's validateHTTPRouteConflict, validateHTTPRewrite and validateHTTPRedirect.
        for (present, what) in [
            (r.fault.is_some(), "fault"),
            (r.rewrite.is_some(), "rewrite"),
        ] {
            if present && r.redirect.is_some() {
                errors.push(format!(
                    "{p}: an HTTP route cannot contain both {what} and redirect"
                ));
            }
            if present && r.direct_response.is_some() {
                errors.push(format!(
                    "{p}: an HTTP route cannot contain both {what} and directResponse"
                ));
            }
        }
        if let Some(rw) = &r.rewrite {
            if rw.uri.as_deref().unwrap_or_default().is_empty()
                && rw.authority.as_deref().unwrap_or_default().is_empty()
            {
                errors.push(format!(
                    "{p}.rewrite: must specify at least one of uri or authority"
                ));
            }
        }
        if let Some(d) = &r.redirect {
            let empty = |v: &Option<String>| v.as_deref().unwrap_or_default().is_empty();
            if empty(&d.uri) && empty(&d.authority) && empty(&d.scheme) && d.port.is_none() {
                errors.push(format!(
                    "{p}.redirect: must specify uri, authority, scheme, or port"
                ));
            }
            if let Some(scheme) = d.scheme.as_deref().filter(|s| !s.is_empty()) {
                if scheme != "http" && scheme != "https" {
                    errors.push(format!(
                        "{p}.redirect.scheme: {scheme:?} is not \"http\" or \"https\""
                    ));
                }
            }
        }
        if let Some(d) = &r.redirect {
            // 0 is unset (301), as in Istio.
            if let Some(code) = d.redirect_code.filter(|c| *c != 0) {
                if ![301, 302, 303, 307, 308].contains(&code) {
                    errors.push(format!(
                        "{p}.redirect.redirectCode: {code} is not a redirect status"
                    ));
                }
            }
        }
    }
    errors
}

/// Istio's validateTLSRoute and validateTCPRoute, and what Trellis cannot honour of
/// them: match conditions on the client side (its subnets, labels, namespace) or on
/// the gateway would make a route apply more widely than written, so they refuse.
fn l4_routes(vs: &VirtualService, errors: &mut Vec<String>) {
    if applies_to_mesh(vs) {
        for (field, set, what) in [
            ("tls", !vs.tls.is_empty(), "TLS (SNI) routes"),
            ("tcp", !vs.tcp.is_empty(), "TCP routes"),
        ] {
            if set {
                errors.push(format!(
                    "spec.{field}: {what} for sidecars (gateways: mesh) are not supported by Trellis yet; on gateways they are"
                ));
            }
        }
    }
    for (i, r) in vs.tls.iter().enumerate() {
        let p = format!("spec.tls[{i}]");
        if r.matches.is_empty() {
            errors.push(format!(
                "{p}.match: TLS route must have at least one match condition"
            ));
        }
        for (j, m) in r.matches.iter().enumerate() {
            let mp = format!("{p}.match[{j}]");
            if m.sni_hosts.is_empty() {
                errors.push(format!(
                    "{mp}.sniHosts: TLS match must have at least one SNI host"
                ));
            }
            for (k, h) in m.sni_hosts.iter().enumerate() {
                if let Err(e) = wildcard_domain(h) {
                    errors.push(format!("{mp}.sniHosts[{k}]: {e}"));
                } else if !vs.hosts.iter().any(|vh| crate::host_subset_of(h, vh)) {
                    errors.push(format!(
                        "{mp}.sniHosts[{k}]: SNI host {h:?} is not a compatible subset of any of the virtual service hosts: [{}]",
                        vs.hosts.join(", ")
                    ));
                }
            }
            l4_match(&mp, m, errors);
        }
        if r.route.is_empty() {
            errors.push(format!("{p}.route: TLS route is required"));
        }
        route_destinations(&p, &r.route, errors);
    }
    for (i, r) in vs.tcp.iter().enumerate() {
        let p = format!("spec.tcp[{i}]");
        for (j, m) in r.matches.iter().enumerate() {
            let mp = format!("{p}.match[{j}]");
            if !m.sni_hosts.is_empty() {
                errors.push(format!(
                    "{mp}.sniHosts: not a field of a TCP match (TLS routes have it)"
                ));
            }
            l4_match(&mp, m, errors);
        }
        if r.route.is_empty() {
            errors.push(format!("{p}.route: TCP route is required"));
        }
        route_destinations(&p, &r.route, errors);
    }
}

fn l4_match(p: &str, m: &crate::istio::L4Match, errors: &mut Vec<String>) {
    for (field, set) in [
        ("destinationSubnets", !m.destination_subnets.is_empty()),
        ("sourceLabels", !m.source_labels.is_empty()),
        ("gateways", !m.gateways.is_empty()),
        (
            "sourceNamespace",
            m.source_namespace.as_deref().is_some_and(|n| !n.is_empty()),
        ),
    ] {
        if set {
            errors.push(format!(
                "{p}.{field}: not supported by Trellis yet; refused rather than ignored (the route would apply more widely than written)"
            ));
        }
    }
}

/// Istio's validateRouteDestinations (weights, hosts, subsets).
fn route_destinations(p: &str, route: &[RouteDestination], errors: &mut Vec<String>) {
    // Weights are relative (Istio normalizes them); a destination without one has
    // weight 0 beside others, and some destination must get traffic.
    let total: u64 = route.iter().filter_map(|d| d.weight).map(u64::from).sum();
    if route.len() > 1 && total == 0 {
        errors.push(format!(
            "{p}.route: the total destination weight is 0 (no destination gets traffic)"
        ));
    }
    for (j, d) in route.iter().enumerate() {
        let host = &d.destination.host;
        if host.is_empty() {
            errors.push(format!("{p}.route[{j}].destination.host: required"));
        } else if host == "*" {
            errors.push(format!(
                "{p}.route[{j}].destination.host: invalid destination host *"
            ));
        } else if let Err(e) = wildcard_domain(host) {
            errors.push(format!("{p}.route[{j}].destination.host: {e}"));
        }
        if let Some(subset) = d.destination.subset.as_deref().filter(|s| !s.is_empty()) {
            if !dns1123_label(subset) {
                errors.push(format!(
                    "{p}.route[{j}].destination.subset: {subset:?} is not a valid subset name"
                ));
            }
        }
    }
}

pub fn destination_rule(dr: &DestinationRule) -> Vec<String> {
    let mut errors = Vec::new();
    export_to(&dr.export_to, &mut errors);
    if dr.host.is_empty() {
        errors.push("spec.host: required".into());
    } else if let Err(e) = wildcard_domain(&dr.host) {
        errors.push(format!("spec.host: {e}"));
    }
    let mut names = BTreeSet::new();
    for (i, s) in dr.subsets.iter().enumerate() {
        if !dns1123_label(&s.name) {
            errors.push(format!(
                "spec.subsets[{i}].name: {:?} is not a valid subset name (a DNS-1123 label)",
                s.name
            ));
        }
        if !names.insert(&s.name) {
            errors.push(format!(
                "spec.subsets[{i}].name: {:?} appears twice",
                s.name
            ));
        }
        if let Some(tp) = &s.traffic_policy {
            traffic_policy(&format!("spec.subsets[{i}].trafficPolicy"), tp, &mut errors);
        }
    }
    if let Some(tp) = &dr.traffic_policy {
        traffic_policy("spec.trafficPolicy", tp, &mut errors);
    }
    errors
}

fn traffic_policy(p: &str, tp: &TrafficPolicy, errors: &mut Vec<String>) {
    if *tp == TrafficPolicy::default() {
        errors.push(format!(
            "{p}: a traffic policy must have at least one field"
        ));
    }
    // Istio's validatePortTrafficPolicies: a port, and at least one field; for a port
    // named twice the first settings count.
    for (i, s) in tp.port_level_settings.iter().enumerate() {
        let sp = format!("{p}.portLevelSettings[{i}]");
        if s.port.is_none() {
            errors.push(format!("{sp}.port: required"));
        }
        traffic_policy(&sp, &s.policy(), errors);
    }
    if let Some(o) = &tp.outlier_detection {
        duration(
            &format!("{p}.outlierDetection.interval"),
            &o.interval,
            errors,
        );
        duration(
            &format!("{p}.outlierDetection.baseEjectionTime"),
            &o.base_ejection_time,
            errors,
        );
        if o.max_ejection_percent.is_some_and(|m| m > 100) {
            errors.push(format!(
                "{p}.outlierDetection.maxEjectionPercent: above 100"
            ));
        }
    }
    if let Some(tcp) = tp.connection_pool.as_ref().and_then(|c| c.tcp.as_ref()) {
        duration(
            &format!("{p}.connectionPool.tcp.connectTimeout"),
            &tcp.connect_timeout,
            errors,
        );
    }
    if let Some(lb) = &tp.load_balancer {
        if lb.simple == Some(SimpleLb::Passthrough) {
            errors.push(format!(
                "{p}.loadBalancer.simple: PASSTHROUGH is not supported"
            ));
        }
        if let Some(w) = &lb.warmup {
            // Istio's CRD rules for WarmupConfiguration.
            let wp = format!("{p}.loadBalancer.warmup");
            match &w.duration {
                None => errors.push(format!("{wp}.duration: Required value")),
                Some(_) => duration(&format!("{wp}.duration"), &w.duration, errors),
            }
            if w.minimum_percent
                .is_some_and(|m| !(0.0..=100.0).contains(&m))
            {
                errors.push(format!(
                    "{wp}.minimumPercent: Invalid value: must be between 0 and 100"
                ));
            }
            if w.aggression.is_some_and(|a| a < 1.0) {
                errors.push(format!(
                    "{wp}.aggression: Invalid value: must be at least 1"
                ));
            }
        }
    }
    if let Some(tls) = &tp.tls {
        client_tls(&format!("{p}.tls"), tls, errors);
    }
}

/// Istio's ValidateTLS for a DestinationRule's `tls`, and what Trellis cannot honour
/// (refused: each would leave the connection less verified than written).
fn client_tls(p: &str, tls: &crate::istio::ClientTls, errors: &mut Vec<String>) {
    let originates = matches!(tls.mode, ClientTlsMode::Simple | ClientTlsMode::Mutual);
    let files = [
        ("clientCertificate", &tls.client_certificate),
        ("privateKey", &tls.private_key),
        ("caCertificates", &tls.ca_certificates),
    ];
    if !originates {
        for (field, v) in files
            .iter()
            .chain([&("credentialName", &tls.credential_name)])
        {
            if v.is_some() {
                errors.push(format!("{p}.{field}: only for mode SIMPLE or MUTUAL (the mesh's own certificates are used with {:?})", tls.mode));
            }
        }
        return;
    }
    if tls.insecure_skip_verify == Some(true) {
        errors.push(format!("{p}.insecureSkipVerify: true is not supported: Trellis always verifies the server's certificate (give caCertificates)"));
    }
    if tls.ca_crl.is_some() {
        errors.push(format!("{p}.caCrl: certificate revocation lists are not checked by Trellis yet; refused rather than ignored"));
    }
    if let Some(name) = &tls.credential_name {
        errors.push(format!("{p}.credentialName: {name:?}: credentials from Kubernetes Secrets are not served to sidecars yet; use clientCertificate, privateKey and caCertificates files"));
        return;
    }
    if tls.mode == ClientTlsMode::Mutual {
        if tls.client_certificate.is_none() {
            errors.push(format!(
                "{p}.clientCertificate: client certificate required for mutual tls"
            ));
        }
        if tls.private_key.is_none() {
            errors.push(format!(
                "{p}.privateKey: private key required for mutual tls"
            ));
        }
    }
}

pub fn service_entry(se: &ServiceEntry) -> Vec<String> {
    let mut errors = Vec::new();
    export_to(&se.export_to, &mut errors);
    if se.hosts.is_empty() {
        errors.push("spec.hosts: at least one host is required".into());
    }
    // Istio's ValidateServiceEntry.
    workload_selector(
        "spec.workloadSelector.labels",
        se.workload_selector.as_ref().map(|s| &s.labels),
        &mut errors,
    );
    let mut cidr = false;
    for (i, a) in se.addresses.iter().enumerate() {
        cidr |= a.contains('/');
        if let Err(e) = ip_block(a) {
            errors.push(format!("spec.addresses[{i}]: {e}"));
        }
    }
    if cidr && !matches!(se.resolution.as_deref(), None | Some("NONE" | "STATIC")) {
        errors.push(
            "spec.addresses: CIDR addresses are allowed only for NONE/STATIC resolution types"
                .into(),
        );
    }
    if se.workload_selector.is_some() && !se.endpoints.is_empty() {
        errors.push(
            "spec: only one of workloadSelector or endpoints is allowed in a ServiceEntry".into(),
        );
    }
    for (i, h) in se.hosts.iter().enumerate() {
        if h == "*" {
            errors.push(format!("spec.hosts[{i}]: invalid host *"));
        } else if let Err(e) = wildcard_domain(h) {
            errors.push(format!("spec.hosts[{i}]: {e}"));
        }
    }
    // Unset is taken as STATIC (Istio's default is NONE, which allows no endpoints):
    // Trellis's own registries write entries with endpoints and no resolution.
    let resolution = se.resolution.as_deref().unwrap_or("STATIC");
    match resolution {
        "NONE" if !se.endpoints.is_empty() => errors.push(
            "spec.endpoints: no endpoints should be provided for resolution type NONE".into(),
        ),
        "DNS" | "DNS_ROUND_ROBIN" => {
            if se.endpoints.is_empty() {
                if let Some(h) = se.hosts.iter().find(|h| h.starts_with('*')) {
                    errors.push(format!("spec.hosts: hosts must be FQDN if no endpoints are provided for resolution mode {resolution} ({h:?} is a wildcard)"));
                }
            }
            if resolution == "DNS_ROUND_ROBIN" && se.endpoints.len() > 1 {
                errors.push(format!(
                    "spec.endpoints: there must only be 0 or 1 endpoint for resolution mode {resolution}"
                ));
            }
        }
        "STATIC" => {
            for (i, e) in se.endpoints.iter().enumerate() {
                let ip = e.address.parse::<std::net::IpAddr>().is_ok();
                if !ip && !e.address.starts_with("unix://") {
                    errors.push(format!(
                        "spec.endpoints[{i}].address: {:?} is not a valid IP address (resolution STATIC)",
                        e.address
                    ));
                }
            }
        }
        _ => {}
    }
    let mut numbers = BTreeSet::new();
    let mut names = BTreeSet::new();
    for (i, p) in se.ports.iter().enumerate() {
        if !numbers.insert(p.number) {
            errors.push(format!(
                "spec.ports[{i}].number: {} appears twice",
                p.number
            ));
        }
        if p.number == 0 {
            errors.push(format!("spec.ports[{i}].number: 0 is not a port"));
        }
        if !names.insert(&p.name) {
            errors.push(format!(
                "spec.ports[{i}].name: {:?} already defined",
                p.name
            ));
        }
        if !dns1123_label(&p.name) {
            errors.push(format!(
                "spec.ports[{i}].name: {:?} is not a valid port name",
                p.name
            ));
        }
        if let Some(proto) = p.protocol.as_ref().filter(|p| !p.is_empty()) {
            if !matches!(
                proto.to_ascii_uppercase().as_str(),
                "HTTP" | "HTTP2" | "GRPC" | "TCP" | "TLS" | "HTTPS"
            ) {
                errors.push(format!(
                    "spec.ports[{i}].protocol: {proto} is not supported (HTTP, HTTP2, GRPC, TCP, TLS, HTTPS)"
                ));
            }
        }
    }
    if let Some(r) = &se.resolution {
        if !matches!(r.as_str(), "STATIC" | "DNS" | "NONE" | "DNS_ROUND_ROBIN") {
            errors.push(format!("spec.resolution: {r} is not a resolution"));
        }
    }
    for (i, e) in se.endpoints.iter().enumerate() {
        errors.extend(
            workload_entry(e)
                .into_iter()
                .map(|m| m.replacen("spec.", &format!("spec.endpoints[{i}]."), 1)),
        );
    }
    errors
}

/// Istio's validateWorkloadEntry, and what Trellis cannot serve of it.
pub fn workload_entry(we: &WorkloadEntry) -> Vec<String> {
    let mut errors = Vec::new();
    let addr = we.address.as_str();
    if addr.is_empty() && we.network.is_none() {
        errors.push("spec.address: required (without a network)".into());
    }
    if let Some(path) = addr.strip_prefix("unix://") {
        // Istio's ValidateUnixAddress, then: Trellis's endpoints are IP or DNS names.
        if path.is_empty() {
            errors.push("spec.address: a unix address must not be empty".into());
        } else if !path.starts_with('@') && (!path.starts_with('/') || path.ends_with('/')) {
            errors.push(format!(
                "spec.address: {path} is not an absolute path to a file (UDS)"
            ));
        }
        if !we.ports.is_empty() {
            errors.push(format!(
                "spec.ports: unix endpoint {addr} must not include ports"
            ));
        }
        errors.push(format!(
            "spec.address: {addr:?}: unix domain socket endpoints are not supported by Trellis yet"
        ));
    } else if !addr.is_empty()
        && addr.parse::<std::net::IpAddr>().is_err()
        && (addr.contains('*') || wildcard_domain(addr).is_err())
    {
        errors.push(format!(
            "spec.address: {addr:?} is not a valid FQDN or an IP address"
        ));
    }
    for (name, port) in &we.ports {
        if !dns1123_label(name) {
            errors.push(format!("spec.ports: invalid port name: {name:?}"));
        }
        if *port == 0 {
            errors.push(format!("spec.ports.{name}: port must be between 1-65535"));
        }
    }
    errors
}

pub fn sidecar(sc: &Sidecar) -> Vec<String> {
    let mut errors = Vec::new();
    if let Some(mode) = sc
        .outbound_traffic_policy
        .as_ref()
        .and_then(|p| p.mode.as_deref())
    {
        if !matches!(mode, "REGISTRY_ONLY" | "ALLOW_ANY") {
            errors.push(format!(
                "spec.outboundTrafficPolicy.mode: {mode:?} is not REGISTRY_ONLY or ALLOW_ANY"
            ));
        }
    }
    for (i, e) in sc.egress.iter().enumerate() {
        if e.hosts.is_empty() {
            errors.push(format!(
                "spec.egress[{i}].hosts: an egress listener must contain at least one host"
            ));
        }
        for (j, h) in e.hosts.iter().enumerate() {
            let hp = format!("spec.egress[{i}].hosts[{j}]");
            let Some((ns, host)) = h.split_once('/') else {
                errors.push(format!("{hp}: {h:?} must be namespace/host"));
                continue;
            };
            // Istio's ValidateNamespaceSlashWildcardHostname for sidecars.
            if !matches!(ns, "*" | "." | "~") && !dns1123_label(ns) {
                errors.push(format!("{hp}: {ns:?} is not a namespace"));
            }
            if host == "*" {
                continue;
            }
            if !host.contains('.') {
                errors.push(format!(
                    "{hp}: {host:?}: short names (non FQDN) are not allowed"
                ));
            } else if host.contains('*') && !host.starts_with("*.") {
                errors.push(format!("{hp}: partial wildcard {host:?} not allowed"));
            } else if let Err(e) = wildcard_domain(host) {
                errors.push(format!("{hp}: {e}"));
            }
        }
        errors.extend(
            egress_listener(e)
                .into_iter()
                .map(|m| format!("spec.egress[{i}].{m}")),
        );
    }
    errors
}

/// What an egress listener with a port of its own must be: a TCP port bound to an IP
/// address, forwarding to one service.
fn egress_listener(e: &crate::istio::EgressListener) -> Vec<String> {
    let mut errors = Vec::new();
    let Some(port) = &e.port else {
        if e.bind.is_some() {
            errors.push("bind: needs a port".to_string());
        }
        return errors;
    };
    if port.number == 0 {
        errors.push("port.number: must be 1-65535".into());
    }
    if crate::Protocol::parse(port.protocol.as_deref(), &port.name).is_http() {
        errors.push(format!(
            "port: {} is an HTTP port; egress listeners of their own are supported for TCP \
             only (HTTP goes through the sidecar's outbound listener)",
            port.number
        ));
    }
    if let Some(bind) = &e.bind {
        if bind.parse::<std::net::IpAddr>().is_err() {
            errors.push(format!("bind: {bind:?} is not an IP address"));
        }
    }
    match e.capture_mode.as_deref() {
        None | Some("NONE" | "DEFAULT") => {}
        Some(other) => errors.push(format!(
            "captureMode: {other} needs traffic capture, which Trellis sidecars do not do \
             (NONE or DEFAULT)"
        )),
    }
    let exact = |h: &String| {
        h.split_once('/')
            .is_some_and(|(_, host)| !host.contains('*'))
    };
    if e.hosts.len() != 1 || !e.hosts.iter().all(exact) {
        errors.push(format!(
            "hosts: a TCP listener forwards to one service: name exactly one, without \
             wildcards (got {:?})",
            e.hosts
        ));
    }
    errors
}

pub fn peer_authentication(pa: &PeerAuthentication) -> Vec<String> {
    let mut errors = Vec::new();
    let selector = pa.selector.as_ref().map(|s| &s.match_labels);
    workload_selector("spec.selector.matchLabels", selector, &mut errors);
    if let Some(ports) = &pa.port_level_mtls {
        if selector.is_none_or(|l| l.is_empty()) {
            errors.push(
                "spec.portLevelMtls: a mesh or namespace PeerAuthentication (no selector) \
                 cannot have port level mTLS"
                    .into(),
            );
        }
        if ports.is_empty() {
            errors.push("spec.portLevelMtls: if set, must have at least one port".into());
        }
        for port in ports.keys() {
            if !(1..=65535).contains(port) {
                errors.push(format!(
                    "spec.portLevelMtls: port {port} is outside 1..65535"
                ));
            }
        }
    }
    errors
}

/// Istio's rules for a workload selector: no empty keys, no wildcards.
fn workload_selector(path: &str, labels: Option<&Labels>, errors: &mut Vec<String>) {
    for (k, v) in labels.into_iter().flatten() {
        if k.is_empty() {
            errors.push(format!("{path}: an empty key is not allowed ({k}={v})"));
        }
        if k.contains('*') || v.contains('*') {
            errors.push(format!("{path}: wildcards are not allowed ({k}={v})"));
        }
    }
}

pub fn authorization_policy(ap: &AuthorizationPolicy) -> Vec<String> {
    let mut errors = Vec::new();
    workload_selector(
        "spec.selector.matchLabels",
        ap.selector.as_ref().map(|s| &s.match_labels),
        &mut errors,
    );
    match ap.action.as_deref() {
        None | Some("ALLOW" | "AUDIT") => {}
        Some("DENY") => {
            if ap.rules.is_empty() {
                errors.push(
                    "spec.rules: a DENY policy without rules never matches; add an empty \
                     rule {} to deny every request"
                        .into(),
                );
            }
        }
        Some("CUSTOM") => errors.push(
            "spec.action: CUSTOM (external authorization) is not supported by Trellis yet".into(),
        ),
        Some(other) => errors.push(format!(
            "spec.action: {other:?} is not an action (ALLOW, DENY, AUDIT, CUSTOM)"
        )),
    }
    for (i, r) in ap.rules.iter().enumerate() {
        let p = format!("spec.rules[{i}]");
        if r.from.as_ref().is_some_and(Vec::is_empty) {
            errors.push(format!("{p}.from: must not be empty"));
        }
        for (j, f) in r.from.iter().flatten().enumerate() {
            source(&format!("{p}.from[{j}].source"), &f.source, &mut errors);
        }
        if r.to.as_ref().is_some_and(Vec::is_empty) {
            errors.push(format!("{p}.to: must not be empty"));
        }
        for (j, t) in r.to.iter().flatten().enumerate() {
            operation(&format!("{p}.to[{j}].operation"), &t.operation, &mut errors);
        }
        for (j, c) in r.when.iter().enumerate() {
            condition(&format!("{p}.when[{j}]"), c, &mut errors);
        }
    }
    errors
}

fn source(p: &str, s: &Source, errors: &mut Vec<String>) {
    let lists: [(&str, &Vec<String>); 14] = [
        ("principals", &s.principals),
        ("notPrincipals", &s.not_principals),
        ("requestPrincipals", &s.request_principals),
        ("notRequestPrincipals", &s.not_request_principals),
        ("namespaces", &s.namespaces),
        ("notNamespaces", &s.not_namespaces),
        ("serviceAccounts", &s.service_accounts),
        ("notServiceAccounts", &s.not_service_accounts),
        ("trustDomains", &s.trust_domains),
        ("notTrustDomains", &s.not_trust_domains),
        ("ipBlocks", &s.ip_blocks),
        ("notIpBlocks", &s.not_ip_blocks),
        ("remoteIpBlocks", &s.remote_ip_blocks),
        ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
    ];
    if lists.iter().all(|(_, l)| l.is_empty()) {
        errors.push(format!("{p}: must not be empty"));
    }
    for (name, list) in lists {
        empty_values(&format!("{p}.{name}"), list, errors);
    }
    let identities =
        s.principals.len() + s.not_principals.len() + s.namespaces.len() + s.not_namespaces.len();
    if identities > 0 && s.service_accounts.len() + s.not_service_accounts.len() > 0 {
        errors.push(format!(
            "{p}: serviceAccounts cannot be set with namespaces or principals"
        ));
    }
    for (name, list) in [
        ("serviceAccounts", &s.service_accounts),
        ("notServiceAccounts", &s.not_service_accounts),
    ] {
        service_accounts(&format!("{p}.{name}"), list, errors);
    }
    for (name, list) in [
        ("trustDomains", &s.trust_domains),
        ("notTrustDomains", &s.not_trust_domains),
    ] {
        trust_domains(&format!("{p}.{name}"), list, errors);
    }
    for (name, list) in [
        ("ipBlocks", &s.ip_blocks),
        ("notIpBlocks", &s.not_ip_blocks),
        ("remoteIpBlocks", &s.remote_ip_blocks),
        ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
    ] {
        ip_blocks(&format!("{p}.{name}"), list, errors);
    }
}

fn operation(p: &str, o: &Operation, errors: &mut Vec<String>) {
    let lists: [(&str, &Vec<String>); 8] = [
        ("hosts", &o.hosts),
        ("notHosts", &o.not_hosts),
        ("ports", &o.ports),
        ("notPorts", &o.not_ports),
        ("methods", &o.methods),
        ("notMethods", &o.not_methods),
        ("paths", &o.paths),
        ("notPaths", &o.not_paths),
    ];
    if lists.iter().all(|(_, l)| l.is_empty()) {
        errors.push(format!("{p}: must not be empty"));
    }
    for (name, list) in lists {
        empty_values(&format!("{p}.{name}"), list, errors);
    }
    for (name, list) in [("ports", &o.ports), ("notPorts", &o.not_ports)] {
        ports(&format!("{p}.{name}"), list, errors);
    }
    for (name, list) in [("paths", &o.paths), ("notPaths", &o.not_paths)] {
        for path in list {
            if let Err(e) = path_template(path) {
                errors.push(format!("{p}.{name}: {path:?}: {e}"));
            }
        }
    }
}

fn condition(p: &str, c: &Condition, errors: &mut Vec<String>) {
    let key = c.key.as_str();
    if key.is_empty() {
        errors.push(format!("{p}.key: required"));
        return;
    }
    if c.values.is_empty() && c.not_values.is_empty() {
        errors.push(format!(
            "{p}: at least one of values or notValues must be set for key {key}"
        ));
        return;
    }
    for (name, list) in [("values", &c.values), ("notValues", &c.not_values)] {
        let vp = format!("{p}.{name}");
        empty_values(&vp, list, errors);
        match key {
            "source.ip" | "remote.ip" | "destination.ip" => ip_blocks(&vp, list, errors),
            "destination.port" => ports(&vp, list, errors),
            "source.serviceAccount" => service_accounts(&vp, list, errors),
            "source.trustDomain" => wildcards(&vp, list, errors),
            _ => {}
        }
    }
    let map_key = |prefix: &str| {
        key.strip_prefix(prefix)
            .is_some_and(|rest| rest.len() > 2 && rest.starts_with('[') && rest.ends_with(']'))
    };
    // Header names and claim paths are read as the proxy's engine reads them.
    let problem = match key {
        "source.ip"
        | "remote.ip"
        | "source.namespace"
        | "source.principal"
        | "source.serviceAccount"
        | "source.trustDomain"
        | "destination.ip"
        | "destination.port"
        | "connection.sni" => None,
        _ if key.starts_with("request.headers") => {
            if !map_key("request.headers") {
                Some(format!(
                    "{key:?} is not of the form request.headers[<name>]"
                ))
            } else {
                trellis_authz::check_condition_key(key).err()
            }
        }
        "request.auth.principal" | "request.auth.audiences" | "request.auth.presenter" => None,
        _ if key.starts_with("request.auth.claims") => {
            trellis_authz::check_condition_key(key).err()
        }
        _ if key.starts_with("experimental.envoy.filters.") => Some(format!(
            "{key} (Envoy filter metadata) is not supported by Trellis"
        )),
        "destination.namespace" => Some(format!(
            "{key} is replaced by the policy's metadata.namespace"
        )),
        _ if key.starts_with("destination.labels") => {
            Some(format!("{key} is replaced by the workload selector"))
        }
        "destination.name" | "destination.user" => {
            Some(format!("{key} is deprecated (only in v1alpha1)"))
        }
        _ => Some(format!("{key:?} is not an attribute")),
    };
    if let Some(problem) = problem {
        errors.push(format!("{p}.key: {problem}"));
    }
}

fn empty_values(p: &str, list: &[String], errors: &mut Vec<String>) {
    if list.iter().any(String::is_empty) {
        errors.push(format!("{p}: empty values are not allowed"));
    }
}

/// At most one `*`, and only at the start or the end.
fn wildcards(p: &str, list: &[String], errors: &mut Vec<String>) {
    for v in list {
        let stars = v.matches('*').count();
        if stars > 1 {
            errors.push(format!("{p}: {v:?}: at most one wildcard is allowed"));
        } else if stars == 1 && v != "*" && !v.starts_with('*') && !v.ends_with('*') {
            errors.push(format!(
                "{p}: {v:?}: a wildcard is allowed only at the start or the end"
            ));
        }
    }
}

fn trust_domains(p: &str, list: &[String], errors: &mut Vec<String>) {
    wildcards(p, list, errors);
    for v in list.iter().filter(|v| v.contains('/')) {
        errors.push(format!("{p}: {v:?}: a trust domain has no '/'"));
    }
}

fn service_accounts(p: &str, list: &[String], errors: &mut Vec<String>) {
    if list.len() > 16 {
        errors.push(format!("{p}: at most 16 values"));
    }
    for v in list {
        if v.contains('*') {
            errors.push(format!("{p}: {v:?}: wildcards are not allowed"));
        } else if v.len() > 320 {
            errors.push(format!("{p}: {v:?}: longer than 320 characters"));
        } else if v.matches('/').count() > 1
            || v.split_once('/')
                .is_some_and(|(ns, sa)| ns.is_empty() || sa.is_empty())
        {
            errors.push(format!(
                "{p}: {v:?}: expected serviceAccount or namespace/serviceAccount"
            ));
        }
    }
}

fn ip_blocks(p: &str, list: &[String], errors: &mut Vec<String>) {
    for v in list {
        if let Err(e) = ip_block(v) {
            errors.push(format!("{p}: {e}"));
        }
    }
}

/// An address or a CIDR, read by the parser the proxy's authorization uses.
pub(crate) fn ip_block(v: &str) -> Result<(), String> {
    trellis_config::parse_ip_block(v).map(|_| ())
}

fn ports(p: &str, list: &[String], errors: &mut Vec<String>) {
    for v in list {
        if !v.bytes().all(|b| b.is_ascii_digit()) || v.parse::<u32>().map_or(true, |n| n > 65535) {
            errors.push(format!("{p}: {v:?} is not a port"));
        }
    }
}

/// Istio's rules for path templates: `{*}` and `{**}` as whole segments, `{**}` last,
/// and literal segments of URI path characters.
fn path_template(path: &str) -> Result<(), String> {
    let templated = path.contains("{*}") || path.contains("{**}");
    let mut any_seen = false;
    for glob in path.trim_matches('/').split('/') {
        match glob {
            "{*}" | "{**}" if any_seen => return Err("{**} must be the last operator".into()),
            "{*}" => continue,
            "{**}" => {
                any_seen = true;
                continue;
            }
            _ => {}
        }
        if glob.contains(['{', '}']) {
            return Err("'{' or '}' outside a supported path template ({*}, {**})".into());
        }
        let literal = |c: char| c.is_ascii_alphanumeric() || "-._~%!$&'()+,;:@=".contains(c);
        if templated && (glob.is_empty() || !glob.chars().all(literal)) {
            return Err(format!("segment {glob:?} is not a valid literal"));
        }
    }
    Ok(())
}

pub fn request_authentication(ra: &RequestAuthentication) -> Vec<String> {
    let mut errors = Vec::new();
    workload_selector(
        "spec.selector.matchLabels",
        ra.selector.as_ref().map(|s| &s.match_labels),
        &mut errors,
    );
    for (i, r) in ra.jwt_rules.iter().enumerate() {
        let p = format!("spec.jwtRules[{i}]");
        if r.audiences.iter().any(String::is_empty) {
            errors.push(format!("{p}.audiences: empty values are not allowed"));
        }
        if r.issuer.is_empty() && r.jwks_uri.is_empty() {
            errors.push(format!("{p}: issuer or jwksUri is required"));
        }
        if !r.jwks_uri.is_empty() {
            let ok = (r.jwks_uri.starts_with("https://") || r.jwks_uri.starts_with("http://"))
                && r.jwks_uri
                    .parse::<http::Uri>()
                    .is_ok_and(|u| u.host().is_some());
            if !ok {
                errors.push(format!(
                    "{p}.jwksUri: {:?} is not an http(s) URL",
                    r.jwks_uri
                ));
            }
        }
        if !r.jwks.is_empty() {
            if let Err(e) = trellis_jwt::check_jwks(&r.jwks) {
                errors.push(format!("{p}.jwks: {e}"));
            }
        }
        for (j, h) in r.from_headers.iter().enumerate() {
            if h.name.is_empty() {
                errors.push(format!("{p}.fromHeaders[{j}].name: required"));
            } else if http::HeaderName::try_from(h.name.as_str()).is_err() {
                errors.push(format!(
                    "{p}.fromHeaders[{j}].name: {:?} is not a header name",
                    h.name
                ));
            }
        }
        empty_values(&format!("{p}.fromParams"), &r.from_params, &mut errors);
        empty_values(&format!("{p}.fromCookies"), &r.from_cookies, &mut errors);
        empty_values(
            &format!("{p}.spaceDelimitedClaims"),
            &r.space_delimited_claims,
            &mut errors,
        );
        if !r.output_payload_to_header.is_empty()
            && http::HeaderName::try_from(r.output_payload_to_header.as_str()).is_err()
        {
            errors.push(format!(
                "{p}.outputPayloadToHeader: {:?} is not a header name",
                r.output_payload_to_header
            ));
        }
        for (j, c) in r.output_claim_to_headers.iter().enumerate() {
            if c.header.is_empty() || c.claim.is_empty() {
                errors.push(format!(
                    "{p}.outputClaimToHeaders[{j}]: header and claim must be non-empty"
                ));
            } else if http::HeaderName::try_from(c.header.as_str()).is_err() {
                errors.push(format!(
                    "{p}.outputClaimToHeaders[{j}].header: {:?} is not a header name",
                    c.header
                ));
            }
        }
        duration(&format!("{p}.timeout"), &r.timeout, &mut errors);
    }
    errors
}

/// Checks across resources: a name used twice for one kind and namespace, and two
/// VirtualServices for the same host. The later one (in file order) is refused.
pub fn cross_check(loaded: &mut Loaded) {
    fn dedupe<T>(
        list: &mut Vec<crate::inputs::Resource<T>>,
        kind: &str,
        refused: &mut Vec<Diagnostic>,
    ) {
        let mut seen = BTreeMap::new();
        list.retain(|r| {
            let key = (r.namespace.clone(), r.name.clone());
            if let Some(first) = seen.get(&key) {
                refused.push(Diagnostic {
                    resource: r.source.clone(),
                    message: format!("another {kind} has this name ({first})"),
                    key: None,
                });
                false
            } else {
                seen.insert(key, r.source.clone());
                true
            }
        });
    }
    tenants(loaded);
    if loaded.inputs.mesh_config.len() > 1 {
        let first = loaded.inputs.mesh_config[0].source.clone();
        for extra in loaded.inputs.mesh_config.drain(1..) {
            loaded.refused.push(Diagnostic {
                resource: extra.source,
                message: format!("a second meshConfig; the mesh has one ({first})"),
                key: None,
            });
        }
    }
    let refused = &mut loaded.refused;
    let i = &mut loaded.inputs;
    dedupe(&mut i.virtual_services, "VirtualService", refused);
    dedupe(&mut i.destination_rules, "DestinationRule", refused);
    dedupe(&mut i.service_entries, "ServiceEntry", refused);
    // A host two ServiceEntries define: the registry keeps one service per host.
    let mut hosts: BTreeMap<String, String> = BTreeMap::new();
    for se in &i.service_entries {
        let me = format!("{}/{}", se.namespace, se.name);
        for h in &se.spec.hosts {
            let first = hosts
                .entry(crate::fqdn(h, &se.namespace))
                .or_insert_with(|| me.clone());
            if *first != me {
                loaded.warnings.push(Diagnostic {
                    resource: se.source.clone(),
                    message: format!("spec.hosts: {h} is also defined by ServiceEntry {first}; Trellis uses the first one's ports and endpoints"),
                    key: None,
                });
            }
        }
    }
    dedupe(&mut i.workload_entries, "WorkloadEntry", refused);
    dedupe(&mut i.sidecars, "Sidecar", refused);
    dedupe(&mut i.gateways, "Gateway", refused);
    let conflicting = gateway_conflicts(&i.gateways);
    for (index, why) in conflicting.iter().rev() {
        let gw = i.gateways.remove(*index);
        refused.push(Diagnostic {
            resource: gw.source.clone(),
            message: why.clone(),
            key: Some(("Gateway".into(), gw.namespace.clone(), gw.name.clone())),
        });
    }
    // A credential that is not there: its server waits for it; said, not refused.
    for gw in &i.gateways {
        for (j, server) in gw.spec.servers.iter().enumerate() {
            let Some(name) = server.tls.as_ref().and_then(|t| t.credential_name.as_ref()) else {
                continue;
            };
            let found = i
                .credentials
                .iter()
                .any(|c| c.namespace == gw.namespace && &c.name == name);
            if !found {
                loaded.warnings.push(Diagnostic {
                    resource: gw.source.clone(),
                    message: format!("spec.servers[{j}].tls.credentialName: no Secret {name:?} with a certificate in namespace {}; the server is not served until there is one", gw.namespace),
                    key: None,
                });
            }
        }
    }
    dedupe(&mut i.peer_authentications, "PeerAuthentication", refused);
    dedupe(
        &mut i.authorization_policies,
        "AuthorizationPolicy",
        refused,
    );
    dedupe(
        &mut i.request_authentications,
        "RequestAuthentication",
        refused,
    );
    // Two VirtualServices for one host conflict where one namespace sees both (Istio
    // then uses the older and ignores the other); with exportTo keeping them apart, each
    // namespace has its own.
    let mut hosts: BTreeMap<String, Vec<(Audience, String)>> = BTreeMap::new();
    i.virtual_services.retain(|vs| {
        // Those bound to gateways only route there (crate::gateway).
        if !applies_to_mesh(&vs.spec) {
            return true;
        }
        let fqdns: Vec<String> = vs
            .spec
            .hosts
            .iter()
            .map(|h| crate::fqdn(h, &vs.namespace))
            .collect();
        let audience = Audience::of(&vs.spec.export_to, &vs.namespace);
        let conflict = fqdns.iter().find_map(|h| {
            let seen = hosts.get(h)?;
            let (_, first) = seen.iter().find(|(a, _)| a.meets(&audience))?;
            Some((h.clone(), first.clone()))
        });
        if let Some((host, first)) = conflict {
            refused.push(Diagnostic {
                resource: vs.source.clone(),
                message: format!("spec.hosts: {host} is already routed by {first}"),
                key: None,
            });
            return false;
        }
        for h in fqdns {
            hosts
                .entry(h)
                .or_default()
                .push((audience.clone(), vs.source.clone()));
        }
        true
    });
}

/// The namespaces a resource is exported to (Istio's exportTo: none or `*` is every
/// namespace, `.` its own, `~` none, otherwise the names).
#[derive(Clone, Debug)]
enum Audience {
    Everyone,
    Namespaces(std::collections::BTreeSet<String>),
}

impl Audience {
    fn of(export_to: &[String], namespace: &str) -> Audience {
        if export_to.is_empty() || export_to.iter().any(|e| e == "*") {
            return Audience::Everyone;
        }
        Audience::Namespaces(
            export_to
                .iter()
                .filter(|e| *e != "~")
                .map(|e| if e == "." { namespace } else { e.as_str() }.to_string())
                .collect(),
        )
    }

    /// Whether some namespace is in both.
    fn meets(&self, other: &Audience) -> bool {
        match (self, other) {
            (Audience::Everyone, Audience::Everyone) => true,
            (Audience::Everyone, Audience::Namespaces(n))
            | (Audience::Namespaces(n), Audience::Everyone) => !n.is_empty(),
            (Audience::Namespaces(a), Audience::Namespaces(b)) => !a.is_disjoint(b),
        }
    }
}

/// Checks across the Tenant documents, in load order: a tenant named `default`, a
/// namespace or a trust domain another tenant already has, a federation with itself
/// or with a tenant that is not there. Each refusal names the document that loses.
fn tenants(loaded: &mut Loaded) {
    use crate::tenant::{Tenant, DEFAULT_TENANT};
    let refuse = |r: &crate::inputs::Resource<Tenant>, message: String| Diagnostic {
        resource: r.source.clone(),
        message,
        key: Some(("Tenant".into(), r.namespace.clone(), r.name.clone())),
    };
    let mut namespaces: BTreeMap<String, String> = BTreeMap::new();
    let mut domains: BTreeMap<String, String> = BTreeMap::new();
    let mut names: BTreeSet<String> = BTreeSet::new();
    let mut kept = Vec::new();
    // A namespace a tenant lists is that tenant's, whatever a selector selects.
    let listed: BTreeSet<String> = loaded
        .inputs
        .tenants
        .iter()
        .flat_map(|t| t.spec.namespaces.iter().cloned())
        .collect();
    let labels = std::mem::take(&mut loaded.inputs.namespace_labels);
    for mut t in std::mem::take(&mut loaded.inputs.tenants) {
        if let Some(selector) = &t.spec.namespace_selector {
            t.spec.selected = labels
                .iter()
                .filter(|(ns, l)| {
                    !listed.contains(*ns) && crate::selects(&selector.match_labels, l)
                })
                .map(|(ns, _)| ns.clone())
                .collect();
            if labels.is_empty() {
                loaded.warnings.push(Diagnostic {
                    resource: t.source.clone(),
                    message: "spec.namespaceSelector: no namespace labels are known here (Namespace objects come from the cluster in Kubernetes mode); it selects nothing".into(),
                    key: None,
                });
            }
        }
        let why = if t.name == DEFAULT_TENANT {
            Some(format!(
                "metadata.name: {DEFAULT_TENANT:?} is the tenant of the namespaces no Tenant claims; choose another name"
            ))
        } else if !names.insert(t.name.clone()) {
            Some("another Tenant has this name".into())
        } else if let Some((ns, other)) = t
            .spec
            .namespaces
            .iter()
            .find_map(|ns| namespaces.get(ns).map(|o| (ns, o)))
        {
            names.remove(&t.name);
            Some(format!(
                "spec.namespaces: {ns:?} already belongs to tenant {other:?}"
            ))
        } else if let Some((ns, other)) = t
            .spec
            .selected
            .iter()
            .find_map(|ns| namespaces.get(ns).map(|o| (ns, o)))
        {
            names.remove(&t.name);
            Some(format!(
                "spec.namespaceSelector: selects namespace {ns:?}, which already belongs to tenant {other:?}"
            ))
        } else if let Some(other) = domains.get(&t.spec.trust_domain) {
            names.remove(&t.name);
            Some(format!(
                "spec.trustDomain: {:?} is already tenant {other:?}'s",
                t.spec.trust_domain
            ))
        } else {
            None
        };
        match why {
            Some(m) => loaded.refused.push(refuse(&t, m)),
            None => {
                for ns in t.spec.all_namespaces() {
                    namespaces.insert(ns.clone(), t.name.clone());
                }
                domains.insert(t.spec.trust_domain.clone(), t.name.clone());
                kept.push(t);
            }
        }
    }
    // Refusing one tenant may leave another's federation dangling: until nothing changes.
    loop {
        let present: BTreeSet<String> = kept.iter().map(|t| t.name.clone()).collect();
        let before = kept.len();
        kept.retain(|t| {
            let bad = t.spec.federation.iter().enumerate().find_map(|(i, f)| {
                if f.tenant == t.name {
                    Some(format!(
                        "spec.federation[{i}].tenant: a tenant does not federate with itself"
                    ))
                } else if f.tenant != DEFAULT_TENANT && !present.contains(&f.tenant) {
                    Some(format!(
                        "spec.federation[{i}].tenant: no tenant {:?}",
                        f.tenant
                    ))
                } else {
                    None
                }
            });
            match bad {
                Some(m) => {
                    loaded.refused.push(refuse(t, m));
                    false
                }
                None => true,
            }
        });
        if kept.len() == before {
            break;
        }
    }
    loaded.inputs.tenants = kept;
    loaded.inputs.namespace_labels = labels;
}

/// Whether a VirtualService routes sidecars' traffic: no `gateways`, or `mesh` among them.
pub fn applies_to_mesh(vs: &VirtualService) -> bool {
    vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh")
}

/// Gateways with the same selector whose servers share a port with another kind of
/// listener (plaintext against HTTPS): the later one is refused, naming the first.
fn gateway_conflicts(
    gateways: &[crate::inputs::Resource<crate::istio::Gateway>],
) -> Vec<(usize, String)> {
    type Policy = Option<crate::istio::HandshakePolicy>;
    let mut seen: BTreeMap<(String, u32), (crate::istio::ServerKind, Policy, String)> =
        BTreeMap::new();
    let mut refused = Vec::new();
    for (i, gw) in gateways.iter().enumerate() {
        let selector = format!("{:?}", gw.spec.selector);
        let mut mine = Vec::new();
        let mut conflict = None;
        for s in &gw.spec.servers {
            let (Some(port), Some(kind)) = (&s.port, s.kind()) else {
                continue;
            };
            let handshake = s.handshake();
            match seen.get(&(selector.clone(), port.number)) {
                Some((other, _, by)) if *other != kind => {
                    conflict = Some(format!(
                        "spec.servers: port {} is {kind} here but {other} in Gateway {by} on the same gateway proxies",
                        port.number,
                    ));
                    break;
                }
                Some((_, other, by)) if *other != handshake => {
                    conflict = Some(format!(
                        "spec.servers: {}",
                        crate::istio::HandshakePolicy::differs(
                            port.number,
                            &format!("Gateway {by} on the same gateway proxies")
                        )
                    ));
                    break;
                }
                _ => mine.push(((selector.clone(), port.number), kind, handshake)),
            }
        }
        match conflict {
            Some(why) => refused.push((i, why)),
            None => {
                for (key, kind, handshake) in mine {
                    seen.entry(key).or_insert((
                        kind,
                        handshake,
                        format!("{}/{}", gw.namespace, gw.name),
                    ));
                }
            }
        }
    }
    refused
}
