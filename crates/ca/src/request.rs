//! Certificates as a Kubernetes CertificateSigningRequest or a cert-manager
//! CertificateRequest asks for them: the CSR's subject and subjectAltName, the
//! requested usages (the caller has checked them against what its issuer allows), a
//! lifetime capped by the caller, and the CA flag when asked (an intermediate).
//!
//! Unlike a workload certificate, where the SAN is the caller's authenticated identity,
//! the names come from the CSR: in the Kubernetes and cert-manager models an approver
//! has vetted them before the signer sees the request.

use std::time::Duration;

use boring::pkey::{PKey, Public};
use boring::x509::extension::{BasicConstraints, ExtendedKeyUsage, KeyUsage};
use boring::x509::{X509Req, X509};

use crate::authority::Authority;
use crate::error::SignError;

/// A key usage as Kubernetes (`certificates.k8s.io/v1` KeyUsage) and cert-manager
/// spell them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Usage {
    DigitalSignature,
    ContentCommitment,
    KeyEncipherment,
    KeyAgreement,
    DataEncipherment,
    CertSign,
    CrlSign,
    EncipherOnly,
    DecipherOnly,
    ServerAuth,
    ClientAuth,
    CodeSigning,
    EmailProtection,
    Timestamping,
    OcspSigning,
}

const NAMES: &[(&str, Usage)] = &[
    ("digital signature", Usage::DigitalSignature),
    ("signing", Usage::DigitalSignature),
    ("content commitment", Usage::ContentCommitment),
    ("key encipherment", Usage::KeyEncipherment),
    ("key agreement", Usage::KeyAgreement),
    ("data encipherment", Usage::DataEncipherment),
    ("cert sign", Usage::CertSign),
    ("crl sign", Usage::CrlSign),
    ("encipher only", Usage::EncipherOnly),
    ("decipher only", Usage::DecipherOnly),
    ("server auth", Usage::ServerAuth),
    ("client auth", Usage::ClientAuth),
    ("code signing", Usage::CodeSigning),
    ("email protection", Usage::EmailProtection),
    ("s/mime", Usage::EmailProtection),
    ("timestamping", Usage::Timestamping),
    ("ocsp signing", Usage::OcspSigning),
];

impl Usage {
    /// The usage a Kubernetes or cert-manager name stands for; None for names Trellis
    /// does not issue (`any`, the IPsec and Netscape/Microsoft SGC purposes).
    pub fn parse(name: &str) -> Option<Usage> {
        NAMES.iter().find(|(n, _)| *n == name).map(|(_, u)| *u)
    }

    /// An extended key usage (a purpose), not a key usage bit.
    pub fn is_extended(self) -> bool {
        self >= Usage::ServerAuth
    }

    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(_, u)| *u == self)
            .map(|(n, _)| *n)
            .expect("every usage has a name")
    }
}

/// What a request asks for, after its issuer's policy.
pub struct Requested<'a> {
    /// The PEM CSR.
    pub csr: &'a [u8],
    pub usages: &'a [Usage],
    pub ttl: Duration,
    /// A CA certificate (for an intermediate issuer).
    pub is_ca: bool,
}

/// A certificate and the chain that goes with it.
pub struct Issued {
    pub certificate: X509,
    /// The issuer's certificates from the signing one up to, not including, the root.
    pub intermediates: Vec<X509>,
    pub root: X509,
}

/// The CSR and its key, once its self-signature verifies and the key is one Trellis
/// issues for (RSA 2048..4096 bits, ECDSA P-256 or P-384).
pub fn verified_csr(pem: &[u8]) -> Result<(X509Req, PKey<Public>), SignError> {
    let csr = X509Req::from_pem(pem).map_err(|_| SignError::MalformedCsr)?;
    let key = csr.public_key().map_err(|_| SignError::MalformedCsr)?;
    if !csr.verify(&key).unwrap_or(false) {
        return Err(SignError::BadCsrSignature);
    }
    let usable = match key.id() {
        boring::pkey::Id::RSA => (2048..=4096).contains(&key.bits()),
        boring::pkey::Id::EC => matches!(key.bits(), 256 | 384),
        _ => false,
    };
    if !usable {
        return Err(SignError::UnsupportedKey);
    }
    Ok((csr, key))
}

impl Authority {
    /// Signs what `r` asks for. The certificate never outlives the signing certificate.
    pub fn sign_requested(&self, r: &Requested) -> Result<Issued, SignError> {
        let (csr, key) = verified_csr(r.csr)?;
        let mut b = self.child(csr.subject_name(), &key, r.ttl)?;
        let constraints = if r.is_ca {
            BasicConstraints::new().critical().ca().pathlen(0).build()?
        } else {
            BasicConstraints::new().critical().build()?
        };
        b.append_extension(&constraints)?;
        let mut ku = KeyUsage::new();
        ku.critical();
        let mut eku = ExtendedKeyUsage::new();
        let (mut any_ku, mut any_eku) = (false, false);
        for u in r.usages {
            match u {
                Usage::DigitalSignature => {
                    ku.digital_signature();
                }
                Usage::ContentCommitment => {
                    ku.non_repudiation();
                }
                Usage::KeyEncipherment => {
                    ku.key_encipherment();
                }
                Usage::KeyAgreement => {
                    ku.key_agreement();
                }
                Usage::DataEncipherment => {
                    ku.data_encipherment();
                }
                Usage::CertSign => {
                    ku.key_cert_sign();
                }
                Usage::CrlSign => {
                    ku.crl_sign();
                }
                Usage::EncipherOnly => {
                    ku.encipher_only();
                }
                Usage::DecipherOnly => {
                    ku.decipher_only();
                }
                Usage::ServerAuth => {
                    eku.server_auth();
                }
                Usage::ClientAuth => {
                    eku.client_auth();
                }
                Usage::CodeSigning => {
                    eku.code_signing();
                }
                Usage::EmailProtection => {
                    eku.other("emailProtection");
                }
                Usage::Timestamping => {
                    eku.time_stamping();
                }
                Usage::OcspSigning => {
                    eku.other("OCSPSigning");
                }
            }
            if u.is_extended() {
                any_eku = true;
            } else {
                any_ku = true;
            }
        }
        if r.is_ca {
            ku.key_cert_sign().crl_sign();
            any_ku = true;
        }
        if any_ku {
            let ku = ku.build()?;
            b.append_extension(&ku)?;
        }
        if any_eku {
            let eku = eku.build()?;
            b.append_extension(&eku)?;
        }
        for ext in csr.extensions().into_iter().flatten() {
            if crate::der::is_subject_alt_name(&ext.to_der()?) {
                b.append_extension(&ext)?;
            }
        }
        let certificate = self.sign_child(b)?;
        let mut intermediates = self.chain.clone();
        let root = intermediates.pop().expect("chain is never empty");
        Ok(Issued {
            certificate,
            intermediates,
            root,
        })
    }
}

impl Authority {
    /// A CA certificate for `public` named `subject`: an intermediate of this authority
    /// (for an issuer whose parent this is), valid for `ttl` but never past the signing
    /// certificate.
    pub fn certify_ca<T: boring::pkey::HasPublic>(
        &self,
        public: &boring::pkey::PKeyRef<T>,
        subject: &boring::x509::X509NameRef,
        ttl: Duration,
    ) -> Result<X509, SignError> {
        let mut b = self.child(subject, public, ttl)?;
        crate::authority::ca_extensions(&mut b)?;
        self.sign_child(b)
    }
}
