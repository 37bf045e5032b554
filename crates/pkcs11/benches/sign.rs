//! Where a token signature's time goes: the token itself (a session used on the
//! calling thread), the hop to the token's session threads and back (what a TLS
//! handshake pays), and BoringSSL with the key in memory, for RSA-2048 and P-256 in a
//! SoftHSM2 token of the bench's own.
//!
//! `cargo bench -p trellis-pkcs11 --bench sign` (needs Debian softhsm2).

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use trellis_pkcs11::softhsm::TestTokens;
use trellis_pkcs11::{KeyKind, Pkcs11Key, Pkcs11Uri, Token, TokenKey};
use trellis_tls::{PrivateKeyProvider, SignatureScheme};

fn token() -> Option<Arc<Token>> {
    let tokens = match TestTokens::new(&tempfile::tempdir().unwrap().keep()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("skipped: {e}");
            return None;
        }
    };
    let uri = Pkcs11Uri::parse(&tokens.init("bench").unwrap()).unwrap();
    Some(Token::open(&uri, None, 2).unwrap())
}

fn sign(c: &mut Criterion) {
    let Some(token) = token() else { return };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let msg = vec![7u8; 300];
    for (kind, scheme, name) in [
        (
            KeyKind::EcdsaP256,
            SignatureScheme::ECDSA_SECP256R1_SHA256,
            "p256",
        ),
        (
            KeyKind::Rsa2048,
            SignatureScheme::RSA_PSS_RSAE_SHA256,
            "rsa2048",
        ),
    ] {
        let key = Arc::new(TokenKey::generate(token.clone(), kind, name, name.as_bytes()).unwrap());
        let provider = Pkcs11Key(key.clone());
        let memory =
            trellis_tls::InMemoryKey::new(trellis_tls::resign::stand_in(key.algorithm()).unwrap())
                .unwrap();
        let mut g = c.benchmark_group(name);
        g.measurement_time(Duration::from_secs(5));
        g.bench_function("token via session thread (what a handshake pays)", |b| {
            b.iter(|| rt.block_on(provider.sign(scheme, &msg)).unwrap())
        });
        g.bench_function("token via session thread, waited for here", |b| {
            b.iter(|| key.sign_blocking(scheme, &msg).unwrap())
        });
        g.bench_function("boringssl, key in memory", |b| {
            b.iter(|| rt.block_on(memory.sign(scheme, &msg)).unwrap())
        });
        g.finish();
    }
}

criterion_group!(benches, sign);
criterion_main!(benches);
