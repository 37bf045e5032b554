//! An issuer resource's spec, read and checked: each error names the field and value.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use trellis_ca::request::Usage;
use trellis_pkcs11::KeyKind;

use crate::names::{IssuerRef, CLUSTER_ISSUER, ISSUER};

/// cert-manager's default certificate lifetime, and Istio's hard cap.
const DEFAULT_MAX_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
/// What a request may ask for when the issuer does not say.
const DEFAULT_USAGES: &[Usage] = &[
    Usage::DigitalSignature,
    Usage::KeyEncipherment,
    Usage::ServerAuth,
    Usage::ClientAuth,
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerSpec {
    /// The name of a token the signer was started with.
    pub token: String,
    pub key_kind: KeyKind,
    pub common_name: String,
    pub organization: String,
    /// The issuer that signs this CA's certificate; None for a self-signed root.
    pub parent: Option<IssuerRef>,
    pub max_ttl: Duration,
    pub usages: BTreeSet<Usage>,
}

fn string<'a>(spec: &'a Value, field: &str) -> Result<Option<&'a str>, String> {
    match &spec[field] {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        other => Err(format!("spec.{field}: {other} is not a string")),
    }
}

impl IssuerSpec {
    pub fn parse(issuer: &IssuerRef, spec: &Value) -> Result<IssuerSpec, String> {
        let token = string(spec, "token")?
            .filter(|t| !t.is_empty())
            .ok_or("spec.token is required: the name of a token the signer was started with")?
            .to_string();
        let key_kind = match string(spec, "keyAlgorithm")? {
            None | Some("ECDSA-P256") => KeyKind::EcdsaP256,
            Some("RSA-2048") => KeyKind::Rsa2048,
            Some(other) => {
                return Err(format!(
                    "spec.keyAlgorithm: {other:?} is not ECDSA-P256 or RSA-2048"
                ))
            }
        };
        let subject = &spec["subject"];
        let common_name = string(subject, "commonName")
            .map_err(|e| e.replace("spec.", "spec.subject."))?
            .unwrap_or(issuer.name())
            .to_string();
        let organization = string(subject, "organization")
            .map_err(|e| e.replace("spec.", "spec.subject."))?
            .unwrap_or("trellis")
            .to_string();
        let parent = match &spec["parent"] {
            Value::Null => None,
            p => {
                let kind = p["kind"].as_str().unwrap_or_default();
                let name = p["name"]
                    .as_str()
                    .filter(|n| !n.is_empty())
                    .ok_or("spec.parent.name is required")?;
                let parent = match (kind, issuer) {
                    (ISSUER, IssuerRef::Namespaced(ns, _)) => {
                        IssuerRef::Namespaced(ns.clone(), name.into())
                    }
                    (ISSUER, IssuerRef::Cluster(_)) => {
                        return Err(
                            "spec.parent.kind: a TrellisClusterIssuer's parent must be a TrellisClusterIssuer"
                                .into(),
                        )
                    }
                    (CLUSTER_ISSUER, _) => IssuerRef::Cluster(name.into()),
                    _ => {
                        return Err(format!(
                            "spec.parent.kind: {kind:?} is not {ISSUER} or {CLUSTER_ISSUER}"
                        ))
                    }
                };
                if &parent == issuer {
                    return Err("spec.parent: an issuer cannot be its own parent".into());
                }
                Some(parent)
            }
        };
        let max_ttl = match string(spec, "maxTTL")? {
            None => DEFAULT_MAX_TTL,
            Some(t) => trellis_config::parse_duration(t)
                .map_err(|e| format!("spec.maxTTL: {e}"))
                .and_then(|d| {
                    if d < Duration::from_secs(600) {
                        Err(format!("spec.maxTTL: {t:?} is under 10 minutes"))
                    } else {
                        Ok(d)
                    }
                })?,
        };
        let usages = match &spec["usages"] {
            Value::Null => DEFAULT_USAGES.iter().copied().collect(),
            Value::Array(list) => list
                .iter()
                .map(|u| {
                    u.as_str().and_then(Usage::parse).ok_or_else(|| {
                        format!("spec.usages: {u} is not a key usage Trellis issues")
                    })
                })
                .collect::<Result<_, _>>()?,
            other => return Err(format!("spec.usages: {other} is not a list")),
        };
        Ok(IssuerSpec {
            token,
            key_kind,
            common_name,
            organization,
            parent,
            max_ttl,
            usages,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_refusals_name_the_field() {
        let me = IssuerRef::Namespaced("shop".into(), "ca".into());
        let s = IssuerSpec::parse(&me, &json!({"token": "tcs"})).unwrap();
        assert_eq!(s.key_kind, KeyKind::EcdsaP256);
        assert_eq!(s.common_name, "ca");
        assert_eq!(s.max_ttl, DEFAULT_MAX_TTL);
        assert!(s.usages.contains(&Usage::ServerAuth) && !s.usages.contains(&Usage::CertSign));
        let s = IssuerSpec::parse(
            &me,
            &json!({"token": "tcs", "keyAlgorithm": "RSA-2048", "maxTTL": "24h",
                    "parent": {"kind": "TrellisIssuer", "name": "root"}, "usages": ["client auth"]}),
        )
        .unwrap();
        assert_eq!(
            s.parent,
            Some(IssuerRef::Namespaced("shop".into(), "root".into()))
        );
        assert_eq!(s.max_ttl, Duration::from_secs(86400));
        assert_eq!(s.usages.len(), 1);
        for (spec, error) in [
            (json!({}), "spec.token is required"),
            (
                json!({"token": "t", "keyAlgorithm": "DSA"}),
                "spec.keyAlgorithm: \"DSA\"",
            ),
            (json!({"token": "t", "maxTTL": "1y"}), "spec.maxTTL"),
            (json!({"token": "t", "maxTTL": "5m"}), "under 10 minutes"),
            (
                json!({"token": "t", "usages": ["any"]}),
                "spec.usages: \"any\"",
            ),
            (
                json!({"token": "t", "parent": {"kind": "TrellisIssuer", "name": "ca"}}),
                "its own parent",
            ),
            (
                json!({"token": "t", "parent": {"kind": "Issuer", "name": "x"}}),
                "spec.parent.kind",
            ),
        ] {
            let e = IssuerSpec::parse(&me, &spec).unwrap_err();
            assert!(e.contains(error), "{spec}: {e}");
        }
        let cluster = IssuerRef::Cluster("root".into());
        let e = IssuerSpec::parse(
            &cluster,
            &json!({"token": "t", "parent": {"kind": "TrellisIssuer", "name": "x"}}),
        )
        .unwrap_err();
        assert!(e.contains("must be a TrellisClusterIssuer"), "{e}");
    }
}
