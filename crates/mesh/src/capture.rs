//! A captured sidecar's listeners (Istio's shape): `virtualOutbound` on 15001 and
//! `virtualInbound` on 15006 take what `trellis init`'s rules redirect and hand each
//! connection to the listener of its original destination; those listeners are not
//! bound (`bind_to_port: false`).
//!
//! - outbound HTTP: `0.0.0.0_<port>` per service port, with that port's virtual hosts
//!   and, last, `allow_any` (to `PassthroughCluster`) or `block_all` (502), as the
//!   outbound traffic policy says;
//! - outbound TCP: `<vip>_<port>` per virtual IP of the service, or `0.0.0.0_<port>`
//!   for a service without one when no HTTP service has that port;
//! - `virtualOutbound`'s own chain: traffic to no known listener goes to
//!   `PassthroughCluster` (ALLOW_ANY, Istio's default) or `BlackHoleCluster`;
//! - inbound: the workload's `inbound|<port>` listeners on its own address, and for
//!   ports it does not declare `virtualInbound`'s own chain to
//!   `InboundPassthroughCluster`, under the workload's mTLS mode and authorization.

use std::collections::BTreeMap;

use trellis_config as tc;
use trellis_config::{Dur, SDS_ROOT_CA};

use crate::generate::{workload_cert, Gen};
use crate::istio::MtlsMode;
use crate::socket;
use crate::Protocol;

pub const VIRTUAL_OUTBOUND: &str = "virtualOutbound";
pub const VIRTUAL_INBOUND: &str = "virtualInbound";
pub const PASSTHROUGH: &str = "PassthroughCluster";
pub const BLACKHOLE: &str = "BlackHoleCluster";
pub const INBOUND_PASSTHROUGH: &str = "InboundPassthroughCluster";
/// Istio's capture ports.
pub const OUTBOUND_CAPTURE_PORT: u16 = 15001;
pub const INBOUND_CAPTURE_PORT: u16 = 15006;

/// Both families' wildcard addresses for `port`.
fn wildcard(port: u16) -> Vec<String> {
    vec![format!("0.0.0.0:{port}"), format!("[::]:{port}")]
}

fn not_bound(name: String, addresses: Vec<String>) -> tc::Listener {
    let mut l = tc::Listener::new(name, String::new());
    l.address = None;
    l.addresses = addresses;
    l.bind_to_port = false;
    l
}

fn cluster(name: &str, discovery: tc::DiscoveryType) -> tc::Cluster {
    tc::Cluster {
        name: name.into(),
        discovery,
        endpoints: Vec::new(),
        lb_policy: tc::LbPolicy::RoundRobin,
        connect_timeout: Dur::secs(10),
        http2: false,
        dns_refresh_rate: Dur::secs(5),
        circuit_breakers: Default::default(),
        outlier_detection: None,
        tls: None,
        service: None,
    }
}

impl Gen<'_> {
    /// Whether traffic to destinations outside the registry passes (Istio's
    /// `outboundTrafficPolicy`: the workload's Sidecar, then meshConfig; ALLOW_ANY by
    /// default).
    fn allow_any(&self) -> bool {
        let sidecar = self
            .sidecar_scope()
            .and_then(|sc| sc.spec.outbound_traffic_policy.as_ref())
            .and_then(|p| p.mode.clone());
        let mesh = || {
            self.inputs
                .mesh_config
                .iter()
                .find_map(|m| m.spec.outbound_traffic_policy.as_ref())
                .and_then(|p| p.mode.clone())
        };
        sidecar.or_else(mesh).as_deref() != Some("REGISTRY_ONLY")
    }

    /// The outbound listeners of a captured sidecar (see the module's description).
    pub(crate) fn captured_outbound(&mut self) -> Vec<tc::Listener> {
        let allow_any = self.allow_any();
        let fallback = if allow_any { PASSTHROUGH } else { BLACKHOLE };
        self.clusters.insert(
            PASSTHROUGH.into(),
            cluster(PASSTHROUGH, tc::DiscoveryType::OriginalDst),
        );
        self.clusters.insert(
            BLACKHOLE.into(),
            cluster(BLACKHOLE, tc::DiscoveryType::Static),
        );
        let mut listeners = Vec::new();
        // HTTP: the port's virtual hosts (named `<host>:<port>`), then the catch-all.
        let mut by_port: BTreeMap<u16, Vec<tc::VirtualHost>> = BTreeMap::new();
        if let Some(l) = self.outbound() {
            for mut vh in l.http.map(|h| h.virtual_hosts).unwrap_or_default() {
                let Some((host, port)) = vh.name.rsplit_once(':') else {
                    continue;
                };
                let Ok(port) = port.parse::<u16>() else {
                    continue;
                };
                // A captured app may call the virtual IP itself.
                if let Some(s) = self.registry.service(host) {
                    for vip in &s.addresses {
                        vh.domains.push(if vip.contains(':') {
                            format!("[{vip}]")
                        } else {
                            vip.clone()
                        });
                    }
                }
                by_port.entry(port).or_default().push(vh);
            }
        }
        let services: Vec<_> = self
            .registry
            .services
            .iter()
            .filter(|s| self.visible(s))
            .collect();
        for (port, mut virtual_hosts) in by_port.clone() {
            virtual_hosts.push(catch_all(allow_any));
            let mut l = not_bound(format!("0.0.0.0_{port}"), wildcard(port));
            l.http = Some(tc::HttpManager {
                tracing: None,
                codec: tc::Codec::Auto,
                virtual_hosts,
                access_log: None,
            });
            // A service of undeclared protocol on the port: what is not HTTP goes where
            // it was going, as the outbound traffic policy allows.
            let undeclared = services.iter().any(|s| {
                s.ports
                    .iter()
                    .any(|p| p.number == port && p.protocol.detected())
            });
            if undeclared {
                l.tcp = Some(tc::TcpProxy::to(fallback));
            }
            listeners.push(l);
        }
        // TLS and HTTPS services without a virtual IP: the port's wildcard, routed by
        // the SNI of the app's own TLS to the service whose host it names (Istio's
        // TLS routes for ServiceEntry hosts); other names go where they were going.
        let mut taken: BTreeMap<String, ()> = BTreeMap::new();
        let mut by_name: BTreeMap<u16, Vec<tc::SniRoute>> = BTreeMap::new();
        for s in &services {
            for p in s.ports.iter().filter(|p| p.protocol == Protocol::Tls) {
                if !s.addresses.is_empty() || by_port.contains_key(&p.number) {
                    continue;
                }
                if let Some(cluster) = self.cluster(&s.host, p.number, None) {
                    by_name.entry(p.number).or_default().push(tc::SniRoute {
                        server_names: vec![s.host.clone()],
                        tcp: tc::TcpProxy::to(cluster),
                    });
                }
            }
        }
        for (port, sni_routes) in by_name {
            let mut l = not_bound(format!("0.0.0.0_{port}"), wildcard(port));
            for a in &l.addresses {
                taken.insert(a.clone(), ());
            }
            l.sni_routes = sni_routes;
            l.tcp = Some(tc::TcpProxy::to(fallback));
            listeners.push(l);
        }
        // TCP (and undeclared protocols): per virtual IP, or the port's wildcard when
        // the service has none.
        for s in services {
            for p in s.ports.iter().filter(|p| !p.protocol.is_http()) {
                let Some(cluster) = self.cluster(&s.host, p.number, None) else {
                    continue;
                };
                let addresses: Vec<String> = if s.addresses.is_empty() {
                    if by_port.contains_key(&p.number) {
                        continue;
                    }
                    wildcard(p.number)
                } else {
                    s.addresses.iter().map(|a| socket(a, p.number)).collect()
                };
                if addresses
                    .iter()
                    .any(|a| taken.insert(a.clone(), ()).is_some())
                {
                    continue;
                }
                let name = match s.addresses.first() {
                    Some(vip) => format!("{vip}_{}", p.number),
                    None => format!("0.0.0.0_{}", p.number),
                };
                let mut l = not_bound(name, addresses);
                l.tcp = Some(tc::TcpProxy::to(cluster));
                // Undeclared: its HTTP requests routed as the service's, the rest TCP.
                let vh = by_port.get(&p.number).and_then(|hosts| {
                    hosts
                        .iter()
                        .find(|vh| vh.name == format!("{}:{}", s.host, p.number))
                });
                if let (true, Some(vh)) = (p.protocol.detected(), vh) {
                    l.http = Some(tc::HttpManager {
                        tracing: None,
                        codec: tc::Codec::Auto,
                        virtual_hosts: vec![vh.clone(), catch_all(allow_any)],
                        access_log: None,
                    });
                }
                listeners.push(l);
            }
        }
        let mut capture = tc::Listener::new(VIRTUAL_OUTBOUND, String::new());
        capture.address = None;
        capture.addresses = wildcard(OUTBOUND_CAPTURE_PORT);
        capture.use_original_dst = true;
        capture.tcp = Some(tc::TcpProxy::to(fallback));
        listeners.push(capture);
        for l in &mut listeners {
            l.istio_stats = self.stats(tc::Reporter::Source, false);
        }
        listeners
    }

    /// `virtualInbound`: hands connections to the workload's inbound listeners; its own
    /// chain passes the rest to the app's port under the workload's mTLS mode and its
    /// authorization policy (the L4 subset).
    pub(crate) fn virtual_inbound(&mut self) -> tc::Listener {
        self.clusters.insert(
            INBOUND_PASSTHROUGH.into(),
            cluster(INBOUND_PASSTHROUGH, tc::DiscoveryType::OriginalDst),
        );
        let mut l = tc::Listener::new(VIRTUAL_INBOUND, String::new());
        l.address = None;
        l.addresses = wildcard(INBOUND_CAPTURE_PORT);
        l.use_original_dst = true;
        l.tcp = Some(tc::TcpProxy::to(INBOUND_PASSTHROUGH));
        l.tls = self.inbound_tls(0).map(|mut t| {
            t.metadata_exchange = !self.inputs.disable_tcp_metadata_exchange;
            t
        });
        l.authorization = self.authorization();
        l.istio_stats = self.stats(tc::Reporter::Destination, true);
        l
    }

    /// The downstream TLS of an inbound listener for the app's `port` (0: the
    /// workload's own mode, for ports it does not declare).
    pub(crate) fn inbound_tls(&self, port: u16) -> Option<tc::DownstreamTls> {
        match crate::security::mtls_mode(self.inputs, self.w, port) {
            MtlsMode::Disable => None,
            MtlsMode::Strict => Some(self.mesh_tls(tc::TlsMode::Strict)),
            _ => Some(self.mesh_tls(tc::TlsMode::Permissive)),
        }
    }

    /// Mutual TLS with the workload's own certificate, trusting the mesh's roots (its
    /// tenant's bundles under tenancy).
    pub(crate) fn mesh_tls(&self, mode: tc::TlsMode) -> tc::DownstreamTls {
        let trust = self.inputs.trust.as_deref();
        tc::DownstreamTls {
            mode,
            certificates: vec![workload_cert()],
            alpn: None,
            min_version: tc::TlsVersion::V1_3,
            max_version: tc::TlsVersion::V1_3,
            trusted_ca: trust.is_none().then(|| SDS_ROOT_CA.into()),
            trust_bundles: trust
                .map(|t| t.inbound_bundles(&self.w.namespace))
                .unwrap_or_default(),
            require_client_certificate: true,
            trust_domains: vec!["cluster.local".into()],
            session_resumption: true,
            handshake_timeout: Dur::secs(10),
            cipher_suites: Vec::new(),
            client_sans: Vec::new(),
            metadata_exchange: false,
        }
    }
}

/// The last virtual host of a captured HTTP port: hosts outside the registry pass
/// through to where the app was connecting (ALLOW_ANY), or get 502 (REGISTRY_ONLY).
fn catch_all(allow_any: bool) -> tc::VirtualHost {
    let name = if allow_any { "allow_any" } else { "block_all" };
    let mut route = tc::Route::new(Some(name.into()), tc::RouteMatch::prefix("/"));
    if allow_any {
        route.route = Some(crate::generate::action(PASSTHROUGH.into(), None, None));
    } else {
        route.direct_response = Some(tc::DirectResponse {
            status: 502,
            body: String::new(),
        });
    }
    tc::VirtualHost::new(name, vec!["*".into()], vec![route])
}
