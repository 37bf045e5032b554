//! `cors`: the selected route's CORS policy, as Envoy's cors filter applies it. A
//! preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) from an
//! allowed origin is answered here with the policy's `access-control-allow-*` headers;
//! another request from an allowed origin gets `access-control-allow-origin` (and the
//! credentials and exposed-headers headers) on its response. A request without
//! `Origin`, or from an origin not allowed, passes untouched (a preflight from such an
//! origin goes on to the upstream, or with `forward_unmatched_preflights: false` is
//! answered without CORS headers): the browser then refuses what the page asked.

use super::{Exchange, Step};
use crate::body::{self, Body};
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN,
};
use http::{HeaderValue, Method, Response, StatusCode};

pub const NAME: &str = "cors";

pub struct Cors;

impl Cors {
    pub fn on_request(&self, x: &mut Exchange<'_>) -> Step {
        let Some(policy) = x.route().and_then(|(_, r)| r.per_filter.cors.as_deref()) else {
            return Step::Continue;
        };
        let Some(origin) = x.parts.headers.get(ORIGIN).cloned() else {
            return Step::Continue;
        };
        let allowed = policy.allows(&origin);
        let preflight = x.parts.method == Method::OPTIONS
            && x.parts.headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD);
        if !preflight {
            if allowed {
                x.cors_origin = Some(origin);
            }
            return Step::Continue;
        }
        if !allowed {
            if policy.forward_unmatched {
                return Step::Continue;
            }
            return Step::Respond(reply(StatusCode::OK));
        }
        let mut r = reply(StatusCode::OK);
        let h = r.headers_mut();
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if policy.credentials {
            h.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        // `*` answers with what the preflight asks for: browsers do not take `*` for a
        // request with credentials, and it says no more than the echo.
        let asked = |name: http::header::HeaderName| x.parts.headers.get(name).cloned();
        let methods = match &policy.methods {
            Some(v) if v == "*" => asked(ACCESS_CONTROL_REQUEST_METHOD),
            other => other.clone(),
        };
        let headers = match &policy.headers {
            Some(v) if v == "*" => asked(ACCESS_CONTROL_REQUEST_HEADERS).or(Some(v.clone())),
            other => other.clone(),
        };
        for (name, value) in [
            (ACCESS_CONTROL_ALLOW_METHODS, methods),
            (ACCESS_CONTROL_ALLOW_HEADERS, headers),
            (ACCESS_CONTROL_MAX_AGE, policy.max_age.clone()),
            (ACCESS_CONTROL_EXPOSE_HEADERS, policy.expose.clone()),
        ] {
            if let Some(v) = value {
                h.insert(name, v);
            }
        }
        Step::Respond(r)
    }

    pub fn on_response(&self, x: &Exchange<'_>, response: &mut Response<Body>) {
        let Some(origin) = &x.cors_origin else {
            return;
        };
        let Some(policy) = x.route().and_then(|(_, r)| r.per_filter.cors.as_deref()) else {
            return;
        };
        let h = response.headers_mut();
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        if policy.credentials {
            h.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(v) = &policy.expose {
            h.insert(ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
        }
    }
}

fn reply(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(body::empty());
    *r.status_mut() = status;
    r
}
