//! JWT verification for Istio's RequestAuthentication, as Envoy's `jwt_authn` filter
//! does it for the rules istiod generates:
//!
//! - A request without a token passes unauthenticated (authorization then decides).
//! - Every token a request carries, at the locations of any rule, must verify under a
//!   rule that reads that location and names the token's `iss` (a rule without an
//!   issuer takes any); otherwise the request fails ([`Failure`], a 401).
//! - Verification: the signature under a key of the rule's JWK Set (the token's `kid`
//!   and `alg` must fit the key's), `exp` and `nbf` with 60 s of clock skew (neither is
//!   required), and `aud` against the rule's audiences when it lists some.
//! - A verified token is removed from its header unless the rule forwards it; its
//!   payload and chosen claims can be written to headers, and those headers are always
//!   cleared of what the client sent.

mod cache;
mod jwks;
mod locate;

use http::request::Parts;
use http::{HeaderName, HeaderValue};
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};
use std::fmt;
use std::sync::Arc;
use trellis_config::JwtAuthn;

pub use jwks::check as check_jwks;
use locate::Location;

/// Allowed clock skew for `exp` and `nbf`, Envoy's default.
const CLOCK_SKEW_SECONDS: u64 = 60;

/// Claims whose space-separated string values are always read as lists (Istio's
/// default `spaceDelimitedClaims`).
const SPACE_DELIMITED: &[&str] = &["scope", "permission"];

pub struct Authenticator {
    rules: Vec<Rule>,
    /// Each distinct location, with the rules that read it.
    locations: Vec<(Location, Vec<usize>)>,
    /// Headers a verified token may write; cleared of what the client sent.
    output_headers: Vec<HeaderName>,
    cache: cache::Cache,
}

struct Rule {
    issuer: String,
    audiences: Vec<String>,
    keys: Vec<jwks::Key>,
    forward: bool,
    payload_header: Option<HeaderName>,
    claim_headers: Vec<(HeaderName, String)>,
    space_delimited: Vec<String>,
}

/// A verified token: Istio's `request.auth.*` attributes.
#[derive(Clone, Debug)]
pub struct Verified {
    pub issuer: String,
    pub subject: String,
    pub audiences: Vec<String>,
    /// `azp`.
    pub presenter: Option<String>,
    /// The payload, with `scope` and `permission` strings split into lists.
    pub claims: Map<String, Value>,
}

impl Verified {
    /// `iss/sub`, Istio's request principal.
    pub fn principal(&self) -> String {
        format!("{}/{}", self.issuer, self.subject)
    }
}

/// Why a request's token was refused; the text is Envoy's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    Malformed,
    UnknownIssuer,
    /// No key of the rule fits the token's `kid` and `alg`.
    UnknownKey,
    BadSignature,
    Expired,
    NotYetValid,
    Audience,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Failure::Malformed => "Jwt is not in the form of Header.Payload.Signature",
            Failure::UnknownIssuer => "Jwt issuer is not configured",
            Failure::UnknownKey => "Jwks doesn't have key to match kid or alg from Jwt",
            Failure::BadSignature => "Jwt verification fails",
            Failure::Expired => "Jwt is expired",
            Failure::NotYetValid => "Jwt not yet valid",
            Failure::Audience => "Audiences in Jwt are not allowed",
        })
    }
}

impl Authenticator {
    pub fn new(config: &JwtAuthn) -> Result<Authenticator, String> {
        let mut rules = Vec::new();
        let mut locations: Vec<(Location, Vec<usize>)> = Vec::new();
        let mut output_headers = Vec::new();
        for (i, r) in config.rules.iter().enumerate() {
            let at = |e: String| format!("rules[{i}] (issuer {:?}): {e}", r.issuer);
            for l in locate::of(r).map_err(at)? {
                match locations.iter_mut().find(|(m, _)| *m == l) {
                    Some((_, readers)) => readers.push(i),
                    None => locations.push((l, vec![i])),
                }
            }
            let header = |name: &str, field: &str| {
                HeaderName::try_from(name)
                    .map_err(|_| at(format!("{field}: {name:?} is not a header name")))
            };
            let payload_header = r
                .output_payload_to_header
                .as_deref()
                .map(|h| header(h, "output_payload_to_header"))
                .transpose()?;
            let claim_headers = r
                .output_claim_to_headers
                .iter()
                .map(|c| {
                    Ok((
                        header(&c.header, "output_claim_to_headers")?,
                        c.claim.clone(),
                    ))
                })
                .collect::<Result<Vec<_>, String>>()?;
            output_headers.extend(payload_header.iter().cloned());
            output_headers.extend(claim_headers.iter().map(|(h, _)| h.clone()));
            rules.push(Rule {
                issuer: r.issuer.clone(),
                audiences: r.audiences.clone(),
                // No set at all (one that could not be fetched, or a refused rule's
                // stand-in): no keys, so every token of the rule is refused.
                keys: if r.jwks.is_empty() {
                    Vec::new()
                } else {
                    jwks::parse(&r.jwks).map_err(|e| at(format!("jwks: {e}")))?
                },
                forward: r.forward_original_token,
                space_delimited: SPACE_DELIMITED
                    .iter()
                    .map(|c| c.to_string())
                    .chain(r.space_delimited_claims.iter().cloned())
                    .collect(),
                payload_header,
                claim_headers,
            });
        }
        Ok(Authenticator {
            rules,
            locations,
            output_headers,
            cache: Default::default(),
        })
    }

    /// Verifies the tokens the request carries and applies what the verifying rules
    /// say (token removal, payload and claim headers). `Ok(None)`: no token at all.
    pub fn authenticate(&self, parts: &mut Parts) -> Result<Option<Arc<Verified>>, Failure> {
        for h in &self.output_headers {
            parts.headers.remove(h);
        }
        let mut first: Option<Arc<Verified>> = None;
        let mut done: Vec<String> = Vec::new();
        let mut remove: Vec<HeaderName> = Vec::new();
        let mut outputs: Outputs = Vec::new();
        for (location, readers) in &self.locations {
            for token in location.tokens(&parts.headers, &parts.uri) {
                if done.iter().any(|t| t == token) {
                    continue;
                }
                let entry = match self.cache.get(token) {
                    Some(e) if readers.contains(&e.rule) => e,
                    _ => {
                        let (rule, verified, outputs) = self.verify(token, readers)?;
                        let e = cache::Entry::new(rule, Arc::new(verified), outputs);
                        self.cache.insert(token, e)
                    }
                };
                let rule = &self.rules[entry.rule];
                if let (Location::Header { name, .. }, false) = (location, rule.forward) {
                    remove.push(name.clone());
                }
                outputs.extend(entry.outputs.iter().cloned());
                done.push(token.to_string());
                first.get_or_insert_with(|| entry.verified.clone());
            }
        }
        for name in remove {
            parts.headers.remove(name);
        }
        for (name, value) in outputs {
            parts.headers.insert(name, value);
        }
        Ok(first)
    }

    /// The rule (of `readers`) that verifies `token`, what it says, and the headers it
    /// writes.
    fn verify(
        &self,
        token: &str,
        readers: &[usize],
    ) -> Result<(usize, Verified, Outputs), Failure> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Failure::Malformed)?;
        let payload = unverified_payload(token).ok_or(Failure::Malformed)?;
        let issuer = payload.get("iss").and_then(Value::as_str).unwrap_or("");
        let candidates = readers
            .iter()
            .filter(|&&i| self.rules[i].issuer.is_empty() || self.rules[i].issuer == issuer);
        let mut failure = Failure::UnknownIssuer;
        for &i in candidates {
            match self.rules[i].verify(token, &header) {
                Ok((v, o)) => return Ok((i, v, o)),
                // A rule named the issuer: its verdict is the request's, unless a
                // later rule for the same issuer verifies the token.
                Err(f) => failure = f,
            }
        }
        Err(failure)
    }
}

impl Rule {
    fn verify(
        &self,
        token: &str,
        header: &jsonwebtoken::Header,
    ) -> Result<(Verified, Outputs), Failure> {
        let mut validation = Validation::new(header.alg);
        validation.required_spec_claims.clear();
        validation.leeway = CLOCK_SKEW_SECONDS;
        validation.validate_nbf = true;
        if self.audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.audiences);
            validation.set_required_spec_claims(&["aud"]);
        }
        let keys = self.keys.iter().filter(|k| {
            fits(k.kid.as_deref(), header.kid.as_deref()) && k.alg.is_none_or(|a| a == header.alg)
        });
        let mut failure = Failure::UnknownKey;
        for k in keys {
            use jsonwebtoken::errors::ErrorKind as E;
            match jsonwebtoken::decode::<Map<String, Value>>(token, &k.key, &validation) {
                Ok(data) => {
                    // jsonwebtoken skips a time claim it cannot read as a number;
                    // Envoy refuses the token.
                    let bad_time = |k: &str| {
                        data.claims
                            .get(k)
                            .is_some_and(|v| v.as_f64().is_none_or(|t| t < 0.0))
                    };
                    if bad_time("exp") || bad_time("nbf") {
                        return Err(Failure::Malformed);
                    }
                    let outputs = self.outputs(token, &data.claims);
                    return Ok((verified(data.claims, &self.space_delimited), outputs));
                }
                // Another key may fit.
                Err(e) if matches!(e.kind(), E::InvalidAlgorithm) => {}
                Err(e) => match e.kind() {
                    E::InvalidSignature
                    | E::InvalidEcdsaKey
                    | E::InvalidRsaKey(_)
                    | E::InvalidKeyFormat
                    | E::Crypto(_) => failure = Failure::BadSignature,
                    E::ExpiredSignature => return Err(Failure::Expired),
                    E::ImmatureSignature => return Err(Failure::NotYetValid),
                    E::InvalidAudience | E::MissingRequiredClaim(_) => {
                        return Err(Failure::Audience)
                    }
                    _ => return Err(Failure::Malformed),
                },
            }
        }
        Err(failure)
    }

    /// The headers a token this rule verified writes: its payload (base64url, as it
    /// came) and its claims, from the payload as it is (before lists are made of
    /// strings).
    fn outputs(&self, token: &str, claims: &Map<String, Value>) -> Outputs {
        let payload = self.payload_header.iter().filter_map(|h| {
            let encoded = token.split('.').nth(1)?;
            Some((h.clone(), HeaderValue::from_str(encoded).ok()?))
        });
        let claims = self
            .claim_headers
            .iter()
            .filter_map(|(h, claim)| Some((h.clone(), claim_header_value(claims, claim)?)));
        payload.chain(claims).collect()
    }
}

/// Headers a verified token writes.
type Outputs = Vec<(HeaderName, HeaderValue)>;

/// A key without a `kid` fits any token; a token without one fits any key.
fn fits(key: Option<&str>, token: Option<&str>) -> bool {
    match (key, token) {
        (Some(k), Some(t)) => k == t,
        _ => true,
    }
}

/// The payload before verification, only to pick the rule by `iss`.
fn unverified_payload(token: &str) -> Option<Map<String, Value>> {
    let mut v = Validation::new(Algorithm::HS256);
    v.insecure_disable_signature_validation();
    v.required_spec_claims.clear();
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    let key = jsonwebtoken::DecodingKey::from_secret(&[]);
    let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &v).ok()?;
    Some(data.claims)
}

fn verified(mut claims: Map<String, Value>, space_delimited: &[String]) -> Verified {
    for name in space_delimited {
        if let Some(Value::String(s)) = claims.get(name) {
            let list = s.split(' ').filter(|p| !p.is_empty());
            let list = list.map(|p| Value::String(p.to_string())).collect();
            claims.insert(name.clone(), Value::Array(list));
        }
    }
    let text = |k: &str| claims.get(k).and_then(Value::as_str).map(str::to_string);
    let audiences = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(Into::into).collect(),
        _ => Vec::new(),
    };
    Verified {
        issuer: text("iss").unwrap_or_default(),
        subject: text("sub").unwrap_or_default(),
        audiences,
        presenter: text("azp"),
        claims,
    }
}

/// A claim (nested as `a.b`) as a header value: strings, numbers and booleans.
fn claim_header_value(claims: &Map<String, Value>, claim: &str) -> Option<HeaderValue> {
    let mut parts = claim.split('.');
    let mut v = claims.get(parts.next()?)?;
    for p in parts {
        v = v.get(p)?;
    }
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => return None,
    };
    HeaderValue::from_str(&text).ok()
}

#[cfg(test)]
mod tests;
