//! What an issuer signs: the usages it allows, its longest lifetime, no CA
//! certificates; and what a signing error means for the request.

use std::time::Duration;

use trellis_ca::request::Usage;
use trellis_ca::SignError;

use crate::ca::Failure;
use crate::spec::IssuerSpec;

/// The usages and lifetime to sign with, or why the request fails. An empty usage
/// list means cert-manager's default (digital signature, key encipherment).
pub fn decide(
    spec: &IssuerSpec,
    usages: &[String],
    ttl: Option<Duration>,
    is_ca: bool,
) -> Result<(Vec<Usage>, Duration), Failure> {
    if is_ca {
        return Err(Failure {
            reason: "CANotAllowed",
            message: "this issuer does not sign CA certificates (make the CA a TrellisIssuer with spec.parent instead)".into(),
        });
    }
    let mut parsed = Vec::new();
    let names: Vec<&str> = if usages.is_empty() {
        vec!["digital signature", "key encipherment"]
    } else {
        usages.iter().map(String::as_str).collect()
    };
    for name in names {
        match Usage::parse(name) {
            Some(u) if spec.usages.contains(&u) => parsed.push(u),
            _ => {
                let allowed: Vec<&str> = spec.usages.iter().map(|u| u.name()).collect();
                return Err(Failure {
                    reason: "UsageNotAllowed",
                    message: format!(
                        "usage {name:?} is not allowed by the issuer (allowed: {})",
                        allowed.join(", ")
                    ),
                });
            }
        }
    }
    parsed.sort();
    parsed.dedup();
    let ttl = ttl
        .filter(|t| !t.is_zero())
        .unwrap_or(spec.max_ttl)
        .min(spec.max_ttl);
    Ok((parsed, ttl))
}

/// A signing error as the request's failure, or None when it is worth trying again
/// (the token did not answer).
pub fn failure(e: &SignError) -> Option<Failure> {
    let reason = match e {
        SignError::MalformedCsr | SignError::BadCsrSignature => "InvalidCSR",
        SignError::UnsupportedKey => "KeyNotAllowed",
        SignError::NotTheCaller(_) => "InvalidCSR",
        SignError::Internal(_) | SignError::Upstream(_) => return None,
    };
    Some(Failure {
        reason,
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::IssuerRef;

    #[test]
    fn usages_and_lifetimes_follow_the_issuer() {
        let spec = IssuerSpec::parse(
            &IssuerRef::Cluster("ca".into()),
            &serde_json::json!({"token": "t", "maxTTL": "24h"}),
        )
        .unwrap();
        let day = Duration::from_secs(86400);
        let (u, ttl) = decide(
            &spec,
            &["client auth".into(), "digital signature".into()],
            Some(day * 30),
            false,
        )
        .unwrap();
        assert_eq!(u, vec![Usage::DigitalSignature, Usage::ClientAuth]);
        assert_eq!(ttl, day, "clamped to maxTTL");
        let (u, ttl) = decide(&spec, &[], Some(Duration::from_secs(3600)), false).unwrap();
        assert_eq!(u, vec![Usage::DigitalSignature, Usage::KeyEncipherment]);
        assert_eq!(ttl, Duration::from_secs(3600));
        let e = decide(&spec, &["cert sign".into()], None, false).unwrap_err();
        assert_eq!(e.reason, "UsageNotAllowed");
        assert!(e.message.contains("\"cert sign\""), "{}", e.message);
        assert_eq!(
            decide(&spec, &["any".into()], None, false)
                .unwrap_err()
                .reason,
            "UsageNotAllowed"
        );
        assert_eq!(
            decide(&spec, &[], None, true).unwrap_err().reason,
            "CANotAllowed"
        );
    }
}
