//! Signing X.509 structures (a CSR, a certificate) with a key BoringSSL cannot hold: a
//! key behind a [`PrivateKeyProvider`] (a token's, which never leaves it).
//!
//! BoringSSL builds and signs the structure with a stand-in key; what it signed (the
//! `CertificationRequestInfo`, the `TBSCertificate`) is then signed again by the
//! provider, and the stand-in's algorithm and signature are replaced. A certificate's
//! to-be-signed part names its signature algorithm, so its stand-in must be of the
//! provider's algorithm ([`stand_in`]); a CSR's does not.

use boring::ec::{EcGroup, EcKey};
use boring::nid::Nid;
use boring::pkey::{PKey, Private};
use boring::rsa::Rsa;

use crate::provider::{KeyAlgorithm, KeyOpError, PrivateKeyProvider, SignatureScheme};

/// `sha256WithRSAEncryption` with NULL parameters.
const SHA256_RSA: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00,
];
/// `ecdsa-with-SHA256`.
const ECDSA_SHA256: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
];

/// The algorithm identifier and TLS scheme a provider signs X.509 with.
fn scheme_of(alg: KeyAlgorithm) -> Result<(&'static [u8], SignatureScheme), KeyOpError> {
    match alg {
        KeyAlgorithm::Rsa { .. } => Ok((SHA256_RSA, SignatureScheme::RSA_PKCS1_SHA256)),
        KeyAlgorithm::EcdsaP256 => Ok((ECDSA_SHA256, SignatureScheme::ECDSA_SECP256R1_SHA256)),
        other => Err(KeyOpError(format!(
            "signing X.509 with a {other:?} key is not supported"
        ))),
    }
}

/// A key of the same algorithm as `alg`, for BoringSSL to build a certificate with.
pub fn stand_in(alg: KeyAlgorithm) -> Result<PKey<Private>, KeyOpError> {
    let made = match alg {
        KeyAlgorithm::Rsa { bits } => Rsa::generate(bits).and_then(PKey::from_rsa),
        KeyAlgorithm::EcdsaP256 => EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)
            .and_then(|g| EcKey::generate(&g))
            .and_then(PKey::from_ec_key),
        other => return Err(KeyOpError(format!("no stand-in for a {other:?} key"))),
    };
    made.map_err(|e| KeyOpError(e.to_string()))
}

/// `der` (a signed SEQUENCE: to-be-signed part, algorithm, signature) signed again by
/// `provider`, with its algorithm.
pub async fn resign(der: &[u8], provider: &dyn PrivateKeyProvider) -> Result<Vec<u8>, KeyOpError> {
    let (alg, scheme) = scheme_of(provider.algorithm())?;
    let tbs = signed_part(der)?;
    let signature = provider.sign(scheme, tbs).await?;
    Ok(assemble(tbs, alg, &signature))
}

/// As [`resign`], with a key of `algorithm` that `sign` signs with here and now (a
/// token call on a thread that may block).
pub fn resign_with(
    der: &[u8],
    algorithm: KeyAlgorithm,
    sign: impl FnOnce(SignatureScheme, &[u8]) -> Result<Vec<u8>, KeyOpError>,
) -> Result<Vec<u8>, KeyOpError> {
    let (alg, scheme) = scheme_of(algorithm)?;
    let tbs = signed_part(der)?;
    let signature = sign(scheme, tbs)?;
    Ok(assemble(tbs, alg, &signature))
}

/// The first element of the outer SEQUENCE: what was signed.
fn signed_part(der: &[u8]) -> Result<&[u8], KeyOpError> {
    let bad = || KeyOpError("not a signed DER structure".into());
    let (tag, body, _) = tlv(der).ok_or_else(bad)?;
    if tag != 0x30 {
        return Err(bad());
    }
    let (_, _, first_len) = tlv(body).ok_or_else(bad)?;
    Ok(&body[..first_len])
}

/// (tag, contents, whole length) of the DER element at the start of `der`.
fn tlv(der: &[u8]) -> Option<(u8, &[u8], usize)> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, head) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| acc << 8 | b as usize);
        (len, 2 + n)
    };
    let body = der.get(head..head + len)?;
    Some((tag, body, head + len))
}

fn header(tag: u8, len: usize, out: &mut Vec<u8>) {
    out.push(tag);
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(bytes.len() - 1);
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// SEQUENCE { tbs, alg, BIT STRING (no unused bits) signature }.
fn assemble(tbs: &[u8], alg: &[u8], signature: &[u8]) -> Vec<u8> {
    let mut bits = Vec::with_capacity(signature.len() + 6);
    header(0x03, signature.len() + 1, &mut bits);
    bits.push(0);
    bits.extend_from_slice(signature);
    let len = tbs.len() + alg.len() + bits.len();
    let mut out = Vec::with_capacity(len + 6);
    header(0x30, len, &mut out);
    out.extend_from_slice(tbs);
    out.extend_from_slice(alg);
    out.extend_from_slice(&bits);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::InMemoryKey;
    use boring::hash::MessageDigest;
    use boring::x509::{X509Name, X509Req, X509};

    /// A CSR made with a stand-in and signed again by another key verifies under that
    /// key, and carries it; the same for a certificate.
    #[tokio::test]
    async fn resigned_structures_verify_under_the_provider_key() {
        for real in [
            stand_in(KeyAlgorithm::EcdsaP256).unwrap(),
            stand_in(KeyAlgorithm::Rsa { bits: 2048 }).unwrap(),
        ] {
            let provider = InMemoryKey::new(real.clone()).unwrap();
            let public = PKey::public_key_from_der(&real.public_key_to_der().unwrap()).unwrap();
            let stand_in_key = stand_in(KeyAlgorithm::EcdsaP256).unwrap();
            let mut b = X509Req::builder().unwrap();
            b.set_subject_name(&X509Name::builder().unwrap().build())
                .unwrap();
            b.set_pubkey(&public).unwrap();
            b.sign(&stand_in_key, MessageDigest::sha256()).unwrap();
            let der = resign(&b.build().to_der().unwrap(), &provider)
                .await
                .unwrap();
            let csr = X509Req::from_der(&der).unwrap();
            assert!(csr.verify(&public).unwrap());
            assert!(!csr.verify(&stand_in_key).unwrap_or(false));

            let same_kind = stand_in(provider.algorithm()).unwrap();
            let mut c = X509::builder().unwrap();
            c.set_pubkey(&public).unwrap();
            let now = boring::asn1::Asn1Time::days_from_now(0).unwrap();
            let later = boring::asn1::Asn1Time::days_from_now(1).unwrap();
            c.set_not_before(&now).unwrap();
            c.set_not_after(&later).unwrap();
            c.sign(&same_kind, MessageDigest::sha256()).unwrap();
            let der = resign(&c.build().to_der().unwrap(), &provider)
                .await
                .unwrap();
            let cert = X509::from_der(&der).unwrap();
            assert!(cert.verify(&public).unwrap());
        }
    }

    #[test]
    fn lengths_in_every_form() {
        for len in [0usize, 1, 127, 128, 255, 256, 70_000] {
            let mut out = Vec::new();
            header(0x04, len, &mut out);
            out.extend(std::iter::repeat_n(7u8, len));
            let (tag, body, whole) = tlv(&out).unwrap();
            assert_eq!((tag, body.len(), whole), (0x04, len, out.len()));
        }
        assert!(tlv(&[0x30, 0x85, 1, 2, 3, 4, 5]).is_none());
        assert!(signed_part(&[0x04, 0x00]).is_err());
    }
}
