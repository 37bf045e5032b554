//! `trellis`: one binary for every Trellis role.

mod agent;
mod bypass;
mod ca;
mod control;
mod demo;
mod gateway;
mod init;
mod issuer;
mod net_probe;
mod up;
mod workload_args;

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "trellis", version, about = "The Trellis service mesh")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a whole mesh on this machine from a mesh file (control plane, CA, every
    /// workload with its sidecar, a client) with a live view; Ctrl-C stops it.
    Up(up::UpArgs),
    /// Run the control plane: xDS to the sidecars from Istio resources, plus the CA.
    Control(Box<control::ControlArgs>),
    /// Run the data-plane proxy (a workload's sidecar, or a standalone proxy).
    Proxy {
        /// YAML config file; edits are applied on save and on SIGHUP.
        #[arg(long, short)]
        config: PathBuf,
        /// Data-path worker threads (0 = one per core).
        #[arg(long, default_value_t = 0)]
        workers: usize,
        /// Write the bound admin and listener addresses here as JSON once ready.
        #[arg(long)]
        ready_file: Option<PathBuf>,
        /// How often to check the config file for changes.
        #[arg(long, default_value = "250ms", value_parser = parse_duration)]
        watch_interval: Duration,
        /// Also take listeners and clusters from this control plane (host:port of
        /// `trellis control`'s xDS port, or any Envoy v3 ADS server).
        #[arg(long)]
        xds: Option<String>,
        /// The node id this proxy presents over xDS (Istio's form:
        /// sidecar~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local).
        #[arg(long, requires = "xds")]
        node_id: Option<String>,
        /// Use state-of-the-world ADS instead of delta (incremental) xDS.
        #[arg(long, requires = "xds")]
        xds_sotw: bool,
        /// Connect to --xds with mutual TLS (the control plane's CA port), presenting the
        /// workload certificate from the identity section.
        #[arg(long, requires = "xds")]
        xds_tls: bool,
    },
    /// Run a gateway of the mesh (Istio's ingress/egress gateway): a proxy of node type
    /// `router` serving the Gateways that select its workload, configured over xDS.
    Gateway(gateway::GatewayArgs),
    /// The node agent for a stock Envoy sidecar or gateway (Istio's pilot-agent): the
    /// workload certificate over SDS on a local socket, xDS carried to the control plane
    /// over mutual TLS, and the Envoy bootstrap that names both.
    Agent(agent::AgentArgs),
    /// Run the demo upstream service (can be told to fail or delay).
    DemoApp {
        /// Address to listen on; repeat for several (IPv4 and IPv6).
        #[arg(long, required = true)]
        listen: Vec<SocketAddr>,
        /// Name reported in `x-served-by` and in responses.
        #[arg(long, default_value = "demo")]
        name: String,
        /// Fraction of requests (0..1) that fail with --fail-status.
        #[arg(long, default_value_t = 0.0)]
        fail_rate: f64,
        #[arg(long, default_value_t = 503)]
        fail_status: u16,
        /// Delay before every response, e.g. 50ms.
        #[arg(long, value_parser = parse_duration)]
        delay: Option<Duration>,
        /// Write the bound addresses here as JSON once listening.
        #[arg(long)]
        ready_file: Option<PathBuf>,
        /// Worker threads (0 = one per core).
        #[arg(long, default_value_t = 0)]
        workers: usize,
        /// Call this URL (e.g. `http://reviews:9080/reviews/1`) while answering each
        /// request, propagating its trace headers; repeat for several.
        #[arg(long = "call")]
        calls: Vec<http::Uri>,
        /// Send the calls through this HTTP proxy (the sidecar's outbound listener)
        /// instead of to the URLs' hosts.
        #[arg(long, requires = "calls")]
        via: Option<SocketAddr>,
    },
    /// A live demo: trellis proxy in front of demo services, with weighted routing,
    /// retries over a failing version, and live counters.
    Demo(demo::DemoArgs),
    /// Run the certificate authority (Istio's certificate API over gRPC and mTLS).
    Ca(Box<ca::CaArgs>),
    /// The Trusted Certificate Service: TrellisIssuer / TrellisClusterIssuer CAs with keys
    /// in PKCS#11 tokens, signing Kubernetes CSRs and cert-manager CertificateRequests.
    Issuer(issuer::IssuerArgs),
    /// The eBPF same-host TCP/IP bypass (sockops + sk_msg) for the mesh's cgroup.
    Bypass(bypass::BypassArgs),
    /// Install transparent capture in this network namespace (Istio's istio-iptables):
    /// iptables and ip6tables rules redirecting the app's TCP to its sidecar.
    Init(init::InitArgs),
    /// Plain-TCP echo, transfer and ping-pong tools used by the bypass tests and benches.
    #[command(hide = true)]
    NetProbe(net_probe::NetProbeArgs),
}

/// The sum of the Prometheus samples in `text` whose line starts with `prefix` (a
/// metric name, with as many labels as should match).
pub(crate) fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Writes `path` through a temporary file and a rename, so readers never see half.
pub(crate) fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    trellis_config::parse_duration(s)
}

fn main() -> ExitCode {
    let malloc_tuned = trellis_alloc::tune();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    if !malloc_tuned {
        tracing::warn!(
            "malloc refused a setting of trellis_alloc::tune(); glibc's default for it applies"
        );
    }
    let result = match cli.command {
        Command::Proxy {
            config,
            workers,
            ready_file,
            watch_interval,
            xds,
            node_id,
            xds_sotw,
            xds_tls,
        } => trellis_proxy::run(trellis_proxy::ProxyOptions {
            config,
            worker_threads: workers,
            ready_file,
            watch_interval,
            xds: xds.map(|address| trellis_proxy::XdsOptions {
                node_id: node_id.unwrap_or_else(|| format!("trellis~{}", std::process::id())),
                address,
                mode: if xds_sotw {
                    trellis_xds::client::Mode::StateOfTheWorld
                } else {
                    trellis_xds::client::Mode::Delta
                },
                tls: xds_tls,
            }),
        }),
        Command::DemoApp {
            listen,
            name,
            fail_rate,
            fail_status,
            delay,
            ready_file,
            workers,
            calls,
            via,
        } => run_demo_app(
            listen,
            name,
            trellis_demo::Behaviour {
                fail_rate,
                fail_status,
                delay: delay.unwrap_or_default(),
                calls: trellis_demo::calls::Calls { urls: calls, via },
            },
            ready_file,
            workers,
        ),
        Command::Demo(args) => demo::run(args),
        Command::Gateway(args) => gateway::run(args),
        Command::Agent(args) => agent::run(args),
        Command::Ca(args) => ca::run(*args),
        Command::Issuer(args) => issuer::run(args),
        Command::Control(args) => control::run(*args),
        Command::Up(args) => up::run(args),
        Command::Bypass(args) => bypass::run(args),
        Command::Init(args) => init::run(args),
        Command::NetProbe(args) => net_probe::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trellis: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_demo_app(
    listen: Vec<SocketAddr>,
    name: String,
    behaviour: trellis_demo::Behaviour,
    ready_file: Option<PathBuf>,
    workers: usize,
) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&behaviour.fail_rate) {
        anyhow::bail!("--fail-rate {} is outside 0..1", behaviour.fail_rate);
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if workers > 0 {
        rt.worker_threads(workers);
    }
    let rt = rt.enable_all().build()?;
    rt.block_on(async move {
        let app = trellis_demo::DemoApp::new(&name, behaviour);
        let bound = trellis_demo::start(app, &listen).await?;
        tracing::info!(name = %name, addresses = ?bound, "demo app listening");
        if let Some(path) = ready_file {
            let doc = serde_json::json!({ "addresses": bound.iter().map(|a| a.to_string()).collect::<Vec<_>>() });
            write_atomically(&path, doc.to_string().as_bytes())?;
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        Ok(())
    })
}
