//! The private-key provider seam: how a handshake gets a signature without the TLS
//! code ever touching a key.
//!
//! BoringSSL calls the installed private-key method when the handshake needs to sign
//! (CertificateVerify, ServerKeyExchange) or, for TLS 1.2 RSA key exchange, decrypt. The
//! method hands the operation to the certificate's [`PrivateKeyProvider`] and returns
//! "retry"; the handshake suspends until the provider's future completes. A provider can
//! therefore compute inline ([`InMemoryKey`]), queue the operation into a batch, or wait
//! on a hardware token.

use boring::hash::MessageDigest;
use boring::pkey::{Id, PKey, Private};
use boring::rsa::Padding;
use boring::sign::{RsaPssSaltlen, Signer};
use boring::ssl::{
    AsyncPrivateKeyMethod, AsyncPrivateKeyMethodError, BoxPrivateKeyMethodFuture, SslRef,
    SslSignatureAlgorithm,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// The result of one private-key operation: the signature or the plaintext.
pub type KeyOpFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, KeyOpError>> + Send>>;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyOpError(pub String);

/// The key a provider holds, as far as TLS needs to know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAlgorithm {
    Rsa { bits: u32 },
    EcdsaP256,
    EcdsaP384,
    Ed25519,
}

/// A TLS SignatureScheme code point (RFC 8446 section 4.2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SignatureScheme(pub u16);

impl SignatureScheme {
    pub const RSA_PKCS1_SHA256: Self = Self(0x0401);
    pub const RSA_PKCS1_SHA384: Self = Self(0x0501);
    pub const RSA_PKCS1_SHA512: Self = Self(0x0601);
    pub const ECDSA_SECP256R1_SHA256: Self = Self(0x0403);
    pub const ECDSA_SECP384R1_SHA384: Self = Self(0x0503);
    pub const RSA_PSS_RSAE_SHA256: Self = Self(0x0804);
    pub const RSA_PSS_RSAE_SHA384: Self = Self(0x0805);
    pub const RSA_PSS_RSAE_SHA512: Self = Self(0x0806);
    pub const ED25519: Self = Self(0x0807);

    /// The digest the message is hashed with; None for Ed25519 (signs the message).
    pub fn digest(self) -> Option<MessageDigest> {
        match self.0 {
            0x0401 | 0x0403 | 0x0804 => Some(MessageDigest::sha256()),
            0x0501 | 0x0503 | 0x0805 => Some(MessageDigest::sha384()),
            0x0601 | 0x0806 => Some(MessageDigest::sha512()),
            _ => None,
        }
    }

    pub fn is_rsa_pss(self) -> bool {
        matches!(self.0, 0x0804..=0x0806)
    }

    pub fn is_rsa_pkcs1(self) -> bool {
        matches!(self.0, 0x0401 | 0x0501 | 0x0601)
    }

    pub fn is_ecdsa(self) -> bool {
        matches!(self.0, 0x0403 | 0x0503)
    }
}

/// Signs and decrypts with one private key on behalf of TLS handshakes.
///
/// Implementations must never log or expose key material. A future that fails makes
/// the handshake fail; it never falls back to another key.
pub trait PrivateKeyProvider: Send + Sync + 'static {
    /// A short name for logs and metrics (`memory`, `cryptomb`, `pkcs11`).
    fn name(&self) -> &'static str;

    fn algorithm(&self) -> KeyAlgorithm;

    /// Signs `message` with `scheme`. The provider hashes the message itself: BoringSSL
    /// passes the unhashed handshake transcript data.
    fn sign(&self, scheme: SignatureScheme, message: &[u8]) -> KeyOpFuture;

    /// Raw RSA decryption without padding (TLS 1.2 RSA key exchange only).
    fn decrypt(&self, ciphertext: &[u8]) -> KeyOpFuture;
}

/// Called after every key operation with the provider's name, the operation (`sign` or
/// `decrypt`) and whether it succeeded; the proxy counts these in its metrics.
pub type KeyOpHook = Arc<dyn Fn(&'static str, &'static str, bool) + Send + Sync>;

/// The default provider: the key lives in this process's memory and every operation is
/// computed inline, on the thread that runs the handshake (as Envoy does by default).
pub struct InMemoryKey {
    key: PKey<Private>,
    algorithm: KeyAlgorithm,
}

impl InMemoryKey {
    pub fn new(key: PKey<Private>) -> Result<Self, KeyOpError> {
        let algorithm = algorithm_of(&key)?;
        Ok(InMemoryKey { key, algorithm })
    }

    fn sign_now(&self, scheme: SignatureScheme, message: &[u8]) -> Result<Vec<u8>, KeyOpError> {
        let fail =
            |what: &str| KeyOpError(format!("{what} with signature scheme {:#06x}", scheme.0));
        let usable = match self.algorithm {
            KeyAlgorithm::Rsa { .. } => scheme.is_rsa_pkcs1() || scheme.is_rsa_pss(),
            KeyAlgorithm::EcdsaP256 => scheme == SignatureScheme::ECDSA_SECP256R1_SHA256,
            KeyAlgorithm::EcdsaP384 => scheme == SignatureScheme::ECDSA_SECP384R1_SHA384,
            KeyAlgorithm::Ed25519 => scheme == SignatureScheme::ED25519,
        };
        if !usable {
            return Err(fail("key cannot sign"));
        }
        let mut signer = match scheme.digest() {
            Some(md) => Signer::new(md, &self.key),
            None => Signer::new_without_digest(&self.key),
        }
        .map_err(|_| fail("signer setup failed"))?;
        if scheme.is_rsa_pss() {
            signer
                .set_rsa_padding(Padding::PKCS1_PSS)
                .and_then(|_| signer.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH))
                .map_err(|_| fail("PSS setup failed"))?;
        }
        if scheme.digest().is_none() {
            return signer
                .sign_oneshot_to_vec(message)
                .map_err(|_| fail("signing failed"));
        }
        signer
            .update(message)
            .and_then(|_| signer.sign_to_vec())
            .map_err(|_| fail("signing failed"))
    }

    fn decrypt_now(&self, ciphertext: &[u8]) -> Result<Vec<u8>, KeyOpError> {
        let rsa = self
            .key
            .rsa()
            .map_err(|_| KeyOpError("decrypt needs an RSA key".into()))?;
        let mut out = vec![0u8; rsa.size() as usize];
        let n = rsa
            .private_decrypt(ciphertext, &mut out, Padding::NONE)
            .map_err(|_| KeyOpError("RSA decryption failed".into()))?;
        out.truncate(n);
        Ok(out)
    }
}

impl PrivateKeyProvider for InMemoryKey {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    fn sign(&self, scheme: SignatureScheme, message: &[u8]) -> KeyOpFuture {
        Box::pin(std::future::ready(self.sign_now(scheme, message)))
    }

    fn decrypt(&self, ciphertext: &[u8]) -> KeyOpFuture {
        Box::pin(std::future::ready(self.decrypt_now(ciphertext)))
    }
}

pub(crate) fn algorithm_of(key: &PKey<Private>) -> Result<KeyAlgorithm, KeyOpError> {
    match key.id() {
        Id::RSA => Ok(KeyAlgorithm::Rsa { bits: key.bits() }),
        Id::EC => match key.bits() {
            256 => Ok(KeyAlgorithm::EcdsaP256),
            384 => Ok(KeyAlgorithm::EcdsaP384),
            b => Err(KeyOpError(format!("unsupported EC key size {b} bits"))),
        },
        Id::ED25519 => Ok(KeyAlgorithm::Ed25519),
        _ => Err(KeyOpError("unsupported private key type".into())),
    }
}

/// Installs a provider as BoringSSL's private-key method for one context.
pub(crate) struct ProviderMethod {
    pub provider: Arc<dyn PrivateKeyProvider>,
    pub hook: Option<KeyOpHook>,
}

impl ProviderMethod {
    fn finish(&self, op: &'static str, fut: KeyOpFuture) -> BoxPrivateKeyMethodFuture {
        let name = self.provider.name();
        let hook = self.hook.clone();
        Box::pin(async move {
            let result = fut.await;
            if let Some(h) = &hook {
                h(name, op, result.is_ok());
            }
            let bytes = result.map_err(|e| {
                tracing::warn!(provider = name, op, "private key operation failed: {e}");
                AsyncPrivateKeyMethodError
            })?;
            let finish: boring::ssl::BoxPrivateKeyMethodFinish =
                Box::new(move |_ssl: &mut SslRef, out: &mut [u8]| {
                    let dst = out
                        .get_mut(..bytes.len())
                        .ok_or(AsyncPrivateKeyMethodError)?;
                    dst.copy_from_slice(&bytes);
                    Ok(bytes.len())
                });
            Ok(finish)
        })
    }
}

impl AsyncPrivateKeyMethod for ProviderMethod {
    fn sign(
        &self,
        _ssl: &mut SslRef,
        input: &[u8],
        signature_algorithm: SslSignatureAlgorithm,
        _output: &mut [u8],
    ) -> Result<BoxPrivateKeyMethodFuture, AsyncPrivateKeyMethodError> {
        let scheme = SignatureScheme(sigalg_code(signature_algorithm));
        Ok(self.finish("sign", self.provider.sign(scheme, input)))
    }

    fn decrypt(
        &self,
        _ssl: &mut SslRef,
        input: &[u8],
        _output: &mut [u8],
    ) -> Result<BoxPrivateKeyMethodFuture, AsyncPrivateKeyMethodError> {
        Ok(self.finish("decrypt", self.provider.decrypt(input)))
    }
}

/// BoringSSL's `uint16_t` code point for a signature algorithm.
fn sigalg_code(alg: SslSignatureAlgorithm) -> u16 {
    // SslSignatureAlgorithm is a transparent wrapper over the code point but exposes no
    // accessor; compare against the known constants instead.
    const KNOWN: [(SslSignatureAlgorithm, SignatureScheme); 9] = [
        (
            SslSignatureAlgorithm::RSA_PKCS1_SHA256,
            SignatureScheme::RSA_PKCS1_SHA256,
        ),
        (
            SslSignatureAlgorithm::RSA_PKCS1_SHA384,
            SignatureScheme::RSA_PKCS1_SHA384,
        ),
        (
            SslSignatureAlgorithm::RSA_PKCS1_SHA512,
            SignatureScheme::RSA_PKCS1_SHA512,
        ),
        (
            SslSignatureAlgorithm::ECDSA_SECP256R1_SHA256,
            SignatureScheme::ECDSA_SECP256R1_SHA256,
        ),
        (
            SslSignatureAlgorithm::ECDSA_SECP384R1_SHA384,
            SignatureScheme::ECDSA_SECP384R1_SHA384,
        ),
        (
            SslSignatureAlgorithm::RSA_PSS_RSAE_SHA256,
            SignatureScheme::RSA_PSS_RSAE_SHA256,
        ),
        (
            SslSignatureAlgorithm::RSA_PSS_RSAE_SHA384,
            SignatureScheme::RSA_PSS_RSAE_SHA384,
        ),
        (
            SslSignatureAlgorithm::RSA_PSS_RSAE_SHA512,
            SignatureScheme::RSA_PSS_RSAE_SHA512,
        ),
        (SslSignatureAlgorithm::ED25519, SignatureScheme::ED25519),
    ];
    KNOWN
        .iter()
        .find(|(a, _)| *a == alg)
        .map(|(_, s)| s.0)
        .unwrap_or(0)
}

/// Puts a certificate chain into a context and routes its signatures through the
/// certificate's provider.
pub(crate) fn install_certificate(
    b: &mut boring::ssl::SslContextBuilder,
    key: &crate::CertifiedKey,
    hook: Option<KeyOpHook>,
) -> Result<(), boring::error::ErrorStack> {
    b.set_certificate(key.leaf())?;
    for c in &key.chain[1..] {
        b.add_extra_chain_cert(c.clone())?;
    }
    b.set_async_private_key_method(ProviderMethod {
        provider: key.provider.clone(),
        hook,
    });
    Ok(())
}
