//! What else a token keeps beside keys: what it says about how a key came to be (the
//! attributes attestation reads) and X.509 certificates stored with their keys
//! (`CKO_CERTIFICATE`, same label and id), so that a CA's key and its certificate
//! travel together.

use cryptoki::object::{Attribute, AttributeType, CertificateType, ObjectClass};

use crate::key::TokenKey;
use crate::token::{Pkcs11Error, Token};

/// How a private key is protected, as the token reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyProtection {
    /// `CKA_LOCAL`: generated in the token (not imported).
    pub local: bool,
    /// `CKA_SENSITIVE`: never revealed in plaintext.
    pub sensitive: bool,
    /// `CKA_ALWAYS_SENSITIVE`: sensitive since it was made.
    pub always_sensitive: bool,
    /// `CKA_EXTRACTABLE`: may be wrapped out of the token.
    pub extractable: bool,
    /// `CKA_NEVER_EXTRACTABLE`: has never been extractable.
    pub never_extractable: bool,
}

impl TokenKey {
    /// The key's protection attributes, read from the token now.
    pub fn protection(&self) -> Result<KeyProtection, Pkcs11Error> {
        let handle = self.handle;
        let wanted = vec![
            AttributeType::Local,
            AttributeType::Sensitive,
            AttributeType::AlwaysSensitive,
            AttributeType::Extractable,
            AttributeType::NeverExtractable,
        ];
        let attrs = self
            .token
            .run_blocking(move |s| s.get_attributes(handle, &wanted))
            .map_err(|e| Pkcs11Error::new(self.name(), e.message))?;
        let mut p = KeyProtection::default();
        for a in attrs {
            match a {
                Attribute::Local(v) => p.local = v,
                Attribute::Sensitive(v) => p.sensitive = v,
                Attribute::AlwaysSensitive(v) => p.always_sensitive = v,
                Attribute::Extractable(v) => p.extractable = v,
                Attribute::NeverExtractable(v) => p.never_extractable = v,
                _ => {}
            }
        }
        Ok(p)
    }
}

impl Token {
    /// The DER of each X.509 certificate labelled `label`, in no particular order.
    pub fn certificates(&self, label: &str) -> Result<Vec<Vec<u8>>, Pkcs11Error> {
        let template = vec![
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        self.run_blocking(move |s| {
            let mut out = Vec::new();
            for h in s.find_objects(&template)? {
                for a in s.get_attributes(h, &[AttributeType::Value])? {
                    if let Attribute::Value(der) = a {
                        out.push(der);
                    }
                }
            }
            Ok(out)
        })
        .map_err(|e| Pkcs11Error::new(self.name(), e.message))
    }

    /// Stores an X.509 certificate (DER) in the token, labelled `label`, with `id`.
    pub fn store_certificate(
        &self,
        label: &str,
        id: &[u8],
        der: &[u8],
        subject: &[u8],
    ) -> Result<(), Pkcs11Error> {
        let template = vec![
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::CertificateType(CertificateType::X_509),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.to_vec()),
            Attribute::Subject(subject.to_vec()),
            Attribute::Value(der.to_vec()),
        ];
        self.run_blocking(move |s| s.create_object(&template).map(|_| ()))
            .map_err(|e| {
                Pkcs11Error::new(self.name(), format!("storing a certificate: {}", e.message))
            })
    }

    /// Removes every certificate labelled `label`.
    pub fn destroy_certificates(&self, label: &str) -> Result<usize, Pkcs11Error> {
        let template = vec![
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        self.run_blocking(move |s| {
            let found = s.find_objects(&template)?;
            for h in &found {
                s.destroy_object(*h)?;
            }
            Ok(found.len())
        })
        .map_err(|e| Pkcs11Error::new(self.name(), e.message))
    }
}
