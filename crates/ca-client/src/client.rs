//! A client of the certificate API, for the proxy's identity agent and for tests.

use crate::proto::istio_certificate_service_client::IstioCertificateServiceClient;
use crate::proto::IstioCertificateRequest;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tonic::transport::Endpoint;
use trellis_tls::{CertifiedKey, ClientTls, ClientTlsConfig, TlsVersion};

pub struct CaClient {
    /// `host:port` of the CA.
    pub address: String,
    /// The CA's serving certificate must name this (DNS name or IP).
    pub server_name: String,
    pub roots: Vec<boring::x509::X509>,
}

/// How the caller proves who it is.
pub enum Credential<'a> {
    Token(&'a str),
    /// Renewal: the current workload certificate, presented in the TLS handshake.
    Certificate(CertifiedKey),
}

impl CaClient {
    /// Sends a CSR and returns the PEM chain, leaf first, root last.
    pub async fn create_certificate(
        &self,
        csr_pem: &str,
        ttl: Duration,
        credential: Credential<'_>,
    ) -> Result<Vec<String>, String> {
        self.create_certificate_with(csr_pem, ttl, credential, &[])
            .await
    }

    /// As [`create_certificate`](Self::create_certificate), with string fields in the
    /// request's metadata (`CertSigner`, `WorkloadQuote`).
    pub async fn create_certificate_with(
        &self,
        csr_pem: &str,
        ttl: Duration,
        credential: Credential<'_>,
        metadata: &[(&str, &str)],
    ) -> Result<Vec<String>, String> {
        let (token, certificate) = match credential {
            Credential::Token(t) => (Some(t.to_string()), None),
            Credential::Certificate(c) => (None, Some(c)),
        };
        let tls = Arc::new(
            ClientTls::new(ClientTlsConfig {
                bundles: Vec::new(),
                roots: self.roots.clone(),
                certificate,
                sni: self
                    .server_name
                    .parse::<std::net::IpAddr>()
                    .is_err()
                    .then(|| self.server_name.clone()),
                alpn: vec!["h2".into()],
                stream_alpn: Vec::new(),
                min_version: TlsVersion::Tls12,
                max_version: TlsVersion::Tls13,
                expected_identities: vec![self.server_name.clone()],
                key_op_hook: None,
            })
            .map_err(|e| e.to_string())?,
        );
        let address = self.address.clone();
        let channel = Endpoint::from_shared(format!("http://{}", self.address))
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .connect_with_connector(tower::service_fn(move |_: http::Uri| {
                let tls = tls.clone();
                let address = address.clone();
                async move {
                    let tcp = TcpStream::connect(&address).await?;
                    let (stream, _) = tls.connect(tcp).await.map_err(std::io::Error::other)?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            }))
            .await
            .map_err(|e| format!("connecting to the CA at {}: {e:?}", self.address))?;
        let mut request = tonic::Request::new(IstioCertificateRequest {
            csr: csr_pem.to_string(),
            validity_duration: ttl.as_secs() as i64,
            metadata: (!metadata.is_empty()).then(|| prost_types::Struct {
                fields: metadata
                    .iter()
                    .map(|(k, v)| {
                        let value = prost_types::Value {
                            kind: Some(prost_types::value::Kind::StringValue(v.to_string())),
                        };
                        (k.to_string(), value)
                    })
                    .collect(),
            }),
        });
        if let Some(t) = token {
            let v = format!("Bearer {t}")
                .parse()
                .map_err(|_| "token is not valid metadata".to_string())?;
            request.metadata_mut().insert("authorization", v);
        }
        let reply = IstioCertificateServiceClient::new(channel)
            .create_certificate(request)
            .await
            .map_err(|s| format!("CA refused: {:?}: {}", s.code(), s.message()))?;
        Ok(reply.into_inner().cert_chain)
    }
}
