//! AuthorizationPolicy at a listener: the engine plus its metrics and audit log.

use crate::http::ConnInfo;
use prometheus_client::metrics::counter::Counter;
use trellis_authz::{Attributes, Decision, Engine, HttpAttributes};

pub struct ListenerAuthz {
    pub listener: String,
    pub engine: Engine,
    pub denied: Counter,
    pub allowed: Counter,
}

impl ListenerAuthz {
    /// True when the request (or, without `http`, the TCP connection) may proceed.
    pub fn check(&self, conn: &ConnInfo, http: Option<HttpAttributes>) -> bool {
        let principal = conn
            .peer_identity
            .as_deref()
            .map(|id| id.strip_prefix("spiffe://").unwrap_or(id));
        let attrs = Attributes {
            source_ip: conn.peer.ip(),
            principal,
            destination_port: conn.local.port(),
            http,
        };
        let verdict = self.engine.evaluate(&attrs);
        for policy in &verdict.audited {
            tracing::info!(listener = %self.listener, %policy, source = %conn.peer,
                principal = principal.unwrap_or("-"), "AUDIT: AuthorizationPolicy matched");
        }
        match verdict.decision {
            Decision::Allow => {
                self.allowed.inc();
                true
            }
            Decision::Deny(why) => {
                self.denied.inc();
                tracing::debug!(listener = %self.listener, source = %conn.peer, "RBAC denied: {why}");
                false
            }
        }
    }
}
