//! The proxy's xDS client: listeners, clusters (and the SDS secrets the listeners name)
//! from a control plane over ADS, on top
//! of what the bootstrap file declares. Each complete update is decoded into the
//! proxy's own model — only the resources that changed, the rest kept from the last
//! decode — validated with the file's part and applied; what cannot be honoured is
//! NACKed with the reason, and the last good config keeps serving, also while the
//! control plane is away.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use trellis_config::{Cluster, Listener};
use trellis_xds::client::{self, ClientOptions, ClientState, Interest, Mode, Subscriber};
use trellis_xds::pb::envoy::config::core::v3::Node;

use crate::stats::Metrics;

#[derive(Clone, Debug)]
pub struct XdsOptions {
    /// `host:port` of the control plane's plaintext gRPC port.
    pub address: String,
    /// The node id the control plane builds this proxy's view for.
    pub node_id: String,
    pub mode: Mode,
    /// Connect with TLS, presenting the workload certificate and verifying the control
    /// plane against the mesh roots and `identity.ca_server_name`.
    pub tls: bool,
}

/// The part of the config that came over xDS; what did not change since the last
/// update is the same `Arc`.
#[derive(Clone, Debug, Default)]
pub struct Dynamic {
    pub listeners: Vec<Arc<Listener>>,
    pub clusters: Vec<Arc<Cluster>>,
    /// SDS secrets the listeners name (a gateway's credentials).
    pub secrets: Vec<trellis_config::Secret>,
}

/// Two lists holding the same values, compared by pointer before content.
fn same_items<T: PartialEq>(a: &[Arc<T>], b: &[Arc<T>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(a, b)| Arc::ptr_eq(a, b) || a == b)
}

impl PartialEq for Dynamic {
    fn eq(&self, other: &Self) -> bool {
        same_items(&self.listeners, &other.listeners)
            && same_items(&self.clusters, &other.clusters)
            && self.secrets == other.secrets
    }
}

pub type Update = (Dynamic, oneshot::Sender<Result<(), String>>);

struct ProxySubscriber {
    interest: crate::interest::SidecarInterest,
    updates: mpsc::Sender<Update>,
    metrics: Arc<Metrics>,
    decoder: trellis_envoy::Decoder,
    last: Option<Dynamic>,
}

/// The resources the client holds, as the decoder reads them.
pub struct HeldResources<'a>(pub &'a ClientState);

impl trellis_envoy::Lookup for HeldResources<'_> {
    fn body(&self, type_url: &'static str, name: &str) -> Option<bytes::Bytes> {
        self.0.get(type_url, name).map(|r| r.body_shared().clone())
    }

    fn for_each(&self, type_url: &'static str, f: &mut dyn FnMut(&bytes::Bytes, &bytes::Bytes)) {
        for (name, r) in self.0.of(type_url) {
            f(name.as_shared(), r.body_shared());
        }
    }
}

#[tonic::async_trait]
impl Subscriber for ProxySubscriber {
    fn interest(&self, state: &ClientState) -> Interest {
        self.interest.interest(state)
    }

    async fn apply(&mut self, state: &ClientState) -> Result<(), String> {
        let decoded = self
            .decoder
            .decode(&HeldResources(state))
            .map_err(|e| e.to_string());
        self.metrics.xds_decoded(self.decoder.decoded);
        let decoded = match decoded {
            Ok(d) => d,
            Err(e) => {
                self.metrics.xds_update("rejected");
                return Err(e);
            }
        };
        if !decoded.waiting_for.is_empty() {
            // Like Envoy's warming: nothing changes until the references resolve.
            tracing::debug!(waiting_for = ?decoded.waiting_for, "xDS: update incomplete");
            return Ok(());
        }
        let dynamic = Dynamic {
            listeners: decoded.listeners,
            clusters: decoded.clusters,
            secrets: decoded.secrets,
        };
        if self.last.as_ref() == Some(&dynamic) {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        if self.updates.send((dynamic.clone(), tx)).await.is_err() {
            return Err("the proxy is shutting down".into());
        }
        let result = rx
            .await
            .unwrap_or_else(|_| Err("the proxy is shutting down".into()));
        match &result {
            Ok(()) => {
                self.metrics.xds_update("accepted");
                self.last = Some(dynamic);
            }
            Err(_) => self.metrics.xds_update("rejected"),
        }
        result
    }

    fn connected(&mut self, up: bool) {
        self.metrics.xds_connected(up);
        if up {
            tracing::info!("xDS stream up");
        }
    }
}

/// Dials the control plane over mutual TLS with the certificate current at each
/// (re)connection, so rotation needs no restart.
fn tls_dial(agent: Arc<crate::identity::Agent>, address: String) -> client::Dial {
    Arc::new(move || {
        let (agent, address) = (agent.clone(), address.clone());
        Box::pin(async move { dial_control_plane(&agent, &address).await })
    })
}

/// A mutual TLS connection (ALPN h2) to the control plane at `address` with the
/// agent's current workload certificate, the server checked against the mesh roots
/// and `identity.ca_server_name`.
pub async fn dial_control_plane(
    agent: &crate::identity::Agent,
    address: &str,
) -> std::io::Result<Box<dyn client::Stream>> {
    let cert = agent
        .current()
        .ok_or_else(|| std::io::Error::other("no workload certificate yet"))?;
    let server_name = agent.config().ca_server_name.clone();
    let tls = trellis_tls::ClientTls::new(trellis_tls::ClientTlsConfig {
        bundles: Vec::new(),
        roots: cert.roots.clone(),
        certificate: Some(cert.key.clone()),
        sni: server_name
            .parse::<std::net::IpAddr>()
            .is_err()
            .then(|| server_name.clone()),
        alpn: vec!["h2".into()],
        stream_alpn: Vec::new(),
        min_version: trellis_tls::TlsVersion::Tls12,
        max_version: trellis_tls::TlsVersion::Tls13,
        expected_identities: vec![server_name],
        key_op_hook: None,
    })
    .map_err(std::io::Error::other)?;
    let tcp = tokio::net::TcpStream::connect(address).await?;
    let (stream, _) = tls.connect(tcp).await.map_err(std::io::Error::other)?;
    Ok(Box::new(stream) as Box<dyn client::Stream>)
}

/// Runs the client until the process ends; updates arrive on `updates`.
pub async fn run(
    opts: XdsOptions,
    metrics: Arc<Metrics>,
    updates: mpsc::Sender<Update>,
    agent: Option<Arc<crate::identity::Agent>>,
) {
    let dial = match (opts.tls, agent) {
        (true, Some(agent)) => Some(tls_dial(agent, opts.address.clone())),
        _ => None,
    };
    let client = ClientOptions {
        dial,
        address: opts.address,
        node: Node {
            id: opts.node_id,
            user_agent_name: "trellis".into(),
            ..Default::default()
        },
        mode: opts.mode,
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_secs(5),
    };
    let subscriber = ProxySubscriber {
        interest: Default::default(),
        updates,
        metrics,
        decoder: Default::default(),
        last: None,
    };
    client::run(client, subscriber).await;
}
