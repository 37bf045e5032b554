//! `jwt_authn`: Istio RequestAuthentication. A request's JWT is verified before
//! authorization reads it; an invalid one gets `401` (`403` for a token of other
//! audiences) with Envoy's reason and a `www-authenticate` challenge (Envoy's
//! `envoy.filters.http.jwt_authn`).

use std::sync::Arc;

use http::header::WWW_AUTHENTICATE;
use http::{HeaderValue, Method, StatusCode};

use super::{Exchange, Step};
use crate::http::reply::local_reply;
use crate::stats::JwtCounters;

pub const NAME: &str = "jwt_authn";

pub struct JwtAuthn {
    authenticator: Arc<trellis_jwt::Authenticator>,
    counters: JwtCounters,
}

impl JwtAuthn {
    pub fn new(authenticator: Arc<trellis_jwt::Authenticator>, counters: JwtCounters) -> Self {
        JwtAuthn {
            authenticator,
            counters,
        }
    }

    pub fn on_request(&self, x: &mut Exchange<'_>) -> Step {
        // CORS preflights carry no credentials (Istio sets bypass_cors_preflight).
        if x.parts.method == Method::OPTIONS
            && x.parts
                .headers
                .contains_key("access-control-request-method")
            && x.parts.headers.contains_key("origin")
        {
            return Step::Continue;
        }
        match self.authenticator.authenticate(&mut x.parts) {
            Ok(verified) => {
                match verified {
                    Some(_) => self.counters.verified.inc(),
                    None => self.counters.no_token.inc(),
                };
                x.request_auth = verified;
                Step::Continue
            }
            Err(failure) => {
                self.counters.denied.inc();
                tracing::debug!(authority = %x.authority, "JWT refused: {failure}");
                // Envoy answers a token for other audiences with 403, any other failure
                // with 401.
                let status = match failure {
                    trellis_jwt::Failure::Audience => StatusCode::FORBIDDEN,
                    _ => StatusCode::UNAUTHORIZED,
                };
                let mut reply = local_reply(status, &failure.to_string());
                let challenge = format!(
                    "Bearer realm=\"http://{}{}\", error=\"invalid_token\"",
                    x.authority,
                    x.parts.uri.path()
                );
                if let Ok(v) = HeaderValue::from_str(&challenge) {
                    reply.headers_mut().insert(WWW_AUTHENTICATE, v);
                }
                Step::Respond(reply)
            }
        }
    }
}
