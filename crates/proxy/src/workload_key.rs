//! Where the identity agent's workload keys come from, and the CSR that certifies
//! each: generated in this process (RSA-2048 or ECDSA P-256; signing in memory or in
//! cryptomb batches), or generated in a PKCS#11 token (`CKA_SENSITIVE`, not
//! `CKA_EXTRACTABLE`), whose key then also signs the CSR and every handshake.

use std::sync::Arc;

use boring::ec::{EcGroup, EcKey};
use boring::hash::MessageDigest;
use boring::nid::Nid;
use boring::pkey::{PKey, Private, Public};
use boring::rsa::Rsa;
use boring::x509::extension::SubjectAlternativeName;
use boring::x509::{X509Name, X509Req};
use trellis_config::{Identity, KeyType, PrivateKeyProvider};
use trellis_pkcs11::{KeyKind, Pkcs11Key, Pkcs11Uri, Token, TokenKey};

use crate::stats::Metrics;

/// A new workload key: its public half, what signs with it, and its CSR.
pub struct NewKey {
    pub public: PKey<Public>,
    pub provider: Arc<dyn trellis_tls::PrivateKeyProvider>,
    pub csr: String,
    /// The key in its token, to destroy once a newer one is in use.
    pub in_token: Option<Arc<TokenKey>>,
    /// The private key as PKCS#8 PEM, when the key source exports keys (a node agent
    /// handing its local Envoy the workload key over SDS).
    pub pem: Option<Vec<u8>>,
}

pub enum KeySource {
    Process {
        kind: KeyType,
        provider: PrivateKeyProvider,
        metrics: Arc<Metrics>,
        export: bool,
    },
    Token {
        token: Arc<Token>,
        kind: KeyKind,
        /// The label this workload's keys get (the URI's `object`).
        label: String,
    },
}

impl KeySource {
    /// The source the identity section names. A token is opened and logged in here,
    /// and keys an earlier run left under this workload's label are removed. Blocks.
    /// With `export`, keys are made in the process and handed out as PEM beside their
    /// provider; a token's keys cannot leave it, so a token is refused.
    pub fn new(
        config: &Identity,
        metrics: &Arc<Metrics>,
        export: bool,
    ) -> Result<KeySource, String> {
        let PrivateKeyProvider::Pkcs11(t) = &config.private_key_provider else {
            return Ok(KeySource::Process {
                kind: config.key_type,
                provider: config.private_key_provider.clone(),
                metrics: metrics.clone(),
                export,
            });
        };
        if export {
            return Err("identity.private_key_provider.pkcs11: a key in a token cannot be handed to a local Envoy over SDS".into());
        }
        let field = "identity.private_key_provider.pkcs11.uri";
        let uri = Pkcs11Uri::parse(&t.uri).map_err(|e| format!("{field}: {e}"))?;
        let label = uri
            .object
            .clone()
            .ok_or_else(|| format!("{field}: {uri}: needs object=<label>"))?;
        let token =
            Token::open(&uri, None, t.sessions as usize).map_err(|e| format!("{field}: {e}"))?;
        let stale =
            TokenKey::destroy_labelled(&token, &label).map_err(|e| format!("{field}: {e}"))?;
        if stale > 0 {
            tracing::info!(token = %token.name(), %label, stale, "removed workload keys an earlier run left in the token");
        }
        let kind = match config.key_type {
            KeyType::Rsa => KeyKind::Rsa2048,
            KeyType::Ecdsa => KeyKind::EcdsaP256,
        };
        Ok(KeySource::Token { token, kind, label })
    }

    /// A new key and its CSR, naming `identity` when the agent knows it. Key generation
    /// runs off the caller's thread (an RSA key takes 50 ms to seconds; a token call
    /// blocks).
    pub async fn generate(&self, identity: Option<&str>) -> Result<NewKey, String> {
        match self {
            KeySource::Process {
                kind,
                provider,
                metrics,
                export,
            } => {
                let kind = *kind;
                let key = tokio::task::spawn_blocking(move || generate_key(kind))
                    .await
                    .map_err(|e| format!("key generation: {e}"))?
                    .map_err(|e| e.to_string())?;
                let csr = csr_pem(&key, &key, identity).map_err(|e| e.to_string())?;
                let public = public_of(&key)?;
                let pem = match export {
                    true => Some(key.private_key_to_pem_pkcs8().map_err(|e| e.to_string())?),
                    false => None,
                };
                let provider =
                    crate::keys::key_provider(provider, key, metrics).map_err(|(field, e)| {
                        if field == "private_key" {
                            e
                        } else {
                            format!("identity.{field}: {e}")
                        }
                    })?;
                Ok(NewKey {
                    public,
                    provider,
                    csr,
                    in_token: None,
                    pem,
                })
            }
            KeySource::Token { token, kind, label } => {
                let (token, kind, label) = (token.clone(), *kind, label.clone());
                let key = tokio::task::spawn_blocking(move || {
                    let mut id = [0u8; 16];
                    boring::rand::rand_bytes(&mut id).map_err(|e| e.to_string())?;
                    TokenKey::generate(token, kind, &label, &id).map_err(|e| e.to_string())
                })
                .await
                .map_err(|e| format!("key generation: {e}"))??;
                let key = Arc::new(key);
                let provider = Pkcs11Key(key.clone());
                // BoringSSL builds the CSR around the token's public key and signs it
                // with a stand-in; the token signs it again.
                let stand_in = trellis_tls::resign::stand_in(trellis_tls::KeyAlgorithm::EcdsaP256)
                    .map_err(|e| e.to_string())?;
                let draft =
                    csr_der(key.public_key(), &stand_in, identity).map_err(|e| e.to_string())?;
                let der = trellis_tls::resign::resign(&draft, &provider)
                    .await
                    .map_err(|e| format!("signing the CSR in the token: {e}"))?;
                let csr = X509Req::from_der(&der)
                    .and_then(|r| r.to_pem())
                    .map_err(|e| e.to_string())?;
                Ok(NewKey {
                    public: key.public_key().clone(),
                    provider: Arc::new(provider),
                    csr: String::from_utf8(csr).expect("PEM is ASCII"),
                    in_token: Some(key),
                    pem: None,
                })
            }
        }
    }
}

fn generate_key(kind: KeyType) -> Result<PKey<Private>, boring::error::ErrorStack> {
    match kind {
        KeyType::Rsa => PKey::from_rsa(Rsa::generate(2048)?),
        KeyType::Ecdsa => {
            let g = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
            PKey::from_ec_key(EcKey::generate(&g)?)
        }
    }
}

fn public_of(key: &PKey<Private>) -> Result<PKey<Public>, String> {
    key.public_key_to_der()
        .and_then(|der| PKey::public_key_from_der(&der))
        .map_err(|e| e.to_string())
}

/// A CSR for `public`, signed by `signer`, whose only name is the workload's SPIFFE ID
/// when the agent knows it (as Istio's agent writes it). Trellis's own CA takes the
/// identity from how the agent authenticates and reads no names; a CA in RA mode checks
/// that the CSR names exactly the caller, since the signer behind it copies the names.
fn csr_der<T: boring::pkey::HasPublic>(
    public: &boring::pkey::PKeyRef<T>,
    signer: &PKey<Private>,
    identity: Option<&str>,
) -> Result<Vec<u8>, boring::error::ErrorStack> {
    let mut b = X509Req::builder()?;
    b.set_subject_name(&X509Name::builder()?.build())?;
    b.set_pubkey(public)?;
    if let Some(id) = identity {
        let san = SubjectAlternativeName::new()
            .critical()
            .uri(id)
            .build(&b.x509v3_context(None))?;
        let mut extensions = boring::stack::Stack::new()?;
        extensions.push(san)?;
        b.add_extensions(&extensions)?;
    }
    b.sign(signer, MessageDigest::sha256())?;
    b.build().to_der()
}

fn csr_pem(
    key: &PKey<Private>,
    signer: &PKey<Private>,
    identity: Option<&str>,
) -> Result<String, boring::error::ErrorStack> {
    let der = csr_der(key, signer, identity)?;
    Ok(String::from_utf8(X509Req::from_der(&der)?.to_pem()?).expect("PEM is ASCII"))
}
