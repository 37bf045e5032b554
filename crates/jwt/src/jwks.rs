//! JWK Sets: the public keys a rule verifies tokens with.

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

pub(crate) struct Key {
    pub kid: Option<String>,
    /// The key's own `alg`, when it names one: a token must then use exactly that.
    pub alg: Option<Algorithm>,
    pub key: DecodingKey,
}

/// The usable keys of a JWK Set (`{"keys": [...]}`, or one JWK). Keys Trellis cannot use
/// (another `kty`, `"use": "enc"`, an algorithm it does not know) are left out, as Envoy
/// leaves them out: fewer keys only ever verify fewer tokens. A set with no usable key
/// at all is an error.
pub(crate) fn parse(jwks: &str) -> Result<Vec<Key>, String> {
    let value: Value =
        serde_json::from_str(jwks).map_err(|e| format!("not a JWK Set (JSON: {e})"))?;
    let entries = match &value {
        Value::Object(o) if o.contains_key("keys") => match &o["keys"] {
            Value::Array(keys) => keys.clone(),
            _ => return Err("not a JWK Set: \"keys\" is not an array".into()),
        },
        Value::Object(o) if o.contains_key("kty") => vec![value.clone()],
        _ => return Err("not a JWK Set: no \"keys\" array".into()),
    };
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for (i, entry) in entries.into_iter().enumerate() {
        match key(entry) {
            Ok(Some(k)) => keys.push(k),
            Ok(None) => {}
            Err(e) => skipped.push(format!("keys[{i}]: {e}")),
        }
    }
    if keys.is_empty() {
        return Err(if skipped.is_empty() {
            "the JWK Set has no keys".into()
        } else {
            format!("the JWK Set has no usable key ({})", skipped.join("; "))
        });
    }
    Ok(keys)
}

/// One key; None for a key that is not for signatures.
fn key(entry: Value) -> Result<Option<Key>, String> {
    let jwk: Jwk = serde_json::from_value(entry).map_err(|e| e.to_string())?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Ok(None);
    }
    let alg = match jwk.common.key_algorithm {
        Some(a) => Some(
            a.to_string()
                .parse::<Algorithm>()
                .map_err(|_| format!("alg {a} is not a signature algorithm"))?,
        ),
        None => None,
    };
    if let AlgorithmParameters::EllipticCurve(p) = &jwk.algorithm {
        // ring verifies P-256 and P-384 only; it checks the point when it verifies,
        // so a coordinate of the wrong size is caught here.
        use jsonwebtoken::jwk::EllipticCurve::*;
        let size = match p.curve {
            P256 => 32usize,
            P384 => 48,
            _ => return Err(format!("curve {:?} is not supported", p.curve)),
        };
        for (name, c) in [("x", &p.x), ("y", &p.y)] {
            if c.trim_end_matches('=').len() != (size * 4).div_ceil(3) {
                return Err(format!("{name} is not a {}-byte coordinate", size));
            }
        }
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
    Ok(Some(Key {
        kid: jwk.common.key_id,
        alg,
        key,
    }))
}

/// Checks that `jwks` is a JWK Set with at least one usable key.
pub fn check(jwks: &str) -> Result<(), String> {
    parse(jwks).map(|_| ())
}
