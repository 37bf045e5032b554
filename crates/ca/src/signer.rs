//! What signs the CA's certificates: a key in memory (read from a PEM file), or a key
//! in a PKCS#11 token (`pkcs11:` URI), which never leaves it: BoringSSL builds each
//! certificate and signs it with a stand-in of the same algorithm, and the token signs
//! the to-be-signed part again (`trellis_tls::resign`).

use std::path::Path;
use std::sync::Arc;

use boring::hash::MessageDigest;
use boring::pkey::{HasPublic, PKey, PKeyRef, Private};
use boring::x509::{X509Builder, X509};
use trellis_pkcs11::{Pkcs11Uri, Token, TokenKey};

use crate::error::SignError;

pub enum Signer {
    Memory(PKey<Private>),
    Token {
        key: Arc<TokenKey>,
        stand_in: PKey<Private>,
    },
}

impl Signer {
    /// The key a file path or `pkcs11:` URI names.
    pub fn open(key: &str) -> anyhow::Result<Signer> {
        if Pkcs11Uri::is_uri(key) {
            let uri = Pkcs11Uri::parse(key).map_err(anyhow::Error::msg)?;
            let token = Token::open(&uri, None, 2)?;
            return Signer::token(TokenKey::find(token, &uri)?);
        }
        let path = Path::new(key);
        let pem = std::fs::read(path).map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
        let key = PKey::private_key_from_pem(&pem)
            .map_err(|_| anyhow::anyhow!("{key}: not a PEM private key"))?;
        Ok(Signer::Memory(key))
    }

    pub fn token(key: TokenKey) -> anyhow::Result<Signer> {
        let stand_in = trellis_tls::resign::stand_in(key.algorithm())
            .map_err(|e| anyhow::anyhow!("{}: {e}", key.name()))?;
        Ok(Signer::Token {
            key: Arc::new(key),
            stand_in,
        })
    }

    /// Whether this is the key of `public`.
    pub fn matches<T: HasPublic>(&self, public: &PKeyRef<T>) -> bool {
        match self {
            Signer::Memory(k) => public.public_eq(k),
            Signer::Token { key, .. } => public.public_eq(key.public_key()),
        }
    }

    /// Signs the certificate `b` describes (SHA-256).
    pub fn sign(&self, mut b: X509Builder) -> Result<X509, SignError> {
        match self {
            Signer::Memory(k) => {
                b.sign(k, MessageDigest::sha256())?;
                Ok(b.build())
            }
            Signer::Token { key, stand_in } => {
                b.sign(stand_in, MessageDigest::sha256())?;
                let draft = b.build().to_der()?;
                let der =
                    trellis_tls::resign::resign_with(&draft, key.algorithm(), |scheme, tbs| {
                        key.sign_blocking(scheme, tbs)
                    })
                    .map_err(|e| SignError::Internal(format!("{}: {e}", key.name())))?;
                Ok(X509::from_der(&der)?)
            }
        }
    }
}
