//! Private keys behind the provider a config names: in memory, signed eight at a time
//! by the `cryptomb` batcher (one batcher per poll delay and mode, shared by every
//! certificate that asks for it, so handshakes on all listeners fill the same batches),
//! or in a PKCS#11 token (found once per URI and kept while the process runs).

use std::sync::Arc;

use trellis_config::PrivateKeyProvider;

use crate::stats::Metrics;

/// `key` behind the configured provider; an error names the field at fault
/// (`private_key` or `private_key_provider`).
pub(crate) fn key_provider(
    provider: &PrivateKeyProvider,
    key: boring::pkey::PKey<boring::pkey::Private>,
    metrics: &Arc<Metrics>,
) -> Result<Arc<dyn trellis_tls::PrivateKeyProvider>, (&'static str, String)> {
    Ok(match provider {
        PrivateKeyProvider::Memory => Arc::new(
            trellis_tls::InMemoryKey::new(key).map_err(|e| ("private_key", e.to_string()))?,
        ),
        PrivateKeyProvider::Cryptomb(mb) => {
            let batcher = batcher(mb.poll_delay.get(), mb.inline, metrics);
            Arc::new(
                trellis_cryptomb_provider::CryptoMbKey::new(key, batcher, mb.fallback)
                    .map_err(|e| ("private_key_provider", e))?,
            )
        }
        PrivateKeyProvider::Pkcs11(_) => {
            return Err((
                "private_key_provider",
                "a key in memory cannot sign in a token".into(),
            ))
        }
    })
}

/// The token key a `pkcs11:` URI names: the token opened and the key found on first
/// use, then the same key for every certificate and reload that names it.
pub(crate) fn token_key(uri: &str) -> Result<Arc<trellis_pkcs11::TokenKey>, String> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static KEYS: OnceLock<Mutex<HashMap<String, Arc<trellis_pkcs11::TokenKey>>>> = OnceLock::new();
    let mut keys = KEYS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(k) = keys.get(uri) {
        return Ok(k.clone());
    }
    let parsed = trellis_pkcs11::Pkcs11Uri::parse(uri)?;
    let token = trellis_pkcs11::Token::open(&parsed, None, 2).map_err(|e| e.to_string())?;
    let key = Arc::new(trellis_pkcs11::TokenKey::find(token, &parsed).map_err(|e| e.to_string())?);
    keys.insert(uri.to_string(), key.clone());
    Ok(key)
}

/// One batcher per poll delay and mode, shared by every certificate that asks for it,
/// so that handshakes on all listeners fill the same batches.
fn batcher(
    poll_delay: std::time::Duration,
    inline: bool,
    metrics: &Arc<Metrics>,
) -> Arc<trellis_cryptomb_provider::Batcher> {
    use std::sync::{Mutex, OnceLock};
    type Batchers = Mutex<Vec<Arc<trellis_cryptomb_provider::Batcher>>>;
    static BATCHERS: OnceLock<Batchers> = OnceLock::new();
    let mut all = BATCHERS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(b) = all
        .iter()
        .find(|b| b.poll_delay == poll_delay && b.inline_mode() == inline)
    {
        return b.clone();
    }
    let b = if inline {
        trellis_cryptomb_provider::Batcher::inline(poll_delay, metrics.cryptomb())
    } else {
        trellis_cryptomb_provider::Batcher::start(poll_delay, metrics.cryptomb())
    };
    all.push(b.clone());
    b
}
