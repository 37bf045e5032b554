//! What the conversion says of each Gateway API resource, in the shape of the status
//! conditions the Gateway API defines (`Accepted`, `Programmed`, `ResolvedRefs`,
//! `Conflicted` with their reasons); written back to the cluster in Kubernetes mode and
//! reported as diagnostics otherwise.

use super::types::ParentRef;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    /// `Accepted`, `Programmed`, `ResolvedRefs`, `Conflicted`.
    pub kind: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl Condition {
    pub fn new(kind: &'static str, status: bool, reason: &str, message: impl Into<String>) -> Self {
        Condition {
            kind,
            status,
            reason: reason.to_string(),
            message: message.into(),
        }
    }

    pub fn ok(kind: &'static str, reason: &str) -> Self {
        Condition::new(kind, true, reason, "")
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClassStatus {
    pub name: String,
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListenerStatus {
    pub name: String,
    pub attached_routes: u32,
    /// `HTTPRoute`, the route kinds the listener takes.
    pub supported_kinds: Vec<String>,
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct GatewayStatus {
    pub namespace: String,
    pub name: String,
    pub conditions: Vec<Condition>,
    pub listeners: Vec<ListenerStatus>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParentStatus {
    /// The parent as the route names it, its namespace filled in.
    pub parent: ParentRef,
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct RouteStatus {
    /// `HTTPRoute` or `GRPCRoute`.
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub parents: Vec<ParentStatus>,
}

/// Everything the conversion said, for the status writer and the diagnostics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Status {
    pub classes: Vec<ClassStatus>,
    pub gateways: Vec<GatewayStatus>,
    pub routes: Vec<RouteStatus>,
}

impl Status {
    /// One line per condition that is not as it should be (`Conflicted` true, any
    /// other false), naming the resource: what `trellis control` logs and `check` prints.
    pub fn problems(&self) -> Vec<String> {
        let bad = |c: &Condition| (c.kind == "Conflicted") == c.status;
        let mut out = Vec::new();
        for c in &self.classes {
            for k in c.conditions.iter().filter(|c| bad(c)) {
                out.push(format!(
                    "GatewayClass {}: {} {}: {}",
                    c.name, k.kind, k.reason, k.message
                ));
            }
        }
        for g in &self.gateways {
            for k in g.conditions.iter().filter(|c| bad(c)) {
                out.push(format!(
                    "Gateway {}/{}: {} {}: {}",
                    g.namespace, g.name, k.kind, k.reason, k.message
                ));
            }
            for l in &g.listeners {
                for k in l.conditions.iter().filter(|c| bad(c)) {
                    out.push(format!(
                        "Gateway {}/{} listener {}: {} {}: {}",
                        g.namespace, g.name, l.name, k.kind, k.reason, k.message
                    ));
                }
            }
        }
        for r in &self.routes {
            for p in &r.parents {
                for k in p.conditions.iter().filter(|c| bad(c)) {
                    out.push(format!(
                        "{} {}/{} parent {}/{}: {} {}: {}",
                        r.kind,
                        r.namespace,
                        r.name,
                        p.parent.namespace.as_deref().unwrap_or_default(),
                        p.parent.name,
                        k.kind,
                        k.reason,
                        k.message
                    ));
                }
            }
        }
        out
    }
}
