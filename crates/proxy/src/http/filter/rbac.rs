//! `rbac`: Istio AuthorizationPolicy for each request, before anything else acts on
//! it; a denied request gets `403 RBAC: access denied` (Envoy's RBAC filter).

use std::sync::Arc;

use http::StatusCode;

use super::{Exchange, Step};
use crate::authz::ListenerAuthz;
use crate::http::flags::Flags;
use crate::http::reply::local_reply;

pub const NAME: &str = "rbac";

pub struct Rbac {
    authz: Arc<ListenerAuthz>,
}

impl Rbac {
    pub fn new(authz: Arc<ListenerAuthz>) -> Rbac {
        Rbac { authz }
    }

    pub fn on_request(&self, x: &mut Exchange<'_>) -> Step {
        let attrs = trellis_authz::HttpAttributes {
            method: x.parts.method.as_str(),
            path: x.parts.uri.path(),
            host: &x.authority,
            headers: &x.parts.headers,
            auth: x.request_auth.as_ref().map(|v| trellis_authz::RequestAuth {
                issuer: &v.issuer,
                subject: &v.subject,
                audiences: &v.audiences,
                presenter: v.presenter.as_deref(),
                claims: &v.claims,
            }),
        };
        if self.authz.check(x.conn, Some(attrs)) {
            Step::Continue
        } else {
            x.flags.set(Flags::RBAC_DENIED);
            Step::Respond(local_reply(StatusCode::FORBIDDEN, "RBAC: access denied"))
        }
    }
}
