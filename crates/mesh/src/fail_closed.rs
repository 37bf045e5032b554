//! What a refused security resource leaves in force. Refusing an AuthorizationPolicy
//! or PeerAuthentication must never grant more access than the resource would have:
//! while it is refused (and no earlier version of it keeps serving), the workloads
//! it could select get the strictest reading of it.
//!
//! - ALLOW (or no action): an ALLOW policy that matches nothing, so those workloads
//!   deny what no other ALLOW policy allows (Istio replaces an ALLOW rule it cannot
//!   honour by one that never matches).
//! - DENY, CUSTOM, or an action that cannot be read: a DENY policy that matches every
//!   request.
//! - AUDIT, and dry-run policies: nothing (they never decide).
//! - PeerAuthentication: STRICT mutual TLS.
//! - RequestAuthentication: every token at the default locations (`Authorization:
//!   Bearer`, `access_token`) is refused that no other rule verifies. Without it a
//!   token would reach the application unverified, and a policy on request principals
//!   already denies (no request is authenticated).
//!
//! The scope is the selector's labels when it can be read; otherwise (no selector, a
//! selector that cannot be read, `targetRef`) every workload of the namespace, or of
//! the mesh in the root namespace.

use serde_yaml::Value;

use crate::istio::Labels;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stance {
    AllowNothing,
    DenyAll,
    Strict,
    RefuseTokens,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FailClosed {
    pub kind: &'static str,
    pub stance: Stance,
    /// None: every workload of the namespace.
    pub selector: Option<Labels>,
}

impl Stance {
    /// How the refusal note says what stays in force.
    pub fn note(self) -> &'static str {
        match self {
            Stance::AllowNothing => {
                "(fails closed: the workloads it selects allow only what another ALLOW policy allows)"
            }
            Stance::DenyAll => "(fails closed: the workloads it selects deny every request)",
            Stance::Strict => "(fails closed: the workloads it selects require mutual TLS)",
            Stance::RefuseTokens => {
                "(fails closed: the workloads it selects refuse requests with a JWT no other rule verifies)"
            }
        }
    }
}

/// The stand-in for a security resource, read leniently from what the document has
/// (it is asked only because the document may be refused). None for other kinds.
pub fn stand_in(doc: &Value) -> Option<FailClosed> {
    let field = |v: &Value, k: &str| v.get(k).cloned();
    let api = field(doc, "apiVersion")?;
    if !api.as_str()?.starts_with("security.istio.io/") {
        return None;
    }
    let spec = field(doc, "spec").unwrap_or(Value::Null);
    let kind = field(doc, "kind")?;
    let (kind, stance) = match kind.as_str()? {
        "AuthorizationPolicy" => {
            let dry_run = doc
                .get("metadata")
                .and_then(|m| m.get("annotations"))
                .and_then(|a| a.get(crate::annotations::DRY_RUN))
                .and_then(Value::as_str)
                .and_then(crate::annotations::parse_go_bool)
                == Some(true);
            let action = match spec.get("action") {
                None | Some(Value::Null) => Some("ALLOW"),
                Some(a) => a.as_str(),
            };
            let stance = match action {
                Some("ALLOW") => Stance::AllowNothing,
                Some("AUDIT") => return None,
                _ => Stance::DenyAll,
            };
            if dry_run && matches!(action, Some("ALLOW" | "DENY")) {
                return None;
            }
            ("AuthorizationPolicy", stance)
        }
        "PeerAuthentication" => ("PeerAuthentication", Stance::Strict),
        "RequestAuthentication" => ("RequestAuthentication", Stance::RefuseTokens),
        _ => return None,
    };
    let targeted = spec.get("targetRef").is_some() || spec.get("targetRefs").is_some();
    let selector = spec
        .get("selector")
        .filter(|_| !targeted)
        .and_then(|s| s.get("matchLabels"))
        .and_then(|l| serde_yaml::from_value::<Labels>(l.clone()).ok())
        .filter(|l| !l.is_empty());
    Some(FailClosed {
        kind,
        stance,
        selector,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(yaml: &str) -> Option<FailClosed> {
        stand_in(&serde_yaml::from_str(yaml).unwrap())
    }

    #[test]
    fn each_action_fails_toward_less_access() {
        let ap = |spec: &str| {
            read(&format!(
                "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{ name: p }}\nspec: {spec}\n"
            ))
        };
        let stance = |spec: &str| ap(spec).map(|f| f.stance);
        assert_eq!(stance("{}"), Some(Stance::AllowNothing));
        assert_eq!(stance("{ action: ALLOW }"), Some(Stance::AllowNothing));
        assert_eq!(stance("{ action: DENY }"), Some(Stance::DenyAll));
        assert_eq!(stance("{ action: CUSTOM }"), Some(Stance::DenyAll));
        assert_eq!(stance("{ action: deny }"), Some(Stance::DenyAll));
        assert_eq!(stance("{ action: [1] }"), Some(Stance::DenyAll));
        assert_eq!(stance("{ action: AUDIT }"), None);
        let selected = ap("{ selector: { matchLabels: { app: a } } }").unwrap();
        assert_eq!(selected.selector.unwrap()["app"], "a");
        // A selector that cannot be read, or a target reference: the whole namespace.
        assert_eq!(
            ap("{ selector: { matchLabels: [x] } }").unwrap().selector,
            None
        );
        assert_eq!(
            ap("{ selector: { matchLabels: { app: a } }, targetRef: { kind: Service, name: a } }")
                .unwrap()
                .selector,
            None
        );
        // Dry-run ALLOW/DENY policies are never enforced, refused or not.
        let dry = read("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: { name: p, annotations: { istio.io/dry-run: \"true\" } }\nspec: { action: DENY }\n");
        assert_eq!(dry, None);
        let pa = read("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: { name: p }\nspec: { mtls: { mode: BOGUS } }\n");
        assert_eq!(pa.unwrap().stance, Stance::Strict);
        let ra = read("apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: { name: p }\nspec: { jwtRules: [{ jwks: x }] }\n");
        assert_eq!(ra.unwrap().stance, Stance::RefuseTokens);
        let vs = read("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: p }\nspec: {}\n");
        assert_eq!(vs, None);
    }
}
