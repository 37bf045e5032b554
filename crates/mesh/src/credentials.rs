//! TLS credentials from Kubernetes Secrets (a gateway's `credentialName`, a Gateway API
//! listener's `certificateRefs`): the forms Istio reads, `kubernetes.io/tls` (`tls.crt`,
//! `tls.key`, `ca.crt`) and the generic one (`cert`, `key`, `cacert`), from `data`
//! (base64) or `stringData`. A CA may also be in a Secret of its own named
//! `<name>-cacert`. The key is held in memory only as long as the inputs are, and never
//! printed: `Debug` and every error name the Secret, not its content.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_yaml::Value;

#[derive(Clone, PartialEq, Eq, Default)]
pub struct Credential {
    pub certificate_chain: Option<String>,
    pub private_key: Option<String>,
    pub ca: Option<String>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("certificate_chain", &self.certificate_chain.is_some())
            .field("private_key", &self.private_key.is_some())
            .field("ca", &self.ca.is_some())
            .finish()
    }
}

/// The SDS name a gateway's config refers to a credential by.
pub fn sds_name(namespace: &str, name: &str) -> String {
    format!("kubernetes://{namespace}/{name}")
}

/// Reads a `v1` Secret document's TLS entries; `None` when it holds none (another kind
/// of Secret, which Trellis does not keep). The error names the field.
pub fn from_secret(doc: &serde_yaml::Mapping) -> Result<Option<Credential>, String> {
    let mut entries: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    if let Some(Value::Mapping(data)) = doc.get("data") {
        for (k, v) in data {
            let (Some(k), Some(v)) = (k.as_str(), v.as_str()) else {
                continue;
            };
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .map_err(|_| format!("data.{k}: not base64"))?;
            entries.insert(k.to_string(), bytes);
        }
    }
    if let Some(Value::Mapping(data)) = doc.get("stringData") {
        for (k, v) in data {
            if let (Some(k), Some(v)) = (k.as_str(), v.as_str()) {
                entries.insert(k.to_string(), v.as_bytes().to_vec());
            }
        }
    }
    from_entries(&entries)
}

/// A Secret's TLS entries from its decoded `data`.
pub fn from_entries(entries: &BTreeMap<String, Vec<u8>>) -> Result<Option<Credential>, String> {
    let text = |k: &str| -> Result<Option<String>, String> {
        entries
            .get(k)
            .map(|b| String::from_utf8(b.clone()).map_err(|_| format!("data.{k}: not PEM text")))
            .transpose()
    };
    let mut found: BTreeMap<&str, String> = BTreeMap::new();
    for k in ["tls.crt", "cert", "tls.key", "key", "ca.crt", "cacert"] {
        if let Some(v) = text(k)? {
            found.insert(k, v);
        }
    }
    let entries = found;
    let pick = |keys: [&str; 2]| keys.iter().find_map(|k| entries.get(k).cloned());
    let c = Credential {
        certificate_chain: pick(["tls.crt", "cert"]),
        private_key: pick(["tls.key", "key"]),
        ca: pick(["ca.crt", "cacert"]),
    };
    if c == Credential::default() {
        return Ok(None);
    }
    if c.certificate_chain.is_some() != c.private_key.is_some() {
        return Err("a certificate needs its key (tls.crt with tls.key, or cert with key)".into());
    }
    for (field, pem) in [
        ("tls.crt", &c.certificate_chain),
        ("tls.key", &c.private_key),
        ("ca.crt", &c.ca),
    ] {
        if pem.as_ref().is_some_and(|p| !p.contains("-----BEGIN")) {
            return Err(format!("{field}: not PEM"));
        }
    }
    Ok(Some(c))
}
