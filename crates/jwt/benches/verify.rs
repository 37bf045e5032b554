//! What RequestAuthentication costs a request: Istio's RS256 test token (2048-bit key)
//! from its `Authorization` header, verified (first sight) and remembered (the token
//! cache), and a request without a token.

use criterion::{criterion_group, criterion_main, Criterion};
use trellis_config::{JwtAuthn, JwtRule};
use trellis_jwt::Authenticator;

fn istio() -> serde_json::Value {
    serde_json::from_str(include_str!("../../trellis/tests/fixtures/jwt/istio.json")).unwrap()
}

fn bench(c: &mut Criterion) {
    let data = istio();
    let config = JwtAuthn {
        rules: vec![JwtRule {
            issuer: "test-issuer-1@istio.io".into(),
            jwks: data["jwks"].as_str().unwrap().into(),
            ..Default::default()
        }],
    };
    let a = Authenticator::new(&config).unwrap();
    let bearer = format!(
        "Bearer {}",
        data["tokens"]["TokenIssuer1"].as_str().unwrap()
    );
    let request = |with_token: bool| {
        let mut b = http::Request::builder().uri("/productpage");
        if with_token {
            b = b.header("authorization", bearer.as_str());
        }
        b.body(()).unwrap().into_parts().0
    };
    c.bench_function("jwt/rs256_token_first_sight", |b| {
        b.iter_batched(
            || (Authenticator::new(&config).unwrap(), request(true)),
            |(fresh, mut parts)| assert!(fresh.authenticate(&mut parts).unwrap().is_some()),
            criterion::BatchSize::SmallInput,
        )
    });
    c.bench_function("jwt/rs256_token_remembered", |b| {
        b.iter(|| {
            let mut parts = request(true);
            assert!(a.authenticate(&mut parts).unwrap().is_some());
        })
    });
    c.bench_function("jwt/no_token", |b| {
        b.iter(|| {
            let mut parts = request(false);
            assert!(a.authenticate(&mut parts).unwrap().is_none());
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
