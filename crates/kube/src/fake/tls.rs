//! The test API server's TLS: a CA and a serving certificate for 127.0.0.1 made at
//! start. The server is HTTPS only, as a real one is; kubectl sends no bearer token
//! over plain HTTP.

use boring::asn1::Asn1Time;
use boring::bn::{BigNum, MsbOption};
use boring::ec::{EcGroup, EcKey};
use boring::hash::MessageDigest;
use boring::nid::Nid;
use boring::pkey::{PKey, Private};
use boring::ssl::{SslAcceptor, SslMethod};
use boring::x509::extension::{BasicConstraints, ExtendedKeyUsage, SubjectAlternativeName};
use boring::x509::{X509Name, X509};

fn key() -> Result<PKey<Private>, boring::error::ErrorStack> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    PKey::from_ec_key(EcKey::generate(&group)?)
}

fn certificate(
    cn: &str,
    key: &PKey<Private>,
    issuer: Option<(&X509, &PKey<Private>)>,
) -> Result<X509, boring::error::ErrorStack> {
    let mut name = X509Name::builder()?;
    name.append_entry_by_text("CN", cn)?;
    let name = name.build();
    let mut b = X509::builder()?;
    b.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(64, MsbOption::MAYBE_ZERO, false)?;
    let serial = serial.to_asn1_integer()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&name)?;
    b.set_issuer_name(issuer.map_or(&name, |(c, _)| c.subject_name()))?;
    let (from, until) = (Asn1Time::days_from_now(0)?, Asn1Time::days_from_now(2)?);
    b.set_not_before(&from)?;
    b.set_not_after(&until)?;
    b.set_pubkey(key)?;
    match issuer {
        None => {
            let ca = BasicConstraints::new().critical().ca().build()?;
            b.append_extension(&ca)?;
        }
        Some((ca, _)) => {
            let leaf = BasicConstraints::new().critical().build()?;
            b.append_extension(&leaf)?;
            let eku = ExtendedKeyUsage::new().server_auth().build()?;
            b.append_extension(&eku)?;
            let san = SubjectAlternativeName::new()
                .ip("127.0.0.1")
                .dns("localhost")
                .build(&b.x509v3_context(Some(ca), None))?;
            b.append_extension(&san)?;
        }
    }
    b.sign(issuer.map_or(key, |(_, k)| k), MessageDigest::sha256())?;
    Ok(b.build())
}

/// The acceptor, and the CA's certificate in PEM for kubeconfigs.
pub(super) fn acceptor() -> Result<(SslAcceptor, String), boring::error::ErrorStack> {
    let ca_key = key()?;
    let ca = certificate("trellis test API server CA", &ca_key, None)?;
    let leaf_key = key()?;
    let leaf = certificate("kube-apiserver", &leaf_key, Some((&ca, &ca_key)))?;
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())?;
    b.set_private_key(&leaf_key)?;
    b.set_certificate(&leaf)?;
    b.add_extra_chain_cert(ca.clone())?;
    b.set_alpn_select_callback(|_, offered| {
        boring::ssl::select_next_proto(b"\x08http/1.1", offered)
            .ok_or(boring::ssl::AlpnError::NOACK)
    });
    let pem = String::from_utf8(ca.to_pem()?).expect("PEM is ASCII");
    Ok((b.build(), pem))
}
