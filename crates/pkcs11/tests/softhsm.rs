//! The token against SoftHSM2 (Debian `softhsm2`), in tokens of a temporary directory
//! of this test's own: keys generated and found by URI, every TLS signature scheme the
//! provider offers checked against the public key with BoringSSL, and the refusals a
//! user meets (wrong PIN, no such token, no such key).

use std::sync::{Arc, OnceLock};

use boring::rsa::Padding;
use boring::sign::{RsaPssSaltlen, Verifier};
use trellis_pkcs11::softhsm::{TestTokens, MODULE};
use trellis_pkcs11::{KeyKind, Pkcs11Key, Pkcs11Uri, Token, TokenKey};
use trellis_tls::{PrivateKeyProvider, SignatureScheme};

/// The SoftHSM2 tokens of this test binary (one directory per process: the module reads
/// its configuration once), or None where SoftHSM2 is missing (a failure under CI=true).
fn softhsm() -> Option<&'static TestTokens> {
    static TOKENS: OnceLock<Option<TestTokens>> = OnceLock::new();
    TOKENS
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap().keep();
            match TestTokens::new(&dir) {
                Ok(t) => {
                    std::fs::write(dir.join("wrong-pin"), "9999\n").unwrap();
                    // Every token before any test loads the module into this process: a
                    // module already loaded can see a token softhsm2-util is still
                    // making (labelled, its user PIN not yet set) and keep that view.
                    for label in LABELS {
                        t.init(label).unwrap();
                    }
                    Some(t)
                }
                Err(e) => {
                    assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true: {e}");
                    eprintln!("skipped: {e}");
                    None
                }
            }
        })
        .as_ref()
}

/// The tokens the tests use, one each.
const LABELS: [&str; 2] = ["sign", "refusals"];

/// The fresh token labelled `label` (one of [`LABELS`]) with user PIN 1234; its URI.
fn token(label: &str) -> Option<String> {
    assert!(LABELS.contains(&label), "{label}: add it to LABELS");
    Some(softhsm()?.uri(label, None))
}

fn verify(key: &TokenKey, scheme: SignatureScheme, msg: &[u8], sig: &[u8]) -> bool {
    let digest = scheme.digest().unwrap();
    let mut v = Verifier::new(digest, key.public_key()).unwrap();
    if scheme.is_rsa_pss() {
        v.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
        v.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH).unwrap();
    }
    v.verify_oneshot(sig, msg).unwrap()
}

#[tokio::test]
async fn generated_keys_sign_every_scheme_and_are_found_again_by_uri() {
    let Some(uri) = token("sign") else { return };
    let parsed = Pkcs11Uri::parse(&uri).unwrap();
    let t = Token::open(&parsed, None, 2).unwrap();
    let msg = b"the handshake transcript";
    for (kind, label, schemes) in [
        (
            KeyKind::EcdsaP256,
            "ec",
            &[SignatureScheme::ECDSA_SECP256R1_SHA256][..],
        ),
        (
            KeyKind::Rsa2048,
            "rsa",
            &[
                SignatureScheme::RSA_PKCS1_SHA256,
                SignatureScheme::RSA_PKCS1_SHA384,
                SignatureScheme::RSA_PSS_RSAE_SHA256,
                SignatureScheme::RSA_PSS_RSAE_SHA512,
            ][..],
        ),
    ] {
        let key = Arc::new(TokenKey::generate(t.clone(), kind, label, label.as_bytes()).unwrap());
        assert_private_part_cannot_be_read(label);
        let provider = Pkcs11Key(key.clone());
        assert_eq!(provider.name(), "pkcs11");
        for &scheme in schemes {
            let sig = provider.sign(scheme, msg).await.unwrap();
            assert!(verify(&key, scheme, msg, &sig), "{label} {scheme:?}");
            let sig = key.sign_blocking(scheme, msg).unwrap();
            assert!(
                verify(&key, scheme, msg, &sig),
                "{label} {scheme:?} blocking"
            );
        }
        // A scheme the key cannot make is refused, not faked.
        let other = if kind == KeyKind::Rsa2048 {
            SignatureScheme::ECDSA_SECP256R1_SHA256
        } else {
            SignatureScheme::RSA_PSS_RSAE_SHA256
        };
        assert!(provider.sign(other, msg).await.is_err());

        // The same key, found by its URI in the same token.
        let by_uri = Pkcs11Uri {
            object: Some(label.into()),
            ..parsed.clone()
        };
        let found = TokenKey::find(t.clone(), &by_uri).unwrap();
        assert!(found.public_key().public_eq(key.public_key()));
        let sig = found.sign_blocking(schemes[0], msg).unwrap();
        assert!(verify(&key, schemes[0], msg, &sig));
    }
    // RSA decryption without padding (TLS 1.2 RSA key exchange).
    let rsa = TokenKey::find(
        t.clone(),
        &Pkcs11Uri {
            object: Some("rsa".into()),
            ..parsed.clone()
        },
    )
    .unwrap();
    let public = rsa.public_key().rsa().unwrap();
    let mut block = vec![0u8; 256];
    block[255] = 42;
    let mut encrypted = vec![0u8; 256];
    public
        .public_encrypt(&block, &mut encrypted, Padding::NONE)
        .unwrap();
    let rsa = Pkcs11Key(Arc::new(rsa));
    assert_eq!(rsa.decrypt(&encrypted).await.unwrap(), block);

    // Keys by label go, and are not found after.
    assert_eq!(TokenKey::destroy_labelled(&t, "ec").unwrap(), 1);
    let e = TokenKey::find(
        t,
        &Pkcs11Uri {
            object: Some("ec".into()),
            ..parsed
        },
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("no such private key"), "{e}");
}

/// Asked by another client (a session of its own, logged in), the token refuses every
/// attribute that would give the private key away.
fn assert_private_part_cannot_be_read(label: &str) {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    use cryptoki::object::{Attribute, AttributeType, ObjectClass};
    use cryptoki::session::UserType;
    let p = Pkcs11::new(MODULE).unwrap();
    let _ = p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    let slot = p
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| p.get_token_info(*s).unwrap().label() == "sign")
        .unwrap();
    let session = p.open_ro_session(slot).unwrap();
    let _ = session.login(
        UserType::User,
        Some(&cryptoki::types::AuthPin::new("1234".into())),
    );
    let keys = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .unwrap();
    assert_eq!(keys.len(), 1);
    let flags = session
        .get_attributes(
            keys[0],
            &[AttributeType::Sensitive, AttributeType::Extractable],
        )
        .unwrap();
    assert!(flags.contains(&Attribute::Sensitive(true)), "{flags:?}");
    assert!(flags.contains(&Attribute::Extractable(false)), "{flags:?}");
    for secret in [
        AttributeType::Value,
        AttributeType::PrivateExponent,
        AttributeType::Prime1,
    ] {
        let got = session.get_attributes(keys[0], &[secret]);
        assert!(
            got.as_ref().map_or(true, |v| v.is_empty()),
            "{secret:?} was readable: {got:?}"
        );
    }
}

#[test]
fn refusals_name_the_token_and_never_the_pin() {
    let Some(uri) = token("refusals") else { return };
    let dir = softhsm().unwrap().dir();
    let wrong = uri.replace(
        &dir.join("pin").display().to_string(),
        &dir.join("wrong-pin").display().to_string(),
    );
    let e = Token::open(&Pkcs11Uri::parse(&wrong).unwrap(), None, 1)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("token=refusals") && e.contains("PIN is incorrect"),
        "{e}"
    );
    assert!(!e.contains("9999") && !e.contains("wrong-pin"), "{e}");
    let e = Token::open(
        &Pkcs11Uri::parse(&uri.replace("token=refusals", "token=absent")).unwrap(),
        None,
        1,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("no such token"), "{e}");
    let e = Token::open(
        &Pkcs11Uri::parse("pkcs11:token=x?module-path=/nonexistent/module.so").unwrap(),
        None,
        1,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("loading module /nonexistent/module.so"), "{e}");
}
