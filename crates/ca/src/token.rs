//! Bootstrap tokens: a JWT the CA issues for exactly one identity, so that a workload
//! on this machine (local mode, no Kubernetes) can get its first certificate.
//!
//! HS256 with a 256-bit secret that never leaves the CA's state directory. The token
//! names the identity (`sub`), the audience (`trellis-ca`) and an expiry; the CA issues a
//! certificate for `sub` and nothing else.

use crate::authority::write_private;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;
use trellis_tls::SpiffeId;

pub const AUDIENCE: &str = "trellis-ca";
const ISSUER: &str = "trellis-ca";

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a JWT")]
    Malformed,
    #[error("not a Trellis bootstrap token")]
    Foreign,
    #[error("bad token signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token is for audience {0:?}, not {AUDIENCE:?}")]
    Audience(String),
    #[error("token subject {0:?} is not a SPIFFE identity: {1}")]
    Subject(String, String),
}

#[derive(Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: String,
    iat: u64,
    exp: u64,
}

pub struct TokenIssuer {
    secret: Vec<u8>,
}

fn now() -> u64 {
    crate::authority::unix_now().max(0) as u64
}

impl TokenIssuer {
    /// Loads the secret from `dir/token-secret`, creating it (0600) on first use.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("token-secret");
        if !path.exists() {
            let mut secret = [0u8; 32];
            boring::rand::rand_bytes(&mut secret)?;
            write_private(&path, &secret)?;
        }
        let secret =
            std::fs::read(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if secret.len() < 32 {
            anyhow::bail!("{}: secret shorter than 32 bytes", path.display());
        }
        Ok(TokenIssuer { secret })
    }

    fn mac(&self, data: &[u8]) -> Vec<u8> {
        boring::hash::hmac_sha256(&self.secret, data)
            .expect("HMAC-SHA256 cannot fail with a valid key")
            .to_vec()
    }

    pub fn issue(&self, identity: &SpiffeId, ttl: Duration) -> String {
        let header = B64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let iat = now();
        let claims = Claims {
            iss: ISSUER.into(),
            sub: identity.to_string(),
            aud: AUDIENCE.into(),
            iat,
            exp: iat + ttl.as_secs(),
        };
        let body = B64.encode(serde_json::to_vec(&claims).expect("claims encode"));
        let signing_input = format!("{header}.{body}");
        let sig = B64.encode(self.mac(signing_input.as_bytes()));
        format!("{signing_input}.{sig}")
    }

    /// The identity a valid token was issued for.
    pub fn verify(&self, token: &str) -> Result<SpiffeId, TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(b), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let claims: Claims = B64
            .decode(b)
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or(TokenError::Malformed)?;
        if claims.iss != ISSUER {
            return Err(TokenError::Foreign);
        }
        let sig = B64.decode(s).map_err(|_| TokenError::Malformed)?;
        let want = self.mac(format!("{h}.{b}").as_bytes());
        if sig.len() != want.len() || !boring::memcmp::eq(&sig, &want) {
            return Err(TokenError::BadSignature);
        }
        if claims.aud != AUDIENCE {
            return Err(TokenError::Audience(claims.aud));
        }
        if claims.exp <= now() {
            return Err(TokenError::Expired);
        }
        SpiffeId::parse(&claims.sub).map_err(|e| TokenError::Subject(claims.sub.clone(), e))
    }

    /// Whether a bearer token looks like one of ours (so that others go to TokenReview).
    pub fn is_ours(token: &str) -> bool {
        token
            .split('.')
            .nth(1)
            .and_then(|b| B64.decode(b).ok())
            .and_then(|json| serde_json::from_slice::<Claims>(&json).ok())
            .is_some_and(|c| c.iss == ISSUER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let issuer = TokenIssuer::load_or_create(dir.path()).unwrap();
        let id = SpiffeId::new("cluster.local", "default", "reviews");
        let t = issuer.issue(&id, Duration::from_secs(60));
        assert!(TokenIssuer::is_ours(&t));
        assert_eq!(issuer.verify(&t).unwrap(), id);

        // Same secret file, same verdict; another CA's secret refuses it.
        let again = TokenIssuer::load_or_create(dir.path()).unwrap();
        assert_eq!(again.verify(&t).unwrap(), id);
        let other = TokenIssuer::load_or_create(tempfile::tempdir().unwrap().path()).unwrap();
        assert_eq!(other.verify(&t), Err(TokenError::BadSignature));

        // A changed subject breaks the signature.
        let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
        let forged = serde_json::json!({"iss": ISSUER, "sub": "spiffe://cluster.local/ns/default/sa/admin",
            "aud": AUDIENCE, "iat": 0, "exp": u64::MAX / 2});
        parts[1] = B64.encode(forged.to_string());
        assert_eq!(
            issuer.verify(&parts.join(".")),
            Err(TokenError::BadSignature)
        );

        let expired = issuer.issue(&id, Duration::ZERO);
        assert_eq!(issuer.verify(&expired), Err(TokenError::Expired));
        assert_eq!(issuer.verify("abc"), Err(TokenError::Malformed));
    }
}
