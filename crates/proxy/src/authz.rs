//! AuthorizationPolicy at a listener: the engine plus its metrics and audit log.

use crate::conn::ConnInfo;
use crate::stats::RbacCounters;
use trellis_authz::{Attributes, Decision, Engine, HttpAttributes};

pub struct ListenerAuthz {
    pub listener: String,
    pub engine: Engine,
    pub counters: RbacCounters,
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
            // No proxy in front of a sidecar is trusted: the peer is the client.
            remote_ip: conn.peer.ip(),
            principal,
            destination_ip: conn.local.ip(),
            destination_port: conn.local.port(),
            sni: conn.server_name.as_deref(),
            http,
        };
        let verdict = self.engine.evaluate(&attrs);
        for policy in &verdict.audited {
            tracing::info!(listener = %self.listener, %policy, source = %conn.peer,
                principal = principal.unwrap_or("-"), "AUDIT: AuthorizationPolicy matched");
        }
        match &verdict.dry_run {
            Some(Decision::Allow) => {
                self.counters.dry_run_allowed.inc();
            }
            Some(Decision::Deny(why)) => {
                self.counters.dry_run_denied.inc();
                tracing::info!(listener = %self.listener, source = %conn.peer,
                    principal = principal.unwrap_or("-"),
                    "dry-run: would have been denied ({why}); not enforced");
            }
            None => {}
        }
        match verdict.decision {
            Decision::Allow => {
                self.counters.allowed.inc();
                true
            }
            Decision::Deny(why) => {
                self.counters.denied.inc();
                tracing::debug!(listener = %self.listener, source = %conn.peer, "RBAC denied: {why}");
                false
            }
        }
    }
}
