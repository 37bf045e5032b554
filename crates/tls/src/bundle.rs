//! Trust bundles per SPIFFE trust domain, as SPIFFE federation and Envoy's SPIFFE
//! certificate validator have them: a peer's chain must lead to a root of the bundle of
//! the trust domain its own SPIFFE ID names. A root trusted for one trust domain never
//! vouches for an identity of another, so a tenant's CA cannot mint identities of a
//! tenant that federates with it.

use crate::identity::peer_identities;
use crate::SpiffeId;
use boring::error::ErrorStack;
use boring::hash::MessageDigest;
use boring::x509::store::{X509Store, X509StoreBuilder};
use boring::x509::{X509Ref, X509StoreContextRef, X509VerifyError, X509};
use foreign_types::ForeignTypeRef as _;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// Compiled bundles (see [`compiled`]) by their trust domains and the addresses of their
/// root objects. An entry holds its roots, so no address in a key can be reused by
/// another certificate while the entry exists.
type Compiled = (Vec<X509>, X509Store, Arc<Bundles>);
type CompiledCache = Option<HashMap<Vec<(String, Vec<usize>)>, Compiled>>;
static COMPILED: Mutex<CompiledCache> = Mutex::new(None);
const COMPILED_KEPT: usize = 256;

/// The store of every root of `list` and its trust-domain check, shared by every context
/// with the same bundles: a sidecar's clusters mostly trust the same few, and building a
/// store costs more with each root (BoringSSL checks each against those already in it),
/// as does fingerprinting them. The proxy hands the same certificate objects for the same
/// PEM, so a cache hit costs a lookup.
pub(crate) fn compiled(list: &[TrustDomainRoots]) -> Result<(X509Store, Arc<Bundles>), ErrorStack> {
    let key: Vec<(String, Vec<usize>)> = list
        .iter()
        .map(|b| {
            let ptrs = b.roots.iter().map(|r| r.as_ptr() as usize).collect();
            (b.trust_domain.clone(), ptrs)
        })
        .collect();
    let mut cache = COMPILED.lock().unwrap_or_else(|e| e.into_inner());
    let cache = cache.get_or_insert_with(HashMap::new);
    if let Some((_, store, bundles)) = cache.get(&key) {
        return Ok((store.clone(), bundles.clone()));
    }
    let roots = Bundles::all_roots(list);
    let mut b = X509StoreBuilder::new()?;
    for r in &roots {
        b.add_cert(r.clone())?;
    }
    let store = b.build();
    let bundles = Arc::new(Bundles::new(list));
    if cache.len() >= COMPILED_KEPT {
        cache.clear();
    }
    let held: Vec<X509> = list.iter().flat_map(|b| b.roots.iter().cloned()).collect();
    cache.insert(key, (held, store.clone(), bundles.clone()));
    Ok((store, bundles))
}

/// The roots that may vouch for identities of one trust domain.
#[derive(Clone, Debug)]
pub struct TrustDomainRoots {
    pub trust_domain: String,
    pub roots: Vec<X509>,
}

/// SHA-256 of a certificate's DER: how roots are told apart and shown.
pub fn fingerprint(cert: &X509Ref) -> [u8; 32] {
    let mut out = [0u8; 32];
    if let Ok(d) = cert.digest(MessageDigest::sha256()) {
        out.copy_from_slice(&d);
    }
    out
}

/// Lowercase hex, as fingerprints are shown.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// [`fingerprint`] in hex.
pub fn fingerprint_hex(cert: &X509Ref) -> String {
    hex(&fingerprint(cert))
}

/// The bundles of a TLS context, compiled for the verify callback.
pub(crate) struct Bundles {
    by_domain: HashMap<String, HashSet<[u8; 32]>>,
}

impl Bundles {
    pub(crate) fn new(list: &[TrustDomainRoots]) -> Self {
        let mut by_domain: HashMap<String, HashSet<[u8; 32]>> = HashMap::new();
        for b in list {
            by_domain
                .entry(b.trust_domain.clone())
                .or_default()
                .extend(b.roots.iter().map(|r| fingerprint(r)));
        }
        Bundles { by_domain }
    }

    /// Every root of every bundle, once: the store the chain is built against.
    pub(crate) fn all_roots(list: &[TrustDomainRoots]) -> Vec<X509> {
        let mut seen = HashSet::new();
        list.iter()
            .flat_map(|b| b.roots.iter())
            .filter(|r| seen.insert(fingerprint(r)))
            .cloned()
            .collect()
    }

    /// Called for the leaf (depth 0) once the chain verified: whether the root it led to
    /// is in the bundle of the leaf's trust domain. A leaf without a SPIFFE ID, or of a
    /// trust domain with no bundle, is refused.
    pub(crate) fn admits(&self, ctx: &mut X509StoreContextRef) -> bool {
        let verdict = self.verdict(ctx);
        if let Err(e) = verdict {
            ctx.set_error(Err(e));
        }
        verdict.is_ok()
    }

    /// `CERT_REJECTED`: no SPIFFE ID, or a trust domain without a bundle here;
    /// `CERT_UNTRUSTED`: the chain leads to a root of another trust domain.
    fn verdict(&self, ctx: &X509StoreContextRef) -> Result<(), X509VerifyError> {
        let Some(leaf) = ctx.current_cert() else {
            return Err(X509VerifyError::CERT_REJECTED);
        };
        let ids = peer_identities(leaf);
        let Some(domain) = ids
            .iter()
            .find_map(|id| SpiffeId::parse(id).ok().map(|s| s.trust_domain))
        else {
            tracing::debug!(presented = ?ids, "peer certificate has no SPIFFE ID");
            return Err(X509VerifyError::CERT_REJECTED);
        };
        let Some(bundle) = self.by_domain.get(&domain) else {
            tracing::debug!(%domain, "no trust bundle for the peer's trust domain");
            return Err(X509VerifyError::CERT_REJECTED);
        };
        let root = ctx
            .chain()
            .and_then(|c| c.iter().next_back())
            .map(fingerprint);
        if root.is_some_and(|r| bundle.contains(&r)) {
            Ok(())
        } else {
            tracing::debug!(%domain, "peer chain leads to a root of another trust domain");
            Err(X509VerifyError::CERT_UNTRUSTED)
        }
    }

    pub(crate) fn domains(&self) -> impl Iterator<Item = &str> {
        self.by_domain.keys().map(String::as_str)
    }
}

/// Why a handshake refused the peer, from the handshake's error: `unknown_ca` (the
/// chain leads to no trusted root), `trust_domain` (no SPIFFE ID, or of a trust domain
/// not trusted here), `other_trust_domain_root` (a root trusted for another trust
/// domain signed it), `expired`, `no_certificate`, `other`; `None` when the handshake
/// failed for a reason other than the peer's certificate.
pub fn peer_rejection(error: &str) -> Option<&'static str> {
    if error.contains("PEER_DID_NOT_RETURN_A_CERTIFICATE")
        || error.contains("did not return a certificate")
    {
        return Some("no_certificate");
    }
    let reason = error.strip_prefix("peer certificate rejected: ")?;
    Some(match reason {
        r if r.contains("local issuer")
            || r.contains("self signed")
            || r.contains("self-signed") =>
        {
            "unknown_ca"
        }
        r if r.contains("certificate rejected") => "trust_domain",
        r if r.contains("not trusted") => "other_trust_domain_root",
        r if r.contains("expired") => "expired",
        _ => "other",
    })
}
