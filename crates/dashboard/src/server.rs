//! The dashboard's HTTP server: the page and its assets, `/api/state` (the latest state
//! as JSON) and `/api/events` (server-sent events: the state again whenever it
//! changes). Read-only, plaintext: `trellis up` binds it to loopback.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::model::State;

type Body = UnsyncBoxBody<Bytes, Infallible>;

const INDEX: &str = include_str!("../assets/index.html");
const SCRIPT: &str = include_str!("../assets/app.js");
const STYLE: &str = include_str!("../assets/style.css");

/// The latest state, shared by the publisher and every open page.
#[derive(Clone)]
pub struct Dashboard {
    latest: Arc<watch::Sender<Arc<str>>>,
}

impl Default for Dashboard {
    fn default() -> Self {
        Dashboard {
            latest: Arc::new(watch::channel(Arc::from("{}")).0),
        }
    }
}

impl Dashboard {
    /// Makes `state` the one pages see, and sends it to those listening.
    pub fn publish(&self, state: &State) {
        let json = serde_json::to_string(state).unwrap_or_else(|_| "{}".into());
        self.latest.send_replace(Arc::from(json));
    }

    /// Serves pages on `listener` until the task is dropped.
    pub async fn serve(self, listener: TcpListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            };
            let me = self.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let me = me.clone();
                    async move { Ok::<_, Infallible>(me.answer(req)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    }

    fn answer(&self, req: Request<Incoming>) -> Response<Body> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n");
        }
        match req.uri().path() {
            "/" | "/index.html" => reply(StatusCode::OK, "text/html; charset=utf-8", INDEX),
            "/app.js" => reply(StatusCode::OK, "text/javascript; charset=utf-8", SCRIPT),
            "/style.css" => reply(StatusCode::OK, "text/css; charset=utf-8", STYLE),
            "/api/state" => {
                let json = self.latest.borrow().clone();
                reply(StatusCode::OK, "application/json", json.as_ref())
            }
            "/api/events" => self.events(),
            _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
        }
    }

    /// The current state at once, then each new one, as `data:` events.
    fn events(&self) -> Response<Body> {
        let rx = self.latest.subscribe();
        let stream = futures_util::stream::unfold((rx, true), |(mut rx, first)| async move {
            if !first && rx.changed().await.is_err() {
                return None;
            }
            let json = rx.borrow_and_update().clone();
            let event = Bytes::from(format!("data: {json}\n\n"));
            Some((Ok::<_, Infallible>(Frame::data(event)), (rx, false)))
        });
        let mut r = Response::new(StreamBody::new(stream.boxed()).boxed_unsync());
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, "text/event-stream".parse().unwrap());
        h.insert(header::CACHE_CONTROL, "no-cache".parse().unwrap());
        r
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())).boxed_unsync());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, content_type.parse().unwrap());
    r
}
