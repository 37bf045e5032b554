//! Multi-buffer RSA and ECDSA P-256 on AVX-512 IFMA: eight independent private-key
//! operations computed together, one per 64-bit lane of 512-bit registers, as Intel's
//! `crypto_mb` does for Envoy's CryptoMB private-key provider. Pure computation: no I/O.
//!
//! Numbers are held in 52-bit limbs ([`lanes`]) because `vpmadd52luq`/`vpmadd52huq`
//! multiply 52-bit halves and accumulate into 64 bits; Montgomery multiplication
//! ([`ifma::amm`]) is the core, with fixed-window exponentiation, CRT, blinding and a
//! public-exponent check of every result ([`rsa`]); P-256 signing ([`ecdsa`]) uses the
//! same multiplier with five limbs ([`p256`]).
//!
//! Side channels: no branch and no memory index depends on a secret. Table lookups read
//! every entry and pick with lane masks; final reductions select with masks; blinding
//! hides the input from the exponentiation.
//!
//! Without AVX-512 IFMA ([`ifma_available`] is false) the operations return
//! [`RsaError::NoIfma`] and callers use a single-operation path (BoringSSL).

pub mod ecdsa;
pub mod ifma;
pub mod lanes;
pub mod p256;
pub mod padding;
pub mod rsa;
pub mod scalar;

pub use ecdsa::{EcdsaError, EcdsaKey};
pub use rsa::{private_batch, RsaError, RsaKey};

/// Whether this CPU can run the multi-buffer kernels.
pub fn ifma_available() -> bool {
    ifma::available()
}
