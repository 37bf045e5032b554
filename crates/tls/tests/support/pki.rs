//! Test certificates made in memory: P-256 roots and SPIFFE leaves (shared by the
//! bundle tests and the bundle bench).

#![allow(dead_code)]

use boring::asn1::Asn1Time;
use boring::bn::{BigNum, MsbOption};
use boring::ec::{EcGroup, EcKey};
use boring::hash::MessageDigest;
use boring::nid::Nid;
use boring::pkey::{PKey, Private};
use boring::x509::extension::{BasicConstraints, SubjectAlternativeName};
use boring::x509::{X509Name, X509};
use std::sync::Arc;
use trellis_tls::{CertifiedKey, InMemoryKey, TrustDomainRoots};

pub fn key() -> PKey<Private> {
    PKey::from_ec_key(
        EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
    )
    .unwrap()
}

pub struct Ca {
    pub key: PKey<Private>,
    pub cert: X509,
}

/// A certificate valid for a day: a CA when `san` is None, else a leaf with that URI SAN.
fn cert(subject: &str, key: &PKey<Private>, issuer: Option<&Ca>, san: Option<&str>) -> X509 {
    let mut name = X509Name::builder().unwrap();
    name.append_entry_by_text("CN", subject).unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    let mut serial = BigNum::new().unwrap();
    serial.rand(64, MsbOption::MAYBE_ZERO, false).unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(issuer.map_or(&name, |i| i.cert.subject_name()))
        .unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    match san {
        Some(uri) => {
            let ext = SubjectAlternativeName::new()
                .uri(uri)
                .build(&b.x509v3_context(issuer.map(|i| &*i.cert), None))
                .unwrap();
            b.append_extension(&ext).unwrap();
        }
        None => b
            .append_extension(&BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap(),
    }
    b.sign(issuer.map_or(key, |i| &i.key), MessageDigest::sha256())
        .unwrap();
    b.build()
}

pub fn ca(name: &str) -> Ca {
    let key = key();
    let cert = cert(name, &key, None, None);
    Ca { key, cert }
}

/// A leaf for SPIFFE ID (or any URI) `id`, signed by `issuer`, with its key in memory.
pub fn leaf(issuer: &Ca, id: &str) -> CertifiedKey {
    let k = key();
    CertifiedKey {
        chain: vec![cert("leaf", &k, Some(issuer), Some(id))],
        provider: Arc::new(InMemoryKey::new(k).unwrap()),
    }
}

/// One bundle per (trust domain, CA).
pub fn bundles<'a>(list: impl IntoIterator<Item = (String, &'a Ca)>) -> Vec<TrustDomainRoots> {
    list.into_iter()
        .map(|(td, ca)| TrustDomainRoots {
            trust_domain: td,
            roots: vec![ca.cert.clone()],
        })
        .collect()
}
