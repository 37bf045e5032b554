//! `trellis control`: the control plane. Serves each sidecar its view over ADS from
//! directories of Istio resources and/or a Kubernetes cluster's objects, with the
//! embedded CA's certificate API, in one process: on Istio's port 15012 (mutual TLS;
//! a caller gets only its own workload's view), and, when asked for, in plaintext on
//! Istio's port 15010 (any node's view to anyone who connects).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::ca::CaOptions;

#[derive(Args)]
pub struct ControlArgs {
    /// Directory of Istio resources (ServiceEntry, WorkloadEntry, VirtualService,
    /// DestinationRule, Sidecar, PeerAuthentication, AuthorizationPolicy); edits apply
    /// while running. Repeat to read several.
    #[arg(long, required_unless_present_any = ["kubeconfig", "kube"])]
    config_dir: Vec<PathBuf>,
    /// Kubernetes mode: watch Services, EndpointSlices, Pods, Namespaces and the Istio
    /// CRDs of the cluster this kubeconfig names.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Kubernetes mode with the configuration found as kubectl finds it
    /// ($KUBECONFIG, ~/.kube/config, or the in-cluster service account).
    #[arg(long, conflicts_with = "kubeconfig")]
    kube: bool,
    /// Only namespaces with these labels are part of the mesh (Istio's
    /// discoverySelectors), e.g. `istio-injection=enabled,team=shop`.
    #[arg(long, value_parser = parse_labels)]
    kube_namespace_selector: Option<std::collections::BTreeMap<String, String>>,
    /// How long to wait for the cluster's first lists before giving up.
    #[arg(long, default_value = "60s", value_parser = crate::parse_duration)]
    kube_sync_timeout: Duration,
    /// Also serve ADS in plaintext gRPC here (Istio's 15010). Unauthenticated: anyone
    /// who can connect gets any node's configuration, so bind it only where every
    /// client is trusted (loopback, proxyless gRPC apps). Off unless given; sidecars use
    /// xDS over mutual TLS on the CA port (`--listen`).
    #[arg(long)]
    xds_listen: Option<SocketAddr>,
    /// How often the directory is checked for changes.
    #[arg(long, default_value = "200ms", value_parser = crate::parse_duration)]
    poll_interval: Duration,
    /// Serve xDS only, without the embedded CA.
    #[arg(long)]
    no_ca: bool,
    /// Serve `GET /status` (JSON: what is accepted and refused, the tenants with their
    /// roots and federations, the CA's counters) in plaintext here, e.g. 127.0.0.1:15014.
    #[arg(long)]
    status_listen: Option<SocketAddr>,
    /// Serve the web dashboard here (the workloads, their xDS connections, what is
    /// refused and why; the service graph when --prometheus is given), e.g.
    /// 127.0.0.1:15080. Read-only, plaintext: bind it to loopback.
    #[arg(long)]
    dashboard: Option<SocketAddr>,
    /// The Prometheus that scrapes the sidecars (e.g. http://prometheus:9090): the
    /// dashboard's graph comes from its Istio metrics, as Kiali's does.
    #[arg(long, requires = "dashboard")]
    prometheus: Option<String>,
    /// Threads serving xDS and the CA (0 = one per core): a full push writes every
    /// sidecar's view, megabytes each in a large mesh, and streams spread over them.
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Check the inputs and exit: read, validate and cross-check every resource,
    /// generate and check every sidecar's view, print each refusal and warning, and
    /// exit 1 when anything is refused (as `istioctl validate` / `analyze` in CI).
    #[arg(long)]
    check: bool,
    /// With --check: `text` (default) or `json` on stdout.
    #[arg(long, value_enum, default_value_t = Output::Text, requires = "check")]
    output: Output,
    #[command(flatten)]
    ca: CaOptions,
    /// Where workload certificates come from: `local` (the embedded CA signs them) or
    /// `kubernetes-csr` (RA mode, Istio's EXTERNAL_CA=ISTIOD_RA_KUBERNETES_API: each
    /// authenticated workload's CSR becomes a Kubernetes CertificateSigningRequest for
    /// --signer, approved by the control plane; needs --kubeconfig or --kube).
    #[arg(long, value_enum, default_value_t = CaMode::Local)]
    ca_mode: CaMode,
    /// RA mode: the signer name (`clusterissuers.trellis.io/mesh`).
    #[arg(long, required_if_eq("ca_mode", "kubernetes-csr"))]
    signer: Option<String>,
    /// RA mode: a workload's `CertSigner` proxy metadata picks `<domain>/<CertSigner>`
    /// (Istio's CERT_SIGNER_DOMAIN); without it the metadata is refused.
    #[arg(long, requires = "signer")]
    signer_domain: Option<String>,
    /// RA mode: the signers' roots (PEM): issued chains must end in one, and the CA's
    /// root bundle (what sidecars trust) carries them.
    #[arg(long, required_if_eq("ca_mode", "kubernetes-csr"))]
    signer_root: Option<PathBuf>,
    /// RA mode: how long a CSR waits for its signer.
    #[arg(long, default_value = "30s", value_parser = crate::parse_duration)]
    signer_timeout: Duration,
    /// RA mode, NOT SECURITY: require workloads to present a test-double "quote"
    /// (HMAC with the key in this file, bound to the CSR's key and identity) before
    /// their CSRs are approved; the stand-in for SGX quote verification where there is
    /// no SGX, for tests.
    #[arg(long, requires = "signer")]
    insecure_test_double_workload_quotes: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum CaMode {
    Local,
    KubernetesCsr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Text,
    Json,
}

impl ControlArgs {
    fn options(&self) -> trellis_control::Options {
        trellis_control::Options {
            config_dirs: self.config_dir.clone(),
            kube: (self.kube || self.kubeconfig.is_some()).then(|| trellis_control::KubeOptions {
                kubeconfig: self.kubeconfig.clone(),
                namespace_selector: self.kube_namespace_selector.clone(),
                sync_timeout: self.kube_sync_timeout,
            }),
            plaintext_xds: self.xds_listen,
            ca: (!self.no_ca).then(|| {
                let mut config = self.ca.config();
                if self.ca_mode == CaMode::KubernetesCsr {
                    config.ra = Some(trellis_ca::ra::RaConfig {
                        signer: self.signer.clone().unwrap_or_default(),
                        signer_domain: self.signer_domain.clone(),
                        roots: self.signer_root.clone().unwrap_or_default(),
                        timeout: self.signer_timeout,
                        insecure_test_double_quotes: self
                            .insecure_test_double_workload_quotes
                            .clone(),
                    });
                }
                (config, self.ca.listen)
            }),
            poll_interval: self.poll_interval,
            status_listen: self.status_listen,
            dashboard: self
                .dashboard
                .map(|listen| trellis_control::DashboardOptions {
                    listen,
                    prometheus: self.prometheus.clone(),
                }),
        }
    }
}

pub fn run(args: ControlArgs) -> anyhow::Result<()> {
    if args.check {
        return check(&args);
    }
    if args.no_ca && args.xds_listen.is_none() {
        anyhow::bail!("--no-ca needs --xds-listen: without the CA port nothing would serve xDS");
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if args.workers > 0 {
        rt.worker_threads(args.workers);
    }
    let rt = rt.enable_all().build()?;
    rt.block_on(async move {
        let serving = trellis_control::serve(args.options())
            .await
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        if let Some(path) = &args.ca.ready_file {
            let doc = serde_json::json!({
                "xds": serving.plaintext_xds.map(|a| a.to_string()),
                "ca": serving.ca.map(|a| a.to_string()),
                "root_pem": serving.root_pem,
                "status": serving.status.map(|a| a.to_string()),
                "dashboard": serving.dashboard.map(|a| format!("http://{a}/")),
            });
            crate::write_atomically(path, doc.to_string().as_bytes())?;
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = serving.wait() => r,
            _ = tokio::signal::ctrl_c() => Ok(()),
            _ = term.recv() => Ok(()),
        }
    })
}

/// `--check`: the report on stdout; exits 1 when something is refused.
fn check(args: &ControlArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(async {
        let plane = trellis_control::plane(&args.options())
            .await
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        plane
            .check()
            .map_err(|e| anyhow::anyhow!("--config-dir {e}"))
    })?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Text => {
            for r in &report.refused {
                println!("refused: {r}");
            }
            for w in &report.warnings {
                println!("warning: {w}");
            }
            for e in &report.view_errors {
                println!("view error: {e}");
            }
            println!(
                "{} refused, {} warnings; {} services, {} workloads, {} sidecar views checked",
                report.refused.len(),
                report.warnings.len(),
                report.services,
                report.workloads,
                report.views
            );
        }
    }
    if !report.ok() {
        std::process::exit(1);
    }
    Ok(())
}

/// `k=v,k2=v2` → labels.
fn parse_labels(s: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    s.split(',')
        .filter(|kv| !kv.trim().is_empty())
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("{kv:?}: expected key=value"))?;
            Ok((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}
