//! A CA ready to serve, built from its settings: the authority (a root generated on
//! first start and kept in the state directory, or a given root or intermediate), the
//! bootstrap-token issuer, Kubernetes TokenReview, and its serving TLS context.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::authority::HARD_MAX_TTL;
use crate::proto::istio_certificate_service_server::IstioCertificateServiceServer;
use crate::tenancy::{Tenancy, TenantCa};
use crate::{Authority, CaService, TokenIssuer};
use arc_swap::ArcSwap;
use trellis_tls::ServerTls;

/// The CA's settings (what `trellis ca` and `trellis control` take on the command line).
#[derive(Clone, Debug)]
pub struct CaConfig {
    /// Where the root (generated on first start), the token secret and token bindings live.
    pub state_dir: PathBuf,
    pub trust_domain: String,
    /// Names (DNS or IP) in the serving certificate; clients verify one of them.
    pub server_names: Vec<String>,
    /// Sign with an existing root or intermediate instead of a generated root.
    pub signing: Option<Signing>,
    /// Longest workload certificate issued (at most 90 days).
    pub max_cert_ttl: Duration,
    /// Authenticate Kubernetes ServiceAccount tokens with TokenReview.
    pub kube_review: Option<KubeReview>,
    /// RA mode: workload certificates from a Kubernetes signer (the caller connects
    /// the [`crate::ra::KubernetesRa`] and builds with [`Ca::build_with_ra`]).
    pub ra: Option<crate::ra::RaConfig>,
}

#[derive(Clone, Debug)]
pub struct Signing {
    /// The certificate, followed by its chain. None with a `pkcs11:` key: a root is
    /// generated for it on first start and kept in the state directory.
    pub cert: Option<PathBuf>,
    /// A PEM key file, or a `pkcs11:` URI of a key in a token (generated there on first
    /// start when the token has no such object and no certificate is given).
    pub key: String,
    /// The root, when the chain in `cert` does not end with it.
    pub root: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct KubeReview {
    /// The API server.
    pub api: String,
    /// The CA's own token for calling it.
    pub token_file: Option<PathBuf>,
    /// Roots for an https API server.
    pub ca_file: Option<PathBuf>,
}

pub struct Ca {
    tls: Arc<ArcSwap<trellis_tls::ServerTls>>,
    service: CaService,
    tenancy: TenancyHandle,
    pub root_pem: String,
}

impl Ca {
    pub fn build(config: &CaConfig) -> anyhow::Result<Ca> {
        Self::build_with_ra(config, None)
    }

    /// With `ra`, workload certificates come from a Kubernetes signer (RA mode): the
    /// CA's own root then only certifies its serving certificate, and the signer's
    /// roots are trusted for client certificates and added to the root bundle.
    pub fn build_with_ra(
        config: &CaConfig,
        ra: Option<crate::ra::KubernetesRa>,
    ) -> anyhow::Result<Ca> {
        if config.max_cert_ttl.is_zero() || config.max_cert_ttl > HARD_MAX_TTL {
            anyhow::bail!(
                "--max-cert-ttl {:?} must be above 0 and at most 90 days",
                config.max_cert_ttl
            );
        }
        let mut authority = match &config.signing {
            Some(Signing {
                cert: Some(cert),
                key,
                root,
            }) => Authority::from_files(cert, key, root.as_deref(), &config.trust_domain)?,
            Some(Signing {
                cert: None, key, ..
            }) if trellis_pkcs11::Pkcs11Uri::is_uri(key) => {
                Authority::load_or_create_in_token(&config.state_dir, &config.trust_domain, key)?
            }
            Some(Signing { cert: None, .. }) => anyhow::bail!(
                "--signing-key: a key file needs --signing-cert (a pkcs11: key does not)"
            ),
            None => Authority::load_or_create(&config.state_dir, &config.trust_domain)?,
        };
        authority.max_ttl = config.max_cert_ttl;
        let tokens = TokenIssuer::load_or_create(&config.state_dir)?;
        let kube = match &config.kube_review {
            Some(k) => {
                let bearer = match &k.token_file {
                    Some(f) => std::fs::read_to_string(f)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?
                        .trim()
                        .to_string(),
                    None => String::new(),
                };
                let ca = k.ca_file.as_ref().map(|p| p.display().to_string());
                Some(Arc::new(crate::kube::TokenReviewer::new(
                    &k.api,
                    bearer,
                    ca.as_deref(),
                    &config.trust_domain,
                )?))
            }
            None => None,
        };
        let signer_roots = ra.as_ref().map(|r| r.roots().to_vec()).unwrap_or_default();
        let tls = crate::server::serving_tls(&authority, &config.server_names, &signer_roots)?;
        let tls = Arc::new(ArcSwap::from_pointee(tls));
        let mut root_pem = authority.root_pem();
        for r in &signer_roots {
            root_pem.push_str(&crate::authority::pem(r)?);
        }
        let default = TenantCa::default_for(Arc::new(authority), &signer_roots);
        let tenancy = Arc::new(ArcSwap::from_pointee(Tenancy::new(
            Arc::new(default),
            Vec::new(),
        )));
        Ok(Ca {
            tls: tls.clone(),
            tenancy: TenancyHandle {
                tenancy: tenancy.clone(),
                tls,
                server_names: config.server_names.clone(),
                state_dir: config.state_dir.clone(),
            },
            service: CaService {
                tenancy,
                ra: ra.map(Arc::new),
                tokens: Arc::new(tokens),
                kube,
                counters: Default::default(),
            },
            root_pem,
        })
    }

    /// How the control plane changes the tenants this CA signs for.
    pub fn tenancy(&self) -> TenancyHandle {
        self.tenancy.clone()
    }

    /// The counters of the certificate API (issued, refused, cross-tenant).
    pub fn counters(&self) -> Arc<crate::CaCounters> {
        self.service.counters.clone()
    }

    /// The TLS context and the certificate API's gRPC routes, to which the caller may
    /// add services that share the port (xDS, as on istiod's 15012); serve them with
    /// [`crate::server::serve_routes`].
    pub fn into_routes(self) -> (Arc<ArcSwap<trellis_tls::ServerTls>>, tonic::service::Routes) {
        let routes = tonic::service::Routes::new(IstioCertificateServiceServer::new(self.service));
        (self.tls, routes)
    }
}

/// What the control plane holds to change the tenants of a running CA: the service
/// signs with the new map from its next request, and the serving TLS context (which
/// verifies renewing clients' certificates against each tenant's roots, bound to its
/// trust domain) is replaced for new connections.
#[derive(Clone)]
pub struct TenancyHandle {
    tenancy: Arc<ArcSwap<Tenancy>>,
    tls: Arc<ArcSwap<ServerTls>>,
    server_names: Vec<String>,
    state_dir: std::path::PathBuf,
}

impl TenancyHandle {
    /// Installs `tenants` beside the default one (the CA's own authority, whose
    /// workloads' `CERT_SIGNER` is `default_signer`).
    pub fn set(
        &self,
        default_signer: Option<String>,
        tenants: Vec<Arc<TenantCa>>,
    ) -> anyhow::Result<()> {
        let current = self.tenancy.load().default.clone();
        let default = Arc::new(TenantCa {
            name: current.name.clone(),
            trust_domain: current.trust_domain.clone(),
            cert_signer: default_signer,
            authority: current.authority.clone(),
            roots: current.roots.clone(),
            namespaces: Vec::new(),
        });
        let next = Tenancy::new(default.clone(), tenants);
        let tls = crate::server::serving_tls_bundles(
            &default.authority,
            &self.server_names,
            next.bundles(),
        )?;
        self.tenancy.store(Arc::new(next));
        self.tls.store(Arc::new(tls));
        Ok(())
    }

    pub fn current(&self) -> Arc<Tenancy> {
        self.tenancy.load_full()
    }

    /// Where tenants' generated roots live: `<state>/tenants/<tenant>/<root name>/`.
    pub fn state_dir(&self) -> &std::path::Path {
        &self.state_dir
    }
}
