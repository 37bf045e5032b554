//! The JWK Sets of RequestAuthentication `jwksUri`s. As istiod does by default, the
//! control plane fetches them and inlines them into the sidecars' config, so that
//! sidecars never reach the issuers themselves.
//!
//! A set is fetched when a rule first names its URI, and again every [`REFRESH`], or
//! every [`RETRY`] while fetching fails. A failed refresh keeps the last good set (the
//! issuer being down does not log everybody out); a URI never fetched successfully has
//! no keys, so every token of its rule is refused (as Istio's fake JWKS does).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::sync::{watch, Notify};
use trellis_mesh::Inputs;

/// Istio's default JWKS refresh interval (`PILOT_JWT_PUB_KEY_REFRESH_INTERVAL`).
pub const REFRESH: Duration = Duration::from_secs(20 * 60);
/// How soon a failed fetch is tried again (Istio's `JwtPubKeyRefreshIntervalOnFailure`).
pub const RETRY: Duration = Duration::from_secs(60);
/// Istio's default `jwtRules.timeout`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest JWK Set read.
const MAX_BYTES: usize = 1 << 20;

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

pub struct JwksResolver {
    entries: Mutex<HashMap<String, Entry>>,
    /// Made at the first fetch: a control plane without `jwksUri`s (and `--check`)
    /// never reads the system's CA certificates.
    client: OnceLock<Result<HttpsClient, String>>,
    /// Woken when a URI is wanted that was never fetched.
    wanted: Notify,
    /// Bumped when a fetch changed a set: the views need making again.
    changed: watch::Sender<u64>,
}

struct Entry {
    /// The last good set, or why there has never been one.
    jwks: Result<String, String>,
    /// When it was last fetched (None: never tried).
    fetched: Option<Instant>,
    /// Whether that fetch failed.
    failed: bool,
    timeout: Duration,
}

impl JwksResolver {
    pub fn new() -> JwksResolver {
        JwksResolver {
            entries: Mutex::new(HashMap::new()),
            client: OnceLock::new(),
            wanted: Notify::new(),
            changed: watch::channel(0).0,
        }
    }

    /// Gives `inputs` the sets of the URIs its RequestAuthentications name, as last
    /// fetched; URIs never seen before are queued for fetching.
    pub fn resolve(&self, inputs: &mut Inputs) {
        let mut entries = self.entries.lock().unwrap();
        let mut fresh = false;
        for ra in &inputs.request_authentications {
            for r in ra.spec.jwt_rules.iter().filter(|r| !r.jwks_uri.is_empty()) {
                let timeout = r
                    .timeout
                    .as_deref()
                    .and_then(|t| trellis_config::parse_duration(t).ok())
                    .unwrap_or(DEFAULT_TIMEOUT);
                let e = entries.entry(r.jwks_uri.clone()).or_insert_with(|| {
                    fresh = true;
                    Entry {
                        jwks: Err("not fetched yet".into()),
                        fetched: None,
                        failed: false,
                        timeout,
                    }
                });
                e.timeout = timeout;
                inputs.jwks.insert(r.jwks_uri.clone(), e.jwks.clone());
            }
        }
        // Forget URIs no rule names any more.
        entries.retain(|uri, _| inputs.jwks.contains_key(uri));
        if fresh {
            self.wanted.notify_one();
        }
    }

    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Fetches what was never fetched, or not for [`REFRESH`] ([`RETRY`] after a
    /// failure). True when a set changed.
    pub async fn fetch_due(&self) -> bool {
        let due: Vec<(String, Duration)> = {
            let entries = self.entries.lock().unwrap();
            entries
                .iter()
                .filter(|(_, e)| {
                    let every = if e.failed { RETRY } else { REFRESH };
                    e.fetched.is_none_or(|t| t.elapsed() >= every)
                })
                .map(|(uri, e)| (uri.clone(), e.timeout))
                .collect()
        };
        let fetches = due.iter().map(|(uri, timeout)| self.fetch(uri, *timeout));
        let results = futures_util::future::join_all(fetches).await;
        let mut changed = false;
        for ((uri, _), result) in due.into_iter().zip(results) {
            let mut entries = self.entries.lock().unwrap();
            let Some(e) = entries.get_mut(&uri) else {
                continue;
            };
            e.fetched = Some(Instant::now());
            e.failed = result.is_err();
            match result {
                Ok(jwks) => {
                    if e.jwks.as_ref() != Ok(&jwks) {
                        tracing::info!(%uri, "JWKS fetched");
                        e.jwks = Ok(jwks);
                        changed = true;
                    }
                }
                Err(why) => {
                    tracing::warn!(%uri, "JWKS fetch failed: {why}");
                    if e.jwks.is_err() {
                        e.jwks = Err(why);
                    }
                }
            }
        }
        if changed {
            self.changed.send_modify(|n| *n += 1);
        }
        changed
    }

    async fn fetch(&self, uri: &str, timeout: Duration) -> Result<String, String> {
        let client = self.client.get_or_init(client).as_ref()?;
        let uri: http::Uri = uri.parse().map_err(|e| format!("{e}"))?;
        let get = async {
            // With its causes: the client's own error says only "client error (Connect)".
            let response = client
                .get(uri)
                .await
                .map_err(|e| format!("{:#}", anyhow::Error::new(e)))?;
            if !response.status().is_success() {
                return Err(format!("HTTP {}", response.status()));
            }
            let body = Limited::new(response.into_body(), MAX_BYTES)
                .collect()
                .await
                .map_err(|e| format!("reading the body: {e}"))?
                .to_bytes();
            String::from_utf8(body.to_vec()).map_err(|_| "the body is not UTF-8".to_string())
        };
        let jwks = tokio::time::timeout(timeout, get)
            .await
            .map_err(|_| format!("no answer in {timeout:?}"))??;
        trellis_jwt::check_jwks(&jwks)?;
        Ok(jwks)
    }

    /// Fetches sets as they are wanted and when they are due, forever.
    pub async fn run(&self) {
        // Often enough that a retry is not late by much more than this.
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tokio::select! {
                _ = self.wanted.notified() => {}
                _ = tick.tick() => {}
            }
            self.fetch_due().await;
        }
    }
}

/// An HTTP/1.1 client for `http` and `https` URIs, verifying servers against the
/// system's CA certificates.
fn client() -> Result<HttpsClient, String> {
    let roots = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| format!("no system CA certificates ({e})"))?;
    Ok(Client::builder(TokioExecutor::new()).build(roots.https_or_http().enable_http1().build()))
}

impl Default for JwksResolver {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One RequestAuthentication naming `uri`.
    fn inputs(uri: &str) -> Inputs {
        let mut loaded = trellis_mesh::Loaded::default();
        let yaml = format!(
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{ name: ra, namespace: default }}\nspec:\n  jwtRules: [{{ issuer: i, jwksUri: \"{uri}\" }}]\n"
        );
        trellis_mesh::load_str(&yaml, "ra.yaml", &mut loaded);
        loaded.inputs
    }

    /// Backdates the last fetch of `uri` by `by`.
    fn age(r: &JwksResolver, uri: &str, by: Duration) {
        let mut entries = r.entries.lock().unwrap();
        let e = entries.get_mut(uri).unwrap();
        e.fetched = Some(Instant::now() - by);
    }

    fn attempts(r: &JwksResolver, uri: &str) -> Option<Instant> {
        r.entries.lock().unwrap()[uri].fetched
    }

    #[tokio::test]
    async fn a_failed_fetch_is_tried_again_sooner_than_a_good_set_is_refreshed() {
        // Nothing listens there: the fetch fails at once.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let uri = format!("http://{}/jwks.json", closed.local_addr().unwrap());
        drop(closed);
        let r = JwksResolver::new();
        r.resolve(&mut inputs(&uri));
        assert!(!r.fetch_due().await);
        let first = attempts(&r, &uri).unwrap();
        assert!(r.entries.lock().unwrap()[&uri].failed);

        r.fetch_due().await;
        assert_eq!(attempts(&r, &uri), Some(first), "not due yet");
        age(&r, &uri, RETRY);
        r.fetch_due().await;
        assert_ne!(attempts(&r, &uri), Some(first), "tried again after RETRY");

        // A fetch that did not fail waits for REFRESH.
        r.entries.lock().unwrap().get_mut(&uri).unwrap().failed = false;
        age(&r, &uri, RETRY);
        let before = attempts(&r, &uri);
        r.fetch_due().await;
        assert_eq!(attempts(&r, &uri), before);
    }
}
