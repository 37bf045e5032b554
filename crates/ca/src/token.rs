//! Bootstrap tokens: a JWT the CA issues for exactly one identity, so that a workload
//! on this machine (local mode, no Kubernetes) can get its first certificate.
//!
//! HS256 with a 256-bit secret that never leaves the CA's state directory. The token
//! names the identity (`sub`), the audience (`trellis-ca`), an expiry and its own id
//! (`jti`); the CA issues a certificate for `sub` and nothing else.
//!
//! A token is bound to the first key it is used with: the CA records the token's id
//! with a hash of that CSR's public key (in `token-bindings` beside the secret, so a
//! restart keeps them), and refuses the token with any other key. A retry with the
//! same key (a response lost on the way) still works; a copy of a used token is
//! worthless.

use crate::authority::write_private;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
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
    #[error("token has no id (minted by an older Trellis); mint a new one")]
    NoId,
    #[error("token was already used with another key (a bootstrap token is good for one key)")]
    Used,
    #[error("recording the token's use: {0}")]
    Store(String),
}

#[derive(Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: String,
    iat: u64,
    exp: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    jti: String,
}

pub struct TokenIssuer {
    secret: Vec<u8>,
    /// Token id → (SHA-256 of the public key it was first used with, expiry).
    bindings: Mutex<HashMap<String, ([u8; 32], u64)>>,
    bindings_file: PathBuf,
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
        let bindings_file = dir.join("token-bindings");
        let bindings = match std::fs::read_to_string(&bindings_file) {
            Ok(text) => parse_bindings(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => anyhow::bail!("{}: {e}", bindings_file.display()),
        };
        Ok(TokenIssuer {
            secret,
            bindings: Mutex::new(bindings),
            bindings_file,
        })
    }

    fn mac(&self, data: &[u8]) -> Vec<u8> {
        boring::hash::hmac_sha256(&self.secret, data)
            .expect("HMAC-SHA256 cannot fail with a valid key")
            .to_vec()
    }

    pub fn issue(&self, identity: &SpiffeId, ttl: Duration) -> String {
        let header = B64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let iat = now();
        let mut id = [0u8; 16];
        boring::rand::rand_bytes(&mut id).expect("the system's random source");
        let claims = Claims {
            iss: ISSUER.into(),
            sub: identity.to_string(),
            aud: AUDIENCE.into(),
            iat,
            exp: iat + ttl.as_secs(),
            jti: B64.encode(id),
        };
        let body = B64.encode(serde_json::to_vec(&claims).expect("claims encode"));
        let signing_input = format!("{header}.{body}");
        let sig = B64.encode(self.mac(signing_input.as_bytes()));
        format!("{signing_input}.{sig}")
    }

    /// Binds a valid token to the key whose SubjectPublicKeyInfo hashes to `key` on
    /// its first use; refuses it with any other key after that. Called once the
    /// certificate for that key is ready, so a request the CA refuses binds nothing.
    pub fn bind(&self, token: &str, key: [u8; 32]) -> Result<(), TokenError> {
        let (_, claims) = self.check(token)?;
        if claims.jti.is_empty() {
            return Err(TokenError::NoId);
        }
        let mut bindings = self.bindings.lock().unwrap();
        match bindings.get(&claims.jti) {
            Some((bound, _)) if boring::memcmp::eq(bound, &key) => return Ok(()),
            Some(_) => return Err(TokenError::Used),
            None => {}
        }
        let now = now();
        bindings.retain(|_, (_, exp)| *exp > now);
        bindings.insert(claims.jti.clone(), (key, claims.exp));
        // Recorded before the certificate goes out: a binding lost to a crash could
        // only make the token refuse a second key, never accept one.
        let text: String = bindings
            .iter()
            .map(|(jti, (k, exp))| format!("{jti} {} {exp}\n", trellis_tls::hex(k)))
            .collect();
        crate::authority::write_private_replacing(&self.bindings_file, text.as_bytes())
            .map_err(|e| TokenError::Store(e.to_string()))
    }

    /// The identity a valid token was issued for (its key binding is [`bind`](Self::bind)'s).
    pub fn verify(&self, token: &str) -> Result<SpiffeId, TokenError> {
        self.check(token).map(|(id, _)| id)
    }

    fn check(&self, token: &str) -> Result<(SpiffeId, Claims), TokenError> {
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
        let id =
            SpiffeId::parse(&claims.sub).map_err(|e| TokenError::Subject(claims.sub.clone(), e))?;
        Ok((id, claims))
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

/// `jti hex-hash exp` lines; expired and unreadable lines are dropped.
fn parse_bindings(text: &str) -> HashMap<String, ([u8; 32], u64)> {
    let now = now();
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split(' ');
            let (jti, key, exp) = (parts.next()?, parts.next()?, parts.next()?);
            let exp: u64 = exp.parse().ok()?;
            let mut hash = [0u8; 32];
            if key.len() != 64 {
                return None;
            }
            for (i, b) in hash.iter_mut().enumerate() {
                *b = u8::from_str_radix(key.get(2 * i..2 * i + 2)?, 16).ok()?;
            }
            (exp > now).then(|| (jti.to_string(), (hash, exp)))
        })
        .collect()
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

        // Bound to the first key it is used with, across a restart of the CA.
        let key_a = [1u8; 32];
        let key_b = [2u8; 32];
        assert_eq!(issuer.bind(&t, key_a), Ok(()));
        assert_eq!(issuer.bind(&t, key_a), Ok(()), "a retry");
        assert_eq!(issuer.bind(&t, key_b), Err(TokenError::Used));
        let restarted = TokenIssuer::load_or_create(dir.path()).unwrap();
        assert_eq!(restarted.bind(&t, key_b), Err(TokenError::Used));
        assert_eq!(restarted.bind(&t, key_a), Ok(()));
        let other_token = issuer.issue(&id, Duration::from_secs(60));
        assert_eq!(issuer.bind(&other_token, key_b), Ok(()));
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("token-bindings"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let expired = issuer.issue(&id, Duration::ZERO);
        assert_eq!(issuer.verify(&expired), Err(TokenError::Expired));
        assert_eq!(issuer.verify("abc"), Err(TokenError::Malformed));
    }
}
