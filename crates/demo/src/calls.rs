//! Calls to other services made while answering a request, as Bookinfo's productpage
//! calls details and reviews: each through the app's sidecar (an HTTP proxy address, or
//! straight to the host when traffic is captured), carrying the request's trace headers
//! so that the proxies' spans join one trace.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

/// The headers an application propagates: for tracing (Bookinfo's list), and the
/// user Bookinfo's routes match on.
pub const PROPAGATED: [&str; 13] = [
    "end-user",
    "x-request-id",
    "traceparent",
    "tracestate",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "b3",
    "x-ot-span-context",
    "x-cloud-trace-context",
    "grpc-trace-bin",
];

/// Where the calls go.
#[derive(Clone, Debug, Default)]
pub struct Calls {
    /// `http://reviews:9080/reviews/1`, ...
    pub urls: Vec<Uri>,
    /// The sidecar's outbound listener, used as an HTTP proxy; None: connect to the
    /// URL's host (captured traffic).
    pub via: Option<SocketAddr>,
}

/// One call's outcome, as the response reports it.
#[derive(Debug)]
pub struct Outcome {
    pub url: String,
    pub status: u16,
    pub served_by: Option<String>,
    pub error: Option<String>,
}

impl Calls {
    /// Makes every call in turn with `incoming`'s trace headers.
    pub async fn make(&self, incoming: &HeaderMap) -> Vec<Outcome> {
        let mut out = Vec::new();
        for url in &self.urls {
            out.push(match self.call(url, incoming).await {
                Ok((status, served_by)) => Outcome {
                    url: url.to_string(),
                    status,
                    served_by,
                    error: None,
                },
                Err(e) => Outcome {
                    url: url.to_string(),
                    status: 0,
                    served_by: None,
                    error: Some(e.to_string()),
                },
            });
        }
        out
    }

    async fn call(&self, url: &Uri, incoming: &HeaderMap) -> anyhow::Result<(u16, Option<String>)> {
        let authority = url
            .authority()
            .ok_or_else(|| anyhow::anyhow!("{url}: no host"))?;
        let stream = match self.via {
            Some(addr) => tokio::net::TcpStream::connect(addr).await?,
            None => {
                let port = authority.port_u16().unwrap_or(80);
                tokio::net::TcpStream::connect((authority.host(), port)).await?
            }
        };
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let mut req = Request::get(url.path_and_query().map_or("/", |p| p.as_str()))
            .header(http::header::HOST, authority.as_str())
            .body(Empty::<Bytes>::new())?;
        for name in PROPAGATED {
            if let Some(v) = incoming.get(name) {
                req.headers_mut().insert(name, v.clone());
            }
        }
        let response = sender.send_request(req).await?;
        let status = response.status().as_u16();
        let served_by = response
            .headers()
            .get("x-served-by")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        response.into_body().collect().await?;
        Ok((status, served_by))
    }
}
