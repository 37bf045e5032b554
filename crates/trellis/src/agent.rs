//! `trellis agent`: the node agent for a stock Envoy sidecar or gateway (Istio's
//! pilot-agent role). It gets the workload certificate from the CA with a bootstrap
//! token, serves it to the local Envoy over SDS on a Unix socket, carries Envoy's xDS to
//! the control plane over mutual TLS, and writes the Envoy bootstrap naming both:
//!
//! ```text
//! trellis agent --control 127.0.0.1:15012 --ca-root root.pem --token-file token \
//!     --name reviews-v1 --dir /var/run/trellis &
//! envoy -c /var/run/trellis/envoy.json
//! ```

use std::path::PathBuf;

#[derive(clap::Args)]
pub struct AgentArgs {
    /// The control plane's mutual-TLS port (`trellis control --ca-listen`): xDS and
    /// certificates.
    #[arg(long)]
    control: String,
    /// The mesh's root certificates (PEM), which the control plane is verified against.
    #[arg(long)]
    ca_root: PathBuf,
    /// A bootstrap token for the workload's identity (`trellis ca token`), or a
    /// Kubernetes ServiceAccount token.
    #[arg(long)]
    token_file: PathBuf,
    /// The workload as the control plane knows it (a WorkloadEntry or pod).
    #[arg(long)]
    name: String,
    #[arg(long, default_value = "default")]
    namespace: String,
    /// The workload's address, in its node id.
    #[arg(long, default_value = "127.0.0.1")]
    ip: String,
    /// The Envoy is a gateway (node type `router`), not a sidecar.
    #[arg(long)]
    router: bool,
    /// Where the sockets (`sds.sock`, `xds.sock`) go; keep it readable by Envoy's user
    /// only, since SDS hands out the workload key.
    #[arg(long, default_value = "./var/run/trellis")]
    dir: PathBuf,
    /// Where the Envoy bootstrap goes (default: `<dir>/envoy.json`).
    #[arg(long)]
    bootstrap: Option<PathBuf>,
    /// Envoy's admin listener, in the bootstrap.
    #[arg(long, default_value = "127.0.0.1:15000")]
    envoy_admin: String,
    /// State-of-the-world ADS in the bootstrap instead of delta (Istio's default).
    #[arg(long)]
    xds_sotw: bool,
    /// The CA signer to ask for (Istio's CERT_SIGNER).
    #[arg(long)]
    cert_signer: Option<String>,
    /// The workload key: `rsa` (RSA-2048, Istio's default) or `ecdsa` (P-256).
    #[arg(long, default_value = "rsa")]
    key_type: String,
}

pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    for (flag, path) in [
        ("--ca-root", &args.ca_root),
        ("--token-file", &args.token_file),
    ] {
        if !path.is_file() {
            anyhow::bail!("{flag} {}: no such file", path.display());
        }
    }
    let identity: trellis_config::Identity = serde_json::from_value(serde_json::json!({
        "ca_address": args.control,
        "ca_root": args.ca_root.display().to_string(),
        "token_file": args.token_file.display().to_string(),
        "cert_signer": args.cert_signer,
        "key_type": args.key_type,
    }))
    .map_err(|e| anyhow::anyhow!("--key-type {:?}: {e}", args.key_type))?;
    let kind = if args.router { "router" } else { "sidecar" };
    let node_id = format!(
        "{kind}~{}~{}.{ns}~{ns}.svc.cluster.local",
        args.ip,
        args.name,
        ns = args.namespace
    );
    let bootstrap = args
        .bootstrap
        .clone()
        .unwrap_or_else(|| args.dir.join("envoy.json"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let agent = trellis_agent::run(trellis_agent::AgentOptions {
            node_id,
            identity,
            xds: args.control,
            dir: args.dir,
            bootstrap,
            envoy_admin: args.envoy_admin,
            delta: !args.xds_sotw,
        });
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            r = agent => r.map_err(anyhow::Error::msg),
            _ = term.recv() => Ok(()),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}
