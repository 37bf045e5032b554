//! `trellis issuer`: the Trusted Certificate Service (TrellisIssuer and
//! TrellisClusterIssuer CAs with keys in PKCS#11 tokens, as the signer of Kubernetes
//! CertificateSigningRequests and as a cert-manager external issuer).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use trellis_issuer::attestation::TokenAttributes;
use trellis_pkcs11::Pkcs11Uri;

#[derive(Args)]
pub struct IssuerArgs {
    /// The cluster (default: the in-cluster configuration, or $KUBECONFIG / ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// A token issuers may keep their CA keys in, by the name their `spec.token` uses:
    /// `NAME=pkcs11:token=...?pin-source=file:...` (repeat for more tokens).
    #[arg(long = "token", value_name = "NAME=URI", required = true)]
    tokens: Vec<String>,
    /// The PKCS#11 module for token URIs without `module-path`.
    #[arg(long)]
    pkcs11_module: Option<String>,
}

pub fn run(args: IssuerArgs) -> anyhow::Result<()> {
    let mut uris = HashMap::new();
    for t in &args.tokens {
        let (name, uri) = t
            .split_once('=')
            .filter(|(n, _)| !n.is_empty())
            .ok_or_else(|| anyhow::anyhow!("--token {t:?}: expected NAME=pkcs11:..."))?;
        let parsed = Pkcs11Uri::parse(uri).map_err(|e| anyhow::anyhow!("--token {name}: {e}"))?;
        if uris.insert(name.to_string(), parsed).is_some() {
            anyhow::bail!("--token {name}: given twice");
        }
    }
    let options = trellis_issuer::Options {
        kubeconfig: args.kubeconfig,
        tokens: trellis_issuer::Tokens {
            uris,
            module: args.pkcs11_module,
        },
        attestation: Arc::new(TokenAttributes),
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                r = trellis_issuer::run(options) => r,
                _ = tokio::signal::ctrl_c() => Ok(()),
                _ = term.recv() => Ok(()),
            }
        })
}
