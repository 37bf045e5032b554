//! Attestation of workloads before RA mode approves their CSRs: evidence that the
//! workload runs where it says, bound to the key its CSR certifies.
//!
//! The evidence arrives in the certificate request's `WorkloadQuote` metadata (base64).
//! An SGX implementation (outline; it needs SGX hardware, so it is not built here) would
//! read an SGX ECDSA quote there, verify it with Intel's DCAP Quote Verification Library
//! (PCK chain and collateral from the PCCS, an acceptable TCB status), require the
//! quote's report data to be SHA-256 of the CSR's SubjectPublicKeyInfo (the key was made
//! inside that enclave) and its MRENCLAVE / MRSIGNER to be the ones allowed for the
//! caller's identity.
//!
//! [`InsecureTestDoubleQuotes`] stands in for that verifier where there is no SGX: it is
//! **not security**, only the same shape (evidence bound to the CSR's key and the
//! caller's identity, checked before the approval), so that the approval path can be
//! driven end to end in tests.

use trellis_tls::SpiffeId;

/// Checks a workload's evidence before its CSR is approved.
pub trait WorkloadAttestation: Send + Sync {
    fn name(&self) -> &'static str;
    /// `spki`: the DER SubjectPublicKeyInfo of the CSR's key; `evidence`: the decoded
    /// `WorkloadQuote` metadata, if the request had one.
    fn check(
        &self,
        identity: &SpiffeId,
        spki: &[u8],
        evidence: Option<&[u8]>,
    ) -> Result<(), String>;
}

/// A test double for quote verification, NOT security: a "quote" is
/// HMAC-SHA256(key, "trellis-insecure-test-quote" ‖ SHA-256(spki) ‖ identity), with a key
/// the test and the control plane share.
pub struct InsecureTestDoubleQuotes {
    key: Vec<u8>,
}

const LABEL: &[u8] = b"trellis-insecure-test-quote";

impl InsecureTestDoubleQuotes {
    pub fn new(key: Vec<u8>) -> anyhow::Result<Self> {
        if key.len() < 32 {
            anyhow::bail!("the test-double quote key is shorter than 32 bytes");
        }
        Ok(InsecureTestDoubleQuotes { key })
    }

    /// The "quote" a workload with `spki` and `identity` presents.
    pub fn quote(key: &[u8], identity: &str, spki: &[u8]) -> Vec<u8> {
        let mut data = LABEL.to_vec();
        data.extend_from_slice(&boring::sha::sha256(spki));
        data.extend_from_slice(identity.as_bytes());
        boring::hash::hmac_sha256(key, &data)
            .expect("HMAC-SHA256 with a valid key")
            .to_vec()
    }
}

impl WorkloadAttestation for InsecureTestDoubleQuotes {
    fn name(&self) -> &'static str {
        "insecure test double of SGX quote verification"
    }

    fn check(
        &self,
        identity: &SpiffeId,
        spki: &[u8],
        evidence: Option<&[u8]>,
    ) -> Result<(), String> {
        let evidence = evidence.ok_or("no WorkloadQuote in the request's metadata")?;
        let want = Self::quote(&self.key, &identity.to_string(), spki);
        if evidence.len() == want.len() && boring::memcmp::eq(evidence, &want) {
            Ok(())
        } else {
            Err("the WorkloadQuote does not verify for this key and identity".into())
        }
    }
}
