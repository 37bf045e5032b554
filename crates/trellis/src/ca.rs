//! `trellis ca`: the certificate authority service, and `trellis ca token` to mint a
//! bootstrap token for one workload identity.

use clap::{Args, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use trellis_ca::{Ca, CaConfig, KubeReview, Signing, TokenIssuer};
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
    /// ... its private key: a PEM file, or a `pkcs11:` URI of a key in a token (with
    /// `pin-source=file:...` or `env:...`). A `pkcs11:` key without --signing-cert is the
    /// generated root's: made in the token on first start, its certificate kept in
    /// --state-dir ...
    #[arg(long)]
    signing_key: Option<String>,
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

impl CaOptions {
    /// The CA's settings for `trellis_ca::Ca::build`.
    pub fn config(&self) -> CaConfig {
        CaConfig {
            state_dir: self.state_dir.clone(),
            trust_domain: self.trust_domain.clone(),
            server_names: self.server_names.clone(),
            signing: self.signing_key.as_ref().map(|key| Signing {
                cert: self.signing_cert.clone(),
                key: key.clone(),
                root: self.root_cert.clone(),
            }),
            max_cert_ttl: self.max_cert_ttl,
            kube_review: self.kube_api.as_ref().map(|api| KubeReview {
                api: api.clone(),
                token_file: self.kube_token_file.clone(),
                ca_file: self.kube_ca_file.clone(),
            }),
            ra: None,
        }
    }
}

pub fn run(args: CaArgs) -> anyhow::Result<()> {
    let opts = args.options;
    if let Some(CaAction::Token { identity, ttl }) = &args.action {
        let id = SpiffeId::parse(identity).map_err(|e| anyhow::anyhow!("--identity {e}"))?;
        let issuer = TokenIssuer::load_or_create(&opts.state_dir)?;
        println!("{}", issuer.issue(&id, *ttl));
        return Ok(());
    }
    let ca = Ca::build(&opts.config()).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .map_err(|e| anyhow::anyhow!("--listen {}: {e}", opts.listen))?;
        let bound = listener.local_addr()?;
        let root_pem = ca.root_pem.clone();
        let (tls, routes) = ca.into_routes();
        tracing::info!(address = %bound, trust_domain = %opts.trust_domain, "trellis ca serving");
        if let Some(path) = &opts.ready_file {
            let doc = serde_json::json!({ "address": bound.to_string(), "root_pem": root_pem });
            crate::write_atomically(path, doc.to_string().as_bytes())?;
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = trellis_ca::server::serve_routes(listener, tls, routes) => r,
            _ = tokio::signal::ctrl_c() => Ok(()),
            _ = term.recv() => Ok(()),
        }
    })
}
