//! `router`: the last filter. Answers for the selected route: its direct response, its
//! redirect, or the upstream's response (weighted cluster, rewrites, request id and
//! forwarding headers, then `forward.rs` for retries, timeouts, mirroring and
//! upgrades); `404 no route` when no route matched.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, LOCATION};
use http::{Response, StatusCode};
use rand::Rng;
use trellis_config::{Redirect, Route, RouteMatch};

use super::{Exchange, Step};
use crate::body::{self, Body};
use crate::cluster::Cluster;
use crate::http::flags::Flags;
use crate::http::forward::{Forward, Outgoing, RetryRule};
use crate::http::local_reply;

pub const NAME: &str = "router";

pub struct Router;

/// What a route does.
pub enum Action {
    Forward(Forward),
    Redirect(Redirect, Option<usize>),
    Direct(StatusCode, Bytes),
}

impl Router {
    pub async fn on_request(&self, x: &mut Exchange<'_>) -> Step {
        let Some((_, route)) = x.route() else {
            x.manager.stats.no_route.inc();
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
                redirect(rd, *prefix_len, &x.authority, &x.parts.uri)
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
                        .map(|p| p.as_str().to_string())
                        .unwrap_or_else(|| "/".into()),
                    headers: std::mem::take(&mut x.parts.headers),
                    peer: x.conn.peer,
                };
                if !out.headers.contains_key("x-request-id") {
                    let id = format!("{:032x}", rand::thread_rng().gen::<u128>());
                    if let Ok(v) = HeaderValue::from_str(&id) {
                        out.headers.insert("x-request-id", v);
                    }
                }
                let proto = if x.conn.tls { "https" } else { "http" };
                out.headers
                    .entry("x-forwarded-proto")
                    .or_insert(HeaderValue::from_static(proto));
                fwd.rewrite(&mut out);
                let f = fwd
                    .forward(out, body, x.manager.buffer_limit, upgrade)
                    .await;
                x.upstream = f.upstream;
                x.flags.set(f.flags);
                f.response
            }
        })
    }
}

/// The action of a route, with its clusters resolved.
pub fn action(r: &Route, clusters: &HashMap<String, Arc<Cluster>>) -> Action {
    let prefix_len = match_prefix_len(&r.matches);
    if let Some(d) = &r.direct_response {
        let status = StatusCode::from_u16(d.status).unwrap_or(StatusCode::OK);
        return Action::Direct(status, Bytes::from(d.body.clone()));
    }
    if let Some(rd) = &r.redirect {
        return Action::Redirect(rd.clone(), prefix_len);
    }
    let a = r.route.as_ref().expect("validated: a route has one action");
    let targets: Vec<(Arc<Cluster>, u32)> = match &a.cluster {
        Some(c) => vec![(clusters[c].clone(), 1)],
        None => a
            .weighted_clusters
            .iter()
            .filter(|w| w.weight > 0)
            .map(|w| (clusters[&w.name].clone(), w.weight))
            .collect(),
    };
    Action::Forward(Forward {
        total_weight: targets.iter().map(|t| t.1).sum(),
        targets,
        prefix_rewrite: a.prefix_rewrite.clone().map(|p| (prefix_len, p)),
        host_rewrite: a
            .host_rewrite
            .as_ref()
            .and_then(|h| HeaderValue::from_str(h).ok()),
        timeout: Some(a.timeout.get()).filter(|t| !t.is_zero()),
        retry: a.retry_policy.as_ref().map(RetryRule::new),
        mirror: a
            .request_mirror
            .as_ref()
            .map(|m| (clusters[&m.cluster].clone(), m.percent)),
        hash_policy: a.hash_policy.clone(),
    })
}

fn match_prefix_len(m: &RouteMatch) -> Option<usize> {
    m.prefix.as_ref().map(|p| p.len())
}

fn redirect(
    rd: &Redirect,
    prefix_len: Option<usize>,
    authority: &str,
    uri: &http::Uri,
) -> Response<Body> {
    let scheme = rd.scheme.as_deref().unwrap_or("http");
    let mut host = rd.host.clone().unwrap_or_else(|| {
        authority
            .rsplit_once(':')
            .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()) && !authority.ends_with(']'))
            .map(|(h, _)| h.to_string())
            .unwrap_or_else(|| authority.to_string())
    });
    if let Some(port) = rd.port {
        host = format!("{host}:{port}");
    } else if rd.host.is_none() && rd.scheme.is_none() {
        host = authority.to_string();
    }
    let path = match (&rd.path, &rd.prefix_rewrite) {
        (Some(p), _) => p.clone(),
        (None, Some(pr)) => format!(
            "{pr}{}",
            uri.path().get(prefix_len.unwrap_or(0)..).unwrap_or("")
        ),
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
