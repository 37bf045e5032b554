//! Trust bundles per trust domain (`trust_bundles` of a listener's or cluster's TLS):
//! read once per distinct content, and shown on the admin API's `/certs`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use trellis_config::TrustBundle;
use trellis_tls::TrustDomainRoots;

/// A sidecar's listeners and clusters usually share a few bundles: each distinct
/// content is parsed once, not once per cluster on every update.
static PARSED: Mutex<Option<HashMap<String, Arc<Vec<boring::x509::X509>>>>> = Mutex::new(None);
const PARSED_KEPT: usize = 256;

fn parse(roots: &str, inline: bool) -> Result<Arc<Vec<boring::x509::X509>>, String> {
    if let Some(hit) = PARSED.lock().unwrap().as_ref().and_then(|m| m.get(roots)) {
        return Ok(hit.clone());
    }
    let certs = if inline {
        boring::x509::X509::stack_from_pem(roots.as_bytes())
            .map_err(|e| format!("inline PEM: {e}"))?
    } else {
        trellis_tls::load_trust_bundle(roots).map_err(|e| e.to_string())?
    };
    if certs.is_empty() {
        return Err("no PEM certificate".into());
    }
    let certs = Arc::new(certs);
    let mut cache = PARSED.lock().unwrap();
    let map = cache.get_or_insert_with(HashMap::new);
    if map.len() >= PARSED_KEPT {
        map.clear();
    }
    map.insert(roots.to_string(), certs.clone());
    Ok(certs)
}

/// The bundles of one TLS setting; errors name `field` and the bundle.
pub fn bundles(field: &str, list: &[TrustBundle]) -> Result<Vec<TrustDomainRoots>, String> {
    list.iter()
        .enumerate()
        .map(|(i, b)| {
            let roots = parse(&b.roots, b.is_inline())
                .map_err(|e| format!("{field}.trust_bundles[{i}].roots: {e}"))?;
            Ok(TrustDomainRoots {
                trust_domain: b.trust_domain.clone(),
                roots: roots.to_vec(),
            })
        })
        .collect()
}

/// Every trust bundle the config uses: per trust domain its roots (SHA-256, subject,
/// expiry) and which listeners (peers calling in) and clusters (peers called) trust it.
pub fn describe(config: &crate::serving::Serving) -> serde_json::Value {
    let mut seen: BTreeMap<(String, String), (Vec<String>, Vec<String>)> = BTreeMap::new();
    for l in &config.listeners {
        for b in l.tls.iter().flat_map(|t| &t.trust_bundles) {
            let e = seen.entry((b.trust_domain.clone(), b.roots.clone()));
            e.or_default().0.push(l.name.clone());
        }
    }
    for c in &config.clusters {
        for b in c.tls.iter().flat_map(|t| &t.trust_bundles) {
            let e = seen.entry((b.trust_domain.clone(), b.roots.clone()));
            e.or_default().1.push(c.name.clone());
        }
    }
    let mut out = Vec::new();
    for ((domain, roots), (listeners, clusters)) in seen {
        let inline = roots.trim_start().starts_with("-----BEGIN");
        let described: Vec<serde_json::Value> = match parse(&roots, inline) {
            Ok(certs) => certs.iter().map(root).collect(),
            Err(e) => vec![serde_json::json!({ "error": e })],
        };
        out.push(serde_json::json!({
            "trust_domain": domain,
            "roots": described,
            "listeners": listeners,
            "clusters": clusters,
        }));
    }
    serde_json::Value::Array(out)
}

fn root(cert: &boring::x509::X509) -> serde_json::Value {
    let sha256 = trellis_tls::fingerprint_hex(cert);
    let subject: Vec<String> = cert
        .subject_name()
        .entries()
        .filter_map(|e| {
            let v = e.data().as_utf8().ok()?;
            Some(format!("{}={}", e.object().nid().short_name().ok()?, v))
        })
        .collect();
    serde_json::json!({
        "sha256": sha256,
        "subject": subject.join(","),
        "expiry": trellis_ca_client::time::asn1_unix(cert.not_after()),
    })
}
