//! The Gateway API's own rules for each kind (what its CRDs' schemas and CEL rules
//! refuse, which an API server would have checked before Trellis saw the resource),
//! and what Trellis refuses because it cannot honour it.

use super::types::*;
use crate::dns1123_label as dns_label;

/// The Gateway API's `Hostname`: a DNS name, `*.` only as its first label, never an IP.
fn hostname(p: &str, h: &str, errors: &mut Vec<String>) {
    let bare = h.strip_prefix("*.").unwrap_or(h);
    let valid =
        h.len() <= 253 && h.parse::<std::net::IpAddr>().is_err() && bare.split('.').all(dns_label);
    if !valid {
        errors.push(format!(
            "{p}: {h:?} is not a hostname (a DNS name, optionally *.-prefixed, not an IP)"
        ));
    }
}

pub fn gateway_class(c: &GatewayClass) -> Vec<String> {
    let mut errors = Vec::new();
    if c.controller_name.is_empty() {
        errors.push("spec.controllerName: required".into());
    }
    if c.controller_name == super::CONTROLLER && c.parameters_ref.is_some() {
        errors.push(
            "spec.parametersRef: not supported by Trellis (its classes take no parameters)".into(),
        );
    }
    errors
}

pub fn gateway(g: &Gateway) -> Vec<String> {
    let mut errors = Vec::new();
    if g.gateway_class_name.is_empty() {
        errors.push("spec.gatewayClassName: required".into());
    }
    if g.listeners.is_empty() || g.listeners.len() > 64 {
        errors.push("spec.listeners: 1 to 64 listeners".into());
    }
    if !g.addresses.is_empty() {
        errors.push("spec.addresses: not supported by Trellis yet (a gateway proxy listens on every address of its host)".into());
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, l) in g.listeners.iter().enumerate() {
        let p = format!("spec.listeners[{i}]");
        if !names.insert(&l.name) {
            errors.push(format!(
                "{p}.name: {:?} is used by another listener",
                l.name
            ));
        }
        if !dns_label(&l.name) {
            errors.push(format!("{p}.name: {:?} is not a DNS label", l.name));
        }
        if l.port == 0 || l.port > 65535 {
            errors.push(format!("{p}.port: {} is not 1-65535", l.port));
        }
        if let Some(h) = &l.hostname {
            hostname(&format!("{p}.hostname"), h, &mut errors);
        }
        let protocol = l.protocol.as_str();
        match (protocol, &l.tls) {
            ("HTTP" | "TCP" | "UDP", Some(_)) => {
                errors.push(format!("{p}.tls: must not be set for protocol {protocol}"))
            }
            ("HTTPS" | "TLS", None) => {
                errors.push(format!("{p}.tls: must be set for protocol {protocol}"))
            }
            ("HTTPS", Some(t)) if t.mode.as_deref().is_some_and(|m| m != "Terminate") => errors
                .push(format!(
                    "{p}.tls.mode: must be Terminate for protocol HTTPS"
                )),
            ("TLS", Some(t))
                if !matches!(t.mode.as_deref(), None | Some("Terminate" | "Passthrough")) =>
            {
                errors.push(format!(
                    "{p}.tls.mode: {:?} is not Terminate or Passthrough",
                    t.mode.as_deref().unwrap_or_default()
                ))
            }
            _ => {}
        }
        // Implementation-specific TLS settings (versions, ciphers): refused rather than
        // read without them.
        if l.tls.as_ref().is_some_and(|t| !t.options.is_empty()) {
            errors.push(format!(
                "{p}.tls.options: not supported by Trellis; refused rather than ignored"
            ));
        }
        if matches!(protocol, "TCP" | "UDP") && l.hostname.is_some() {
            errors.push(format!(
                "{p}.hostname: must not be set for protocol {protocol}"
            ));
        }
        if let Some(ns) = l
            .allowed_routes
            .as_ref()
            .and_then(|a| a.namespaces.as_ref())
        {
            match ns.from.as_deref() {
                None | Some("Same" | "All") => {}
                Some("Selector") if ns.selector.is_some() => {}
                Some("Selector") => errors.push(format!(
                    "{p}.allowedRoutes.namespaces.selector: required with from: Selector"
                )),
                Some(other) => errors.push(format!(
                    "{p}.allowedRoutes.namespaces.from: {other:?} is not All, Same or Selector"
                )),
            }
        }
    }
    errors
}

const FILTERS: [&str; 7] = [
    "RequestHeaderModifier",
    "ResponseHeaderModifier",
    "RequestRedirect",
    "URLRewrite",
    "RequestMirror",
    "ExtensionRef",
    "CORS",
];

fn filter(p: &str, f: &HttpRouteFilter, errors: &mut Vec<String>) {
    let present = match f.kind.as_str() {
        "RequestHeaderModifier" => f.request_header_modifier.is_some(),
        "ResponseHeaderModifier" => f.response_header_modifier.is_some(),
        "RequestRedirect" => f.request_redirect.is_some(),
        "URLRewrite" => f.url_rewrite.is_some(),
        "RequestMirror" => f.request_mirror.is_some(),
        "ExtensionRef" => f.extension_ref.is_some(),
        "CORS" => f.cors.is_some(),
        other => {
            errors.push(format!("{p}.type: {other:?} is not one of {FILTERS:?}"));
            return;
        }
    };
    if !present {
        errors.push(format!("{p}: type {} needs its field of that name", f.kind));
    }
    for (m, field) in [
        (&f.request_header_modifier, "requestHeaderModifier"),
        (&f.response_header_modifier, "responseHeaderModifier"),
    ] {
        let Some(m) = m else { continue };
        let mut seen = std::collections::BTreeSet::new();
        for h in m.set.iter().chain(&m.add) {
            if !trellis_config::is_http_token(&h.name) {
                errors.push(format!("{p}.{field}: {:?} is not a header name", h.name));
            }
        }
        for h in &m.set {
            if !seen.insert(h.name.to_ascii_lowercase()) {
                errors.push(format!("{p}.{field}.set: {:?} appears twice", h.name));
            }
        }
    }
    for (path, field) in [
        (
            f.request_redirect.as_ref().and_then(|r| r.path.as_ref()),
            "requestRedirect",
        ),
        (
            f.url_rewrite.as_ref().and_then(|r| r.path.as_ref()),
            "urlRewrite",
        ),
    ] {
        let Some(m) = path else { continue };
        let ok = match m.kind.as_str() {
            "ReplaceFullPath" => m.replace_full_path.is_some(),
            "ReplacePrefixMatch" => m.replace_prefix_match.is_some(),
            _ => false,
        };
        if !ok {
            errors.push(format!("{p}.{field}.path: type {:?} needs its field (ReplaceFullPath or ReplacePrefixMatch)", m.kind));
        }
    }
    if let Some(r) = &f.request_redirect {
        if let Some(s) = r
            .scheme
            .as_deref()
            .filter(|s| !matches!(*s, "http" | "https"))
        {
            errors.push(format!(
                "{p}.requestRedirect.scheme: {s:?} is not http or https"
            ));
        }
        if let Some(c) = r
            .status_code
            .filter(|c| !matches!(c, 301 | 302 | 303 | 307 | 308))
        {
            errors.push(format!(
                "{p}.requestRedirect.statusCode: {c} is not 301, 302, 303, 307 or 308"
            ));
        }
        if let Some(h) = &r.hostname {
            hostname(&format!("{p}.requestRedirect.hostname"), h, errors);
        }
    }
}

pub fn http_route(r: &HttpRoute) -> Vec<String> {
    let mut errors = Vec::new();
    if r.parent_refs.len() > 32 {
        errors.push("spec.parentRefs: at most 32".into());
    }
    for (i, h) in r.hostnames.iter().enumerate() {
        hostname(&format!("spec.hostnames[{i}]"), h, &mut errors);
    }
    if r.rules.len() > 16 {
        errors.push("spec.rules: at most 16".into());
    }
    for (i, rule) in r.rules.iter().enumerate() {
        let p = format!("spec.rules[{i}]");
        for (j, m) in rule.matches.iter().enumerate() {
            let mp = format!("{p}.matches[{j}]");
            if let Some(path) = &m.path {
                let kind = path.kind.as_deref().unwrap_or("PathPrefix");
                let value = path.value.as_deref().unwrap_or("/");
                match kind {
                    "Exact" | "PathPrefix" => {
                        if !value.starts_with('/') {
                            errors.push(format!(
                                "{mp}.path.value: {value:?} must be an absolute path"
                            ));
                        }
                        if value.contains("//")
                            || value.contains("/./")
                            || value.contains("/../")
                            || value.contains('#')
                        {
                            errors.push(format!(
                                "{mp}.path.value: {value:?} must not contain //, /./, /../ or #"
                            ));
                        }
                    }
                    "RegularExpression" => {
                        if let Err(e) = regex::Regex::new(value) {
                            errors.push(format!(
                                "{mp}.path.value: {value:?} is not a regular expression: {e}"
                            ));
                        }
                    }
                    other => errors.push(format!(
                        "{mp}.path.type: {other:?} is not Exact, PathPrefix or RegularExpression"
                    )),
                }
            }
            for (field, list) in [("headers", &m.headers), ("queryParams", &m.query_params)] {
                for (k, v) in list.iter().enumerate() {
                    match v.kind.as_deref() {
                        None | Some("Exact") => {}
                        Some("RegularExpression") => {
                            if let Err(e) = regex::Regex::new(&v.value) {
                                errors.push(format!("{mp}.{field}[{k}].value: {:?} is not a regular expression: {e}", v.value));
                            }
                        }
                        Some(other) => errors.push(format!(
                            "{mp}.{field}[{k}].type: {other:?} is not Exact or RegularExpression"
                        )),
                    }
                }
            }
            if let Some(method) = &m.method {
                const METHODS: [&str; 9] = [
                    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
                ];
                if !METHODS.contains(&method.as_str()) {
                    errors.push(format!("{mp}.method: {method:?} is not one of {METHODS:?}"));
                }
            }
        }
        for (j, f) in rule.filters.iter().enumerate() {
            filter(&format!("{p}.filters[{j}]"), f, &mut errors);
        }
        let has = |kind: &str| rule.filters.iter().any(|f| f.kind == kind);
        if has("RequestRedirect") && has("URLRewrite") {
            errors.push(format!(
                "{p}.filters: RequestRedirect and URLRewrite cannot both be set"
            ));
        }
        if has("RequestRedirect") && !rule.backend_refs.is_empty() {
            errors.push(format!(
                "{p}: a rule with RequestRedirect has no backendRefs"
            ));
        }
        let prefix_replaced = rule.filters.iter().any(|f| {
            let path = f
                .url_rewrite
                .as_ref()
                .and_then(|r| r.path.as_ref())
                .or(f.request_redirect.as_ref().and_then(|r| r.path.as_ref()));
            path.is_some_and(|p| p.kind == "ReplacePrefixMatch")
        });
        let all_prefix = rule.matches.iter().all(|m| {
            m.path
                .as_ref()
                .is_none_or(|p| p.kind.as_deref().unwrap_or("PathPrefix") == "PathPrefix")
        });
        if prefix_replaced && !all_prefix {
            errors.push(format!(
                "{p}: ReplacePrefixMatch needs every match to be a PathPrefix match"
            ));
        }
        for (j, b) in rule.backend_refs.iter().enumerate() {
            if b.weight.is_some_and(|w| w > 1_000_000) {
                errors.push(format!("{p}.backendRefs[{j}].weight: at most 1000000"));
            }
            for (k, f) in b.filters.iter().enumerate() {
                filter(
                    &format!("{p}.backendRefs[{j}].filters[{k}]"),
                    f,
                    &mut errors,
                );
            }
        }
        for (field, set) in [
            ("retry", rule.retry.is_some()),
            ("sessionPersistence", rule.session_persistence.is_some()),
        ] {
            if set {
                errors.push(format!(
                    "{p}.{field}: not supported by Trellis yet; refused rather than ignored"
                ));
            }
        }
    }
    errors
}

pub fn reference_grant(g: &ReferenceGrant) -> Vec<String> {
    let mut errors = Vec::new();
    if g.from.is_empty() {
        errors.push("spec.from: at least one".into());
    }
    if g.to.is_empty() {
        errors.push("spec.to: at least one".into());
    }
    errors
}

pub fn grpc_route(r: &GrpcRoute) -> Vec<String> {
    let mut errors = Vec::new();
    for (i, rule) in r.rules.iter().enumerate() {
        for (j, m) in rule.matches.iter().enumerate() {
            let Some(method) = &m.method else { continue };
            let mp = format!("spec.rules[{i}].matches[{j}].method");
            if method.service.is_none() && method.method.is_none() {
                errors.push(format!("{mp}: one of service or method is required"));
            }
            if !matches!(
                method.kind.as_deref(),
                None | Some("Exact" | "RegularExpression")
            ) {
                errors.push(format!(
                    "{mp}.type: {:?} is not Exact or RegularExpression",
                    method.kind
                ));
            }
        }
        for (j, f) in rule.filters.iter().enumerate() {
            if !matches!(
                f.kind.as_str(),
                "RequestHeaderModifier"
                    | "ResponseHeaderModifier"
                    | "RequestMirror"
                    | "ExtensionRef"
            ) {
                errors.push(format!(
                    "spec.rules[{i}].filters[{j}].type: {:?} is not a GRPCRoute filter",
                    f.kind
                ));
            }
        }
    }
    // The rest as the HTTPRoute it means (regular expressions, filters, weights).
    errors.extend(http_route(&r.as_http()));
    errors
}

pub fn tls_route(r: &TlsRoute) -> Vec<String> {
    let mut errors = Vec::new();
    for (i, h) in r.hostnames.iter().enumerate() {
        hostname(&format!("spec.hostnames[{i}]"), h, &mut errors);
    }
    l4_rules("TLSRoute", &r.rules, &mut errors);
    errors
}

pub fn tcp_route(r: &TcpRoute) -> Vec<String> {
    let mut errors = Vec::new();
    l4_rules("TCPRoute", &r.rules, &mut errors);
    errors
}

fn l4_rules(kind: &str, rules: &[TlsRouteRule], errors: &mut Vec<String>) {
    if rules.is_empty() || rules.len() > 16 {
        errors.push("spec.rules: 1 to 16 rules".into());
    }
    for (i, rule) in rules.iter().enumerate() {
        for (j, b) in rule.backend_refs.iter().enumerate() {
            if !b.filters.is_empty() {
                errors.push(format!(
                    "spec.rules[{i}].backendRefs[{j}].filters: not a field of a {kind}"
                ));
            }
        }
    }
}
