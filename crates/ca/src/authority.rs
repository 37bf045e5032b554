//! The signing authority: its root (generated on first start or loaded from files) and
//! how it turns a verified CSR plus an authenticated identity into a certificate.
//!
//! The SAN of an issued certificate is always the caller's authenticated identity;
//! whatever names the CSR asks for are ignored. Only the CSR's public key (after its
//! self-signature verifies) is taken from it.

use boring::asn1::{Asn1Integer, Asn1Time};
use boring::bn::{BigNum, MsbOption};
use boring::pkey::PKey;
use boring::rsa::Rsa;
use boring::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use boring::x509::{X509Builder, X509Name, X509NameRef, X509Req, X509};
use std::path::Path;
use std::time::Duration;
use trellis_pkcs11::{KeyKind, Pkcs11Uri, Token, TokenKey};
use trellis_tls::SpiffeId;

pub use crate::error::SignError;
use crate::signer::Signer;

/// Istio's caps: 24 h by default, never more than 90 days.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(24 * 3600);
pub const HARD_MAX_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
const ROOT_TTL_DAYS: u32 = 3650;

pub struct Authority {
    pub(crate) signing_cert: X509,
    pub(crate) signer: Signer,
    /// The signing certificate up to the root, root last (just the root when it signs).
    pub(crate) chain: Vec<X509>,
    pub trust_domain: String,
    pub max_ttl: Duration,
}

pub fn name(org: &str, cn: &str) -> Result<X509Name, boring::error::ErrorStack> {
    let mut n = X509Name::builder()?;
    n.append_entry_by_text("O", org)?;
    n.append_entry_by_text("CN", cn)?;
    Ok(n.build())
}

fn random_serial() -> Result<Asn1Integer, boring::error::ErrorStack> {
    let mut bn = BigNum::new()?;
    // 127 random bits with the top bit clear: positive and below 2^127, as RFC 5280 asks.
    bn.rand(127, MsbOption::MAYBE_ZERO, false)?;
    bn.to_asn1_integer()
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub use trellis_ca_client::time::{asn1_unix, unix_now};

fn io_err(path: &Path, e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{}: {e}", path.display())
}

impl Authority {
    /// Loads the root kept in `dir`, or generates a self-signed 10-year root there on
    /// first start (the key file is created with mode 0600).
    pub fn load_or_create(dir: &Path, trust_domain: &str) -> anyhow::Result<Self> {
        let cert_path = dir.join("root-cert.pem");
        let key_path = dir.join("root-key.pem");
        if cert_path.exists() {
            return Self::from_files(
                &cert_path,
                &key_path.display().to_string(),
                None,
                trust_domain,
            );
        }
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let key = PKey::from_rsa(Rsa::generate(2048)?)?;
        let cert = self_signed_root(&Signer::Memory(key.clone()), &key, trust_domain)?;
        write_private(&key_path, &key.private_key_to_pem_pkcs8()?)?;
        std::fs::write(&cert_path, cert.to_pem()?).map_err(|e| io_err(&cert_path, e))?;
        tracing::info!(root = %cert_path.display(), "generated a self-signed root CA");
        Self::from_files(
            &cert_path,
            &key_path.display().to_string(),
            None,
            trust_domain,
        )
    }

    /// A root whose key lives in a PKCS#11 token (`uri` names the token and, with
    /// `object`, the key): the key is generated in the token on first start (RSA-2048,
    /// sensitive, not extractable) and found there afterwards; the self-signed root
    /// certificate is kept in `dir`.
    pub fn load_or_create_in_token(
        dir: &Path,
        trust_domain: &str,
        uri: &str,
    ) -> anyhow::Result<Self> {
        let parsed = Pkcs11Uri::parse(uri).map_err(anyhow::Error::msg)?;
        let label = parsed
            .object
            .clone()
            .ok_or_else(|| anyhow::anyhow!("{parsed}: needs object=<label> for the CA key"))?;
        let token = Token::open(&parsed, None, 2)?;
        let cert_path = dir.join("root-cert.pem");
        let key = match TokenKey::find(token.clone(), &parsed) {
            Ok(k) => k,
            Err(e) if e.message.starts_with("no such private key") && !cert_path.exists() => {
                let mut id = [0u8; 16];
                boring::rand::rand_bytes(&mut id)?;
                let k = TokenKey::generate(token, KeyKind::Rsa2048, &label, &id)?;
                tracing::info!(key = %k.name(), "generated the CA key in the token");
                k
            }
            Err(e) => return Err(e.into()),
        };
        let public = key.public_key().clone();
        let signer = Signer::token(key)?;
        if !cert_path.exists() {
            std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
            let cert = self_signed_root(&signer, &public, trust_domain)?;
            std::fs::write(&cert_path, cert.to_pem()?).map_err(|e| io_err(&cert_path, e))?;
            tracing::info!(root = %cert_path.display(), "generated a self-signed root CA, its key in the token");
        }
        Self::with_signer(&cert_path, signer, uri, None, trust_domain)
    }

    /// Uses an existing root or intermediate: `cert` holds the signing certificate
    /// followed by its chain; `root` (when the chain does not end in it) is appended.
    pub fn from_files(
        cert: &Path,
        key: &str,
        root: Option<&Path>,
        trust_domain: &str,
    ) -> anyhow::Result<Self> {
        let signer = Signer::open(key)?;
        Self::with_signer(cert, signer, key, root, trust_domain)
    }

    fn with_signer(
        cert: &Path,
        signer: Signer,
        key_name: &str,
        root: Option<&Path>,
        trust_domain: &str,
    ) -> anyhow::Result<Self> {
        let pem = std::fs::read(cert).map_err(|e| io_err(cert, e))?;
        let mut chain = X509::stack_from_pem(&pem).map_err(|e| io_err(cert, e))?;
        if chain.is_empty() {
            return Err(io_err(cert, "no certificate in the file"));
        }
        if let Some(root) = root {
            let pem = std::fs::read(root).map_err(|e| io_err(root, e))?;
            chain.extend(X509::stack_from_pem(&pem).map_err(|e| io_err(root, e))?);
        }
        let signing_cert = chain[0].clone();
        let public = signing_cert.public_key()?;
        if !signer.matches(&public) {
            let shown = Pkcs11Uri::parse(key_name)
                .map(|u| u.to_string())
                .unwrap_or_else(|_| key_name.to_string());
            anyhow::bail!(
                "{shown}: the key does not match the signing certificate {}",
                cert.display()
            );
        }
        Ok(Authority {
            signing_cert,
            signer,
            chain,
            trust_domain: trust_domain.to_string(),
            max_ttl: DEFAULT_MAX_TTL,
        })
    }

    /// An authority from its chain (signing certificate first, root last) and the key
    /// of the signing certificate.
    pub fn from_chain(chain: Vec<X509>, signer: Signer) -> anyhow::Result<Self> {
        let signing_cert = chain
            .first()
            .ok_or_else(|| anyhow::anyhow!("no certificate in the chain"))?
            .clone();
        let public = signing_cert.public_key()?;
        if !signer.matches(&public) {
            anyhow::bail!("the key does not match the signing certificate");
        }
        Ok(Authority {
            signing_cert,
            signer,
            chain,
            trust_domain: String::new(),
            max_ttl: DEFAULT_MAX_TTL,
        })
    }

    /// The signing certificate up to the root, root last.
    pub fn chain(&self) -> &[X509] {
        &self.chain
    }

    pub fn root(&self) -> &X509 {
        self.chain.last().expect("chain is never empty")
    }

    pub fn root_pem(&self) -> String {
        String::from_utf8(self.root().to_pem().expect("encode root")).expect("PEM is ASCII")
    }

    /// Verifies the CSR and issues a certificate for `identity`, valid for the
    /// requested time up to the cap (and never past the signing certificate).
    /// Returns the chain as PEM, leaf first, root last.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        identity: &SpiffeId,
        requested: Option<Duration>,
    ) -> Result<Vec<String>, SignError> {
        let csr = X509Req::from_pem(csr_pem.as_bytes()).map_err(|_| SignError::MalformedCsr)?;
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
        let ttl = requested
            .filter(|d| !d.is_zero())
            .unwrap_or(self.max_ttl)
            .min(self.max_ttl);
        let leaf = self.issue(&key, &[format!("URI:{identity}")], ttl, false)?;
        let mut out = vec![pem(&leaf)?];
        for c in &self.chain {
            out.push(pem(c)?);
        }
        Ok(out)
    }

    /// A serving certificate for the CA itself (DNS names and IPs).
    pub fn issue_server_cert<T: boring::pkey::HasPublic>(
        &self,
        key: &boring::pkey::PKeyRef<T>,
        names: &[String],
        ttl: Duration,
    ) -> Result<Vec<X509>, SignError> {
        let sans: Vec<String> = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(_) => format!("IP:{n}"),
                Err(_) => format!("DNS:{n}"),
            })
            .collect();
        let leaf = self.issue(key, &sans, ttl, true)?;
        let mut chain = vec![leaf];
        chain.extend(self.chain.iter().cloned());
        Ok(chain)
    }

    fn issue<T: boring::pkey::HasPublic>(
        &self,
        key: &boring::pkey::PKeyRef<T>,
        sans: &[String],
        ttl: Duration,
        server_only: bool,
    ) -> Result<X509, SignError> {
        // Istio's workload certificates carry their identity only in the SAN.
        let mut b = self.child(&X509Name::builder()?.build(), key, ttl)?;
        let v9 = BasicConstraints::new().critical().build()?;
        b.append_extension(&v9)?;
        let v10 = KeyUsage::new()
            .critical()
            .digital_signature()
            .key_encipherment()
            .build()?;
        b.append_extension(&v10)?;
        let mut eku = ExtendedKeyUsage::new();
        eku.server_auth();
        if !server_only {
            eku.client_auth();
        }
        let v11 = eku.build()?;
        b.append_extension(&v11)?;
        let mut san = SubjectAlternativeName::new();
        san.critical();
        for s in sans {
            match s.split_once(':') {
                Some(("URI", v)) => san.uri(v),
                Some(("DNS", v)) => san.dns(v),
                Some(("IP", v)) => san.ip(v),
                _ => return Err(SignError::Internal(format!("bad SAN {s}"))),
            };
        }
        let san = san.build(&b.x509v3_context(Some(&self.signing_cert), None))?;
        b.append_extension(&san)?;
        self.sign_child(b)
    }

    /// A builder for a certificate this authority signs, named `subject`, for `public`,
    /// valid for `ttl` but never past the signing certificate.
    pub(crate) fn child<T: boring::pkey::HasPublic>(
        &self,
        subject: &X509NameRef,
        public: &boring::pkey::PKeyRef<T>,
        ttl: Duration,
    ) -> Result<X509Builder, boring::error::ErrorStack> {
        let not_after =
            (unix_now() + ttl.as_secs() as i64).min(asn1_unix(self.signing_cert.not_after()));
        builder(subject, self.signing_cert.subject_name(), public, not_after)
    }

    /// Adds the key identifiers (its own, and this authority's) and signs.
    pub(crate) fn sign_child(&self, mut b: X509Builder) -> Result<X509, SignError> {
        let ctx = b.x509v3_context(Some(&self.signing_cert), None);
        let ski = SubjectKeyIdentifier::new().build(&ctx)?;
        let aki = AuthorityKeyIdentifier::new().keyid(false).build(&ctx)?;
        b.append_extension(&ski)?;
        b.append_extension(&aki)?;
        self.signer.sign(b)
    }
}

/// A builder with what every certificate made here has: version 3, a random serial,
/// `subject` issued by `issuer`, valid from a minute ago (for peers whose clocks run
/// slightly behind) until `not_after` (seconds since the epoch), for `public`.
fn builder<T: boring::pkey::HasPublic>(
    subject: &X509NameRef,
    issuer: &X509NameRef,
    public: &boring::pkey::PKeyRef<T>,
    not_after: i64,
) -> Result<X509Builder, boring::error::ErrorStack> {
    let mut b = X509::builder()?;
    b.set_version(2)?;
    let serial = random_serial()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(subject)?;
    b.set_issuer_name(issuer)?;
    let (from, until) = (
        Asn1Time::from_unix(unix_now() - 60)?,
        Asn1Time::from_unix(not_after)?,
    );
    b.set_not_before(&from)?;
    b.set_not_after(&until)?;
    b.set_pubkey(public)?;
    Ok(b)
}

/// What makes a certificate a CA's: critical basic constraints CA, and certificate and
/// CRL signing its only key usages.
pub(crate) fn ca_extensions(b: &mut X509Builder) -> Result<(), boring::error::ErrorStack> {
    let constraints = BasicConstraints::new().critical().ca().build()?;
    b.append_extension(&constraints)?;
    let usage = KeyUsage::new()
        .critical()
        .key_cert_sign()
        .crl_sign()
        .build()?;
    b.append_extension(&usage)
}

/// A self-signed 10-year root for `public`, signed by `signer` (its key).
fn self_signed_root<T: boring::pkey::HasPublic>(
    signer: &Signer,
    public: &boring::pkey::PKeyRef<T>,
    trust_domain: &str,
) -> Result<X509, SignError> {
    let subject = name(trust_domain, "Trellis root CA")?;
    self_signed(signer, public, &subject)
}

/// A self-signed 10-year CA certificate named `subject` for `public`, signed by `signer`.
pub fn self_signed<T: boring::pkey::HasPublic>(
    signer: &Signer,
    public: &boring::pkey::PKeyRef<T>,
    subject: &boring::x509::X509NameRef,
) -> Result<X509, SignError> {
    let not_after = unix_now() + i64::from(ROOT_TTL_DAYS) * 86_400;
    let mut b = builder(subject, subject, public, not_after)?;
    ca_extensions(&mut b)?;
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None))?;
    b.append_extension(&ski)?;
    signer.sign(b)
}

/// A certificate in PEM.
pub fn pem(c: &X509) -> Result<String, SignError> {
    Ok(String::from_utf8(c.to_pem()?).expect("PEM is ASCII"))
}

/// Replaces `path` with `bytes` (owner-only): written beside it and renamed over it,
/// so a reader never sees half a file and a symlink planted at `path` is replaced, not
/// followed.
pub fn write_private_replacing(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    write_private(&tmp, bytes)?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))?;
    Ok(())
}

/// Writes a secret file readable by the owner only (never an existing file).
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_err(path, e))?;
    f.write_all(bytes).map_err(|e| io_err(path, e))?;
    Ok(())
}
