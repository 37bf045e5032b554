//! The identity agent: gets this proxy's workload certificate from the CA and keeps it
//! fresh.
//!
//! The key is generated here (RSA-2048 or ECDSA P-256) and never leaves the process,
//! or generated in a PKCS#11 token and never leaves the token (`workload_key.rs`); the
//! CA sees only a CSR. A token's previous key is destroyed once the new one is in use. The first certificate is requested with the configured
//! token; renewals authenticate with the current certificate over mTLS and fall back to
//! the token. Rotation happens at half the lifetime (±1% jitter, as Istio does) and
//! whenever the CA root file changes. When the CA cannot be reached the current
//! certificate stays installed and the agent retries with backoff.

use crate::stats::Metrics;
use arc_swap::ArcSwapOption;
use boring::pkey::{PKey, Public};
use boring::x509::X509;
use rand::Rng;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use trellis_ca_client::time::{asn1_unix, unix_now};
use trellis_ca_client::{CaClient, Credential};
use trellis_config::Identity;
use trellis_pkcs11::TokenKey;

use crate::workload_key::{KeySource, NewKey};
use trellis_tls::{peer_identities, CertifiedKey};

/// An installed workload certificate and the mesh trust bundle.
pub struct WorkloadCert {
    /// Leaf and intermediates (the root is not sent: peers have it).
    pub key: CertifiedKey,
    pub roots: Vec<X509>,
    /// SHA-256 of the root the CA's chain ended with.
    pub chain_root: [u8; 32],
    pub identity: String,
    pub serial: String,
    pub issuer: String,
    pub not_before: i64,
    /// When this process installed it.
    pub installed_at: i64,
    pub not_after: i64,
    /// The private key as PKCS#8 PEM, only in an agent that exports keys
    /// ([`Agent::exporting`]); never logged.
    pub private_key_pem: Option<Vec<u8>>,
}

pub struct Agent {
    config: Identity,
    current: ArcSwapOption<WorkloadCert>,
    metrics: Arc<Metrics>,
    /// Made on the first certificate request (a token is opened then).
    keys: tokio::sync::OnceCell<Arc<KeySource>>,
    /// The installed certificate's key, when it lives in a token.
    in_token: std::sync::Mutex<Option<Arc<TokenKey>>>,
    export_keys: bool,
}

/// How long a replaced token key stays, for handshakes that started with it: 30 s, or a
/// quarter of the certificate's life when that is shorter (a rotation comes at half).
fn retired_key_grace(ttl: Duration) -> Duration {
    (ttl / 4).min(Duration::from_secs(30))
}

const MAX_BACKOFF: Duration = Duration::from_secs(30);

fn file_stamp(path: &str) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl Agent {
    pub fn new(config: Identity, metrics: Arc<Metrics>) -> Arc<Self> {
        Self::with_keys(config, metrics, false)
    }

    /// An agent whose certificates carry their private key as PEM, for a node agent
    /// that serves them to a local Envoy; keys in a PKCS#11 token are refused.
    pub fn exporting(config: Identity, metrics: Arc<Metrics>) -> Arc<Self> {
        Self::with_keys(config, metrics, true)
    }

    fn with_keys(config: Identity, metrics: Arc<Metrics>, export_keys: bool) -> Arc<Self> {
        Arc::new(Agent {
            config,
            current: ArcSwapOption::empty(),
            metrics,
            keys: tokio::sync::OnceCell::new(),
            in_token: std::sync::Mutex::new(None),
            export_keys,
        })
    }

    /// The identity section the agent was started with.
    pub fn config(&self) -> &Identity {
        &self.config
    }

    pub fn current(&self) -> Option<Arc<WorkloadCert>> {
        self.current.load_full()
    }

    /// Blocks until the first certificate is installed, retrying with backoff.
    pub async fn first_certificate(&self) {
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.renew().await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(ca = %self.config.ca_address, retry_in = ?backoff,
                        "no workload certificate yet: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Rotates forever; sends on `rotated` after each new certificate is installed.
    pub async fn rotate(self: Arc<Self>, rotated: mpsc::Sender<()>) {
        let mut root_stamp = file_stamp(&self.config.ca_root);
        let mut root_text = std::fs::read(&self.config.ca_root).ok();
        let mut backoff = Duration::from_secs(1);
        loop {
            let due = self.next_rotation();
            // Sleep in short steps so that a changed CA root triggers a rotation.
            loop {
                let now = unix_now();
                if now >= due {
                    break;
                }
                let stamp = file_stamp(&self.config.ca_root);
                if stamp != root_stamp {
                    root_stamp = stamp;
                    // The same root written again (a config sync, a ConfigMap refresh) is
                    // not a change: rotating every sidecar for it would be a storm of
                    // key generations and TLS rebuilds for nothing.
                    let text = std::fs::read(&self.config.ca_root).ok();
                    if text != root_text {
                        root_text = text;
                        tracing::info!("CA root changed; rotating the workload certificate");
                        break;
                    }
                }
                let step = Duration::from_secs((due - now) as u64).min(Duration::from_secs(1));
                tokio::time::sleep(step).await;
            }
            match self.renew().await {
                Ok(()) => {
                    backoff = Duration::from_secs(1);
                    let _ = rotated.send(()).await;
                }
                Err(e) => {
                    tracing::warn!(ca = %self.config.ca_address, retry_in = ?backoff,
                        "certificate rotation failed, keeping the current certificate: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Half the lifetime, ±1% jitter.
    fn next_rotation(&self) -> i64 {
        let Some(c) = self.current() else {
            return 0;
        };
        // From when it could first be used: the CA back-dates not_before for clock skew
        // (a minute, with Istio's CA too), which for a short-lived certificate would put
        // half its life in the past.
        let from = c.not_before.max(c.installed_at);
        let life = (c.not_after - from).max(1) as f64;
        let fraction = 0.5 + rand::thread_rng().gen_range(-0.01..=0.01);
        from + (life * fraction) as i64
    }

    fn token(&self) -> Option<String> {
        let path = self.config.token_file.as_ref()?;
        match std::fs::read_to_string(path) {
            Ok(t) => Some(t.trim().to_string()),
            Err(e) => {
                tracing::warn!("identity.token_file {path}: {e}");
                None
            }
        }
    }

    /// The identity the CSR names: the current certificate's, else the one the token
    /// was issued for.
    fn csr_identity(&self) -> Option<String> {
        match self.current() {
            Some(c) => Some(c.identity.clone()),
            None => token_identity(&self.token()?, &self.config.trust_domain),
        }
    }

    async fn renew(&self) -> Result<(), String> {
        let result = self.fetch().await;
        let label = crate::stats::ResultLabels {
            result: if result.is_ok() { "success" } else { "failure" },
        };
        self.metrics.identity_renewals.get_or_create(&label).inc();
        let cert = result?;
        tracing::info!(identity = %cert.identity, serial = %cert.serial, expires = cert.not_after,
            "workload certificate installed");
        self.metrics.identity_expiry.set(cert.not_after);
        self.current.store(Some(Arc::new(cert)));
        Ok(())
    }

    async fn fetch(&self) -> Result<WorkloadCert, String> {
        let root_pem = std::fs::read(&self.config.ca_root)
            .map_err(|e| format!("identity.ca_root {}: {e}", self.config.ca_root))?;
        let roots = X509::stack_from_pem(&root_pem)
            .ok()
            .filter(|r| !r.is_empty())
            .ok_or_else(|| {
                format!(
                    "identity.ca_root {}: no PEM certificate",
                    self.config.ca_root
                )
            })?;
        let source = self
            .keys
            .get_or_try_init(|| async {
                let (config, metrics) = (self.config.clone(), self.metrics.clone());
                let export = self.export_keys;
                tokio::task::spawn_blocking(move || KeySource::new(&config, &metrics, export))
                    .await
                    .map_err(|e| e.to_string())?
                    .map(Arc::new)
            })
            .await?
            .clone();
        let key = source.generate(self.csr_identity().as_deref()).await?;
        match self.certify(&key, roots).await {
            Ok(cert) => {
                self.retire_token_key(key.in_token);
                Ok(cert)
            }
            Err(e) => {
                // A key made for a certificate that never came goes at once.
                if let Some(unused) = key.in_token {
                    let _ = tokio::task::spawn_blocking(move || unused.destroy()).await;
                }
                Err(e)
            }
        }
    }

    /// A certificate for `key` from the CA, renewing with the current certificate or
    /// else with the bootstrap token.
    async fn certify(&self, key: &NewKey, roots: Vec<X509>) -> Result<WorkloadCert, String> {
        let csr = &key.csr;
        let client = CaClient {
            address: self.config.ca_address.clone(),
            server_name: self.config.ca_server_name.clone(),
            roots: roots.clone(),
        };
        let ttl = self.config.cert_ttl.get();
        let signer = self.config.cert_signer.as_deref();
        let metadata: Vec<(&str, &str)> = signer.map(|s| ("CertSigner", s)).into_iter().collect();
        let renewal = match self.current() {
            Some(c) => Some(
                client
                    .create_certificate_with(
                        csr,
                        ttl,
                        Credential::Certificate(c.key.clone()),
                        &metadata,
                    )
                    .await,
            ),
            None => None,
        };
        let chain = match renewal {
            Some(Ok(chain)) => chain,
            other => {
                if let Some(Err(e)) = other {
                    tracing::debug!("renewal with the current certificate failed: {e}");
                }
                let token = self
                    .token()
                    .ok_or("no certificate to renew with and no identity.token_file")?;
                client
                    .create_certificate_with(csr, ttl, Credential::Token(&token), &metadata)
                    .await?
            }
        };
        let mut cert = install(chain, &key.public, key.provider.clone(), roots)?;
        cert.private_key_pem = key.pem.clone();
        Ok(cert)
    }

    /// Keeps `new` as the installed certificate's token key; the one it replaces is
    /// destroyed in the token once handshakes that started with it are done.
    fn retire_token_key(&self, new: Option<Arc<TokenKey>>) {
        let old = std::mem::replace(&mut *self.in_token.lock().unwrap(), new);
        let Some(old) = old else { return };
        let grace = retired_key_grace(self.config.cert_ttl.get());
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let name = old.name().to_string();
            match tokio::task::spawn_blocking(move || old.destroy()).await {
                Ok(Ok(())) => {
                    tracing::info!(key = %name, "replaced workload key destroyed in the token")
                }
                Ok(Err(e)) => tracing::warn!("destroying the replaced workload key: {e}"),
                Err(e) => tracing::warn!("destroying the replaced workload key: {e}"),
            }
        });
    }
}

/// The identity a token was issued for, read from it unverified (the CA verifies it):
/// a Trellis bootstrap token's SPIFFE subject, or a Kubernetes ServiceAccount token's
/// `system:serviceaccount:<namespace>:<account>` in `trust_domain`.
fn token_identity(token: &str, trust_domain: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&json).ok()?;
    let sub = claims["sub"].as_str()?;
    if sub.starts_with("spiffe://") {
        return Some(sub.to_string());
    }
    let (ns, sa) = sub
        .strip_prefix("system:serviceaccount:")?
        .split_once(':')?;
    Some(format!("spiffe://{trust_domain}/ns/{ns}/sa/{sa}"))
}

fn install(
    chain: Vec<String>,
    key: &PKey<Public>,
    provider: Arc<dyn trellis_tls::PrivateKeyProvider>,
    mut roots: Vec<X509>,
) -> Result<WorkloadCert, String> {
    let mut certs = Vec::new();
    for pem in &chain {
        certs.push(X509::from_pem(pem.as_bytes()).map_err(|_| "CA returned a bad certificate")?);
    }
    if certs.is_empty() {
        return Err("CA returned an empty chain".into());
    }
    let leaf = certs[0].clone();
    if !leaf.public_key().map(|p| p.public_eq(key)).unwrap_or(false) {
        return Err("CA returned a certificate for another key".into());
    }
    let root = certs.pop().expect("non-empty");
    if certs.is_empty() {
        certs.push(root.clone());
    }
    let chain_root = trellis_tls::fingerprint(&root);
    // Trust the CA's current root alongside the configured bundle (root rotation).
    let der = root.to_der().unwrap_or_default();
    if !roots.iter().any(|r| r.to_der().unwrap_or_default() == der) {
        roots.push(root);
    }
    let identity = peer_identities(&leaf)
        .into_iter()
        .next()
        .unwrap_or_default();
    let serial = leaf
        .serial_number()
        .to_bn()
        .and_then(|b| b.to_hex_str().map(|s| s.to_string()))
        .unwrap_or_default();
    let issuer = leaf
        .issuer_name()
        .entries()
        .filter_map(|e| e.data().as_utf8().ok().map(|s| s.to_string()))
        .collect::<Vec<_>>()
        .join(", ");
    Ok(WorkloadCert {
        not_before: asn1_unix(leaf.not_before()),
        installed_at: unix_now(),
        not_after: asn1_unix(leaf.not_after()),
        key: CertifiedKey {
            chain: certs,
            provider,
        },
        roots,
        chain_root,
        identity,
        serial,
        issuer,
        private_key_pem: None,
    })
}

/// `/certs` on the admin listener.
pub fn describe(agent: Option<&Agent>) -> serde_json::Value {
    let Some(cert) = agent.and_then(|a| a.current()) else {
        return serde_json::json!({ "certificates": [] });
    };
    serde_json::json!({
        "certificates": [{
            "identity": cert.identity,
            "serial": cert.serial,
            "issuer": cert.issuer,
            "not_before": cert.not_before,
            "expiry": cert.not_after,
            "seconds_left": cert.not_after - unix_now(),
            "chain_length": cert.key.chain.len(),
            "roots": cert.roots.len(),
            // Which CA signed it: the root its chain leads to.
            "root_sha256": trellis_tls::hex(&cert.chain_root),
        }]
    })
}
