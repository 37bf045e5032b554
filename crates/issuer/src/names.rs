//! Which issuer a signer name or an `issuerRef` means, and what its key is called in
//! the token.

/// The API group of the issuer kinds.
pub const GROUP: &str = "trellis.io";
pub const VERSION: &str = "v1alpha1";
pub const ISSUER: &str = "TrellisIssuer";
pub const CLUSTER_ISSUER: &str = "TrellisClusterIssuer";
/// Signer names of cluster issuers: `clusterissuers.trellis.io/<name>`.
const CLUSTER_SIGNERS: &str = "clusterissuers.trellis.io/";
/// Signer names of namespaced issuers: `trellis.io/<namespace>.<name>`.
const SIGNERS: &str = "trellis.io/";

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IssuerRef {
    /// A TrellisIssuer: (namespace, name).
    Namespaced(String, String),
    /// A TrellisClusterIssuer.
    Cluster(String),
}

impl IssuerRef {
    /// The issuer a Kubernetes signer name names; None for other signers.
    pub fn from_signer_name(signer: &str) -> Option<IssuerRef> {
        if let Some(name) = signer.strip_prefix(CLUSTER_SIGNERS) {
            return (!name.is_empty() && !name.contains('/'))
                .then(|| IssuerRef::Cluster(name.into()));
        }
        let rest = signer.strip_prefix(SIGNERS)?;
        // Namespaces are DNS labels (no dots), so the first dot ends the namespace.
        let (ns, name) = rest.split_once('.')?;
        (!ns.is_empty() && !name.is_empty() && !name.contains('/'))
            .then(|| IssuerRef::Namespaced(ns.into(), name.into()))
    }

    /// The issuer a cert-manager `issuerRef` (in `namespace`) names; None for other
    /// groups and kinds.
    pub fn from_issuer_ref(namespace: &str, group: &str, kind: &str, name: &str) -> Option<Self> {
        if group != GROUP || name.is_empty() {
            return None;
        }
        match kind {
            ISSUER => Some(IssuerRef::Namespaced(namespace.into(), name.into())),
            CLUSTER_ISSUER => Some(IssuerRef::Cluster(name.into())),
            _ => None,
        }
    }

    pub fn signer_name(&self) -> String {
        match self {
            IssuerRef::Namespaced(ns, name) => format!("{SIGNERS}{ns}.{name}"),
            IssuerRef::Cluster(name) => format!("{CLUSTER_SIGNERS}{name}"),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            IssuerRef::Namespaced(..) => ISSUER,
            IssuerRef::Cluster(_) => CLUSTER_ISSUER,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            IssuerRef::Namespaced(_, name) | IssuerRef::Cluster(name) => name,
        }
    }

    pub fn namespace(&self) -> Option<&str> {
        match self {
            IssuerRef::Namespaced(ns, _) => Some(ns),
            IssuerRef::Cluster(_) => None,
        }
    }

    /// The label of the CA's key and certificate in the token. Issuers name their keys
    /// only through this: an issuer's author cannot point it at another issuer's key.
    pub fn key_label(&self) -> String {
        match self {
            IssuerRef::Namespaced(ns, name) => format!("trellis-issuer.{ns}.{name}"),
            IssuerRef::Cluster(name) => format!("trellis-clusterissuer.{name}"),
        }
    }
}

impl std::fmt::Display for IssuerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IssuerRef::Namespaced(ns, name) => write!(f, "{ISSUER} {ns}/{name}"),
            IssuerRef::Cluster(name) => write!(f, "{CLUSTER_ISSUER} {name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signer_names_round_trip_and_others_are_not_ours() {
        for r in [
            IssuerRef::Namespaced("shop".into(), "ca.v2".into()),
            IssuerRef::Cluster("root".into()),
        ] {
            assert_eq!(IssuerRef::from_signer_name(&r.signer_name()), Some(r));
        }
        for other in [
            "kubernetes.io/kube-apiserver-client",
            "trellis.io/",
            "trellis.io/shop",
            "trellis.io/.ca",
            "trellis.io/shop.",
            "clusterissuers.trellis.io/",
            "clusterissuers.trellis.io/a/b",
            "tcsissuer.tcs.intel.com/shop.ca",
        ] {
            assert_eq!(IssuerRef::from_signer_name(other), None, "{other}");
        }
        assert_eq!(
            IssuerRef::from_issuer_ref("shop", "trellis.io", "TrellisIssuer", "ca"),
            Some(IssuerRef::Namespaced("shop".into(), "ca".into()))
        );
        assert_eq!(
            IssuerRef::from_issuer_ref("shop", "cert-manager.io", "Issuer", "ca"),
            None
        );
        assert_ne!(
            IssuerRef::Namespaced("a".into(), "b".into()).key_label(),
            IssuerRef::Cluster("a.b".into()).key_label()
        );
    }
}
