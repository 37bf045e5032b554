//! Upstream TLS: originate to a cluster, present our certificate for mutual TLS and
//! refuse a peer whose identity is not one the cluster expects.

use crate::bundle::TrustDomainRoots;
use crate::identity::peer_identities;
use crate::material::CertifiedKey;
use crate::provider::{install_certificate, KeyOpHook};
use crate::server::handshake_error;
use crate::{alpn_wire, TlsError, TlsVersion};
use boring::ssl::{Ssl, SslContext, SslContextBuilder, SslMethod, SslVerifyMode};
use boring::x509::store::X509StoreBuilder;
use boring::x509::X509;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_boring::{SslStream, SslStreamBuilder};

pub struct ClientTlsConfig {
    /// The roots the server's chain must lead to.
    pub roots: Vec<X509>,
    /// Instead of `roots`: roots per trust domain; the server's chain must lead to a
    /// root of its own trust domain's bundle.
    pub bundles: Vec<TrustDomainRoots>,
    /// Our certificate, for mutual TLS.
    pub certificate: Option<CertifiedKey>,
    pub sni: Option<String>,
    pub alpn: Vec<String>,
    /// Offered instead of `alpn` on streams a TCP proxy opens ([`ClientTls::connect_stream`]);
    /// empty: `alpn`.
    pub stream_alpn: Vec<String>,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
    /// The server's leaf must carry one of these as a URI or DNS SAN; empty accepts any
    /// certificate that chains to the roots.
    pub expected_identities: Vec<String>,
    pub key_op_hook: Option<KeyOpHook>,
}

pub struct ClientTls {
    ctx: SslContext,
    sni: Option<String>,
    /// `stream_alpn` in wire form, if set.
    stream_alpn: Option<Vec<u8>>,
}

impl ClientTls {
    pub fn new(config: ClientTlsConfig) -> Result<Self, TlsError> {
        if config.min_version > config.max_version {
            return Err(TlsError::Config(
                "min_version is newer than max_version".into(),
            ));
        }
        if config.roots.is_empty() && config.bundles.is_empty() {
            return Err(TlsError::Config("no trusted CA certificate".into()));
        }
        let mut b = SslContextBuilder::new(SslMethod::tls())?;
        b.set_min_proto_version(Some(config.min_version.to_boring()))?;
        b.set_max_proto_version(Some(config.max_version.to_boring()))?;
        let alpn = alpn_wire(&config.alpn)?;
        if !alpn.is_empty() {
            b.set_alpn_protos(&alpn)?;
        }
        let stream_alpn = alpn_wire(&config.stream_alpn)?;
        if config.bundles.is_empty() {
            let mut store = X509StoreBuilder::new()?;
            for r in &config.roots {
                store.add_cert(r.clone())?;
            }
            b.set_cert_store_builder(store);
        }
        let expected = Arc::new(config.expected_identities.clone());
        let bundles = if config.bundles.is_empty() {
            None
        } else {
            let (store, bundles) = crate::bundle::compiled(&config.bundles)?;
            b.set_cert_store_ref(&store);
            Some(bundles)
        };
        b.set_verify_callback(SslVerifyMode::PEER, move |chain_ok, ctx| {
            if !chain_ok || ctx.error_depth() != 0 {
                return chain_ok;
            }
            if bundles.as_ref().is_some_and(|b| !b.admits(ctx)) {
                tracing::warn!(
                    presented = ?ctx.current_cert().map(peer_identities).unwrap_or_default(),
                    trusted = ?bundles.as_ref().map(|b| b.domains().collect::<Vec<_>>()),
                    "upstream chain does not lead to its trust domain's roots"
                );
                return false;
            }
            if expected.is_empty() {
                return true;
            }
            let presented = ctx.current_cert().map(peer_identities).unwrap_or_default();
            let ok = presented.iter().any(|p| expected.contains(p));
            if !ok {
                tracing::warn!(
                    ?presented,
                    expected = ?*expected,
                    "upstream identity is not one the cluster expects"
                );
            }
            ok
        });
        if let Some(key) = &config.certificate {
            install_certificate(&mut b, key, config.key_op_hook.clone())?;
        }
        Ok(ClientTls {
            ctx: b.build(),
            sni: config.sni,
            stream_alpn: (!stream_alpn.is_empty()).then_some(stream_alpn),
        })
    }

    /// Runs the client handshake; returns the stream and the negotiated ALPN protocol.
    pub async fn connect<S>(&self, stream: S) -> Result<(SslStream<S>, Option<Vec<u8>>), String>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.handshake(stream, None).await
    }

    /// [`ClientTls::connect`] for a stream a TCP proxy opens: offers `stream_alpn`.
    pub async fn connect_stream<S>(
        &self,
        stream: S,
    ) -> Result<(SslStream<S>, Option<Vec<u8>>), String>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.handshake(stream, self.stream_alpn.as_deref()).await
    }

    async fn handshake<S>(
        &self,
        stream: S,
        alpn: Option<&[u8]>,
    ) -> Result<(SslStream<S>, Option<Vec<u8>>), String>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut ssl = Ssl::new(&self.ctx).map_err(|e| e.to_string())?;
        if let Some(sni) = &self.sni {
            ssl.set_hostname(sni).map_err(|e| e.to_string())?;
        }
        if let Some(alpn) = alpn {
            ssl.set_alpn_protos(alpn).map_err(|e| e.to_string())?;
        }
        let stream = SslStreamBuilder::new(ssl, stream)
            .connect()
            .await
            .map_err(|e| handshake_error(e.ssl(), &e.to_string()))?;
        let alpn = stream.ssl().selected_alpn_protocol().map(<[u8]>::to_vec);
        Ok((stream, alpn))
    }
}
