//! Private keys that never leave a PKCS#11 token: an SGX enclave's module (Intel's
//! crypto-api-toolkit), a network or USB HSM, SoftHSM2 in tests. Any module that
//! implements the standard works.
//!
//! - [`Pkcs11Uri`]: RFC 7512 URIs name the module, the token and the key, and where the
//!   PIN comes from (a file or an environment variable; never the URI).
//! - [`Token`]: a logged-in token whose calls run on threads of its own.
//! - [`TokenKey`]: a key found or generated in the token (sensitive, not extractable);
//!   its public half read out; signatures made by `C_Sign` over digests computed here.
//! - [`Pkcs11Key`]: the key as a TLS private-key provider on the async seam.
//!
//! What is protected: the long-term private key. The TLS session keys a handshake derives
//! live in the process, as they do with any TLS library.

mod key;
mod objects;
pub mod softhsm;
mod token;
mod uri;

pub use key::{KeyKind, Pkcs11Key, TokenKey};
pub use objects::KeyProtection;
pub use token::{Pkcs11Error, Token};
pub use uri::{PinSource, Pkcs11Uri};
