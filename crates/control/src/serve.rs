//! The control plane as a service (istiod's role): the loop that keeps every view
//! current, xDS over mutual TLS on the CA's port (a caller gets only its own
//! workload's view), xDS in plaintext when asked for, and the embedded CA. The
//! `trellis control` command parses its flags into [`Options`] and calls [`serve`];
//! tests start the same thing in-process.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::ControlPlane;

pub struct Options {
    /// Directories of Istio resources (and, in local mode, the registry).
    pub config_dirs: Vec<PathBuf>,
    /// Kubernetes mode.
    pub kube: Option<KubeOptions>,
    /// Serve xDS in plaintext here too: unauthenticated, any node's view to anyone who
    /// connects.
    pub plaintext_xds: Option<SocketAddr>,
    /// The embedded CA and where it listens (its port carries xDS over mutual TLS).
    pub ca: Option<(trellis_ca::CaConfig, SocketAddr)>,
    /// How often the directories are checked for changes.
    pub poll_interval: Duration,
    /// Serve `GET /status` (JSON) in plaintext here.
    pub status_listen: Option<SocketAddr>,
    pub dashboard: Option<crate::DashboardOptions>,
}

pub struct KubeOptions {
    /// None: found as kubectl finds it.
    pub kubeconfig: Option<PathBuf>,
    /// Only namespaces with these labels (Istio's discoverySelectors).
    pub namespace_selector: Option<BTreeMap<String, String>>,
    /// How long to wait for the cluster's first lists.
    pub sync_timeout: Duration,
}

/// A running control plane.
pub struct Serving {
    pub plane: Arc<ControlPlane>,
    pub plaintext_xds: Option<SocketAddr>,
    pub ca: Option<SocketAddr>,
    pub root_pem: Option<String>,
    pub status: Option<SocketAddr>,
    pub dashboard: Option<SocketAddr>,
    servers: tokio::task::JoinSet<anyhow::Result<()>>,
}

impl Serving {
    /// Runs until a server fails (or forever).
    pub async fn wait(mut self) -> anyhow::Result<()> {
        match self.servers.join_next().await {
            Some(r) => r?,
            None => std::future::pending().await,
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.servers.abort_all();
    }
}

/// The control plane over the directories and the cluster, with a first view of
/// everything, before any server is bound.
pub async fn plane(opts: &Options) -> anyhow::Result<ControlPlane> {
    for dir in &opts.config_dirs {
        if !dir.is_dir() {
            anyhow::bail!("--config-dir {}: not a directory", dir.display());
        }
    }
    let mut plane = ControlPlane::new(&opts.config_dirs, trellis_xds::Cache::new());
    if let Some(k) = &opts.kube {
        let client = trellis_kube::client(k.kubeconfig.as_deref())
            .await
            .map_err(|e| anyhow::anyhow!("--kubeconfig {e}"))?;
        let kube = trellis_kube::KubeInputs::start(
            client,
            trellis_kube::Discovery {
                namespace_selector: k.namespace_selector.clone(),
            },
        );
        // Like istiod, serve nothing until every kind has been listed once: a view
        // made from half a cluster would send sidecars to missing endpoints.
        kube.synced(k.sync_timeout)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        plane = plane.with_kube(kube);
    }
    Ok(plane)
}

/// The embedded CA; in RA mode with its Kubernetes client.
async fn build_ca(
    config: &trellis_ca::CaConfig,
    kube: Option<&KubeOptions>,
) -> anyhow::Result<trellis_ca::Ca> {
    let Some(ra) = &config.ra else {
        return trellis_ca::Ca::build(config);
    };
    let kube = kube.ok_or_else(|| {
        anyhow::anyhow!("--ca-mode kubernetes-csr needs the cluster: --kubeconfig or --kube")
    })?;
    let client = trellis_kube::client(kube.kubeconfig.as_deref())
        .await
        .map_err(|e| anyhow::anyhow!("--kubeconfig {e}"))?;
    let ra = trellis_ca::ra::KubernetesRa::new(client, ra.clone())?;
    tracing::info!(signer = %config.ra.as_ref().map(|r| r.signer.as_str()).unwrap_or_default(),
        "RA mode: workload certificates from Kubernetes CertificateSigningRequests");
    trellis_ca::Ca::build_with_ra(config, Some(ra))
}

/// Loads the inputs, binds the ports and starts serving.
pub async fn serve(opts: Options) -> anyhow::Result<Serving> {
    if opts.ca.is_none() && opts.plaintext_xds.is_none() {
        anyhow::bail!("without the CA port and without a plaintext port nothing would serve xDS");
    }
    let ca = match &opts.ca {
        Some((config, listen)) => Some((build_ca(config, opts.kube.as_ref()).await?, *listen)),
        None => None,
    };
    let mut plane = plane(&opts).await?;
    if let Some((ca, _)) = &ca {
        plane = plane.with_tenancy(ca.tenancy());
    }
    // The Gateway API's conditions go back to the cluster's objects.
    if let Some(k) = &opts.kube {
        let client = trellis_kube::client(k.kubeconfig.as_deref())
            .await
            .map_err(|e| anyhow::anyhow!("--kubeconfig {e}"))?;
        if let Some(kube) = plane.kube() {
            kube.write_gateway_status(client, plane.gateway_status());
        }
    }
    let plane = Arc::new(plane);
    plane
        .reload()
        .map_err(|e| anyhow::anyhow!("--config-dir {e}"))?;
    // The first views carry the JWK Sets the rules name, where they can be fetched.
    if plane.jwks().fetch_due().await {
        plane
            .reload()
            .map_err(|e| anyhow::anyhow!("--config-dir {e}"))?;
    }
    let status = plane.status().borrow().clone();
    tracing::info!(
        services = status.services,
        workloads = status.workloads,
        refused = status.refused.len(),
        warnings = status.warnings.len(),
        "inputs loaded"
    );
    // Bind everything before serving anything, so a busy port fails the start.
    let plaintext = match opts.plaintext_xds {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("--xds-listen {addr}: {e}"))?,
        ),
        None => None,
    };
    let ca_listener = match &ca {
        Some((_, listen)) => Some(
            tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|e| anyhow::anyhow!("--listen {listen}: {e}"))?,
        ),
        None => None,
    };
    let status_listener = match opts.status_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("--status-listen {addr}: {e}"))?,
        ),
        None => None,
    };
    let dashboard_listener = match &opts.dashboard {
        Some(d) => Some(
            tokio::net::TcpListener::bind(d.listen)
                .await
                .map_err(|e| anyhow::anyhow!("--dashboard {}: {e}", d.listen))?,
        ),
        None => None,
    };
    let dashboard_bound = dashboard_listener
        .as_ref()
        .map(|l| l.local_addr())
        .transpose()?;
    let status_bound = status_listener
        .as_ref()
        .map(|l| l.local_addr())
        .transpose()?;
    let plaintext_bound = plaintext.as_ref().map(|l| l.local_addr()).transpose()?;
    let ca_bound = ca_listener.as_ref().map(|l| l.local_addr()).transpose()?;

    let ads = trellis_xds::AdsServer::new(plane.cache().clone())
        .with_authorization(authorization(plane.clone()));
    let mut servers = tokio::task::JoinSet::new();
    if let Some(listener) = plaintext {
        let service = ads.clone().into_service();
        tracing::warn!(address = ?plaintext_bound, "plaintext xDS (ADS) serving: unauthenticated, any node's view to anyone who connects");
        servers.spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .map_err(anyhow::Error::from)
        });
    }
    let counters = ca.as_ref().map(|(c, _)| c.counters());
    if let Some(listener) = status_listener {
        servers.spawn(crate::status::serve(
            listener,
            plane.clone(),
            counters.clone(),
            ads.stats(),
        ));
    }
    if let (Some(listener), Some(d)) = (dashboard_listener, &opts.dashboard) {
        tracing::info!(address = ?dashboard_bound, "dashboard serving");
        servers.spawn(crate::dashboard::serve(
            listener,
            plane.clone(),
            ads.stats(),
            counters.clone(),
            d.prometheus.clone(),
        ));
    }
    let mut root_pem = None;
    if let (Some((ca, _)), Some(listener)) = (ca, ca_listener) {
        root_pem = Some(ca.root_pem.clone());
        let (tls, routes) = ca.into_routes();
        // The CA's TLS port carries xDS too, for sidecars that connect with their
        // workload certificate.
        let routes = routes.add_service(ads.into_service());
        tracing::info!(address = ?ca_bound, "CA and xDS over mutual TLS serving");
        servers.spawn(trellis_ca::server::serve_routes(listener, tls, routes));
    }
    let run = plane.clone();
    let poll = opts.poll_interval;
    servers.spawn(async move {
        run.run(poll).await;
        Ok(())
    });
    let jwks = plane.jwks().clone();
    servers.spawn(async move {
        jwks.run().await;
        Ok(())
    });
    Ok(Serving {
        plane,
        plaintext_xds: plaintext_bound,
        ca: ca_bound,
        root_pem,
        status: status_bound,
        dashboard: dashboard_bound,
        servers,
    })
}

/// Who may have which view. On the TLS port the caller's certificate names it: a
/// sidecar gets only its own workload's view; a connection without a certificate gets
/// nothing. The plaintext port has no caller identity.
fn authorization(plane: Arc<ControlPlane>) -> trellis_xds::Authorize {
    Arc::new(move |ext: &tonic::Extensions, node: &str| {
        match ext.get::<trellis_ca::service::PeerIdentity>() {
            None => plane.authorize(node, None),
            Some(trellis_ca::service::PeerIdentity(None)) => {
                Err("xDS over TLS needs a client certificate from the mesh CA".into())
            }
            Some(trellis_ca::service::PeerIdentity(Some(peer))) => {
                plane.authorize(node, Some(peer))
            }
        }
    })
}
