//! `trellis agent`: what Istio's pilot-agent is to Envoy, for a stock Envoy sidecar in a
//! Trellis mesh.
//!
//! - It holds the workload key and certificate: the key made here, certified by the CA
//!   with the workload's token, renewed at half its life (the proxy's identity agent).
//! - It serves them to the local Envoy over SDS on a Unix socket (`sds.sock`), as the
//!   secrets `default` (certificate chain and key) and `ROOTCA` (the mesh roots) that the
//!   control plane's TLS contexts name through the bootstrap's `sds-grpc` cluster; a new
//!   certificate is pushed on the open streams. The key goes to this node's Envoy only.
//! - It proxies xDS: each connection on `xds.sock` is carried to the control plane over
//!   mutual TLS with the workload certificate, so the control plane serves the view of
//!   the workload the certificate names, and Envoy needs no credentials of its own.
//! - It writes the Envoy bootstrap that names both sockets.

mod bootstrap;
mod secrets;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use trellis_config::Identity;
use trellis_proxy::identity::Agent;
use trellis_xds::{AdsServer, Cache};

pub use bootstrap::Bootstrap;

pub struct AgentOptions {
    pub node_id: String,
    pub identity: Identity,
    /// The control plane's mutual TLS xDS address (the CA's port, as istiod's 15012).
    pub xds: String,
    /// Where the sockets go.
    pub dir: PathBuf,
    /// Where the Envoy bootstrap goes.
    pub bootstrap: PathBuf,
    pub envoy_admin: String,
    pub delta: bool,
}

impl AgentOptions {
    pub fn sds_socket(&self) -> PathBuf {
        self.dir.join("sds.sock")
    }

    pub fn xds_socket(&self) -> PathBuf {
        self.dir.join("xds.sock")
    }
}

/// A socket at `path`, replacing one an earlier run left.
fn listen(path: &std::path::Path) -> Result<UnixListener, String> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(format!("{}: {e}", path.display()))
        }
        _ => {}
    }
    UnixListener::bind(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Runs until the process ends.
pub async fn run(opts: AgentOptions) -> Result<(), String> {
    std::fs::create_dir_all(&opts.dir).map_err(|e| format!("{}: {e}", opts.dir.display()))?;
    let (sds_path, xds_path) = (opts.sds_socket(), opts.xds_socket());
    let bootstrap = Bootstrap {
        node_id: &opts.node_id,
        xds_socket: &xds_path,
        sds_socket: &sds_path,
        admin: &opts.envoy_admin,
        delta: opts.delta,
    }
    .to_json()?;
    let agent = Agent::exporting(opts.identity.clone(), trellis_proxy::stats::Metrics::new());
    // Both sockets answer from the start: Envoy's streams wait for the first
    // certificate rather than failing.
    let cache = Cache::new();
    let sds = listen(&sds_path)?;
    let server = AdsServer::new(cache.clone()).into_sds_service();
    tokio::spawn(async move {
        if let Err(e) = tonic::transport::Server::builder()
            .add_service(server)
            .serve_with_incoming(UnixListenerStream::new(sds))
            .await
        {
            tracing::error!("SDS server: {e}");
        }
    });
    tokio::spawn(proxy_xds(
        listen(&xds_path)?,
        agent.clone(),
        opts.xds.clone(),
    ));
    let text = serde_json::to_vec_pretty(&bootstrap).map_err(|e| e.to_string())?;
    let tmp = opts.bootstrap.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &opts.bootstrap))
        .map_err(|e| format!("{}: {e}", opts.bootstrap.display()))?;
    tracing::info!(bootstrap = %opts.bootstrap.display(), sds = %sds_path.display(),
        xds = %xds_path.display(), "Envoy bootstrap written; waiting for the workload certificate");
    agent.first_certificate().await;
    let (rotated_tx, mut rotated) = tokio::sync::mpsc::channel(4);
    tokio::spawn(agent.clone().rotate(rotated_tx));
    loop {
        if let Some(cert) = agent.current() {
            cache.set(&opts.node_id, secrets::snapshot(&cert)?);
            tracing::info!(identity = %cert.identity, serial = %cert.serial, "serving the workload certificate over SDS");
        }
        if rotated.recv().await.is_none() {
            return Ok(());
        }
    }
}

/// How long a local xDS connection waits for the workload certificate it is carried
/// with; Envoy reconnects after that.
const FIRST_CERTIFICATE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Carries each local xDS connection to the control plane over mutual TLS.
async fn proxy_xds(listener: UnixListener, agent: Arc<Agent>, address: String) {
    loop {
        let mut local = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("xDS socket: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let (agent, address) = (agent.clone(), address.clone());
        tokio::spawn(async move {
            // An Envoy started beside the agent connects before the first certificate.
            let deadline = tokio::time::Instant::now() + FIRST_CERTIFICATE_WAIT;
            while agent.current().is_none() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            let mut upstream = match trellis_proxy::xds::dial_control_plane(&agent, &address).await
            {
                Ok(s) => s,
                Err(e) => return tracing::warn!(control_plane = %address, "xDS proxy: {e}"),
            };
            if let Err(e) = tokio::io::copy_bidirectional(&mut local, &mut upstream).await {
                tracing::debug!("xDS proxy connection ended: {e}");
            }
        });
    }
}
