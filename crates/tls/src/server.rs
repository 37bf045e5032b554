//! Downstream TLS: one BoringSSL context per certificate, the one for the client's SNI
//! chosen in the handshake, and client certificates verified for mutual TLS.

use crate::bundle::TrustDomainRoots;
use crate::identity::peer_identities;
use crate::material::CertifiedKey;
use crate::provider::{install_certificate, KeyOpHook};
use crate::{alpn_wire, TlsError, TlsVersion};
use boring::ssl::{
    AlpnError, NameType, Ssl, SslContext, SslContextBuilder, SslMethod, SslVerifyMode,
};
use boring::x509::store::X509StoreBuilder;
use boring::x509::X509;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_boring::{SslStream, SslStreamBuilder};

/// A certificate and the server names it answers for (`example.com`, `*.example.com`);
/// a certificate with no names is the default.
pub struct ServerCertificate {
    pub key: CertifiedKey,
    pub server_names: Vec<String>,
}

pub struct ServerTlsConfig {
    pub certificates: Vec<ServerCertificate>,
    /// Offered in server preference order; empty disables ALPN.
    pub alpn: Vec<String>,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
    /// TLS 1.2 cipher suites in BoringSSL's cipher-list syntax, joined with `:`; a name
    /// BoringSSL does not know is an error (strict), as in Envoy. Empty: the default.
    pub cipher_suites: Vec<String>,
    /// When set, clients present certificates that chain to these roots (mutual TLS).
    pub client_roots: Option<Vec<X509>>,
    /// With `client_roots`: refuse a client that presents no certificate.
    pub require_client_certificate: bool,
    /// With `client_roots`: the client's SPIFFE ID must be in one of these trust
    /// domains; empty accepts any certificate that chains to the roots.
    pub client_trust_domains: Vec<String>,
    /// With `client_roots` or `client_bundles`: the client's leaf must carry one of these
    /// URI or DNS SANs, exactly (Istio's Gateway `subjectAltNames`); empty: any.
    pub client_sans: Vec<String>,
    /// Instead of `client_roots` and `client_trust_domains`: roots per trust domain; a
    /// client's chain must lead to a root of its own trust domain's bundle.
    pub client_bundles: Vec<TrustDomainRoots>,
    /// Session tickets and the session cache (resumed handshakes skip the signature).
    pub session_resumption: bool,
    pub key_op_hook: Option<KeyOpHook>,
}

/// A completed server handshake.
pub struct AcceptedTls<S> {
    pub stream: SslStream<S>,
    pub alpn: Option<Vec<u8>>,
    /// The verified client certificate's URI then DNS SANs; empty without one.
    pub peer_identities: Vec<String>,
    pub server_name: Option<String>,
}

pub struct ServerTls {
    default: SslContext,
}

impl ServerTls {
    pub fn new(config: ServerTlsConfig) -> Result<Self, TlsError> {
        if config.min_version > config.max_version {
            return Err(TlsError::Config(
                "min_version is newer than max_version".into(),
            ));
        }
        let alpn = alpn_wire(&config.alpn)?;
        if config.certificates.is_empty() {
            return Err(TlsError::Config("no certificate configured".into()));
        }
        let mut named = crate::ServerNames::default();
        for cert in config
            .certificates
            .iter()
            .filter(|c| !c.server_names.is_empty())
        {
            let ctx = context_for(&config, &alpn, &cert.key)?;
            named.insert(&cert.server_names, ctx);
        }
        // The context a handshake starts with carries the SNI callback, which moves the
        // connection to the context of the certificate whose names match.
        let mut builder = builder_for(&config, &alpn)?;
        install(&mut builder, &config, &default_key(&config))?;
        builder.set_servername_callback(move |ssl, _alert| {
            let Some(sni) = ssl
                .servername(NameType::HOST_NAME)
                .map(str::to_ascii_lowercase)
            else {
                return Ok(());
            };
            if let Some(ctx) = named.lookup(&sni) {
                // An unmatched name keeps the default certificate, as Envoy does.
                let _ = ssl.set_ssl_context(ctx);
            }
            Ok(())
        });
        Ok(ServerTls {
            default: builder.build(),
        })
    }

    /// Runs the server handshake. The error is a sentence for logs.
    pub async fn accept<S>(&self, stream: S) -> Result<AcceptedTls<S>, String>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let ssl = Ssl::new(&self.default).map_err(|e| e.to_string())?;
        let stream = SslStreamBuilder::new(ssl, stream)
            .accept()
            .await
            .map_err(|e| handshake_error(e.ssl(), &e.to_string()))?;
        let ssl = stream.ssl();
        let alpn = ssl.selected_alpn_protocol().map(<[u8]>::to_vec);
        let server_name = ssl.servername(NameType::HOST_NAME).map(str::to_string);
        let peer_identities = ssl
            .peer_certificate()
            .map(|c| peer_identities(&c))
            .unwrap_or_default();
        Ok(AcceptedTls {
            stream,
            alpn,
            peer_identities,
            server_name,
        })
    }
}

fn default_key(config: &ServerTlsConfig) -> CertifiedKey {
    config
        .certificates
        .iter()
        .find(|c| c.server_names.is_empty())
        .unwrap_or(&config.certificates[0])
        .key
        .clone()
}

/// The handshake's error; when the peer's certificate was received and refused, why.
pub(crate) fn handshake_error(ssl: Option<&boring::ssl::SslRef>, fallback: &str) -> String {
    // Before a peer certificate arrives the verify result is not a verdict on one.
    let received = ssl.is_some_and(|s| s.peer_certificate().is_some());
    match ssl.map(|s| s.verify_result()) {
        Some(Err(e)) if received => format!("peer certificate rejected: {}", e.error_string()),
        _ => fallback.to_string(),
    }
}

/// The first of our protocols (server preference) that the client offered, as a slice of
/// the client's list.
fn select_alpn<'a>(ours: &[u8], client: &'a [u8]) -> Option<&'a [u8]> {
    let offered: Vec<&'a [u8]> = wire_protocols(client).collect();
    wire_protocols(ours).find_map(|p| offered.iter().copied().find(|c| *c == p))
}

fn wire_protocols(mut wire: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let (&len, rest) = wire.split_first()?;
        let p = rest.get(..len as usize)?;
        wire = &rest[len as usize..];
        Some(p)
    })
}

fn builder_for(config: &ServerTlsConfig, alpn: &[u8]) -> Result<SslContextBuilder, TlsError> {
    let mut b = SslContextBuilder::new(SslMethod::tls())?;
    b.set_min_proto_version(Some(config.min_version.to_boring()))?;
    b.set_max_proto_version(Some(config.max_version.to_boring()))?;
    if !config.cipher_suites.is_empty() {
        let list = config.cipher_suites.join(":");
        b.set_strict_cipher_list(&list).map_err(|_| {
            TlsError::Config(format!(
                "cipher_suites: {list:?} is not a cipher list BoringSSL accepts"
            ))
        })?;
    }
    // Session tickets across contexts with client verification need a shared id.
    b.set_session_id_context(b"trellis")?;
    if !config.session_resumption {
        b.set_options(boring::ssl::SslOptions::NO_TICKET);
        b.set_session_cache_mode(boring::ssl::SslSessionCacheMode::OFF);
    }
    if !alpn.is_empty() {
        let ours = alpn.to_vec();
        b.set_alpn_select_callback(move |_ssl, client| {
            select_alpn(&ours, client).ok_or(AlpnError::NOACK)
        });
    }
    if !config.client_bundles.is_empty() {
        let (store, bundles) = crate::bundle::compiled(&config.client_bundles)?;
        b.set_cert_store_ref(&store);
        let sans = std::sync::Arc::new(config.client_sans.clone());
        b.set_verify_callback(verify_mode(config), move |chain_ok, ctx| {
            if !chain_ok || ctx.error_depth() != 0 {
                return chain_ok;
            }
            bundles.admits(ctx) && names_one_of(ctx, &sans)
        });
    } else if let Some(roots) = &config.client_roots {
        let mut store = X509StoreBuilder::new()?;
        for r in roots {
            store.add_cert(r.clone())?;
        }
        b.set_cert_store_builder(store);
        let domains = std::sync::Arc::new(config.client_trust_domains.clone());
        let sans = std::sync::Arc::new(config.client_sans.clone());
        b.set_verify_callback(verify_mode(config), move |chain_ok, ctx| {
            if !chain_ok || ctx.error_depth() != 0 {
                return chain_ok;
            }
            if !names_one_of(ctx, &sans) {
                return false;
            }
            if domains.is_empty() {
                return true;
            }
            let ids = ctx.current_cert().map(peer_identities).unwrap_or_default();
            let ok = ids.iter().any(|id| {
                crate::SpiffeId::parse(id).is_ok_and(|s| domains.contains(&s.trust_domain))
            });
            if !ok {
                tracing::debug!(presented = ?ids, trusted = ?*domains, "client identity outside the trusted domains");
                ctx.set_error(Err(boring::x509::X509VerifyError::CERT_REJECTED));
            }
            ok
        });
    }
    Ok(b)
}

/// Whether the leaf being verified carries one of `sans` (any, when empty); if not, the
/// verification fails with CERT_REJECTED.
fn names_one_of(ctx: &mut boring::x509::X509StoreContextRef, sans: &[String]) -> bool {
    if sans.is_empty() {
        return true;
    }
    let ids = ctx.current_cert().map(peer_identities).unwrap_or_default();
    let ok = ids.iter().any(|id| sans.contains(id));
    if !ok {
        tracing::debug!(presented = ?ids, allowed = ?sans, "client certificate names none of the subjectAltNames");
        ctx.set_error(Err(boring::x509::X509VerifyError::CERT_REJECTED));
    }
    ok
}

fn verify_mode(config: &ServerTlsConfig) -> SslVerifyMode {
    let mut mode = SslVerifyMode::PEER;
    if config.require_client_certificate {
        mode |= SslVerifyMode::FAIL_IF_NO_PEER_CERT;
    }
    mode
}

fn install(
    b: &mut SslContextBuilder,
    config: &ServerTlsConfig,
    key: &CertifiedKey,
) -> Result<(), TlsError> {
    install_certificate(b, key, config.key_op_hook.clone())?;
    Ok(())
}

fn context_for(
    config: &ServerTlsConfig,
    alpn: &[u8],
    key: &CertifiedKey,
) -> Result<SslContext, TlsError> {
    let mut b = builder_for(config, alpn)?;
    install(&mut b, config, key)?;
    Ok(b.build())
}

#[cfg(test)]
mod tests {

    #[test]
    fn alpn_prefers_our_order() {
        let ours = crate::alpn_wire(&["h2".into(), "http/1.1".into()]).unwrap();
        let client = crate::alpn_wire(&["http/1.1".into(), "h2".into()]).unwrap();
        assert_eq!(super::select_alpn(&ours, &client), Some(&b"h2"[..]));
        let old = crate::alpn_wire(&["http/1.1".into()]).unwrap();
        assert_eq!(super::select_alpn(&ours, &old), Some(&b"http/1.1"[..]));
        let other = crate::alpn_wire(&["spdy/3".into()]).unwrap();
        assert_eq!(super::select_alpn(&ours, &other), None);
        assert_eq!(super::select_alpn(&ours, &[5, b'h']), None);
    }
}
