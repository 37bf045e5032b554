//! SPIFFE workload identities as Istio writes them, and reading them out of certificates.

use boring::x509::X509Ref;
use std::fmt;

/// `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

impl SpiffeId {
    pub fn new(trust_domain: &str, namespace: &str, service_account: &str) -> Self {
        SpiffeId {
            trust_domain: trust_domain.to_string(),
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
        }
    }

    /// Parses the Istio form; anything else (other path shapes, empty parts, a port or
    /// query in the URI) is refused with the reason.
    pub fn parse(uri: &str) -> Result<Self, String> {
        let rest = uri
            .strip_prefix("spiffe://")
            .ok_or_else(|| format!("{uri:?}: not a spiffe:// URI"))?;
        let (td, path) = rest
            .split_once('/')
            .ok_or_else(|| format!("{uri:?}: no path after the trust domain"))?;
        let parts: Vec<&str> = path.split('/').collect();
        match parts.as_slice() {
            ["ns", ns, "sa", sa] if valid_part(td) && valid_part(ns) && valid_part(sa) => {
                Ok(SpiffeId::new(td, ns, sa))
            }
            _ => Err(format!(
                "{uri:?}: expected spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"
            )),
        }
    }
}

fn valid_part(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

/// The identities a certificate claims: its URI SANs (SPIFFE IDs in a mesh), then its
/// DNS and IP SANs. Callers only trust this after the chain was verified.
pub fn peer_identities(cert: &X509Ref) -> Vec<String> {
    let Some(names) = cert.subject_alt_names() else {
        return Vec::new();
    };
    let uris = names.iter().filter_map(|n| n.uri().map(str::to_string));
    let dns = names.iter().filter_map(|n| n.dnsname().map(str::to_string));
    let ips = names.iter().filter_map(|n| {
        let ip: std::net::IpAddr = match n.ipaddress()? {
            b if b.len() == 4 => <[u8; 4]>::try_from(b).ok()?.into(),
            b if b.len() == 16 => <[u8; 16]>::try_from(b).ok()?.into(),
            _ => return None,
        };
        Some(ip.to_string())
    });
    uris.chain(dns).chain(ips).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_istio_identities() {
        let id = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/reviews").unwrap();
        assert_eq!(id, SpiffeId::new("cluster.local", "default", "reviews"));
        assert_eq!(
            id.to_string(),
            "spiffe://cluster.local/ns/default/sa/reviews"
        );
    }

    #[test]
    fn refuses_other_shapes() {
        for bad in [
            "https://cluster.local/ns/a/sa/b",
            "spiffe://cluster.local",
            "spiffe://cluster.local/ns/a",
            "spiffe://cluster.local/ns/a/sa/b/extra",
            "spiffe:///ns/a/sa/b",
            "spiffe://td/ns//sa/b",
            "spiffe://td:80/ns/a/sa/b",
            "spiffe://td/ns/a/sa/b?x=1",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad}");
        }
    }
}
