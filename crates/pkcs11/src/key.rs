//! A private key in a token, as TLS and the CA use it: found by the URI's `object` /
//! `id`, or generated in the token (`CKA_SENSITIVE`, not `CKA_EXTRACTABLE`); its public
//! half read out to certify it; every signature made by the token (`C_Sign`) over a
//! digest computed here.

use std::sync::Arc;

use boring::bn::BigNum;
use boring::ec::{EcGroup, EcKey, EcPoint};
use boring::nid::Nid;
use boring::pkey::{PKey, Public};
use boring::rsa::Rsa;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use trellis_tls::{KeyAlgorithm, KeyOpError, KeyOpFuture, PrivateKeyProvider, SignatureScheme};

use crate::token::{Pkcs11Error, Token};
use crate::uri::Pkcs11Uri;

/// The DER of the P-256 curve's OID, as `CKA_EC_PARAMS` holds it.
const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// What kind of key to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    Rsa2048,
    EcdsaP256,
}

/// A private key in a token, and its public half.
pub struct TokenKey {
    pub(crate) token: Arc<Token>,
    pub(crate) handle: ObjectHandle,
    /// The public key object, when there is one (destroyed with the private one).
    public_handle: Option<ObjectHandle>,
    algorithm: KeyAlgorithm,
    public: PKey<Public>,
    /// How messages name the key.
    name: String,
    /// When a failed signature was last logged (seconds since the epoch): a token
    /// that fails mid-flight fails every handshake, and says so once per interval.
    last_warned: std::sync::atomic::AtomicU64,
}

/// How often a key that keeps failing says so.
const WARN_EVERY_SECS: u64 = 10;

impl TokenKey {
    /// The private key the URI names (`object` and/or `id`), in the token it names.
    pub fn find(token: Arc<Token>, uri: &Pkcs11Uri) -> Result<TokenKey, Pkcs11Error> {
        let name = uri.to_string();
        if uri.object.is_none() && uri.id.is_none() {
            return Err(Pkcs11Error::new(&name, "name the key with object= or id="));
        }
        let mut template = vec![Attribute::Class(ObjectClass::PRIVATE_KEY)];
        let mut public_template = vec![Attribute::Class(ObjectClass::PUBLIC_KEY)];
        if let Some(label) = &uri.object {
            template.push(Attribute::Label(label.as_bytes().to_vec()));
            public_template.push(Attribute::Label(label.as_bytes().to_vec()));
        }
        if let Some(id) = &uri.id {
            template.push(Attribute::Id(id.clone()));
            public_template.push(Attribute::Id(id.clone()));
        }
        let found = token.run_blocking(move |s| {
            let private = s.find_objects(&template)?;
            let public = s.find_objects(&public_template)?;
            Ok((private, public))
        });
        let (private, public) = found.map_err(|e| Pkcs11Error::new(&name, e.message))?;
        let handle = match private.as_slice() {
            [h] => *h,
            [] => return Err(Pkcs11Error::new(&name, "no such private key in the token")),
            _ => {
                return Err(Pkcs11Error::new(
                    &name,
                    "several private keys match; name one (object and id)",
                ))
            }
        };
        TokenKey::with_handles(token, handle, public.first().copied(), name)
    }

    /// A new key pair in the token, labelled `label` with id `id`: the private key
    /// sensitive and not extractable, both kept in the token (`CKA_TOKEN`).
    pub fn generate(
        token: Arc<Token>,
        kind: KeyKind,
        label: &str,
        id: &[u8],
    ) -> Result<TokenKey, Pkcs11Error> {
        let name = format!("{} (object {label})", token.name());
        let common = |public: bool| {
            vec![
                Attribute::Token(true),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Id(id.to_vec()),
                Attribute::Private(!public),
            ]
        };
        let mut public = match kind {
            KeyKind::Rsa2048 => vec![
                Attribute::ModulusBits(2048.into()),
                Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
            ],
            KeyKind::EcdsaP256 => vec![Attribute::EcParams(P256_PARAMS.to_vec())],
        };
        public.extend(common(true));
        public.push(Attribute::Verify(true));
        let mut private = common(false);
        private.extend([
            Attribute::Sign(true),
            Attribute::Decrypt(kind == KeyKind::Rsa2048),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
        ]);
        let (public_handle, handle) = token
            .run_blocking(move |s| {
                // Made here: a mechanism holds raw pointers and stays on the token's thread.
                let mechanism = match kind {
                    KeyKind::Rsa2048 => Mechanism::RsaPkcsKeyPairGen,
                    KeyKind::EcdsaP256 => Mechanism::EccKeyPairGen,
                };
                s.generate_key_pair(&mechanism, &public, &private)
            })
            .map_err(|e| {
                Pkcs11Error::new(&name, format!("generating a key pair: {}", e.message))
            })?;
        TokenKey::with_handles(token, handle, Some(public_handle), name)
    }

    /// Every private key labelled `label` in the token (keys a previous run left).
    pub fn destroy_labelled(token: &Arc<Token>, label: &str) -> Result<usize, Pkcs11Error> {
        let label = label.as_bytes().to_vec();
        token.run_blocking(move |s| {
            let mut n = 0;
            for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
                for h in
                    s.find_objects(&[Attribute::Class(class), Attribute::Label(label.clone())])?
                {
                    s.destroy_object(h)?;
                    if class == ObjectClass::PRIVATE_KEY {
                        n += 1;
                    }
                }
            }
            Ok(n)
        })
    }

    fn with_handles(
        token: Arc<Token>,
        handle: ObjectHandle,
        public_handle: Option<ObjectHandle>,
        name: String,
    ) -> Result<TokenKey, Pkcs11Error> {
        let wanted = vec![
            AttributeType::KeyType,
            AttributeType::Modulus,
            AttributeType::PublicExponent,
            AttributeType::EcParams,
        ];
        let read = token.run_blocking(move |s| {
            let private = s.get_attributes(handle, &wanted)?;
            let point = match public_handle {
                Some(p) => s.get_attributes(p, &[AttributeType::EcPoint])?,
                None => Vec::new(),
            };
            Ok((private, point))
        });
        let (attrs, point) = read.map_err(|e| Pkcs11Error::new(&name, e.message))?;
        let (mut key_type, mut modulus, mut exponent, mut params, mut ec_point) =
            (None, None, None, None, None);
        for a in attrs.into_iter().chain(point) {
            match a {
                Attribute::KeyType(t) => key_type = Some(t),
                Attribute::Modulus(m) => modulus = Some(m),
                Attribute::PublicExponent(e) => exponent = Some(e),
                Attribute::EcParams(p) => params = Some(p),
                Attribute::EcPoint(p) => ec_point = Some(p),
                _ => {}
            }
        }
        let bad = |what: &str| Pkcs11Error::new(&name, what);
        let (algorithm, public) = match key_type {
            Some(KeyType::RSA) => {
                let (n, e) = modulus
                    .zip(exponent)
                    .ok_or_else(|| bad("an RSA key without its modulus"))?;
                let rsa = BigNum::from_slice(&n)
                    .and_then(|n| Ok((n, BigNum::from_slice(&e)?)))
                    .and_then(|(n, e)| Rsa::from_public_components(n, e))
                    .map_err(|e| bad(&format!("the RSA public key: {e}")))?;
                let bits = rsa.size() * 8;
                let public = PKey::from_rsa(rsa).map_err(|e| bad(&e.to_string()))?;
                (KeyAlgorithm::Rsa { bits }, public)
            }
            Some(KeyType::EC) => {
                if params.as_deref() != Some(P256_PARAMS) {
                    return Err(bad("an EC key on a curve other than P-256"));
                }
                let point = ec_point.ok_or_else(|| {
                    bad("an EC private key without a public key object (same object or id)")
                })?;
                let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)
                    .map_err(|e| bad(&e.to_string()))?;
                let mut ctx = boring::bn::BigNumContext::new().map_err(|e| bad(&e.to_string()))?;
                let raw = unwrap_octet_string(&point).unwrap_or(&point);
                let point = EcPoint::from_bytes(&group, raw, &mut ctx)
                    .map_err(|e| bad(&format!("the EC public point: {e}")))?;
                let ec = EcKey::from_public_key(&group, &point).map_err(|e| bad(&e.to_string()))?;
                let public = PKey::from_ec_key(ec).map_err(|e| bad(&e.to_string()))?;
                (KeyAlgorithm::EcdsaP256, public)
            }
            _ => return Err(bad("a key type Trellis cannot sign with (RSA or EC P-256)")),
        };
        Ok(TokenKey {
            token,
            handle,
            public_handle,
            algorithm,
            public,
            name,
            last_warned: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Logs a failed operation, at most once per interval.
    fn warn_failed(&self, op: &str, e: &str) {
        use std::sync::atomic::Ordering;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let last = self.last_warned.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= WARN_EVERY_SECS
            && self
                .last_warned
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(key = %self.name, "the token failed to {op}; handshakes with this key fail until it answers again: {e}");
        }
    }

    pub fn public_key(&self) -> &PKey<Public> {
        &self.public
    }

    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// Removes the key pair from the token.
    pub fn destroy(&self) -> Result<(), Pkcs11Error> {
        let (handle, public) = (self.handle, self.public_handle);
        self.token.run_blocking(move |s| {
            s.destroy_object(handle)?;
            if let Some(p) = public {
                s.destroy_object(p)?;
            }
            Ok(())
        })
    }

    /// The operation and the data the token signs for `scheme` over `message`.
    fn to_sign(
        &self,
        scheme: SignatureScheme,
        message: &[u8],
    ) -> Result<(SignOp, Vec<u8>), KeyOpError> {
        let digest_type = scheme.digest().ok_or_else(|| {
            KeyOpError(format!(
                "signature scheme {:#06x} is not supported",
                scheme.0
            ))
        })?;
        let digest = boring::hash::hash(digest_type, message)
            .map_err(|e| KeyOpError(e.to_string()))?
            .to_vec();
        match self.algorithm {
            KeyAlgorithm::Rsa { .. } if scheme.is_rsa_pkcs1() => {
                let mut info = digest_info_prefix(digest.len()).to_vec();
                info.extend_from_slice(&digest);
                Ok((SignOp::RsaPkcs1, info))
            }
            KeyAlgorithm::Rsa { .. } if scheme.is_rsa_pss() => Ok((SignOp::RsaPss, digest)),
            KeyAlgorithm::EcdsaP256 if scheme == SignatureScheme::ECDSA_SECP256R1_SHA256 => {
                Ok((SignOp::Ecdsa, digest))
            }
            _ => Err(KeyOpError(format!(
                "signature scheme {:#06x} does not fit this {:?} key",
                scheme.0, self.algorithm
            ))),
        }
    }

    /// A signature over `message` (hashed here with the scheme's digest), on the
    /// token's thread.
    pub async fn sign_async(
        &self,
        scheme: SignatureScheme,
        message: &[u8],
    ) -> Result<Vec<u8>, KeyOpError> {
        let (mechanism, data) = self.to_sign(scheme, message)?;
        let handle = self.handle;
        let ecdsa = self.algorithm == KeyAlgorithm::EcdsaP256;
        let raw = self
            .token
            .run(move |s| s.sign(&mechanism.mechanism(data.len()), handle, &data))
            .await
            .map_err(|e| {
                self.warn_failed("sign", &e.message);
                KeyOpError(e.to_string())
            })?;
        if ecdsa {
            ecdsa_der(&raw)
        } else {
            Ok(raw)
        }
    }

    /// As [`sign_async`](Self::sign_async), waiting on this thread.
    pub fn sign_blocking(
        &self,
        scheme: SignatureScheme,
        message: &[u8],
    ) -> Result<Vec<u8>, KeyOpError> {
        let (mechanism, data) = self.to_sign(scheme, message)?;
        let handle = self.handle;
        let raw = self
            .token
            .run_blocking(move |s| s.sign(&mechanism.mechanism(data.len()), handle, &data))
            .map_err(|e| KeyOpError(e.to_string()))?;
        if self.algorithm == KeyAlgorithm::EcdsaP256 {
            ecdsa_der(&raw)
        } else {
            Ok(raw)
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// How the token signs a digest (the mechanism is made on the token's thread: it holds
/// raw pointers and cannot cross threads).
#[derive(Clone, Copy, Debug)]
enum SignOp {
    /// `CKM_RSA_PKCS` over a `DigestInfo`.
    RsaPkcs1,
    /// `CKM_RSA_PKCS_PSS` over the digest, MGF1 with the digest's hash, salt its length.
    RsaPss,
    /// `CKM_ECDSA` over the digest.
    Ecdsa,
}

impl SignOp {
    /// The mechanism for data of `len` bytes (a PSS digest's length picks its hash).
    fn mechanism(self, len: usize) -> Mechanism<'static> {
        match self {
            SignOp::RsaPkcs1 => Mechanism::RsaPkcs,
            SignOp::Ecdsa => Mechanism::Ecdsa,
            SignOp::RsaPss => {
                let (hash_alg, mgf) = match len {
                    32 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
                    48 => (MechanismType::SHA384, PkcsMgfType::MGF1_SHA384),
                    _ => (MechanismType::SHA512, PkcsMgfType::MGF1_SHA512),
                };
                Mechanism::RsaPkcsPss(PkcsPssParams {
                    hash_alg,
                    mgf,
                    s_len: (len as u64).into(),
                })
            }
        }
    }
}

/// The token's key as a TLS private-key provider: the handshake suspends while the
/// token signs on its thread, and the worker serves other connections meanwhile.
pub struct Pkcs11Key(pub Arc<TokenKey>);

impl PrivateKeyProvider for Pkcs11Key {
    fn name(&self) -> &'static str {
        "pkcs11"
    }

    fn algorithm(&self) -> KeyAlgorithm {
        self.0.algorithm
    }

    fn sign(&self, scheme: SignatureScheme, message: &[u8]) -> KeyOpFuture {
        let key = self.0.clone();
        let message = message.to_vec();
        Box::pin(async move { key.sign_async(scheme, &message).await })
    }

    fn decrypt(&self, ciphertext: &[u8]) -> KeyOpFuture {
        let key = self.0.clone();
        let data = ciphertext.to_vec();
        Box::pin(async move {
            if !matches!(key.algorithm, KeyAlgorithm::Rsa { .. }) {
                return Err(KeyOpError("decryption needs an RSA key".into()));
            }
            let handle = key.handle;
            key.token
                .run(move |s| s.decrypt(&Mechanism::RsaX509, handle, &data))
                .await
                .map_err(|e| KeyOpError(e.to_string()))
        })
    }
}

/// The DER `DigestInfo` before a SHA-2 digest of `len` bytes (RFC 8017 section 9.2).
fn digest_info_prefix(len: usize) -> &'static [u8] {
    match len {
        32 => &[
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ],
        48 => &[
            0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x02, 0x05, 0x00, 0x04, 0x30,
        ],
        _ => &[
            0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x03, 0x05, 0x00, 0x04, 0x40,
        ],
    }
}

/// `CKA_EC_POINT` is the point wrapped in a DER OCTET STRING (most modules); some give
/// it bare.
fn unwrap_octet_string(der: &[u8]) -> Option<&[u8]> {
    let (&tag, rest) = der.split_first()?;
    if tag != 0x04 {
        return None;
    }
    let (len, rest) = match rest.split_first()? {
        (&l, rest) if l < 0x80 => (l as usize, rest),
        (&0x81, rest) => (*rest.first()? as usize, &rest[1..]),
        _ => return None,
    };
    (rest.len() == len).then_some(rest)
}

/// PKCS#11 gives ECDSA signatures as `r || s`; TLS wants the DER `ECDSA-Sig-Value`.
fn ecdsa_der(raw: &[u8]) -> Result<Vec<u8>, KeyOpError> {
    if !raw.len().is_multiple_of(2) || raw.is_empty() {
        return Err(KeyOpError(format!(
            "an ECDSA signature of {} bytes",
            raw.len()
        )));
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let int = |v: &[u8]| {
        let v = &v[v.iter().position(|&b| b != 0).unwrap_or(v.len() - 1)..];
        let mut out = vec![0x02];
        let pad = v[0] & 0x80 != 0;
        out.push((v.len() + usize::from(pad)) as u8);
        if pad {
            out.push(0);
        }
        out.extend_from_slice(v);
        out
    };
    let (r, s) = (int(r), int(s));
    let mut out = vec![0x30];
    let len = r.len() + s.len();
    if len >= 0x80 {
        out.push(0x81);
    }
    out.push(len as u8);
    out.extend(r);
    out.extend(s);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecdsa_signatures_become_der_as_boring_reads_them() {
        for raw in [
            [[0x01u8; 32], [0x80u8; 32]].concat(),
            [[0u8; 31].as_slice(), &[5], &[0xff; 32]].concat(),
            [[0u8; 32], [0u8; 32]].concat(),
        ] {
            let der = ecdsa_der(&raw).unwrap();
            let sig = boring::ecdsa::EcdsaSig::from_der(&der).unwrap();
            let mut r = sig.r().to_vec();
            while r.len() < 32 {
                r.insert(0, 0);
            }
            let mut s = sig.s().to_vec();
            while s.len() < 32 {
                s.insert(0, 0);
            }
            assert_eq!([r, s].concat(), raw);
        }
        assert!(ecdsa_der(&[1, 2, 3]).is_err());
    }

    #[test]
    fn ec_points_unwrap_from_their_octet_string() {
        let point = [0x04u8; 65];
        let wrapped = [&[0x04, 0x41][..], &point].concat();
        assert_eq!(unwrap_octet_string(&wrapped), Some(&point[..]));
        assert_eq!(unwrap_octet_string(&point), None, "bare");
    }
}
