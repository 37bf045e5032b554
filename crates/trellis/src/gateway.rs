//! `trellis gateway`: a standalone proxy that is one of the mesh's gateways (Istio's
//! ingress or egress gateway deployment). It presents itself over xDS as node type
//! `router` under its workload's name, gets its certificate from the CA with a bootstrap
//! token, and listens on the ports of the Gateways whose selector matches its workload's
//! labels. Nothing is captured: clients connect to it.

use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct GatewayArgs {
    #[command(flatten)]
    workload: crate::workload_args::WorkloadArgs,
    /// The admin port (stats, config dump, readiness).
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin: String,
    /// Data-path worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Write the bound admin and listener addresses here as JSON once ready.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Use state-of-the-world ADS instead of delta (incremental) xDS.
    #[arg(long)]
    xds_sotw: bool,
    /// The CA signer to ask for (Istio's CERT_SIGNER, for a mesh with several CAs).
    #[arg(long)]
    cert_signer: Option<String>,
    /// Sign TLS handshakes with the gateway's key in batches on AVX-512 IFMA
    /// (CryptoMB), flushing a partial batch after this delay (Istio's default: 10ms).
    #[arg(long, value_parser = crate::parse_duration)]
    cryptomb_poll_delay: Option<Duration>,
}

pub fn run(args: GatewayArgs) -> anyhow::Result<()> {
    args.workload.check_files()?;
    // The proxy's own config is its admin port and identity; everything else comes
    // over xDS. JSON strings are YAML strings, so paths need no further quoting.
    let quote = |s: &str| serde_json::Value::from(s).to_string();
    let mut boot = format!(
        "admin: {{ address: {} }}\nidentity:\n  ca_address: {}\n  ca_root: {}\n  token_file: {}\n",
        quote(&args.admin),
        quote(&args.workload.control),
        quote(&args.workload.ca_root.display().to_string()),
        quote(&args.workload.token_file.display().to_string()),
    );
    if let Some(signer) = &args.cert_signer {
        boot += &format!("  cert_signer: {}\n", quote(signer));
    }
    if let Some(d) = args.cryptomb_poll_delay {
        boot += &format!(
            "  private_key_provider: {{ cryptomb: {{ poll_delay: {}us, fallback: false }} }}\n",
            d.as_micros().max(1)
        );
    }
    let dir = tempfile::Builder::new()
        .prefix("trellis-gateway-")
        .tempdir()?;
    let config = dir.path().join("bootstrap.yaml");
    std::fs::write(&config, boot)?;
    trellis_proxy::run(trellis_proxy::ProxyOptions {
        config,
        worker_threads: args.workers,
        ready_file: args.ready_file,
        watch_interval: Duration::from_secs(1),
        xds: Some(trellis_proxy::XdsOptions {
            node_id: args.workload.node_id("router"),
            address: args.workload.control,
            mode: if args.xds_sotw {
                trellis_xds::client::Mode::StateOfTheWorld
            } else {
                trellis_xds::client::Mode::Delta
            },
            tls: true,
        }),
    })
}
