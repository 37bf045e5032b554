//! Where tokens are read from a request: headers (with a value prefix), query
//! parameters and cookies, as Envoy's jwt_authn extractor reads them.

use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderMap, HeaderName, Uri};
use trellis_config::JwtRule;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Location {
    Header { name: HeaderName, prefix: String },
    Param(String),
    Cookie(String),
}

/// The locations a rule reads: its own, or with none, `Authorization: Bearer` and the
/// `access_token` query parameter.
pub(crate) fn of(rule: &JwtRule) -> Result<Vec<Location>, String> {
    if rule.from_headers.is_empty() && rule.from_params.is_empty() && rule.from_cookies.is_empty() {
        return Ok(vec![
            Location::Header {
                name: AUTHORIZATION,
                prefix: "Bearer ".into(),
            },
            Location::Param("access_token".into()),
        ]);
    }
    let mut out = Vec::new();
    for h in &rule.from_headers {
        let name = HeaderName::try_from(h.name.as_str())
            .map_err(|_| format!("from_headers: {:?} is not a header name", h.name))?;
        out.push(Location::Header {
            name,
            prefix: h.prefix.clone(),
        });
    }
    out.extend(rule.from_params.iter().cloned().map(Location::Param));
    out.extend(rule.from_cookies.iter().cloned().map(Location::Cookie));
    Ok(out)
}

impl Location {
    /// The tokens at this location (a header may appear more than once).
    pub fn tokens<'r>(&self, headers: &'r HeaderMap, uri: &'r Uri) -> Vec<&'r str> {
        match self {
            Location::Header { name, prefix } => headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .filter_map(|v| v.trim().strip_prefix(prefix.as_str()))
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .collect(),
            Location::Param(param) => uri
                .query()
                .unwrap_or("")
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .filter(|(k, v)| k == param && !v.is_empty())
                .map(|(_, v)| v)
                .collect(),
            Location::Cookie(cookie) => headers
                .get_all(COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|kv| kv.trim().split_once('='))
                .filter(|(k, v)| k == cookie && !v.is_empty())
                .map(|(_, v)| v.trim_matches('"'))
                .collect(),
        }
    }
}
