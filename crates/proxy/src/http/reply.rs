//! Responses the proxy makes itself.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};

use crate::body::{self, Body};

/// A response the proxy makes itself.
pub fn local_reply(status: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(body::full(Bytes::from(text.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}
