//! Kubernetes ServiceAccount tokens, verified by the API server with a TokenReview
//! (audience `istio-ca`, as Istio's CA does). The CA never parses these JWTs itself:
//! the API server is the authority on whether a token is valid and whose it is.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use trellis_tls::{ClientTls, ClientTlsConfig, MaybeTls, SpiffeId, TlsVersion};

pub const ISTIO_CA_AUDIENCE: &str = "istio-ca";

pub struct TokenReviewer {
    api: http::Uri,
    /// The CA's own credential for calling the API server.
    bearer: String,
    tls: Option<Arc<ClientTls>>,
    trust_domain: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("Kubernetes API server: {0}")]
    Api(String),
    #[error("token not authenticated: {0}")]
    Unauthenticated(String),
    #[error("token is not a service account token (user {0:?})")]
    NotServiceAccount(String),
}

impl TokenReviewer {
    /// `api` is the API server's base URL; `ca_file` is required for https.
    pub fn new(
        api: &str,
        bearer: String,
        ca_file: Option<&str>,
        trust_domain: &str,
    ) -> anyhow::Result<Self> {
        let api: http::Uri = api
            .parse()
            .map_err(|e| anyhow::anyhow!("kube API URL {api:?}: {e}"))?;
        let tls = match api.scheme_str() {
            Some("https") => {
                let ca = ca_file
                    .ok_or_else(|| anyhow::anyhow!("an https kube API URL needs a CA file"))?;
                Some(Arc::new(ClientTls::new(ClientTlsConfig {
                    bundles: Vec::new(),
                    roots: trellis_tls::load_trust_bundle(ca)?,
                    certificate: None,
                    sni: api.host().map(str::to_string),
                    alpn: vec!["http/1.1".into()],
                    stream_alpn: Vec::new(),
                    min_version: TlsVersion::Tls12,
                    max_version: TlsVersion::Tls13,
                    expected_identities: api
                        .host()
                        .map(|h| vec![h.to_string()])
                        .unwrap_or_default(),
                    key_op_hook: None,
                })?))
            }
            Some("http") => None,
            _ => anyhow::bail!("kube API URL {api}: scheme must be http or https"),
        };
        Ok(TokenReviewer {
            api,
            bearer,
            tls,
            trust_domain: trust_domain.to_string(),
        })
    }

    /// The workload identity of a valid service account token.
    pub async fn review(&self, token: &str) -> Result<SpiffeId, ReviewError> {
        let body = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": { "token": token, "audiences": [ISTIO_CA_AUDIENCE] },
        });
        let reply = tokio::time::timeout(Duration::from_secs(10), self.post(body.to_string()))
            .await
            .map_err(|_| ReviewError::Api("timed out".into()))??;
        let status = &reply["status"];
        if status["authenticated"] != true {
            let why = status["error"].as_str().unwrap_or("not authenticated");
            return Err(ReviewError::Unauthenticated(why.to_string()));
        }
        if let Some(auds) = status["audiences"].as_array() {
            if !auds.iter().any(|a| a == ISTIO_CA_AUDIENCE) {
                return Err(ReviewError::Unauthenticated(format!(
                    "token audiences {auds:?} do not include {ISTIO_CA_AUDIENCE}"
                )));
            }
        }
        let user = status["user"]["username"].as_str().unwrap_or_default();
        match user
            .strip_prefix("system:serviceaccount:")
            .and_then(|r| r.split_once(':'))
        {
            Some((ns, sa)) if !ns.is_empty() && !sa.is_empty() && !sa.contains(':') => {
                Ok(SpiffeId::new(&self.trust_domain, ns, sa))
            }
            _ => Err(ReviewError::NotServiceAccount(user.to_string())),
        }
    }

    async fn post(&self, body: String) -> Result<serde_json::Value, ReviewError> {
        let api = |e: &dyn std::fmt::Display| ReviewError::Api(e.to_string());
        let host = self.api.host().unwrap_or("localhost");
        let default_port = if self.tls.is_some() { 443 } else { 80 };
        let port = self.api.port_u16().unwrap_or(default_port);
        let host_for_connect = host.trim_start_matches('[').trim_end_matches(']');
        let tcp = TcpStream::connect((host_for_connect, port))
            .await
            .map_err(|e| api(&e))?;
        let io = match &self.tls {
            Some(tls) => MaybeTls::Tls(Box::new(tls.connect(tcp).await.map_err(|e| api(&e))?.0)),
            None => MaybeTls::Plain(tcp),
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| api(&e))?;
        tokio::spawn(conn);
        let base = self.api.path().trim_end_matches('/');
        let req = http::Request::post(format!("{base}/apis/authentication.k8s.io/v1/tokenreviews"))
            .header(http::header::HOST, host)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.bearer),
            )
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| api(&e))?;
        let resp = sender.send_request(req).await.map_err(|e| api(&e))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| api(&e))?
            .to_bytes();
        if !status.is_success() {
            return Err(ReviewError::Api(format!(
                "TokenReview answered {status}: {}",
                String::from_utf8_lossy(&bytes)
            )));
        }
        serde_json::from_slice(&bytes).map_err(|e| api(&e))
    }
}
