//! One issuer's CA: its key found or generated in the token the issuer names, attested,
//! and its certificate (a self-signed root or an intermediate from the parent issuer)
//! found beside the key in the token or made and stored there.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use boring::pkey::{PKey, Public};
use boring::x509::X509;
use trellis_ca::{Authority, Signer};
use trellis_pkcs11::{Pkcs11Uri, Token, TokenKey};

use crate::attestation::KeyAttestation;
use crate::names::IssuerRef;
use crate::spec::IssuerSpec;

/// How long a CA certificate made here is valid (a root; an intermediate is cut to its
/// parent's).
const CA_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The tokens the signer was started with, by name (`--token NAME=pkcs11:...`).
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    pub uris: HashMap<String, Pkcs11Uri>,
    /// The module for URIs without `module-path`.
    pub module: Option<String>,
}

/// Why an issuer is not ready: a condition reason and a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub reason: &'static str,
    pub message: String,
}

fn fail(reason: &'static str, message: impl std::fmt::Display) -> Failure {
    Failure {
        reason,
        message: message.to_string(),
    }
}

/// A ready CA.
pub struct IssuerCa {
    pub authority: Authority,
    pub spec: IssuerSpec,
    /// What attestation found, for the Ready condition.
    pub evidence: String,
}

impl IssuerCa {
    /// The CA of issuer `r`. Blocking: it talks to the token.
    pub fn load(
        r: &IssuerRef,
        spec: &IssuerSpec,
        tokens: &Tokens,
        parent: Option<&IssuerCa>,
        attestation: &dyn KeyAttestation,
    ) -> Result<IssuerCa, Failure> {
        let uri = tokens.uris.get(&spec.token).ok_or_else(|| {
            fail(
                "TokenNotConfigured",
                format!(
                    "spec.token: the signer has no token {:?} (trellis issuer --token {}=pkcs11:...)",
                    spec.token, spec.token
                ),
            )
        })?;
        let token = Token::open(uri, tokens.module.as_deref(), 2)
            .map_err(|e| fail("TokenUnavailable", e))?;
        let label = r.key_label();
        let key = find_or_generate(&token, uri, &label, spec)?;
        let evidence = attestation.attest(&key).map_err(|e| {
            fail(
                "KeyAttestationFailed",
                format!("{} ({}): {e}", key.name(), attestation.name()),
            )
        })?;
        let public = key.public_key().clone();
        let signer = Signer::token(key).map_err(|e| fail("TokenUnavailable", e))?;
        let certificate = certificate(&token, &signer, &public, &label, spec, parent)?;
        let mut chain = vec![certificate];
        if let Some(p) = parent {
            chain.extend(p.authority.chain().iter().cloned());
        }
        let authority =
            Authority::from_chain(chain, signer).map_err(|e| fail("CertificateInvalid", e))?;
        Ok(IssuerCa {
            authority,
            spec: spec.clone(),
            evidence,
        })
    }
}

fn find_or_generate(
    token: &Arc<Token>,
    uri: &Pkcs11Uri,
    label: &str,
    spec: &IssuerSpec,
) -> Result<TokenKey, Failure> {
    let key_uri = Pkcs11Uri {
        object: Some(label.into()),
        id: None,
        ..uri.clone()
    };
    match TokenKey::find(token.clone(), &key_uri) {
        Ok(k) => Ok(k),
        Err(e) if e.message.starts_with("no such private key") => {
            let mut id = [0u8; 16];
            boring::rand::rand_bytes(&mut id).map_err(|e| fail("TokenUnavailable", e))?;
            let k = TokenKey::generate(token.clone(), spec.key_kind, label, &id)
                .map_err(|e| fail("KeyGenerationFailed", e))?;
            tracing::info!(key = %k.name(), "generated an issuer's CA key in the token");
            Ok(k)
        }
        Err(e) => Err(fail("KeyUnusable", e)),
    }
}

/// The CA certificate for `key`: the one stored beside it when it still fits (its key,
/// and signed by the current parent), otherwise a new one, stored in its place.
fn certificate(
    token: &Arc<Token>,
    signer: &Signer,
    public: &PKey<Public>,
    label: &str,
    spec: &IssuerSpec,
    parent: Option<&IssuerCa>,
) -> Result<X509, Failure> {
    let stored = token
        .certificates(label)
        .map_err(|e| fail("TokenUnavailable", e))?;
    let fits = |c: &X509| -> bool {
        let ours = c.public_key().is_ok_and(|p| p.public_eq(public));
        let signed_by_parent = match parent {
            Some(p) => p.authority.chain()[0]
                .public_key()
                .is_ok_and(|pk| c.verify(&pk).unwrap_or(false)),
            None => c.verify(public).unwrap_or(false),
        };
        ours && signed_by_parent
    };
    if let Some(c) = stored
        .iter()
        .filter_map(|der| X509::from_der(der).ok())
        .find(|c| fits(c))
    {
        return Ok(c);
    }
    let subject = trellis_ca::authority::name(&spec.organization, &spec.common_name)
        .map_err(|e| fail("CertificateInvalid", e))?;
    let made = match parent {
        None => trellis_ca::authority::self_signed(signer, public, &subject),
        Some(p) => p.authority.certify_ca(public, &subject, CA_TTL),
    }
    .map_err(|e| fail("SigningFailed", e))?;
    let der = made.to_der().map_err(|e| fail("CertificateInvalid", e))?;
    let subject_der = subject
        .to_der()
        .map_err(|e| fail("CertificateInvalid", e))?;
    token
        .destroy_certificates(label)
        .and_then(|_| token.store_certificate(label, &[], &der, &subject_der))
        .map_err(|e| fail("TokenUnavailable", e))?;
    tracing::info!(%label, parent = parent.is_some(), "made and stored an issuer's CA certificate");
    Ok(made)
}
