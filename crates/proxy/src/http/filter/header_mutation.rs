//! `header_mutation`: the selected route's and virtual host's header additions and
//! removals, on the request on its way in and on the response on its way out (also on
//! a response a later filter made itself, such as a fault's abort).

use http::Response;

use super::{Exchange, Step};
use crate::body::Body;

pub const NAME: &str = "header_mutation";

pub struct HeaderMutation;

impl HeaderMutation {
    pub fn on_request(&self, x: &mut Exchange<'_>) -> Step {
        if let Some((vh, route)) = x.route() {
            route.request.apply(&mut x.parts.headers);
            vh.request.apply(&mut x.parts.headers);
        }
        Step::Continue
    }

    pub fn on_response(&self, x: &Exchange<'_>, response: &mut Response<Body>) {
        if let Some((vh, route)) = x.route() {
            route.response.apply(response.headers_mut());
            vh.response.apply(response.headers_mut());
        }
    }
}
