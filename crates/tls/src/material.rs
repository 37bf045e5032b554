//! Certificates and keys as a TLS context needs them, read from PEM files with errors
//! that name the file.

use crate::provider::PrivateKeyProvider;
use crate::TlsError;
use boring::pkey::{PKey, Private};
use boring::x509::X509;
use std::sync::Arc;

/// A certificate chain (leaf first) with the provider that signs for the leaf's key.
#[derive(Clone)]
pub struct CertifiedKey {
    pub chain: Vec<X509>,
    pub provider: Arc<dyn PrivateKeyProvider>,
}

impl CertifiedKey {
    pub fn leaf(&self) -> &X509 {
        &self.chain[0]
    }
}

fn read(path: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File {
        path: path.to_string(),
        reason: e.to_string(),
    })
}

/// Reads a PEM chain, leaf first. An empty or unparsable file is an error.
pub fn load_certificate_chain(path: &str) -> Result<Vec<X509>, TlsError> {
    chain(&read(path)?, path, "the file")
}

/// A PEM chain held in memory (an SDS secret); `what` names it in errors.
pub fn parse_certificate_chain(pem: &[u8], what: &str) -> Result<Vec<X509>, TlsError> {
    chain(pem, what, "it")
}

fn chain(pem: &[u8], what: &str, container: &str) -> Result<Vec<X509>, TlsError> {
    let chain = X509::stack_from_pem(pem).map_err(|_| TlsError::File {
        path: what.to_string(),
        reason: "not a PEM certificate chain".into(),
    })?;
    if chain.is_empty() {
        return Err(TlsError::File {
            path: what.to_string(),
            reason: format!("no certificate in {container}"),
        });
    }
    Ok(chain)
}

/// Reads the roots a peer's chain must lead to.
pub fn load_trust_bundle(path: &str) -> Result<Vec<X509>, TlsError> {
    load_certificate_chain(path)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1) and checks that it belongs to the
/// leaf certificate. Providers are built on it.
pub fn load_private_key(path: &str, leaf: &X509) -> Result<PKey<Private>, TlsError> {
    parse_private_key(&read(path)?, path, leaf)
}

/// A PEM private key held in memory (an SDS secret); `what` names it in errors, which
/// never quote the key.
pub fn parse_private_key(pem: &[u8], what: &str, leaf: &X509) -> Result<PKey<Private>, TlsError> {
    let key = PKey::private_key_from_pem(pem).map_err(|_| TlsError::File {
        path: what.to_string(),
        reason: "no PEM private key could be parsed".into(),
    })?;
    let matches = leaf
        .public_key()
        .map(|p| p.public_eq(&key))
        .unwrap_or(false);
    if !matches {
        return Err(TlsError::File {
            path: what.to_string(),
            reason: "private key does not match the certificate".into(),
        });
    }
    Ok(key)
}
