//! Tenants (`trellis.io/v1alpha1` Tenant, cluster-scoped): a set of namespaces with a
//! CA of its own, a trust domain, and the tenants it federates with. What a sidecar
//! trusts follows from it: the roots of its own tenant and of the tenants federated in
//! the direction of the traffic, nothing else; so without a federation, traffic between
//! tenants fails the TLS handshake whatever the authorization policies say.
//!
//! Namespaces no Tenant claims belong to the tenant named `default`: the control
//! plane's own CA and trust domain.
//!
//! The loader checks the documents (each here, across them in `validate.rs`); the
//! control plane resolves each tenant's CA (its roots) and hands the result to
//! generation as [`Trust`].

use crate::dns1123_label as dns_label;
use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::mesh_config::valid_trust_domain;
use trellis_config::TrustBundle;

/// The name of the tenant of namespaces no Tenant claims.
pub const DEFAULT_TENANT: &str = "default";

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Tenant {
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Namespaces by label (Kubernetes mode: the cluster's Namespace objects); a
    /// namespace listed by a tenant in `namespaces` is that tenant's whatever its labels.
    #[serde(default)]
    pub namespace_selector: Option<NamespaceSelector>,
    /// The namespaces `namespaceSelector` selected when the inputs were read.
    #[serde(skip)]
    pub selected: Vec<String>,
    #[serde(default)]
    pub trust_domain: String,
    /// Istio's `trustDomainAliases`: authorization policies naming these trust domains
    /// (or `cluster.local`) mean this tenant's (a trust domain migration).
    #[serde(default)]
    pub trust_domain_aliases: Vec<String>,
    /// Istio's `CERT_SIGNER` (proxy metadata) of this tenant's workloads: a certificate
    /// request naming another signer is refused.
    #[serde(default)]
    pub cert_signer: Option<String>,
    /// The CA that signs the tenant's workload certificates. Default: a root generated
    /// on first use, `generated: root`.
    #[serde(default)]
    pub ca: TenantCa,
    /// Roots still trusted for the tenant's identities (a rotation's overlap: the
    /// previous CA's root, until every certificate it signed has expired).
    #[serde(default)]
    pub previous_roots: Vec<TenantRoot>,
    #[serde(default)]
    pub federation: Vec<Federation>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceSelector {
    #[serde(default)]
    pub match_labels: crate::istio::Labels,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TenantCa {
    /// A self-signed root the control plane generates and keeps under this name in its
    /// state directory (a new name is a new root: that is how a root rotates).
    #[serde(default)]
    pub generated: Option<String>,
    /// The signing certificate (a root, or an intermediate followed by its chain).
    #[serde(default)]
    pub cert_file: Option<String>,
    /// Its key: a PEM file, or a `pkcs11:` URI of a key in a token (with `generated`,
    /// or alone: the generated root's key, made in the token).
    #[serde(default)]
    pub key_file: Option<String>,
    /// The root, when `certFile`'s chain does not end with it.
    #[serde(default)]
    pub root_file: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TenantRoot {
    /// The root of an earlier `ca.generated` of this tenant.
    #[serde(default)]
    pub generated: Option<String>,
    #[serde(default)]
    pub root_file: Option<String>,
    #[serde(default)]
    pub pem: Option<String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Federation {
    pub tenant: String,
    /// `Outbound`: this tenant's workloads call the other's; `Inbound`: the other's
    /// call this one's; `Both`.
    pub direction: Direction,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub enum Direction {
    Outbound,
    Inbound,
    Both,
}

impl Tenant {
    /// Its namespaces: those listed, then those its selector selected.
    pub fn all_namespaces(&self) -> impl Iterator<Item = &String> + Clone {
        self.namespaces.iter().chain(&self.selected)
    }
}

impl TenantCa {
    /// The generated root's name, when the CA is a generated one.
    pub fn generated_name(&self) -> Option<&str> {
        match (&self.generated, &self.cert_file) {
            (Some(n), _) => Some(n),
            (None, None) => Some("root"),
            (None, Some(_)) => None,
        }
    }
}

fn root_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !s.starts_with('.')
}

/// The checks of one document.
pub(crate) fn validate(t: &Tenant) -> Vec<String> {
    let mut errors = Vec::new();
    if !valid_trust_domain(&t.trust_domain) {
        errors.push(format!(
            "spec.trustDomain: {:?} is not a trust domain (lowercase letters, digits, '.', '-', '_')",
            t.trust_domain
        ));
    }
    for (i, a) in t.trust_domain_aliases.iter().enumerate() {
        if !valid_trust_domain(a) {
            errors.push(format!(
                "spec.trustDomainAliases[{i}]: {a:?} is not a trust domain"
            ));
        }
    }
    if t.namespaces.is_empty() && t.namespace_selector.is_none() {
        errors.push(
            "spec.namespaces: a tenant needs at least one namespace (or a namespaceSelector)"
                .into(),
        );
    }
    if t.namespace_selector
        .as_ref()
        .is_some_and(|s| s.match_labels.is_empty())
    {
        errors.push(
            "spec.namespaceSelector.matchLabels: empty (it would select every namespace)".into(),
        );
    }
    let mut seen = BTreeSet::new();
    for (i, ns) in t.namespaces.iter().enumerate() {
        if !dns_label(ns) {
            errors.push(format!(
                "spec.namespaces[{i}]: {ns:?} is not a namespace name"
            ));
        } else if !seen.insert(ns) {
            errors.push(format!("spec.namespaces[{i}]: {ns:?} is listed twice"));
        }
    }
    let ca = &t.ca;
    match (&ca.generated, &ca.cert_file, &ca.key_file) {
        (Some(_), Some(_), _) => {
            errors.push("spec.ca: give generated or certFile and keyFile, not both".into())
        }
        (Some(n), None, _) if !root_name(n) => errors.push(format!(
            "spec.ca.generated: {n:?} is not a name (letters, digits, '-', '_', '.')"
        )),
        (_, Some(_), None) => errors.push("spec.ca.keyFile: required with certFile".into()),
        (_, None, Some(k)) if !k.starts_with("pkcs11:") => errors.push(
            "spec.ca.certFile: required with keyFile (a generated root's key may be a pkcs11: URI)"
                .into(),
        ),
        _ => {}
    }
    if ca.root_file.is_some() && ca.cert_file.is_none() {
        errors.push("spec.ca.rootFile: only with certFile".into());
    }
    for (i, r) in t.previous_roots.iter().enumerate() {
        let given = [
            r.generated.is_some(),
            r.root_file.is_some(),
            r.pem.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            errors.push(format!(
                "spec.previousRoots[{i}]: give exactly one of generated, rootFile, pem"
            ));
        }
        if let Some(n) = &r.generated {
            if !root_name(n) {
                errors.push(format!(
                    "spec.previousRoots[{i}].generated: {n:?} is not a name"
                ));
            } else if ca.generated_name() == Some(n.as_str()) {
                errors.push(format!(
                    "spec.previousRoots[{i}].generated: {n:?} is the current CA"
                ));
            }
        }
    }
    let mut federated = BTreeSet::new();
    for (i, f) in t.federation.iter().enumerate() {
        if f.tenant.is_empty() {
            errors.push(format!("spec.federation[{i}].tenant: required"));
        } else if !federated.insert(&f.tenant) {
            errors.push(format!(
                "spec.federation[{i}].tenant: {:?} is listed twice",
                f.tenant
            ));
        }
    }
    errors
}

/// One tenant as generation needs it: its trust domain, its namespaces, its roots
/// (PEM, the current CA's and the previous ones) and whom it calls and is called by.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TenantTrust {
    pub name: String,
    pub trust_domain: String,
    pub aliases: Vec<String>,
    /// Istio's `CERT_SIGNER` of its workloads.
    pub cert_signer: Option<String>,
    pub roots_pem: String,
    /// Roots of trust domains outside the mesh (meshConfig `caCertificates` with
    /// `trustDomains`), trusted both ways: PEM by trust domain.
    pub external: BTreeMap<String, String>,
    pub calls: BTreeSet<String>,
    pub called_by: BTreeSet<String>,
}

/// Every tenant's trust, resolved by the control plane: what each sidecar trusts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Trust {
    pub tenants: BTreeMap<String, TenantTrust>,
    pub by_namespace: BTreeMap<String, String>,
}

impl Trust {
    /// `default_tenant`: the trust domain and roots of the control plane's own CA;
    /// `roots`: each tenant's roots (PEM), as the control plane resolved them.
    /// `tenants`: (name, spec) of every accepted tenant; `mesh`: Istio's meshConfig
    /// (the default tenant's aliases and signer, and `caCertificates`, see
    /// [`crate::mesh_config`]).
    pub fn new<'t>(
        tenants: impl IntoIterator<Item = (&'t str, &'t Tenant)> + Clone,
        default_tenant: (&str, &str),
        roots: &BTreeMap<String, String>,
        mesh: Option<&crate::mesh_config::MeshConfig>,
    ) -> Trust {
        let mut trust = Trust::default();
        trust.tenants.insert(
            DEFAULT_TENANT.into(),
            TenantTrust {
                name: DEFAULT_TENANT.into(),
                trust_domain: default_tenant.0.into(),
                aliases: mesh
                    .map(|m| m.trust_domain_aliases.clone())
                    .unwrap_or_default(),
                cert_signer: mesh.and_then(|m| m.cert_signer()).map(str::to_string),
                roots_pem: default_tenant.1.into(),
                ..Default::default()
            },
        );
        for (name, spec) in tenants.clone() {
            for ns in spec.all_namespaces() {
                trust.by_namespace.insert(ns.clone(), name.to_string());
            }
            trust.tenants.insert(
                name.to_string(),
                TenantTrust {
                    name: name.to_string(),
                    trust_domain: spec.trust_domain.clone(),
                    aliases: spec.trust_domain_aliases.clone(),
                    cert_signer: spec.cert_signer.clone(),
                    roots_pem: roots.get(name).cloned().unwrap_or_default(),
                    ..Default::default()
                },
            );
        }
        for (name, spec) in tenants {
            for f in &spec.federation {
                if !trust.tenants.contains_key(&f.tenant) {
                    continue;
                }
                let (out, inb) = match f.direction {
                    Direction::Outbound => (true, false),
                    Direction::Inbound => (false, true),
                    Direction::Both => (true, true),
                };
                let mut link = |from: &str, to: &str| {
                    if let Some(x) = trust.tenants.get_mut(from) {
                        x.calls.insert(to.to_string());
                    }
                    if let Some(x) = trust.tenants.get_mut(to) {
                        x.called_by.insert(from.to_string());
                    }
                };
                if out {
                    link(name, &f.tenant);
                }
                if inb {
                    link(&f.tenant, name);
                }
            }
        }
        for entry in mesh.iter().flat_map(|m| &m.ca_certificates) {
            let Some(pem) = &entry.pem else {
                continue;
            };
            for t in trust.tenants.values_mut() {
                let picked = entry.cert_signers.is_empty()
                    || t.cert_signer
                        .as_ref()
                        .is_some_and(|s| entry.cert_signers.contains(s));
                if !picked {
                    continue;
                }
                if entry.trust_domains.is_empty() {
                    push_pem(&mut t.roots_pem, pem);
                } else {
                    for td in &entry.trust_domains {
                        push_pem(t.external.entry(td.clone()).or_default(), pem);
                    }
                }
            }
        }
        trust
    }

    pub fn tenant_of(&self, namespace: &str) -> &TenantTrust {
        let name = self
            .by_namespace
            .get(namespace)
            .map(String::as_str)
            .unwrap_or(DEFAULT_TENANT);
        &self.tenants[name]
    }

    pub fn spiffe_id(&self, namespace: &str, service_account: &str) -> String {
        format!(
            "spiffe://{}/ns/{namespace}/sa/{service_account}",
            self.tenant_of(namespace).trust_domain
        )
    }

    fn bundles<'a>(
        &'a self,
        own: &'a TenantTrust,
        others: &'a BTreeSet<String>,
    ) -> Vec<TrustBundle> {
        std::iter::once(own)
            .chain(others.iter().filter_map(|o| self.tenants.get(o)))
            .map(|t| TrustBundle {
                trust_domain: t.trust_domain.clone(),
                roots: t.roots_pem.clone(),
            })
            .chain(own.external.iter().map(|(td, pem)| TrustBundle {
                trust_domain: td.clone(),
                roots: pem.clone(),
            }))
            .collect()
    }

    /// What a sidecar in `namespace` accepts client certificates from: its tenant, and
    /// the tenants federated to call it.
    pub fn inbound_bundles(&self, namespace: &str) -> Vec<TrustBundle> {
        let own = self.tenant_of(namespace);
        self.bundles(own, &own.called_by)
    }

    /// What a sidecar in `namespace` accepts server certificates from: its tenant, and
    /// the tenants it is federated to call.
    pub fn outbound_bundles(&self, namespace: &str) -> Vec<TrustBundle> {
        let own = self.tenant_of(namespace);
        self.bundles(own, &own.calls)
    }
}

fn push_pem(to: &mut String, pem: &str) {
    if !to.is_empty() && !to.ends_with('\n') {
        to.push('\n');
    }
    to.push_str(pem);
}
