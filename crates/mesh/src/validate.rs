//! What makes a resource invalid (refused) beyond its YAML types: each check returns
//! messages that start with the field path.

use std::collections::{BTreeMap, BTreeSet};

use crate::istio::*;
use crate::load::{Diagnostic, Loaded};

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

pub fn virtual_service(vs: &VirtualService) -> Vec<String> {
    let mut errors = Vec::new();
    if vs.hosts.is_empty() {
        errors.push("spec.hosts: at least one host is required".into());
    }
    if vs.gateways.iter().any(|g| g != "mesh") {
        errors
            .push("spec.gateways: only the mesh (sidecars) is supported; gateways are not".into());
    }
    for (i, r) in vs.http.iter().enumerate() {
        let p = format!("spec.http[{i}]");
        for (j, m) in r.matches.iter().enumerate() {
            let mp = format!("{p}.match[{j}]");
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
            if m.authority.is_some() || m.port.is_some() || !m.source_labels.is_empty() {
                errors.push(format!(
                    "{mp}: authority, port and sourceLabels matches are not supported yet"
                ));
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
        let weights: Vec<u32> = r.route.iter().filter_map(|d| d.weight).collect();
        if r.route.len() > 1 && weights.iter().sum::<u32>() != 100 {
            errors.push(format!(
                "{p}.route: weights must add up to 100 (they add up to {})",
                weights.iter().sum::<u32>()
            ));
        }
        for (j, d) in r.route.iter().enumerate() {
            if d.destination.host.is_empty() {
                errors.push(format!("{p}.route[{j}].destination.host: required"));
            }
            if d.headers.is_some() {
                errors.push(format!(
                    "{p}.route[{j}].headers: per-destination headers are not supported yet"
                ));
            }
        }
        duration(&format!("{p}.timeout"), &r.timeout, &mut errors);
        if let Some(retry) = &r.retries {
            duration(
                &format!("{p}.retries.perTryTimeout"),
                &retry.per_try_timeout,
                &mut errors,
            );
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
        if let Some(d) = &r.redirect {
            if let Some(code) = d.redirect_code {
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

pub fn destination_rule(dr: &DestinationRule) -> Vec<String> {
    let mut errors = Vec::new();
    if dr.host.is_empty() {
        errors.push("spec.host: required".into());
    }
    let mut names = BTreeSet::new();
    for (i, s) in dr.subsets.iter().enumerate() {
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
    }
    if let Some(tls) = &tp.tls {
        if matches!(tls.mode, ClientTlsMode::Simple | ClientTlsMode::Mutual) {
            errors.push(format!("{p}.tls.mode: SIMPLE and MUTUAL need certificates Trellis does not manage yet; use ISTIO_MUTUAL or DISABLE"));
        }
    }
}

pub fn service_entry(se: &ServiceEntry) -> Vec<String> {
    let mut errors = Vec::new();
    if se.hosts.is_empty() {
        errors.push("spec.hosts: at least one host is required".into());
    }
    let mut numbers = BTreeSet::new();
    for (i, p) in se.ports.iter().enumerate() {
        if !numbers.insert(p.number) {
            errors.push(format!(
                "spec.ports[{i}].number: {} appears twice",
                p.number
            ));
        }
        if let Some(proto) = &p.protocol {
            if !matches!(
                proto.to_ascii_uppercase().as_str(),
                "HTTP" | "HTTP2" | "GRPC" | "TCP"
            ) {
                errors.push(format!(
                    "spec.ports[{i}].protocol: {proto} is not supported (HTTP, HTTP2, GRPC, TCP)"
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

pub fn workload_entry(we: &WorkloadEntry) -> Vec<String> {
    let mut errors = Vec::new();
    if we.address.is_empty() {
        errors.push("spec.address: required".into());
    }
    errors
}

pub fn sidecar(sc: &Sidecar) -> Vec<String> {
    let mut errors = Vec::new();
    for (i, e) in sc.egress.iter().enumerate() {
        for (j, h) in e.hosts.iter().enumerate() {
            if !h.contains('/') {
                errors.push(format!(
                    "spec.egress[{i}].hosts[{j}]: {h:?} must be namespace/host"
                ));
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

pub fn peer_authentication(_: &PeerAuthentication) -> Vec<String> {
    Vec::new()
}

pub fn authorization_policy(ap: &AuthorizationPolicy) -> Vec<String> {
    let mut errors = Vec::new();
    match ap.action.as_deref() {
        None | Some("ALLOW" | "DENY" | "AUDIT") => {}
        Some("CUSTOM") => {
            errors.push("spec.action: CUSTOM (external authorization) is not supported".into())
        }
        Some(other) => errors.push(format!(
            "spec.action: {other} is not an action (ALLOW, DENY, AUDIT)"
        )),
    }
    for (i, r) in ap.rules.iter().enumerate() {
        for (j, c) in r.when.iter().enumerate() {
            let known = c.key.starts_with("request.headers[")
                || matches!(
                    c.key.as_str(),
                    "source.ip" | "source.namespace" | "source.principal" | "destination.port"
                );
            if !known {
                errors.push(format!(
                    "spec.rules[{i}].when[{j}].key: {} is not supported",
                    c.key
                ));
            }
        }
    }
    errors
}

/// Checks across resources: a name used twice for one kind and namespace, and two
/// VirtualServices for the same host. The later one (in file order) is refused.
pub fn cross_check(loaded: &mut Loaded) {
    fn dedupe<T>(
        list: &mut Vec<crate::load::Resource<T>>,
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
    let refused = &mut loaded.refused;
    let i = &mut loaded.inputs;
    dedupe(&mut i.virtual_services, "VirtualService", refused);
    dedupe(&mut i.destination_rules, "DestinationRule", refused);
    dedupe(&mut i.service_entries, "ServiceEntry", refused);
    dedupe(&mut i.workload_entries, "WorkloadEntry", refused);
    dedupe(&mut i.sidecars, "Sidecar", refused);
    dedupe(&mut i.peer_authentications, "PeerAuthentication", refused);
    dedupe(
        &mut i.authorization_policies,
        "AuthorizationPolicy",
        refused,
    );
    let mut hosts: BTreeMap<String, String> = BTreeMap::new();
    i.virtual_services.retain(|vs| {
        let fqdns: Vec<String> = vs
            .spec
            .hosts
            .iter()
            .map(|h| crate::fqdn(h, &vs.namespace))
            .collect();
        if let Some((host, first)) = fqdns
            .iter()
            .find_map(|h| hosts.get(h).map(|f| (h.clone(), f.clone())))
        {
            refused.push(Diagnostic {
                resource: vs.source.clone(),
                message: format!("spec.hosts: {host} is already routed by {first}"),
                key: None,
            });
            return false;
        }
        for h in fqdns {
            hosts.insert(h, vs.source.clone());
        }
        true
    });
}
