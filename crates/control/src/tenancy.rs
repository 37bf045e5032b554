//! The tenants' CAs: each accepted Tenant's CA is opened (or its root generated) once
//! per version of its spec, checked (every certificate within its validity), and
//! installed in the embedded CA; generation gets every tenant's roots as
//! [`trellis_mesh::tenant::Trust`]. A tenant whose CA cannot be resolved is refused
//! with the field at fault, and its previous version keeps serving.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use boring::x509::X509;
use trellis_ca::tenancy::TenantCa;
use trellis_ca::Authority;
use trellis_ca::TenancyHandle;
use trellis_mesh::tenant::{Tenant, Trust};
use trellis_mesh::{Diagnostic, Inputs, Resource};

/// One tenant as the status shows it.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct TenantStatus {
    pub name: String,
    pub trust_domain: String,
    pub aliases: Vec<String>,
    pub cert_signer: Option<String>,
    pub namespaces: Vec<String>,
    pub roots: Vec<RootStatus>,
    /// Trust domains outside the mesh its sidecars trust (meshConfig caCertificates).
    pub external_trust_domains: Vec<String>,
    /// Tenants whose workloads this one's may call, and that may call this one's.
    pub calls: Vec<String>,
    pub called_by: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct RootStatus {
    pub sha256: String,
    pub subject: String,
    /// Seconds since the Unix epoch.
    pub not_after: i64,
    /// Whether it signs now (the others are kept through a rotation).
    pub signing: bool,
}

#[derive(Default)]
pub struct Tenants {
    ca: Option<TenancyHandle>,
    /// `--check`: no CA runs; a tenant's given CA files are still opened and checked.
    pub(crate) checking: std::sync::atomic::AtomicBool,
    /// Per tenant: the spec its CA was resolved for, and the CA.
    resolved: Mutex<HashMap<String, (Tenant, Arc<TenantCa>)>>,
    /// What the CA signs with now, by tenant name (to install only on a change).
    installed: Mutex<Vec<(String, usize)>>,
}

impl Tenants {
    pub fn new(ca: Option<TenancyHandle>) -> Tenants {
        Tenants {
            ca,
            ..Default::default()
        }
    }

    /// Opens the CA of every tenant whose spec is new; a tenant that fails is taken
    /// out of `inputs` and refused (so that its previous version, if any, keeps
    /// serving).
    pub fn resolve(&self, inputs: &mut Inputs, refused: &mut Vec<Diagnostic>) {
        let mut resolved = self.resolved.lock().unwrap();
        let default_domain = self
            .ca
            .as_ref()
            .map(|c| c.current().default.trust_domain.clone());
        inputs.tenants.retain(|t| {
            if resolved.get(&t.name).is_some_and(|(spec, _)| *spec == t.spec) {
                return true;
            }
            let result = match (&self.ca, &default_domain) {
                (Some(_), Some(default)) if *default == t.spec.trust_domain => Err(format!(
                    "spec.trustDomain: {default:?} is the control plane's own (the default tenant's)"
                )),
                (Some(ca), _) => {
                    open(t, ca.state_dir(), ca.current().default.authority.max_ttl).map(Some)
                }
                _ if self.checking.load(std::sync::atomic::Ordering::Relaxed) => {
                    check_files(t).map(|()| None)
                }
                _ => Err(
                    "tenants need the control plane's CA (trellis control without --no-ca)".into(),
                ),
            };
            match result {
                Ok(None) => true,
                Ok(Some(ca)) => {
                    tracing::info!(tenant = %t.name, trust_domain = %t.spec.trust_domain, "tenant CA ready");
                    resolved.insert(t.name.clone(), (t.spec.clone(), Arc::new(ca)));
                    true
                }
                Err(message) => {
                    refused.push(Diagnostic {
                        resource: t.source.clone(),
                        message,
                        key: Some(("Tenant".into(), t.namespace.clone(), t.name.clone())),
                    });
                    false
                }
            }
        });
        drop(resolved);
        let tenant_domains: Vec<String> = inputs
            .tenants
            .iter()
            .map(|t| t.spec.trust_domain.clone())
            .chain(default_domain.clone())
            .collect();
        inputs.mesh_config.retain(|m| {
            match check_mesh_config(&m.spec, default_domain.as_deref(), &tenant_domains) {
                Ok(()) => true,
                Err(message) => {
                    refused.push(Diagnostic {
                        resource: m.source.clone(),
                        message,
                        key: Some(("MeshConfig".into(), m.namespace.clone(), m.name.clone())),
                    });
                    false
                }
            }
        });
    }

    /// After the previous versions were carried over: installs the tenants in the CA
    /// (when they changed) and gives generation their trust.
    pub fn install(&self, inputs: &mut Inputs) -> Result<Vec<TenantStatus>, String> {
        let Some(ca) = &self.ca else {
            inputs.trust = None;
            return Ok(Vec::new());
        };
        let resolved = self.resolved.lock().unwrap();
        let mut cas = Vec::new();
        for t in &inputs.tenants {
            // The resolved entry may be of a newer, refused spec's predecessor: the
            // carried resource's spec is the one resolved earlier.
            let Some((_, tenant_ca)) = resolved.get(&t.name) else {
                return Err(format!("tenant {:?} has no CA", t.name));
            };
            let mut with_namespaces = TenantCa {
                name: tenant_ca.name.clone(),
                trust_domain: tenant_ca.trust_domain.clone(),
                cert_signer: t.spec.cert_signer.clone(),
                authority: tenant_ca.authority.clone(),
                roots: tenant_ca.roots.clone(),
                namespaces: t.spec.all_namespaces().cloned().collect(),
            };
            with_namespaces.namespaces.sort();
            cas.push(Arc::new(with_namespaces));
        }
        let mesh = inputs.mesh_config.first().map(|m| &m.spec);
        let default_signer = mesh.and_then(|m| m.cert_signer()).map(str::to_string);
        let mut key: Vec<(String, usize)> = cas
            .iter()
            .map(|c| {
                (
                    format!("{}:{}:{:?}", c.name, c.namespaces.join(","), c.cert_signer),
                    Arc::as_ptr(&c.authority) as usize,
                )
            })
            .collect();
        key.push((format!("default:{default_signer:?}"), 0));
        let mut installed = self.installed.lock().unwrap();
        if *installed != key {
            ca.set(default_signer, cas.clone())
                .map_err(|e| format!("tenants: {e:#}"))?;
            *installed = key;
        }
        let tenancy = ca.current();
        if inputs.tenants.is_empty() && mesh.is_none() {
            inputs.trust = None;
            return Ok(Vec::new());
        }
        let roots: BTreeMap<String, String> = tenancy
            .tenants
            .iter()
            .map(|t| (t.name.clone(), t.roots_pem()))
            .collect();
        let default = &tenancy.default;
        let trust = Trust::new(
            inputs.tenants.iter().map(|t| (t.name.as_str(), &t.spec)),
            (&default.trust_domain, &default.roots_pem()),
            &roots,
            mesh,
        );
        let status = tenancy
            .all()
            .map(|t| {
                let tt = &trust.tenants[&t.name];
                TenantStatus {
                    name: t.name.clone(),
                    trust_domain: t.trust_domain.clone(),
                    aliases: tt.aliases.clone(),
                    cert_signer: tt.cert_signer.clone(),
                    namespaces: t.namespaces.clone(),
                    external_trust_domains: tt.external.keys().cloned().collect(),
                    roots: t
                        .roots
                        .iter()
                        .enumerate()
                        .map(|(i, r)| root_status(r, i == 0))
                        .collect(),
                    calls: tt.calls.iter().cloned().collect(),
                    called_by: tt.called_by.iter().cloned().collect(),
                }
            })
            .collect();
        inputs.trust = Some(Arc::new(trust));
        Ok(status)
    }
}

fn root_status(r: &X509, signing: bool) -> RootStatus {
    RootStatus {
        sha256: trellis_tls::fingerprint_hex(r),
        subject: subject(r),
        not_after: trellis_ca::authority::asn1_unix(r.not_after()),
        signing,
    }
}

/// The tenant's CA: a generated root (`<state>/tenants/<tenant>/<name>/`, its key in a
/// token with `keyFile: pkcs11:...`) or the given certificate and key; then the roots
/// kept from earlier CAs. Every certificate must be valid now. Certificates live at
/// most `max_ttl`, as the default tenant's.
fn open(
    t: &Resource<Tenant>,
    state_dir: &Path,
    max_ttl: std::time::Duration,
) -> Result<TenantCa, String> {
    let spec = &t.spec;
    let td = &spec.trust_domain;
    let dir = state_dir.join("tenants").join(&t.name);
    let mut authority = match spec.ca.generated_name() {
        Some(name) => {
            let authority = match &spec.ca.key_file {
                Some(uri) => Authority::load_or_create_in_token(&dir.join(name), td, uri),
                None => Authority::load_or_create(&dir.join(name), td),
            }
            .map_err(|e| format!("spec.ca.generated: {name:?}: {e:#}"))?;
            valid_chain(&authority, "spec.ca.generated")?;
            authority
        }
        None => given_ca(spec)?,
    };
    // The mesh's cap on workload certificates holds for every tenant.
    authority.max_ttl = max_ttl;
    let mut roots = vec![authority.root().clone()];
    for (i, r) in spec.previous_roots.iter().enumerate() {
        let (field, certs) = if let Some(name) = &r.generated {
            let path = dir.join(name).join("root-cert.pem");
            let field = format!("spec.previousRoots[{i}].generated");
            let pem = std::fs::read(&path).map_err(|_| {
                format!(
                    "{field}: no root {name:?} was generated for tenant {:?}",
                    t.name
                )
            })?;
            (field, pem)
        } else if let Some(file) = &r.root_file {
            let field = format!("spec.previousRoots[{i}].rootFile");
            let pem = std::fs::read(file).map_err(|e| format!("{field}: {file}: {e}"))?;
            (field, pem)
        } else {
            let pem = r.pem.clone().unwrap_or_default().into_bytes();
            (format!("spec.previousRoots[{i}].pem"), pem)
        };
        let parsed = X509::stack_from_pem(&certs)
            .ok()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| format!("{field}: no PEM certificate"))?;
        for c in parsed {
            valid_now(&c).map_err(|e| format!("{field}: {e}"))?;
            roots.push(c);
        }
    }
    Ok(TenantCa {
        name: t.name.clone(),
        trust_domain: td.clone(),
        cert_signer: spec.cert_signer.clone(),
        authority: Arc::new(authority),
        roots,
        namespaces: spec.all_namespaces().cloned().collect(),
    })
}

/// `--check`: a given CA is opened and its certificates checked; a generated one is
/// made by the serving control plane only.
fn check_files(t: &Resource<Tenant>) -> Result<(), String> {
    if t.spec.ca.cert_file.is_some() {
        given_ca(&t.spec)?;
    }
    Ok(())
}

/// The CA `certFile`, `keyFile` and `rootFile` give, every certificate valid now.
fn given_ca(spec: &Tenant) -> Result<Authority, String> {
    let authority = Authority::from_files(
        Path::new(spec.ca.cert_file.as_deref().unwrap_or_default()),
        spec.ca.key_file.as_deref().unwrap_or_default(),
        spec.ca.root_file.as_deref().map(Path::new),
        &spec.trust_domain,
    )
    .map_err(|e| format!("spec.ca: {e:#}"))?;
    valid_chain(&authority, "spec.ca.certFile")?;
    Ok(authority)
}

fn valid_chain(authority: &Authority, field: &str) -> Result<(), String> {
    for c in authority.chain() {
        valid_now(c).map_err(|e| format!("{field}: {e}"))?;
    }
    Ok(())
}

/// A certificate's subject as the status and refusals show it: its values, comma-joined.
fn subject(c: &X509) -> String {
    c.subject_name()
        .entries()
        .filter_map(|e| e.data().as_utf8().ok().map(|s| s.to_string()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Istio's meshConfig as the control plane can honour it: its trust domain is the
/// control plane's, and each `caCertificates` entry holds certificates valid now, for
/// trust domains outside the mesh (a tenant's roots come from its CA).
fn check_mesh_config(
    m: &trellis_mesh::mesh_config::MeshConfig,
    default_domain: Option<&str>,
    tenant_domains: &[String],
) -> Result<(), String> {
    if let (Some(td), Some(own)) = (&m.trust_domain, default_domain) {
        if td != own {
            return Err(format!(
                "trustDomain: {td:?}, but the control plane's CA issues in {own:?} (--trust-domain)"
            ));
        }
    }
    for (i, e) in m.ca_certificates.iter().enumerate() {
        let p = format!("caCertificates[{i}]");
        for (j, td) in e.trust_domains.iter().enumerate() {
            if tenant_domains.contains(td) {
                return Err(format!(
                    "{p}.trustDomains[{j}]: {td:?} is a tenant's trust domain; its roots come from its CA"
                ));
            }
        }
        let Some(pem) = &e.pem else { continue };
        let certs = X509::stack_from_pem(pem.as_bytes())
            .ok()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| format!("{p}.pem: no PEM certificate could be read"))?;
        for c in certs {
            valid_now(&c).map_err(|e| format!("{p}.pem: {e}"))?;
        }
    }
    Ok(())
}

fn valid_now(c: &X509) -> Result<(), String> {
    let now = trellis_ca::authority::unix_now() as i64;
    let subject = subject(c);
    if trellis_ca::authority::asn1_unix(c.not_after()) <= now {
        return Err(format!(
            "certificate {subject:?} expired on {}",
            c.not_after()
        ));
    }
    if trellis_ca::authority::asn1_unix(c.not_before()) > now {
        return Err(format!(
            "certificate {subject:?} is not valid before {}",
            c.not_before()
        ));
    }
    Ok(())
}
