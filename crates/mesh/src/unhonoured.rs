//! Fields of traffic resources that Trellis reads but does not honour yet, each said in
//! a warning rather than dropped without a word. Only traffic resources: a security
//! resource with a field Trellis cannot honour is refused (`fail_closed.rs`).

use serde_yaml::Value;

/// Fields Trellis does not honour yet whose absence would change where traffic goes
/// (a route or a listener left out): the resource is refused naming them rather than
/// read without them.
pub fn refusals(kind: &str, spec: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let non_empty = |v: Option<&Value>| {
        v.is_some_and(|v| !v.is_null() && v.as_sequence().is_none_or(|s| !s.is_empty()))
    };
    match kind {
        "VirtualService" => {
            for (i, r) in items(spec.get("http")) {
                for (field, sub, what) in [
                    ("rewrite", "uriRegexRewrite", "regex rewrites"),
                    ("redirect", "prefixRewrite", "prefix rewrites in redirects"),
                    ("redirect", "derivePort", "derived redirect ports"),
                ] {
                    if non_empty(r.get(field).and_then(|f| f.get(sub))) {
                        out.push(format!(
                            "spec.http[{i}].{field}.{sub}: {what} are not supported by Trellis yet"
                        ));
                    }
                }
                if non_empty(r.get("delegate")) {
                    out.push(format!(
                        "spec.http[{i}].delegate: delegate VirtualServices are not supported by Trellis yet"
                    ));
                }
            }
        }
        "Sidecar" if non_empty(spec.get("ingress")) => {
            out.push("spec.ingress: ingress listeners are not supported by Trellis yet".into());
        }
        _ => {}
    }
    out
}

/// Warnings for `spec` of a `kind` that was accepted.
pub fn notes(kind: &str, spec: &Value) -> Vec<String> {
    let mut notes = Vec::new();
    let mut note = |path: &str, what: &str| notes.push(format!("spec.{path}: {what}"));
    let set = |v: Option<&Value>| v.is_some_and(|v| !v.is_null());
    match kind {
        "ServiceEntry" => {
            for (i, e) in items(spec.get("endpoints")) {
                workload_entry_notes(&format!("endpoints[{i}]."), e, &mut note);
            }
        }
        "Telemetry" => {
            let metrics: Vec<crate::telemetry_api::MetricsSpec> = spec
                .get("metrics")
                .and_then(|m| serde_yaml::from_value(m.clone()).ok())
                .unwrap_or_default();
            notes.extend(crate::telemetry_api::metrics_notes(&metrics));
        }
        "VirtualService" => {
            for (i, r) in items(spec.get("http")) {
                let retry_on = r
                    .get("retries")
                    .and_then(|r| r.get("retryOn"))
                    .and_then(Value::as_str);
                for policy in retry_on
                    .into_iter()
                    .flat_map(|v| v.split(','))
                    .map(str::trim)
                {
                    let honoured = policy.parse::<u16>().is_ok()
                        || crate::validate::RETRY_ON_HONOURED.contains(&policy);
                    if !honoured {
                        note(
                            &format!("http[{i}].retries.retryOn"),
                            &format!("{policy:?} is not honoured yet: Trellis retries on 5xx, gateway-error, connect-failure, reset and listed status codes"),
                        );
                    }
                }
            }
        }
        "WorkloadEntry" => workload_entry_notes("", spec, &mut note),
        "Gateway" => {
            for (i, s) in items(spec.get("servers")) {
                let Some(tls) = s.get("tls") else { continue };
                let Ok(tls) = serde_yaml::from_value::<crate::istio::ServerTls>(tls.clone()) else {
                    continue;
                };
                let (kept, dropped) = tls.cipher_suites();
                if !kept.is_empty() && !dropped.is_empty() {
                    note(
                        &format!("servers[{i}].tls.cipherSuites"),
                        &format!("ignoring invalid or duplicate cipher suites {dropped:?}, as Istio does; offering {kept:?}"),
                    );
                }
            }
        }
        "Sidecar" => {
            let mode = spec
                .get("outboundTrafficPolicy")
                .and_then(|p| p.get("mode"))
                .and_then(Value::as_str);
            if mode == Some("ALLOW_ANY") {
                note(
                    "outboundTrafficPolicy.mode",
                    "ALLOW_ANY is honoured by captured sidecars (sidecar.istio.io/interceptionMode: REDIRECT) only; a sidecar that its app uses as an HTTP proxy reaches registered services only (REGISTRY_ONLY)",
                );
            }
        }
        "DestinationRule" => {
            let mut policies = vec![("trafficPolicy".to_string(), spec.get("trafficPolicy"))];
            for (i, s) in items(spec.get("subsets")) {
                policies.push((
                    format!("subsets[{i}].trafficPolicy"),
                    s.get("trafficPolicy"),
                ));
            }
            let port_level: Vec<(String, Option<&Value>)> = policies
                .iter()
                .flat_map(|(path, p)| {
                    items(p.and_then(|p| p.get("portLevelSettings")))
                        .map(move |(i, s)| (format!("{path}.portLevelSettings[{i}]"), Some(s)))
                })
                .collect();
            policies.extend(port_level);
            for (path, p) in policies {
                let lb = p.and_then(|p| p.get("loadBalancer"));
                if set(lb.and_then(|l| l.get("warmup"))) {
                    note(
                        &format!("{path}.loadBalancer.warmup"),
                        "is not supported by Trellis yet; ignored (a new endpoint gets its full share at once)",
                    );
                }
                let tls = p.and_then(|p| p.get("tls"));
                let originates = tls
                    .and_then(|t| t.get("mode"))
                    .and_then(Value::as_str)
                    .is_some_and(|m| m == "SIMPLE" || m == "MUTUAL");
                if !originates && set(tls.and_then(|t| t.get("sni"))) {
                    note(
                        &format!("{path}.tls.sni"),
                        "not honoured yet: ISTIO_MUTUAL sends the mesh's own SNI",
                    );
                }
            }
        }
        _ => {}
    }
    notes
}

/// The elements of a sequence field (none when it is absent or not a sequence), with
/// their index.
fn items(field: Option<&Value>) -> impl Iterator<Item = (usize, &Value)> {
    field
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .enumerate()
}

fn workload_entry_notes(prefix: &str, e: &Value, note: &mut impl FnMut(&str, &str)) {
    for (field, what) in [
        (
            "locality",
            "not honoured yet: load balancing is not locality-aware",
        ),
        (
            "network",
            "not honoured yet: every endpoint is taken as reachable directly",
        ),
    ] {
        if e.get(field).is_some_and(|v| !v.is_null()) {
            note(&format!("{prefix}{field}"), what);
        }
    }
    let address = e.get("address").and_then(Value::as_str).unwrap_or_default();
    if address.is_empty() && e.get("network").is_some_and(|v| !v.is_null()) {
        note(
            &format!("{prefix}address"),
            "unset with a network: reached through that network's gateway in Istio; not an endpoint in Trellis",
        );
    }
}
