//! Why a certificate could not be signed.

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("the CSR is not a PEM certificate request")]
    MalformedCsr,
    #[error("the CSR's signature does not verify with its own public key")]
    BadCsrSignature,
    #[error("the CSR's public key is not RSA (2048..4096 bits) or ECDSA P-256/P-384")]
    UnsupportedKey,
    #[error("{0}")]
    NotTheCaller(String),
    /// The external signer (RA mode) did not answer, refused, or answered wrongly.
    #[error("{0}")]
    Upstream(String),
    #[error("signing failed: {0}")]
    Internal(String),
}

impl From<boring::error::ErrorStack> for SignError {
    fn from(e: boring::error::ErrorStack) -> Self {
        SignError::Internal(e.to_string())
    }
}
