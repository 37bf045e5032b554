//! Tokens signed here with fresh keys, verified as a request carries them.

use super::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use jsonwebtoken::{EncodingKey, Header};
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::json;
use trellis_config::{ClaimToHeader, JwtHeader, JwtRule};

/// A P-256 signing key and its public JWK.
struct Signer {
    pkcs8: Vec<u8>,
    jwk: Value,
}

impl Signer {
    fn new(kid: &str) -> Signer {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap()
            .as_ref()
            .to_vec();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng).unwrap();
        let point = pair.public_key().as_ref();
        let jwk = json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256",
            "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65])});
        Signer { pkcs8, jwk }
    }

    fn sign(&self, claims: Value) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = self.jwk["kid"].as_str().map(Into::into);
        jsonwebtoken::encode(&h, &claims, &EncodingKey::from_ec_der(&self.pkcs8)).unwrap()
    }

    fn jwks(&self) -> String {
        json!({"keys": [self.jwk]}).to_string()
    }
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn rule(issuer: &str, s: &Signer) -> JwtRule {
    JwtRule {
        issuer: issuer.into(),
        jwks: s.jwks(),
        ..Default::default()
    }
}

fn auth(rules: Vec<JwtRule>) -> Authenticator {
    Authenticator::new(&JwtAuthn { rules }).unwrap()
}

fn request(uri: &str, headers: &[(&str, &str)]) -> Parts {
    let mut b = http::Request::builder().uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[test]
fn no_token_passes_unauthenticated_and_a_valid_one_is_verified_and_removed() {
    let s = Signer::new("k1");
    let a = auth(vec![rule("https://issuer.example", &s)]);
    assert!(a.authenticate(&mut request("/", &[])).unwrap().is_none());

    let token = s.sign(json!({"iss": "https://issuer.example", "sub": "alice",
        "aud": ["app", "other"], "azp": "web", "scope": "read write", "exp": now() + 60}));
    let mut parts = request("/", &[("authorization", &bearer(&token))]);
    let v = a.authenticate(&mut parts).unwrap().unwrap();
    assert_eq!(v.principal(), "https://issuer.example/alice");
    assert_eq!(v.audiences, ["app", "other"]);
    assert_eq!(v.presenter.as_deref(), Some("web"));
    assert_eq!(
        v.claims["scope"],
        json!(["read", "write"]),
        "space-delimited"
    );
    assert!(
        parts.headers.get("authorization").is_none(),
        "not forwarded by default"
    );
}

#[test]
fn invalid_tokens_fail_with_envoys_reason() {
    let s = Signer::new("k1");
    let other = Signer::new("k1");
    let a = auth(vec![rule("iss-a", &s)]);
    let check =
        |token: &str| a.authenticate(&mut request("/", &[("authorization", &bearer(token))]));

    let forged = other.sign(json!({"iss": "iss-a", "sub": "x"}));
    assert_eq!(check(&forged).unwrap_err(), Failure::BadSignature);
    let stranger = s.sign(json!({"iss": "iss-b", "sub": "x"}));
    assert_eq!(check(&stranger).unwrap_err(), Failure::UnknownIssuer);
    let expired = s.sign(json!({"iss": "iss-a", "sub": "x", "exp": now() - 120}));
    assert_eq!(check(&expired).unwrap_err(), Failure::Expired);
    let skewed = s.sign(json!({"iss": "iss-a", "sub": "x", "exp": now() - 30}));
    assert!(check(&skewed).is_ok(), "60 s of clock skew");
    let early = s.sign(json!({"iss": "iss-a", "sub": "x", "nbf": now() + 600}));
    assert_eq!(check(&early).unwrap_err(), Failure::NotYetValid);
    assert_eq!(check("abc").unwrap_err(), Failure::Malformed);
    for exp in [json!("0"), json!(-5), json!(null)] {
        let odd = s.sign(json!({"iss": "iss-a", "sub": "x", "exp": exp}));
        assert_eq!(check(&odd).unwrap_err(), Failure::Malformed, "exp {exp}");
    }
    let fraction = s.sign(json!({"iss": "iss-a", "sub": "x", "exp": (now() - 120) as f64 + 0.5}));
    assert_eq!(check(&fraction).unwrap_err(), Failure::Expired);
    assert_eq!(check("a.b.c").unwrap_err(), Failure::Malformed);

    // alg "none" and a token signed with the public key as an HMAC secret.
    let none = format!(
        "{}.{}.",
        B64.encode(r#"{"alg":"none"}"#),
        B64.encode(r#"{"iss":"iss-a","sub":"x"}"#)
    );
    assert_eq!(check(&none).unwrap_err(), Failure::Malformed);
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("k1".into());
    let confused = jsonwebtoken::encode(
        &h,
        &json!({"iss": "iss-a", "sub": "x"}),
        &EncodingKey::from_secret(s.jwks().as_bytes()),
    )
    .unwrap();
    assert_eq!(check(&confused).unwrap_err(), Failure::UnknownKey);

    // An unknown kid finds no key.
    let rotated = Signer::new("k2").sign(json!({"iss": "iss-a", "sub": "x"}));
    assert_eq!(check(&rotated).unwrap_err(), Failure::UnknownKey);
}

#[test]
fn audiences_when_listed() {
    let s = Signer::new("k");
    let mut r = rule("iss", &s);
    r.audiences = vec!["app".into()];
    let a = auth(vec![r]);
    let check = |claims| {
        a.authenticate(&mut request(
            "/",
            &[("authorization", &bearer(&s.sign(claims)))],
        ))
    };
    assert!(check(json!({"iss": "iss", "sub": "x", "aud": "app"})).is_ok());
    assert!(check(json!({"iss": "iss", "sub": "x", "aud": ["x", "app"]})).is_ok());
    assert_eq!(
        check(json!({"iss": "iss", "sub": "x", "aud": "other"})).unwrap_err(),
        Failure::Audience
    );
    assert_eq!(
        check(json!({"iss": "iss", "sub": "x"})).unwrap_err(),
        Failure::Audience
    );
}

#[test]
fn locations_params_cookies_and_custom_headers() {
    let s = Signer::new("k");
    let token = s.sign(json!({"iss": "iss", "sub": "x"}));
    let a = auth(vec![rule("iss", &s)]);
    let v = a
        .authenticate(&mut request(&format!("/p?a=1&access_token={token}"), &[]))
        .unwrap();
    assert!(v.is_some(), "access_token is a default location");

    let mut r = rule("iss", &s);
    r.from_headers = vec![JwtHeader {
        name: "x-jwt".into(),
        prefix: "Token ".into(),
    }];
    r.from_cookies = vec!["session".into()];
    let a = auth(vec![r]);
    assert!(a
        .authenticate(&mut request("/", &[("x-jwt", &format!("Token {token}"))]))
        .unwrap()
        .is_some());
    assert!(a
        .authenticate(&mut request(
            "/",
            &[("cookie", &format!("a=b; session={token}"))]
        ))
        .unwrap()
        .is_some());
    // Not a location of this rule: the token is not looked at.
    assert!(a
        .authenticate(&mut request("/", &[("authorization", &bearer("junk"))]))
        .unwrap()
        .is_none());
}

#[test]
fn outputs_forwarding_and_spoofed_output_headers() {
    let s = Signer::new("k");
    let mut r = rule("iss", &s);
    r.forward_original_token = true;
    r.output_payload_to_header = Some("x-jwt-payload".into());
    r.output_claim_to_headers = vec![
        ClaimToHeader {
            header: "x-group".into(),
            claim: "org.group".into(),
        },
        ClaimToHeader {
            header: "x-level".into(),
            claim: "level".into(),
        },
        ClaimToHeader {
            header: "x-scope".into(),
            claim: "scope".into(),
        },
    ];
    r.space_delimited_claims = vec!["roles".into()];
    let a = auth(vec![r]);
    let token = s.sign(
        json!({"iss": "iss", "sub": "x", "org": {"group": "dev"}, "level": 3,
        "scope": "a b", "roles": "r1 r2"}),
    );
    let mut parts = request(
        "/",
        &[("authorization", &bearer(&token)), ("x-group", "admins")],
    );
    let v = a.authenticate(&mut parts).unwrap().unwrap();
    assert_eq!(
        v.claims["roles"],
        json!(["r1", "r2"]),
        "spaceDelimitedClaims"
    );
    assert_eq!(
        parts.headers["x-scope"], "a b",
        "headers from the payload as it is"
    );
    assert_eq!(parts.headers["x-group"], "dev");
    assert_eq!(parts.headers["x-level"], "3");
    assert_eq!(
        parts.headers["x-jwt-payload"],
        token.split('.').nth(1).unwrap()
    );
    assert!(parts.headers.get("authorization").is_some(), "forwarded");

    let mut spoofed = request("/", &[("x-group", "admins"), ("x-jwt-payload", "e30")]);
    assert!(a.authenticate(&mut spoofed).unwrap().is_none());
    assert!(spoofed.headers.get("x-group").is_none());
    assert!(spoofed.headers.get("x-jwt-payload").is_none());
}

#[test]
fn several_rules_each_token_must_verify() {
    let (sa, sb) = (Signer::new("a"), Signer::new("b"));
    let a = auth(vec![rule("iss-a", &sa), rule("iss-b", &sb)]);
    let ta = sa.sign(json!({"iss": "iss-a", "sub": "x"}));
    let tb = sb.sign(json!({"iss": "iss-b", "sub": "y"}));
    let v = a
        .authenticate(&mut request("/", &[("authorization", &bearer(&tb))]))
        .unwrap()
        .unwrap();
    assert_eq!(v.principal(), "iss-b/y");
    // b's token claiming a's issuer.
    let lying = sb.sign(json!({"iss": "iss-a", "sub": "x"}));
    assert!(a
        .authenticate(&mut request("/", &[("authorization", &bearer(&lying))]))
        .is_err());
    // Two tokens, one bad: refused.
    let uri = format!("/?access_token={lying}");
    assert!(a
        .authenticate(&mut request(&uri, &[("authorization", &bearer(&ta))]))
        .is_err());
}

#[test]
fn a_rule_without_issuer_takes_any_issuer_its_keys_sign() {
    let s = Signer::new("k");
    let a = auth(vec![rule("", &s)]);
    let t = s.sign(json!({"iss": "anything", "sub": "x"}));
    assert!(a
        .authenticate(&mut request("/", &[("authorization", &bearer(&t))]))
        .unwrap()
        .is_some());
}

#[test]
fn jwk_sets_are_checked() {
    let s = Signer::new("k");
    assert!(check_jwks(&s.jwks()).is_ok());
    assert!(check_jwks(&s.jwk.to_string()).is_ok(), "a single JWK");
    assert!(check_jwks("nope").unwrap_err().contains("JSON"));
    assert!(check_jwks(r#"{"keys": []}"#)
        .unwrap_err()
        .contains("no keys"));
    let bad = r#"{"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]}"#;
    assert!(check_jwks(bad).is_err(), "{:?}", check_jwks(bad));
    let enc_only = json!({"keys": [{"use": "enc", "kty": "RSA", "n": "AQAB", "e": "AQAB"}]});
    assert!(check_jwks(&enc_only.to_string()).is_err());
}

#[test]
fn a_remembered_token_is_checked_for_its_location_and_gives_the_same_outputs() {
    let s = Signer::new("k");
    let mut by_header = rule("iss", &s);
    by_header.from_headers = vec![JwtHeader {
        name: "x-jwt".into(),
        prefix: String::new(),
    }];
    by_header.output_claim_to_headers = vec![ClaimToHeader {
        header: "x-sub".into(),
        claim: "sub".into(),
    }];
    let other = Signer::new("k");
    let a = auth(vec![by_header, rule("other", &other)]);
    let token = s.sign(json!({"iss": "iss", "sub": "alice"}));
    for _ in 0..2 {
        let mut parts = request("/", &[("x-jwt", &token)]);
        let v = a.authenticate(&mut parts).unwrap().unwrap();
        assert_eq!(v.subject, "alice");
        assert_eq!(parts.headers["x-sub"], "alice", "outputs on a hit too");
    }
    // The same token at a location only the other rule reads: verified again, and
    // refused there (its issuer is not that rule's).
    let err = a
        .authenticate(&mut request("/", &[("authorization", &bearer(&token))]))
        .unwrap_err();
    assert_eq!(err, Failure::UnknownIssuer);
}
