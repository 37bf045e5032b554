//! Header rules that a proxy must follow (hop-by-hop removal) and the configured
//! header mutations.

use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, TE, TRANSFER_ENCODING, UPGRADE,
};
use trellis_config::HeaderValue as ConfigHeader;

const HOP_BY_HOP: &[&str] = &[
    "keep-alive",
    "proxy-connection",
    "trailer",
    "proxy-authenticate",
];

/// Removes connection-scoped headers (RFC 9110 §7.6.1). `te: trailers` survives
/// because gRPC needs it end to end; `upgrade` survives on upgrade requests.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    if let Some(conn) = headers.get(CONNECTION).cloned() {
        if let Ok(list) = conn.to_str() {
            for token in list.split(',').map(|t| t.trim().to_ascii_lowercase()) {
                let keep = keep_upgrade && token == "upgrade";
                if !keep && !token.is_empty() {
                    if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                        headers.remove(name);
                    }
                }
            }
        }
        headers.remove(CONNECTION);
    }
    for h in HOP_BY_HOP {
        headers.remove(*h);
    }
    headers.remove(TRANSFER_ENCODING);
    let te_trailers = headers
        .get(TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    headers.remove(TE);
    if te_trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
    if keep_upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(UPGRADE);
    }
}

/// Gives the request an `x-request-id` (128 random bits in hex) unless it has one:
/// where the connection manager's span needs it, else where the router forwards.
pub fn ensure_request_id(headers: &mut HeaderMap) {
    if !headers.contains_key(&X_REQUEST_ID) {
        let mut hex = [0u8; 32];
        trellis_trace::context::hex_into(&rand::random::<u128>().to_be_bytes(), &mut hex);
        if let Ok(v) = HeaderValue::from_bytes(&hex) {
            headers.insert(X_REQUEST_ID.clone(), v);
        }
    }
}

pub static X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");
pub static X_FORWARDED_PROTO: http::HeaderName = http::HeaderName::from_static("x-forwarded-proto");

/// Whether a request asks for a protocol upgrade (WebSocket and friends).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE)
        && headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

#[derive(Default)]
pub struct Mutations {
    add: Vec<(HeaderName, HeaderValue, bool)>,
    remove: Vec<HeaderName>,
}

impl Mutations {
    /// Built from a validated config, so names and values are known to be valid.
    pub fn new(add: &[ConfigHeader], remove: &[String]) -> Self {
        Mutations {
            add: add
                .iter()
                .filter_map(|h| {
                    Some((
                        HeaderName::from_bytes(h.name.as_bytes()).ok()?,
                        HeaderValue::from_str(&h.value).ok()?,
                        h.append,
                    ))
                })
                .collect(),
            remove: remove
                .iter()
                .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value, append) in &self.add {
            if *append {
                headers.append(name.clone(), value.clone());
            } else {
                headers.insert(name.clone(), value.clone());
            }
        }
    }
}

/// Envoy's `SANITIZE_SET` for `x-forwarded-client-cert`: whatever the client sent is
/// dropped (a client must not assert an identity), and a verified mTLS peer's identity
/// is set as `URI=<spiffe id>`.
pub fn set_client_cert_details(headers: &mut HeaderMap, details: Option<&HeaderValue>) {
    headers.remove(&X_FORWARDED_CLIENT_CERT);
    if let Some(v) = details {
        headers.insert(X_FORWARDED_CLIENT_CERT.clone(), v.clone());
    }
}

/// The `x-forwarded-client-cert` value for a verified peer (made once per connection).
pub fn client_cert_details(peer_identity: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("URI={peer_identity}")).ok()
}

pub static X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_connection_listed_headers_and_keeps_te_trailers() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, "keep-alive, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(TE, "gzip, trailers".parse().unwrap());
        h.insert("x-app", "1".parse().unwrap());
        strip_hop_by_hop(&mut h, false);
        assert!(h.get("x-secret").is_none() && h.get("keep-alive").is_none());
        assert_eq!(h.get(TE).unwrap(), "trailers");
        assert_eq!(h.get("x-app").unwrap(), "1");
    }

    #[test]
    fn upgrade_is_kept_only_when_asked() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, "Upgrade".parse().unwrap());
        h.insert(UPGRADE, "websocket".parse().unwrap());
        assert!(is_upgrade(&h));
        let mut kept = h.clone();
        strip_hop_by_hop(&mut kept, true);
        assert_eq!(kept.get(UPGRADE).unwrap(), "websocket");
        strip_hop_by_hop(&mut h, false);
        assert!(h.get(UPGRADE).is_none());
    }

    #[test]
    fn a_request_id_is_128_random_bits_in_hex_and_an_existing_one_stays() {
        let mut h = HeaderMap::new();
        ensure_request_id(&mut h);
        let id = h.get("x-request-id").unwrap().to_str().unwrap().to_string();
        assert_eq!(id.len(), 32, "{id}");
        assert!(u128::from_str_radix(&id, 16).is_ok(), "{id}");
        assert_eq!(id, id.to_ascii_lowercase());
        let mut other = HeaderMap::new();
        ensure_request_id(&mut other);
        assert_ne!(other.get("x-request-id").unwrap(), id.as_str());
        ensure_request_id(&mut h);
        assert_eq!(h.get("x-request-id").unwrap(), id.as_str());
    }
}
