//! What the proxy knows about a downstream connection: for hashing, logging and policy.

use std::net::SocketAddr;
use std::sync::Arc;

/// Where a request came from, for hashing, logging and policy.
#[derive(Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The listener address the connection arrived on (destination port for policy);
    /// for a captured connection, where it was going.
    pub local: SocketAddr,
    /// Where a captured connection was going before the capture rules redirected it:
    /// what an `original_dst` cluster connects to. `None` when it was not redirected.
    pub original_dst: Option<SocketAddr>,
    /// The connection arrived over TLS.
    pub tls: bool,
    /// The verified client certificate's identity (its first URI SAN: the SPIFFE ID).
    pub peer_identity: Option<Arc<str>>,
    /// `x-forwarded-client-cert` for that identity, made once per connection.
    pub client_cert_details: Option<http::HeaderValue>,
    /// The server name (SNI) the TLS client asked for.
    pub server_name: Option<Arc<str>>,
    /// The client's workload, from Istio's TCP metadata exchange (`peer_exchange.rs`).
    pub peer_metadata: Option<crate::istio_stats::Peer>,
}
