//! Key attestation: evidence, checked before an issuer accepts a token's key as its CA
//! key, that the key was made inside the token and can never leave it.
//!
//! [`TokenAttributes`] is the check that runs everywhere: it asks the token (PKCS#11
//! `C_GetAttributeValue`) whether the private key was generated there (`CKA_LOCAL`), has
//! always been sensitive and never extractable. A key imported into a token, or one
//! that was extractable at some time, fails it. This trusts the token to report its own
//! attributes truthfully; it does not prove what the token is.
//!
//! That proof is what SGX adds, and what an SGX implementation of [`KeyAttestation`]
//! does (outline; it needs SGX hardware and Intel's crypto-api-toolkit, so it is not
//! built here):
//! 1. Ask the enclave's PKCS#11 module for a quote over the CA's public key: the
//!    toolkit's `C_WrapKey` with its vendor mechanism `CKM_EXPORT_QUOTE_RSA_PUBLIC_KEY`
//!    (or the EC variant) returns an SGX ECDSA quote whose report data is a hash of the
//!    public key, followed by the key.
//! 2. Verify the quote with Intel's DCAP Quote Verification Library (`sgx_qv_verify_quote`
//!    against the PCK certificate chain and collateral from the PCCS), check its TCB
//!    status, and that MRENCLAVE/MRSIGNER are the toolkit enclave's expected values.
//! 3. Check that the report data binds the key in the token to the quote: the hash of
//!    the returned public key equals the report data, and that key equals the one the
//!    issuer certifies.
//!
//! Only then does the issuer sign with the key. The evidence (the quote's TCB status and
//! measurements) goes into the issuer's `Ready` condition message, as
//! [`TokenAttributes`]' does.

use trellis_pkcs11::{KeyProtection, TokenKey};

/// Evidence about a key, or why there is none good enough.
pub trait KeyAttestation: Send + Sync {
    /// What kind of attestation this is (for messages).
    fn name(&self) -> &'static str;
    /// A one-line summary of the evidence on success; why the key is refused otherwise.
    fn attest(&self, key: &TokenKey) -> Result<String, String>;
}

/// The PKCS#11 attribute check: generated in the token, always sensitive, never
/// extractable.
pub struct TokenAttributes;

impl TokenAttributes {
    /// The verdict on attributes a token reported.
    pub fn judge(p: &KeyProtection) -> Result<String, String> {
        let mut failed = Vec::new();
        if !p.local {
            failed.push("CKA_LOCAL is false: the key was imported, not generated in the token");
        }
        if p.extractable {
            failed.push("CKA_EXTRACTABLE is true: the key can be wrapped out of the token");
        }
        if !p.never_extractable {
            failed.push("CKA_NEVER_EXTRACTABLE is false: the key was extractable at some time");
        }
        if !p.sensitive || !p.always_sensitive {
            failed.push("CKA_SENSITIVE or CKA_ALWAYS_SENSITIVE is false: the key has been or can be revealed");
        }
        if failed.is_empty() {
            Ok("generated in the token, always sensitive, never extractable".into())
        } else {
            Err(failed.join("; "))
        }
    }
}

impl KeyAttestation for TokenAttributes {
    fn name(&self) -> &'static str {
        "PKCS#11 key attributes"
    }

    fn attest(&self, key: &TokenKey) -> Result<String, String> {
        let p = key.protection().map_err(|e| e.to_string())?;
        Self::judge(&p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_weak_attribute_refuses_the_key() {
        let good = KeyProtection {
            local: true,
            sensitive: true,
            always_sensitive: true,
            extractable: false,
            never_extractable: true,
        };
        assert!(TokenAttributes::judge(&good).is_ok());
        for (bad, says) in [
            (
                KeyProtection {
                    local: false,
                    ..good
                },
                "CKA_LOCAL",
            ),
            (
                KeyProtection {
                    extractable: true,
                    ..good
                },
                "CKA_EXTRACTABLE",
            ),
            (
                KeyProtection {
                    never_extractable: false,
                    ..good
                },
                "CKA_NEVER_EXTRACTABLE",
            ),
            (
                KeyProtection {
                    always_sensitive: false,
                    ..good
                },
                "CKA_ALWAYS_SENSITIVE",
            ),
            (
                KeyProtection {
                    sensitive: false,
                    ..good
                },
                "CKA_SENSITIVE",
            ),
        ] {
            let e = TokenAttributes::judge(&bad).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }
}
