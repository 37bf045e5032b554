//! The mesh file `trellis up` reads: services, their workloads (an application per
//! workload, each with its own sidecar), the Istio config directory, and the traffic
//! the built-in client sends.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshFile {
    #[serde(default = "default_namespace")]
    pub namespace: String,
    pub services: Vec<ServiceDef>,
    /// Directory of Istio resources, relative to the mesh file.
    #[serde(default)]
    pub config: Option<PathBuf>,
    #[serde(default)]
    pub traffic: Option<Traffic>,
    /// Istio's `meshConfig.defaultConfig`: how every sidecar signs
    /// (`privateKeyProvider`), unless a workload says otherwise.
    #[serde(default)]
    pub default_config: Option<super::proxy_config::ProxyConfig>,
    /// The longest workload certificate the CA issues (`24h` by default); sidecars
    /// renew at half of it.
    #[serde(default)]
    pub certificate_ttl: Option<String>,
    /// Gateway proxies (Istio's ingress gateways): each a `trellis proxy` of node type
    /// `router`, serving the Gateways of the config directory that select its labels.
    #[serde(default)]
    pub gateways: Vec<GatewayDef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayDef {
    pub name: String,
    /// Its workload's labels, which Gateways' `selector`s match.
    pub labels: BTreeMap<String, String>,
}

fn default_namespace() -> String {
    "default".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceDef {
    pub name: String,
    pub port: u16,
    /// `http` (default), `http2` or `grpc`.
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// The service account its workloads run as (default: the service name).
    #[serde(default)]
    pub service_account: Option<String>,
    /// Its namespace (default: the mesh's): a Tenant of the config directory claims
    /// namespaces, so services of two tenants live in two namespaces.
    #[serde(default)]
    pub namespace: Option<String>,
    pub workloads: Vec<WorkloadDef>,
}

fn default_protocol() -> String {
    "http".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadDef {
    pub version: String,
    /// The application: a command line (`{port}` is replaced with its port, which is
    /// also in `$PORT`; `$HTTP_PROXY` points at its sidecar), or the built-in demo app
    /// when absent.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Built-in demo app: fraction of requests that fail with 503.
    #[serde(default)]
    pub fail_rate: Option<f64>,
    /// Built-in demo app: delay before every response, e.g. `20ms`.
    #[serde(default)]
    pub delay: Option<String>,
    /// Built-in demo app: services it calls while answering each request
    /// (`http://<service>:<port><path>`), through its sidecar, propagating the trace
    /// headers, as Bookinfo's productpage calls details and reviews.
    #[serde(default)]
    pub calls: Vec<String>,
    /// Istio's `proxy.istio.io/config` annotation for this workload's sidecar
    /// (`privateKeyProvider`).
    #[serde(default)]
    pub proxy_config: Option<super::proxy_config::ProxyConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Traffic {
    /// Requests per second, spread over `requests` by weight.
    #[serde(default = "default_rps")]
    pub rps: u32,
    pub requests: Vec<RequestDef>,
}

fn default_rps() -> u32 {
    20
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestDef {
    /// `http://<service>:<port><path>`, sent through the client's sidecar.
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

impl MeshFile {
    /// How workload `j` of service `i` (named `name`) signs: its own proxy config,
    /// else the mesh's default, else in memory.
    pub fn key_provider(
        &self,
        i: usize,
        j: usize,
        name: &str,
    ) -> Result<trellis_config::PrivateKeyProvider, String> {
        let w = &self.services[i].workloads[j];
        match (&w.proxy_config, &self.default_config) {
            (Some(c), _) => c.provider(&format!("services[{i}].workloads[{j}].proxy_config"), name),
            (None, Some(c)) => c.provider("default_config", name),
            (None, None) => Ok(trellis_config::PrivateKeyProvider::Memory),
        }
    }

    /// Istio's `CERT_SIGNER` proxy metadata of workload (i, j), or of the client (None):
    /// its `proxy_config`, else `default_config`.
    pub fn cert_signer(&self, at: Option<(usize, usize)>) -> Result<Option<String>, String> {
        let own = at.and_then(|(i, j)| {
            self.services[i].workloads[j]
                .proxy_config
                .as_ref()
                .map(|c| (c, format!("services[{i}].workloads[{j}].proxy_config")))
        });
        match own.or_else(|| {
            self.default_config
                .as_ref()
                .map(|c| (c, "default_config".into()))
        }) {
            Some((c, field)) => c.cert_signer(&field),
            None => Ok(None),
        }
    }

    /// Reads `path` (a file, or a directory holding `mesh.yaml`); returns the file and
    /// the directory relative paths start from.
    pub fn load(path: &Path) -> anyhow::Result<(MeshFile, PathBuf)> {
        let file = if path.is_dir() {
            path.join("mesh.yaml")
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&file)
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        let de = serde_yaml::Deserializer::from_str(&text);
        let mesh: MeshFile = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            // serde_yaml sometimes puts the path in its message too; say it once.
            let inner = e.inner().to_string();
            let inner = inner
                .strip_prefix(&format!("{path}: "))
                .unwrap_or(&inner)
                .to_string();
            anyhow::anyhow!("{}: {path}: {inner}", file.display())
        })?;
        let base = file.parent().unwrap_or(Path::new(".")).to_path_buf();
        mesh.check(&file)?;
        Ok((mesh, base))
    }

    fn check(&self, file: &Path) -> anyhow::Result<()> {
        let f = file.display();
        let mut names = std::collections::BTreeSet::new();
        for (i, s) in self.services.iter().enumerate() {
            if !names.insert(&s.name) {
                anyhow::bail!("{f}: services[{i}].name: {:?} appears twice", s.name);
            }
            if !["http", "http2", "grpc"].contains(&s.protocol.as_str()) {
                anyhow::bail!(
                    "{f}: services[{i}].protocol: {:?} is not http, http2 or grpc",
                    s.protocol
                );
            }
            if s.workloads.is_empty() {
                anyhow::bail!("{f}: services[{i}].workloads: at least one is needed");
            }
            for (j, w) in s.workloads.iter().enumerate() {
                if w.fail_rate.is_some_and(|r| !(0.0..=1.0).contains(&r)) {
                    anyhow::bail!("{f}: services[{i}].workloads[{j}].fail_rate: outside 0..1");
                }
                if let Some(d) = &w.delay {
                    trellis_config::parse_duration(d).map_err(|e| {
                        anyhow::anyhow!("{f}: services[{i}].workloads[{j}].delay: {e}")
                    })?;
                }
                if w.command.as_ref().is_some_and(|c| c.is_empty()) {
                    anyhow::bail!("{f}: services[{i}].workloads[{j}].command: empty");
                }
                self.key_provider(i, j, "x")
                    .map_err(|e| anyhow::anyhow!("{f}: {e}"))?;
            }
        }
        if let Some(t) = &self.traffic {
            for (i, r) in t.requests.iter().enumerate() {
                let uri: hyper::Uri = r
                    .url
                    .parse()
                    .map_err(|e| anyhow::anyhow!("{f}: traffic.requests[{i}].url: {e}"))?;
                if uri.authority().is_none() {
                    anyhow::bail!(
                        "{f}: traffic.requests[{i}].url: needs http://<service>:<port>/..."
                    );
                }
            }
        }
        Ok(())
    }
}
