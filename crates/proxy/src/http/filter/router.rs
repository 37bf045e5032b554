//! `router`: the last filter. Answers for the selected route: its direct response, its
//! redirect, or the upstream's response (weighted cluster, rewrites, request id and
//! forwarding headers, then `forward.rs` for retries, timeouts, mirroring and
//! upgrades); `404 no route` when no route matched.

use http::header::{HeaderValue, CONTENT_TYPE, LOCATION};
use http::{Response, StatusCode};
use trellis_config::Redirect;

use super::{Exchange, Step};
use crate::body::{self, Body};
use crate::http::action::Action;
use crate::http::flags::Flags;
use crate::http::forward::Outgoing;
use crate::http::reply::local_reply;

pub const NAME: &str = "router";

pub struct Router;

impl Router {
    pub async fn on_request(&self, x: &mut Exchange<'_>) -> Step {
        let Some((_, route)) = x.route() else {
            x.no_route.inc();
            x.flags.set(Flags::NO_ROUTE);
            return Step::Respond(local_reply(StatusCode::NOT_FOUND, "no route"));
        };
        Step::Respond(match &route.action {
            Action::Direct(status, body) => {
                let mut r = Response::new(body::full(body.clone()));
                *r.status_mut() = *status;
                if !body.is_empty() {
                    r.headers_mut()
                        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                }
                r
            }
            Action::Redirect(rd, prefix_len) => {
                redirect(rd, *prefix_len, &x.authority, &x.parts.uri, x.conn.tls)
            }
            Action::Forward(fwd) => {
                let upgrade = if crate::http::headers::is_upgrade(&x.parts.headers) {
                    x.parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
                } else {
                    None
                };
                let Some(body) = x.body.take() else {
                    return Step::Respond(local_reply(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "request body already taken",
                    ));
                };
                let mut out = Outgoing {
                    method: x.parts.method.clone(),
                    authority: std::mem::take(&mut x.authority),
                    path_and_query: x
                        .parts
                        .uri
                        .path_and_query()
                        .cloned()
                        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
                    headers: std::mem::take(&mut x.parts.headers),
                    peer: x.conn.peer,
                    original_dst: x.conn.original_dst,
                };
                crate::http::headers::ensure_request_id(&mut out.headers);
                let proto = if x.conn.tls { "https" } else { "http" };
                out.headers
                    .entry(&crate::http::headers::X_FORWARDED_PROTO)
                    .or_insert(HeaderValue::from_static(proto));
                fwd.rewrite(&mut out);
                let (f, cluster) = fwd
                    .forward(out, body, x.buffer_limit, upgrade, x.metadata)
                    .await;
                x.upstream = f.upstream;
                x.upstream_cluster = Some(cluster);
                x.flags.set(f.flags);
                f.response
            }
        })
    }
}

fn redirect(
    rd: &Redirect,
    prefix_len: Option<usize>,
    authority: &str,
    uri: &http::Uri,
    tls: bool,
) -> Response<Body> {
    // Without a scheme of its own, the redirect keeps the request's.
    let scheme = rd
        .scheme
        .as_deref()
        .unwrap_or(if tls { "https" } else { "http" });
    let mut host = rd.host.clone().unwrap_or_else(|| {
        authority
            .rsplit_once(':')
            .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()) && !authority.ends_with(']'))
            .map(|(h, _)| h.to_string())
            .unwrap_or_else(|| authority.to_string())
    });
    // A port that is the scheme's own is left out of the Location (as Envoy does,
    // and as the Gateway API asks).
    let default_port = |p: u16| (scheme == "http" && p == 80) || (scheme == "https" && p == 443);
    if let Some(port) = rd.port.filter(|p| !default_port(*p)) {
        host = format!("{host}:{port}");
    } else if rd.port.is_none() && rd.host.is_none() && rd.scheme.is_none() {
        host = authority.to_string();
    }
    // A prefix rewrite replaces the matched prefix; on a route that matched the whole
    // path (exact or regex), the whole path.
    let path = match (&rd.path, &rd.prefix_rewrite) {
        (Some(p), _) => p.clone(),
        (None, Some(pr)) => match prefix_len {
            Some(n) => format!("{pr}{}", uri.path().get(n..).unwrap_or("")),
            None => pr.clone(),
        },
        (None, None) => uri.path().to_string(),
    };
    let query = match uri.query() {
        Some(q) if !rd.strip_query => format!("?{q}"),
        _ => String::new(),
    };
    let location = format!("{scheme}://{host}{path}{query}");
    let mut r = Response::new(body::empty());
    *r.status_mut() =
        StatusCode::from_u16(rd.response_code).unwrap_or(StatusCode::MOVED_PERMANENTLY);
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(LOCATION, v);
    }
    r
}
