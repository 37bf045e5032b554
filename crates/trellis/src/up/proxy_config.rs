//! How a workload's sidecar signs, chosen as Istio chooses it: a `ProxyConfig`
//! (`meshConfig.defaultConfig` for the whole mesh, the `proxy.istio.io/config`
//! annotation for one workload) with a `privateKeyProvider`: `cryptomb: { pollDelay,
//! fallback }` as Istio writes it, or Trellis's `pkcs11: { uri }`, whose workload keys
//! are generated in the token under the workload's name. Istio's `qat` is refused.

use serde::Deserialize;
use trellis_config::{CryptoMb, Dur, Pkcs11, PrivateKeyProvider};

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyConfig {
    #[serde(default)]
    pub private_key_provider: Option<KeyProvider>,
    /// Istio's `proxyMetadata`: `CERT_SIGNER` (or `ISTIO_META_CERT_SIGNER`) is read.
    #[serde(default)]
    pub proxy_metadata: std::collections::BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyProvider {
    #[serde(default)]
    pub cryptomb: Option<Cryptomb>,
    #[serde(default)]
    pub qat: Option<serde_yaml::Value>,
    #[serde(default)]
    pub pkcs11: Option<Pkcs11Def>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cryptomb {
    /// Istio's default: 10ms.
    #[serde(default)]
    pub poll_delay: Option<String>,
    /// Istio's default: false.
    #[serde(default)]
    pub fallback: Option<bool>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pkcs11Def {
    /// The token (`pkcs11:token=...?module-path=...&pin-source=...`), without `object`:
    /// each workload's keys are labelled with its name.
    pub uri: String,
    #[serde(default)]
    pub sessions: Option<u32>,
}

impl ProxyConfig {
    /// `CERT_SIGNER` / `ISTIO_META_CERT_SIGNER` of `proxyMetadata`; any other key is
    /// refused by name (a sidecar here reads nothing else from it).
    pub fn cert_signer(&self, field: &str) -> Result<Option<String>, String> {
        use trellis_mesh::mesh_config::{cert_signer_of, CERT_SIGNER_KEYS};
        if let Some(other) = self
            .proxy_metadata
            .keys()
            .find(|k| !CERT_SIGNER_KEYS.contains(&k.as_str()))
        {
            return Err(format!(
                "{field}.proxyMetadata.{other}: not supported (CERT_SIGNER is)"
            ));
        }
        Ok(cert_signer_of(&self.proxy_metadata).map(str::to_string))
    }

    /// The provider for workload `name`; `field` names this config in errors.
    pub fn provider(&self, field: &str, name: &str) -> Result<PrivateKeyProvider, String> {
        let Some(p) = &self.private_key_provider else {
            return Ok(PrivateKeyProvider::Memory);
        };
        let field = format!("{field}.privateKeyProvider");
        match (&p.cryptomb, &p.qat, &p.pkcs11) {
            (None, None, None) => Ok(PrivateKeyProvider::Memory),
            (Some(mb), None, None) => {
                let poll_delay = match &mb.poll_delay {
                    Some(d) => Dur(trellis_config::parse_duration(d)
                        .map_err(|e| format!("{field}.cryptomb.pollDelay: {d:?}: {e}"))?),
                    None => Dur::millis(10),
                };
                Ok(PrivateKeyProvider::Cryptomb(CryptoMb {
                    poll_delay,
                    fallback: mb.fallback.unwrap_or(false),
                    ..CryptoMb::default()
                }))
            }
            (None, Some(_), None) => Err(format!(
                "{field}.qat: Intel QAT is not supported by Trellis (cryptomb or pkcs11)"
            )),
            (None, None, Some(t)) => {
                let (path, query) = match t.uri.split_once('?') {
                    Some((p, q)) => (p, Some(q)),
                    None => (t.uri.as_str(), None),
                };
                if !path.starts_with("pkcs11:") {
                    return Err(format!("{field}.pkcs11.uri: {path:?} is not a pkcs11: URI"));
                }
                if path.contains("object=") {
                    return Err(format!(
                        "{field}.pkcs11.uri: leave object= out: each workload's keys are labelled with its name"
                    ));
                }
                let sep = if path.ends_with(':') { "" } else { ";" };
                let mut uri = format!("{path}{sep}object={name}");
                if let Some(q) = query {
                    uri.push('?');
                    uri.push_str(q);
                }
                Ok(PrivateKeyProvider::Pkcs11(Pkcs11 {
                    uri,
                    sessions: t.sessions.unwrap_or(2),
                }))
            }
            _ => Err(format!("{field}: name one provider (cryptomb or pkcs11)")),
        }
    }
}

/// The YAML a bootstrap's identity section gets for `p` (indented under `identity:`).
pub fn bootstrap_lines(p: &PrivateKeyProvider, cert_signer: Option<&str>) -> String {
    let signer = cert_signer
        .map(|s| format!("  cert_signer: {s:?}\n"))
        .unwrap_or_default();
    signer
        + &match p {
            PrivateKeyProvider::Memory => String::new(),
            PrivateKeyProvider::Cryptomb(mb) => format!(
                "  private_key_provider: {{ cryptomb: {{ poll_delay: {}ms, fallback: {} }} }}\n",
                mb.poll_delay.get().as_millis().max(1),
                mb.fallback
            ),
            PrivateKeyProvider::Pkcs11(t) => format!(
                "  private_key_provider: {{ pkcs11: {{ uri: {:?}, sessions: {} }} }}\n",
                t.uri, t.sessions
            ),
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(yaml: &str) -> Result<PrivateKeyProvider, String> {
        let c: ProxyConfig = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        c.provider("proxy_config", "reviews-v1")
    }

    #[test]
    fn istio_forms_and_ours() {
        assert_eq!(read("{}").unwrap(), PrivateKeyProvider::Memory);
        let PrivateKeyProvider::Cryptomb(mb) =
            read("privateKeyProvider: { cryptomb: { pollDelay: 2ms, fallback: true } }").unwrap()
        else {
            panic!()
        };
        assert_eq!((mb.poll_delay, mb.fallback), (Dur::millis(2), true));
        let PrivateKeyProvider::Cryptomb(mb) =
            read("privateKeyProvider: { cryptomb: {} }").unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (mb.poll_delay, mb.fallback),
            (Dur::millis(10), false),
            "Istio's defaults"
        );
        let PrivateKeyProvider::Pkcs11(t) = read(
            "privateKeyProvider: { pkcs11: { uri: \"pkcs11:token=mesh?module-path=/m.so&pin-source=env:PIN\" } }",
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            t.uri,
            "pkcs11:token=mesh;object=reviews-v1?module-path=/m.so&pin-source=env:PIN"
        );
        for (bad, needle) in [
            ("privateKeyProvider: { qat: {} }", "QAT is not supported"),
            (
                "privateKeyProvider: { cryptomb: {}, pkcs11: { uri: \"pkcs11:\" } }",
                "name one provider",
            ),
            (
                "privateKeyProvider: { pkcs11: { uri: \"pkcs11:token=a;object=b\" } }",
                "leave object= out",
            ),
            (
                "privateKeyProvider: { cryptomb: { pollDelay: soon } }",
                "pollDelay",
            ),
            ("concurrency: 2", "unknown field"),
        ] {
            let e = read(bad).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }
}
