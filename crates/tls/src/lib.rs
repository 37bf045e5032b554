//! TLS for the Trellis data plane, on BoringSSL.
//!
//! The proxy never holds a signing key in its TLS code: every certificate comes with a
//! [`PrivateKeyProvider`], installed into BoringSSL as an asynchronous private-key
//! method. A handshake that needs a signature suspends, the provider's future runs
//! (in memory, in a batch of eight on AVX-512, or in a PKCS#11 token), and the
//! handshake resumes when the future completes. That seam is why the data plane uses
//! BoringSSL and not rustls.
//!
//! - [`ServerTls`] terminates TLS for a listener: certificates selected by SNI, ALPN,
//!   TLS 1.3 by default (1.2 by config, nothing older) and, for mutual TLS, client
//!   certificates verified against a trust bundle with the peer's SPIFFE identity
//!   exposed to routing and policy.
//! - [`ClientTls`] originates TLS to a cluster and refuses a peer whose identity is not
//!   one the cluster expects.
//! - [`SpiffeId`] is `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.

mod bundle;
mod client;
mod client_hello;
mod identity;
mod material;
mod names;
mod provider;
pub mod resign;
mod server;
mod stream;

pub use bundle::{fingerprint, fingerprint_hex, hex, peer_rejection, TrustDomainRoots};
pub use client::{ClientTls, ClientTlsConfig};
pub use client_hello::{read_client_hello, ClientHello, HelloError};
pub use identity::{peer_identities, SpiffeId};
pub use material::{
    load_certificate_chain, load_private_key, load_trust_bundle, parse_certificate_chain,
    parse_private_key, CertifiedKey,
};
pub use names::ServerNames;
pub use provider::{
    InMemoryKey, KeyAlgorithm, KeyOpError, KeyOpFuture, KeyOpHook, PrivateKeyProvider,
    SignatureScheme,
};
pub use server::{AcceptedTls, ServerCertificate, ServerTls, ServerTlsConfig};
pub use stream::MaybeTls;

/// Protocol versions a config may ask for. Anything older than TLS 1.2 is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

impl TlsVersion {
    fn to_boring(self) -> boring::ssl::SslVersion {
        match self {
            TlsVersion::Tls12 => boring::ssl::SslVersion::TLS1_2,
            TlsVersion::Tls13 => boring::ssl::SslVersion::TLS1_3,
        }
    }
}

/// What went wrong building a TLS context; the message names the file or setting.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("{0}")]
    Config(String),
    #[error("BoringSSL: {0}")]
    Boring(#[from] boring::error::ErrorStack),
}

/// ALPN protocol names in TLS wire format (length-prefixed).
fn alpn_wire(protocols: &[String]) -> Result<Vec<u8>, TlsError> {
    let mut wire = Vec::new();
    for p in protocols {
        let len = u8::try_from(p.len())
            .ok()
            .filter(|l| *l > 0)
            .ok_or_else(|| TlsError::Config(format!("alpn protocol {p:?}: length 1..255")))?;
        wire.push(len);
        wire.extend_from_slice(p.as_bytes());
    }
    Ok(wire)
}
