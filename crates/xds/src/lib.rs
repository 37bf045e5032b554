//! Envoy v3 xDS over one aggregated stream (ADS), as protocol machinery only: what a
//! resource *means* belongs to the control plane (which builds them) and the proxy
//! (which translates them into its own config).
//!
//! - [`Snapshot`]: the resources one proxy should have, by type and name, each with a
//!   content-derived version so that an unchanged resource is never sent again.
//! - [`Cache`]: the current snapshot per node id; setting one wakes that node's streams.
//! - [`AdsServer`]: `StreamAggregatedResources` (state of the world) and
//!   `DeltaAggregatedResources` (incremental), with nonces, ACK/NACK and per-type
//!   subscriptions.
//! - [`client`]: the proxy's side: subscribe, hand each new state to a [`client::Subscriber`]
//!   that accepts it (ACK) or refuses it with a reason (NACK), reconnect with backoff and
//!   resume from the versions it holds.

//!
//! The client (`client` feature) and the server (`server` feature) share only the
//! message writers and readers of [`wire`](crate) and the subscription sets; a proxy
//! links no server, a control plane no client.

#[cfg(feature = "client")]
pub mod client;
mod name;
#[cfg(feature = "server")]
mod server;
#[cfg(feature = "server")]
mod snapshot;
#[cfg(feature = "server")]
mod wanted;
mod wire;

pub use envoy_types::pb;
pub use name::Name;
#[cfg(feature = "server")]
pub use server::{
    AdsServer, AdsService, Authorize, Discovery, DiscoveryMethods, SdsService, ServerStats,
    ServerThread,
};
#[cfg(feature = "server")]
pub use snapshot::{Base, Cache, Changes, Snapshot, TypeResources, Versioned};

pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// Types whose subscription with no names means "all of them" (xDS wildcard).
pub fn is_wildcard_type(type_url: &str) -> bool {
    type_url == LISTENER || type_url == CLUSTER
}

/// A short printable name for logs: `Listener` for the listener type URL.
pub fn short_type(type_url: &str) -> &str {
    type_url.rsplit('.').next().unwrap_or(type_url)
}
