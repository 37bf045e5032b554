//! Serves the certificate API over gRPC on BoringSSL TLS. Clients verify the CA with
//! its root; a client may present a certificate this CA issued (renewal), which is
//! verified in the handshake and handed to the service as [`PeerIdentity`].

use crate::authority::Authority;
use crate::proto::istio_certificate_service_server::IstioCertificateServiceServer;
use crate::service::{CaService, PeerIdentity};
use arc_swap::ArcSwap;
use boring::ec::{EcGroup, EcKey};
use boring::nid::Nid;
use boring::pkey::PKey;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_boring::SslStream;
use tonic::transport::server::Connected;
use trellis_tls::{
    CertifiedKey, InMemoryKey, ServerCertificate, ServerTls, ServerTlsConfig, TrustDomainRoots,
};

/// The CA's serving certificate lives as long as this; the process issues itself a new
/// one at start, so restarts are the rotation.
const SERVING_CERT_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

pub struct CaConn {
    inner: SslStream<TcpStream>,
    peer: PeerIdentity,
}

impl Connected for CaConn {
    type ConnectInfo = PeerIdentity;
    fn connect_info(&self) -> PeerIdentity {
        self.peer.clone()
    }
}

impl AsyncRead for CaConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CaConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The CA's TLS context: a fresh P-256 key, a serving certificate for `names` signed by
/// the authority, and client certificates verified against the authority's root and
/// `other_roots` (an external signer's, in RA mode).
pub fn serving_tls(
    authority: &Authority,
    names: &[String],
    other_roots: &[boring::x509::X509],
) -> anyhow::Result<ServerTls> {
    let roots = std::iter::once(authority.root().clone())
        .chain(other_roots.iter().cloned())
        .collect();
    serving_tls_bundles(
        authority,
        names,
        vec![TrustDomainRoots {
            trust_domain: authority.trust_domain.clone(),
            roots,
        }],
    )
}

/// As [`serving_tls`], with client certificates verified against each tenant's roots,
/// bound to its trust domain.
pub fn serving_tls_bundles(
    authority: &Authority,
    names: &[String],
    bundles: Vec<TrustDomainRoots>,
) -> anyhow::Result<ServerTls> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    let key = PKey::from_ec_key(EcKey::generate(&group)?)?;
    let chain = authority
        .issue_server_cert(&key, names, SERVING_CERT_TTL)
        .map_err(|e| anyhow::anyhow!("serving certificate: {e}"))?;
    // The root is not sent: clients already have it.
    let chain = chain[..chain.len() - 1].to_vec();
    Ok(ServerTls::new(ServerTlsConfig {
        cipher_suites: Vec::new(),
        client_sans: Vec::new(),
        certificates: vec![ServerCertificate {
            key: CertifiedKey {
                chain,
                provider: Arc::new(InMemoryKey::new(key).map_err(|e| anyhow::anyhow!("{e}"))?),
            },
            server_names: vec![],
        }],
        alpn: vec!["h2".into()],
        min_version: trellis_tls::TlsVersion::Tls12,
        max_version: trellis_tls::TlsVersion::Tls13,
        client_roots: None,
        require_client_certificate: false,
        client_trust_domains: Vec::new(),
        client_bundles: bundles,
        session_resumption: true,
        key_op_hook: None,
    })?)
}

/// Accepts TLS connections and serves the certificate API until the future is dropped.
pub async fn serve(
    listener: TcpListener,
    tls: ServerTls,
    service: CaService,
) -> anyhow::Result<()> {
    serve_routes(
        listener,
        Arc::new(ArcSwap::from_pointee(tls)),
        tonic::service::Routes::new(IstioCertificateServiceServer::new(service)),
    )
    .await
}

/// Serves `routes` (the certificate API, and whatever else shares its port, as xDS does
/// in the control plane) over this TLS listener; client certificates, when presented,
/// reach the services as the connection's [`PeerIdentity`]. A context stored in `tls`
/// later serves the connections accepted after it.
pub async fn serve_routes(
    listener: TcpListener,
    tls: Arc<ArcSwap<ServerTls>>,
    routes: tonic::service::Routes,
) -> anyhow::Result<()> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<CaConn, io::Error>>(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("CA accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            let tls = tls.load_full();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(Duration::from_secs(10), tls.accept(tcp)).await {
                    Ok(Ok(a)) => {
                        let conn = CaConn {
                            inner: a.stream,
                            peer: PeerIdentity(a.peer_identities.into_iter().next()),
                        };
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, "CA TLS handshake failed: {e}"),
                    Err(_) => tracing::debug!(%peer, "CA TLS handshake timed out"),
                }
            });
        }
    });
    tonic::transport::Server::builder()
        .add_routes(routes)
        .serve_with_incoming(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?;
    Ok(())
}
