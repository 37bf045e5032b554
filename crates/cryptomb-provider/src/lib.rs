//! The `cryptomb` private-key provider, as Envoy's CryptoMB provider works: a
//! handshake's RSA or ECDSA P-256 operation joins a queue for its algorithm and key
//! size, the queue is computed as
//! one multi-buffer batch when eight are waiting or when the oldest has waited
//! `poll_delay`, and each suspended handshake resumes with its result.
//!
//! By default a batch is computed inline, as Envoy does: by the worker whose handshake
//! fills the queue, or by a timer task when the oldest operation has waited
//! `poll_delay`. The alternative (`inline: false`) is one dedicated thread
//! (`trellis-cryptomb`) that never stalls a worker for the ~1.8 ms of an RSA-2048 batch;
//! on this two-core machine inline gave 1.15–1.18× the full handshakes/s (the extra
//! thread competes for the same cores and adds two wake-ups per batch), while the thread
//! keeps p50 lower. See docs/PERFORMANCE.md.
//!
//! Keys the kernels do not cover (P-384, Ed25519, unusual RSA sizes), signature schemes
//! other than RSA PKCS#1/PSS and `ecdsa_secp256r1_sha256`, and CPUs without AVX-512
//! IFMA take the single-operation BoringSSL path, counted as fallbacks.

mod batcher;

pub use batcher::{Batcher, CryptoMbMetrics};

use batcher::Op;
use boring::pkey::{PKey, Private};
use std::sync::{Arc, Once};
use trellis_cryptomb::padding::{self, Hash};
use trellis_cryptomb::{EcdsaKey, RsaKey};
use trellis_tls::{
    InMemoryKey, KeyAlgorithm, KeyOpError, KeyOpFuture, PrivateKeyProvider, SignatureScheme,
};

/// The multi-buffer form of a key.
enum MbKey {
    Rsa(Arc<RsaKey>),
    EcdsaP256(Arc<EcdsaKey>),
}

pub struct CryptoMbKey {
    /// The multi-buffer form of the key, when the CPU and key allow it.
    mb: Option<MbKey>,
    single: InMemoryKey,
    batcher: Arc<Batcher>,
    bits: usize,
    bytes: usize,
}

impl CryptoMbKey {
    /// `fallback: false` refuses a key or CPU that the batch path cannot serve.
    pub fn new(key: PKey<Private>, batcher: Arc<Batcher>, fallback: bool) -> Result<Self, String> {
        let single = InMemoryKey::new(key.clone()).map_err(|e| e.to_string())?;
        let rsa = key.rsa().ok();
        let mb = if !trellis_cryptomb::ifma_available() {
            None
        } else if let Some(rsa) = &rsa {
            RsaKey::new(rsa).ok().map(|k| MbKey::Rsa(Arc::new(k)))
        } else {
            key.ec_key()
                .ok()
                .and_then(|ec| EcdsaKey::new(&ec).ok())
                .map(|k| MbKey::EcdsaP256(Arc::new(k)))
        };
        if mb.is_none() {
            if !trellis_cryptomb::ifma_available() {
                static ONCE: Once = Once::new();
                ONCE.call_once(|| {
                    tracing::warn!("cryptomb: this CPU has no AVX-512 IFMA; private-key operations take the single-operation path")
                });
            }
            if !fallback {
                return Err("cryptomb cannot serve this key on this CPU (no AVX-512 IFMA, or not RSA-2048/3072/4096 or ECDSA P-256) and fallback is off".into());
            }
        }
        let (bits, bytes) = match &rsa {
            Some(r) => (r.n().num_bits() as usize, r.size() as usize),
            None => (0, 0),
        };
        Ok(CryptoMbKey {
            mb,
            single,
            batcher,
            bits,
            bytes,
        })
    }

    /// Whether operations go through the multi-buffer batches.
    pub fn batched(&self) -> bool {
        self.mb.is_some()
    }

    fn fallback(&self) {
        self.batcher.metrics.fallbacks.inc();
    }

    fn submit(&self, op: Op) -> KeyOpFuture {
        let rx = self.batcher.submit(op);
        let errors = self.batcher.metrics.errors.clone();
        Box::pin(async move {
            let result = rx
                .await
                .map_err(|_| {
                    KeyOpError("cryptomb batch was dropped before it was computed".into())
                })?
                .map_err(|e| KeyOpError(format!("cryptomb: {e}")));
            if result.is_err() {
                errors.inc();
            }
            result
        })
    }
}

fn hash_of(scheme: SignatureScheme) -> Option<Hash> {
    match scheme {
        SignatureScheme::RSA_PKCS1_SHA256 | SignatureScheme::RSA_PSS_RSAE_SHA256 => {
            Some(Hash::Sha256)
        }
        SignatureScheme::RSA_PKCS1_SHA384 | SignatureScheme::RSA_PSS_RSAE_SHA384 => {
            Some(Hash::Sha384)
        }
        SignatureScheme::RSA_PKCS1_SHA512 | SignatureScheme::RSA_PSS_RSAE_SHA512 => {
            Some(Hash::Sha512)
        }
        _ => None,
    }
}

impl PrivateKeyProvider for CryptoMbKey {
    fn name(&self) -> &'static str {
        "cryptomb"
    }

    fn algorithm(&self) -> KeyAlgorithm {
        self.single.algorithm()
    }

    fn sign(&self, scheme: SignatureScheme, message: &[u8]) -> KeyOpFuture {
        if let Some(MbKey::EcdsaP256(k)) = &self.mb {
            if scheme == SignatureScheme::ECDSA_SECP256R1_SHA256 {
                return match boring::hash::hash(boring::hash::MessageDigest::sha256(), message) {
                    Ok(digest) => self.submit(Op::EcdsaP256(k.clone(), digest.to_vec())),
                    Err(e) => {
                        Box::pin(std::future::ready(Err(KeyOpError(format!("SHA-256: {e}")))))
                    }
                };
            }
        }
        let (Some(MbKey::Rsa(mb)), Some(h)) = (&self.mb, hash_of(scheme)) else {
            self.fallback();
            return self.single.sign(scheme, message);
        };
        let em = if scheme.is_rsa_pss() {
            padding::pss(h, message, self.bits, self.bytes)
        } else {
            padding::pkcs1_v15(h, message, self.bytes)
        };
        match em {
            Some(em) => self.submit(Op::Rsa(mb.clone(), em)),
            None => Box::pin(std::future::ready(Err(KeyOpError(
                "message encoding does not fit the key".into(),
            )))),
        }
    }

    fn decrypt(&self, ciphertext: &[u8]) -> KeyOpFuture {
        let Some(MbKey::Rsa(mb)) = &self.mb else {
            self.fallback();
            return self.single.decrypt(ciphertext);
        };
        if ciphertext.len() > self.bytes {
            return Box::pin(std::future::ready(Err(KeyOpError(
                "ciphertext longer than the modulus".into(),
            ))));
        }
        let mut input = vec![0u8; self.bytes - ciphertext.len()];
        input.extend_from_slice(ciphertext);
        self.submit(Op::Rsa(mb.clone(), input))
    }
}
