//! `trellis ca`: the certificate authority service, and `trellis ca token` to mint a
//! bootstrap token for one workload identity.

use clap::{Args, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use trellis_ca::authority::HARD_MAX_TTL;
use trellis_ca::{Authority, CaService, TokenIssuer};
use trellis_tls::SpiffeId;

#[derive(Args)]
pub struct CaArgs {
    #[command(subcommand)]
    action: Option<CaAction>,
    #[command(flatten)]
    pub options: CaOptions,
}

/// The CA's settings, shared by `trellis ca` and the CA embedded in `trellis control`.
#[derive(Args, Clone)]
pub struct CaOptions {
    /// Where the CA keeps its root (generated on first start) and token secret.
    #[arg(long, default_value = "/var/lib/trellis/ca")]
    state_dir: PathBuf,
    /// gRPC (TLS) listen address for the certificate API.
    #[arg(long, alias = "ca-listen", default_value = "127.0.0.1:15012")]
    pub listen: SocketAddr,
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
    /// Names (DNS or IP) in the CA's serving certificate; clients verify one of them.
    #[arg(long = "server-name", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()])]
    server_names: Vec<String>,
    /// Sign with an existing root or intermediate instead of a generated root: the
    /// certificate (followed by its chain) ...
    #[arg(long, requires = "signing_key")]
    signing_cert: Option<PathBuf>,
    /// ... its private key ...
    #[arg(long, requires = "signing_cert")]
    signing_key: Option<PathBuf>,
    /// ... and the root, when the chain in --signing-cert does not end with it.
    #[arg(long, requires = "signing_cert")]
    root_cert: Option<PathBuf>,
    /// Longest workload certificate issued (Istio: 24h; at most 90 days).
    #[arg(long, default_value = "24h", value_parser = crate::parse_duration)]
    max_cert_ttl: Duration,
    /// Kubernetes API server for TokenReview of ServiceAccount tokens.
    #[arg(long)]
    kube_api: Option<String>,
    /// The CA's own token for calling the API server.
    #[arg(long, requires = "kube_api")]
    kube_token_file: Option<PathBuf>,
    /// Roots for an https API server.
    #[arg(long, requires = "kube_api")]
    kube_ca_file: Option<PathBuf>,
    /// Write the bound address and the root certificate here as JSON once serving.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum CaAction {
    /// Print a bootstrap token that lets one workload identity get its certificate.
    Token {
        /// `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`
        #[arg(long)]
        identity: String,
        #[arg(long, default_value = "1h", value_parser = crate::parse_duration)]
        ttl: Duration,
    },
}

pub fn run(args: CaArgs) -> anyhow::Result<()> {
    let opts = args.options;
    if let Some(CaAction::Token { identity, ttl }) = &args.action {
        let id = SpiffeId::parse(identity).map_err(|e| anyhow::anyhow!("--identity {e}"))?;
        let issuer = TokenIssuer::load_or_create(&opts.state_dir)?;
        println!("{}", issuer.issue(&id, *ttl));
        return Ok(());
    }
    let ca = Ca::build(&opts)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let root_pem = ca.root_pem.clone();
        let (bound, serve) = ca.bind(opts.listen, None).await?;
        tracing::info!(address = %bound, trust_domain = %opts.trust_domain, "trellis ca serving");
        if let Some(path) = &opts.ready_file {
            let doc = serde_json::json!({ "address": bound.to_string(), "root_pem": root_pem });
            crate::write_atomically(path, doc.to_string().as_bytes())?;
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = serve => r,
            _ = tokio::signal::ctrl_c() => Ok(()),
            _ = term.recv() => Ok(()),
        }
    })
}

/// A CA ready to serve.
pub struct Ca {
    tls: trellis_tls::ServerTls,
    service: CaService,
    pub root_pem: String,
}

impl Ca {
    pub fn build(opts: &CaOptions) -> anyhow::Result<Ca> {
        if opts.max_cert_ttl.is_zero() || opts.max_cert_ttl > HARD_MAX_TTL {
            anyhow::bail!(
                "--max-cert-ttl {:?} must be above 0 and at most 90 days",
                opts.max_cert_ttl
            );
        }
        let mut authority = match (&opts.signing_cert, &opts.signing_key) {
            (Some(cert), Some(key)) => {
                Authority::from_files(cert, key, opts.root_cert.as_deref(), &opts.trust_domain)?
            }
            _ => Authority::load_or_create(&opts.state_dir, &opts.trust_domain)?,
        };
        authority.max_ttl = opts.max_cert_ttl;
        let tokens = TokenIssuer::load_or_create(&opts.state_dir)?;
        let kube = match &opts.kube_api {
            Some(api) => {
                let bearer = match &opts.kube_token_file {
                    Some(f) => std::fs::read_to_string(f)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?
                        .trim()
                        .to_string(),
                    None => String::new(),
                };
                let ca = opts.kube_ca_file.as_ref().map(|p| p.display().to_string());
                Some(Arc::new(trellis_ca::kube::TokenReviewer::new(
                    api,
                    bearer,
                    ca.as_deref(),
                    &opts.trust_domain,
                )?))
            }
            None => None,
        };
        let tls = trellis_ca::server::serving_tls(&authority, &opts.server_names)?;
        let root_pem = authority.root_pem();
        Ok(Ca {
            tls,
            service: CaService {
                authority: Arc::new(authority),
                tokens: Arc::new(tokens),
                kube,
                counters: Default::default(),
            },
            root_pem,
        })
    }

    /// Binds `listen` and returns the bound address and the serving future; with `ads`,
    /// the same TLS port also serves xDS (as istiod's 15012 does).
    pub async fn bind(
        self,
        listen: SocketAddr,
        ads: Option<trellis_xds::AdsServer>,
    ) -> anyhow::Result<(
        SocketAddr,
        impl std::future::Future<Output = anyhow::Result<()>>,
    )> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("--listen {listen}: {e}"))?;
        let bound = listener.local_addr()?;
        Ok((bound, async move {
            let mut routes = tonic::service::Routes::new(
                trellis_ca::proto::istio_certificate_service_server::IstioCertificateServiceServer::new(
                    self.service,
                ),
            );
            if let Some(ads) = ads {
                routes = routes.add_service(ads.into_service());
            }
            trellis_ca::server::serve_routes(listener, self.tls, routes).await
        }))
    }
}
