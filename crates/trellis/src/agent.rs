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
    #[command(flatten)]
    workload: crate::workload_args::WorkloadArgs,
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
    /// The certificate lifetime asked of the CA; renewed at half of it.
    #[arg(long, default_value = "24h")]
    cert_ttl: String,
}

pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    let w = &args.workload;
    w.check_files()?;
    let identity: trellis_config::Identity = serde_json::from_value(serde_json::json!({
        "ca_address": w.control,
        "ca_root": w.ca_root.display().to_string(),
        "token_file": w.token_file.display().to_string(),
        "cert_signer": args.cert_signer,
        "key_type": args.key_type,
        "cert_ttl": args.cert_ttl,
    }))
    .map_err(|e| {
        anyhow::anyhow!(
            "--key-type {:?} or --cert-ttl {:?}: {e}",
            args.key_type,
            args.cert_ttl
        )
    })?;
    let node_id = w.node_id(if args.router { "router" } else { "sidecar" });
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
            xds: args.workload.control,
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
