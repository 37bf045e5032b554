//! The flags a process beside a workload (`trellis gateway`, `trellis agent`) joins the
//! mesh with: the control plane, the roots it is verified against, the token that proves
//! the workload's identity, and the workload's name in its node id.

use std::path::PathBuf;

#[derive(clap::Args)]
pub struct WorkloadArgs {
    /// The control plane's mutual-TLS port (`trellis control --listen`, 15012 by
    /// default): xDS and certificates.
    #[arg(long)]
    pub control: String,
    /// The mesh's root certificates (PEM), which the control plane is verified against.
    #[arg(long)]
    pub ca_root: PathBuf,
    /// A bootstrap token for the workload's identity (`trellis ca token`), or a
    /// Kubernetes ServiceAccount token.
    #[arg(long)]
    pub token_file: PathBuf,
    /// The workload as the control plane knows it (a WorkloadEntry or pod; a gateway's
    /// labels are what its Gateways' selectors match).
    #[arg(long)]
    pub name: String,
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// The workload's address, in its node id.
    #[arg(long, default_value = "127.0.0.1")]
    pub ip: String,
}

impl WorkloadArgs {
    /// The root and token files exist.
    pub fn check_files(&self) -> anyhow::Result<()> {
        for (flag, path) in [
            ("--ca-root", &self.ca_root),
            ("--token-file", &self.token_file),
        ] {
            if !path.is_file() {
                anyhow::bail!("{flag} {}: no such file", path.display());
            }
        }
        Ok(())
    }

    /// Istio's node id: `<kind>~<ip>~<name>.<namespace>~<namespace>.svc.cluster.local`,
    /// `kind` being `sidecar` or `router` (a gateway).
    pub fn node_id(&self, kind: &str) -> String {
        format!(
            "{kind}~{}~{}.{ns}~{ns}.svc.cluster.local",
            self.ip,
            self.name,
            ns = self.namespace
        )
    }
}
