//! Several CAs in one: a tenant per set of namespaces, each with its own authority and
//! trust domain. The tenant that signs is the one of the namespace the caller
//! authenticated as, never one the CSR names; a CSR naming anything but the identity
//! the caller gets is refused.
//!
//! The control plane resolves the tenants from its inputs and installs them with
//! [`crate::TenancyHandle::set`].

use crate::authority::Authority;
use boring::x509::X509;
use std::collections::HashMap;
use std::sync::Arc;
use trellis_tls::TrustDomainRoots;

/// One tenant's CA: signs with `authority`; `roots` are what its identities may chain
/// to (the authority's root first, then roots kept through a rotation).
pub struct TenantCa {
    pub name: String,
    pub trust_domain: String,
    /// Istio's `CERT_SIGNER` of the tenant's workloads, when it names one.
    pub cert_signer: Option<String>,
    pub authority: Arc<Authority>,
    pub roots: Vec<X509>,
    pub namespaces: Vec<String>,
}

impl TenantCa {
    /// The authority as the tenant of every namespace no other tenant claims.
    pub fn default_for(authority: Arc<Authority>, extra_roots: &[X509]) -> TenantCa {
        let mut roots = vec![authority.root().clone()];
        roots.extend(extra_roots.iter().cloned());
        TenantCa {
            name: "default".into(),
            trust_domain: authority.trust_domain.clone(),
            cert_signer: None,
            authority,
            roots,
            namespaces: Vec::new(),
        }
    }

    pub fn roots_pem(&self) -> String {
        self.roots
            .iter()
            .filter_map(|r| r.to_pem().ok())
            .map(|p| String::from_utf8_lossy(&p).into_owned())
            .collect()
    }
}

/// The tenants the service signs for.
pub struct Tenancy {
    pub default: Arc<TenantCa>,
    pub tenants: Vec<Arc<TenantCa>>,
    by_namespace: HashMap<String, Arc<TenantCa>>,
}

impl Tenancy {
    pub fn new(default: Arc<TenantCa>, tenants: Vec<Arc<TenantCa>>) -> Tenancy {
        let mut by_namespace = HashMap::new();
        for t in &tenants {
            for ns in &t.namespaces {
                by_namespace.insert(ns.clone(), t.clone());
            }
        }
        Tenancy {
            default,
            tenants,
            by_namespace,
        }
    }

    pub fn tenant_for(&self, namespace: &str) -> &Arc<TenantCa> {
        self.by_namespace.get(namespace).unwrap_or(&self.default)
    }

    /// Every tenant, the default one first.
    pub fn all(&self) -> impl Iterator<Item = &Arc<TenantCa>> {
        std::iter::once(&self.default).chain(&self.tenants)
    }

    /// The tenant whose trust domain this is, if any.
    pub fn of_trust_domain(&self, domain: &str) -> Option<&Arc<TenantCa>> {
        self.all().find(|t| t.trust_domain == domain)
    }

    /// Every tenant's roots, bound to its trust domain.
    pub fn bundles(&self) -> Vec<TrustDomainRoots> {
        self.all()
            .map(|t| TrustDomainRoots {
                trust_domain: t.trust_domain.clone(),
                roots: t.roots.clone(),
            })
            .collect()
    }
}
