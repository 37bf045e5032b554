//! Istio's mesh-wide configuration, where it says whom to trust: the `istio` ConfigMap
//! of `istio-system` (its `mesh` key) or an IstioOperator's `spec.meshConfig`. Trellis
//! reads `trustDomain`, `trustDomainAliases`, `caCertificates` and the `CERT_SIGNER` of
//! `defaultConfig.proxyMetadata`, refuses a `rootNamespace` other than istio-system
//! (mesh-wide policies would silently apply to one namespace) and `ecdhCurves` /
//! `cipherSuites` in `meshMTLS` or `tlsDefaults` (they would be ignored, offering more),
//! and warns the other fields as not read.
//!
//! How `caCertificates` map onto tenants (strictly: a root is trusted only where an
//! entry says so, and only for a trust domain): an entry's `certSigners` pick the
//! tenants whose `certSigner` they name (the default tenant's is `defaultConfig`'s
//! `CERT_SIGNER`), all tenants when empty; with `trustDomains`, its roots vouch for
//! those (external) trust domains in those tenants' sidecars, both ways; without, they
//! are further roots of those tenants' own trust domains. A trust domain of a tenant is
//! never an entry's: a tenant's roots come from its CA.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MeshConfig {
    /// Read to refuse what Trellis cannot honour: its root namespace is istio-system.
    #[serde(default)]
    pub root_namespace: Option<String>,
    #[serde(default)]
    pub trust_domain: Option<String>,
    #[serde(default)]
    pub trust_domain_aliases: Vec<String>,
    #[serde(default)]
    pub ca_certificates: Vec<CertificateData>,
    #[serde(default)]
    pub default_config: Option<DefaultConfig>,
    /// Read to refuse what Trellis cannot honour: restricted curves or cipher suites.
    #[serde(default, rename = "meshMTLS")]
    pub mesh_mtls: Option<TlsSettings>,
    #[serde(default)]
    pub tls_defaults: Option<TlsSettings>,
    /// Where captured sidecars send traffic for destinations outside the registry
    /// (a Sidecar resource's own policy wins).
    #[serde(default)]
    pub outbound_traffic_policy: Option<crate::istio::OutboundTrafficPolicy>,
    /// Every proxy's access log (`/dev/stdout`, a file), unless a Telemetry says.
    #[serde(default)]
    pub access_log_file: Option<String>,
    /// `TEXT` (default) or `JSON`.
    #[serde(default)]
    pub access_log_encoding: Option<String>,
    /// A format string (TEXT), or a JSON object of them (JSON); Istio's default when
    /// unset.
    #[serde(default)]
    pub access_log_format: Option<String>,
    /// `false` turns tracing off mesh-wide.
    #[serde(default)]
    pub enable_tracing: Option<bool>,
    /// Telemetry backends by name (Trellis reads `opentelemetry` ones).
    #[serde(default)]
    pub extension_providers: Vec<ExtensionProvider>,
    #[serde(default)]
    pub default_providers: Option<DefaultProviders>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionProvider {
    pub name: String,
    #[serde(default)]
    pub opentelemetry: Option<OpenTelemetryProvider>,
    #[serde(default)]
    pub envoy_file_access_log: Option<FileAccessLogProvider>,
    /// The other kinds (zipkin, datadog, envoyFileAccessLog, ...), by kind.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_yaml::Value>,
}

/// An OpenTelemetry collector: `service` is `host` or `namespace/host`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OpenTelemetryProvider {
    pub service: String,
    pub port: u16,
    /// OTLP over HTTP instead of gRPC: not supported, the provider is not used.
    #[serde(default)]
    pub http: Option<serde_yaml::Value>,
}

/// Envoy's file access logger: `path`, and `logFormat` `text` (a format string) or
/// `labels` (JSON: key → format string); Istio's default text without.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FileAccessLogProvider {
    pub path: String,
    #[serde(default)]
    pub log_format: Option<LogFormat>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LogFormat {
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DefaultProviders {
    #[serde(default)]
    pub tracing: Vec<String>,
    #[serde(default)]
    pub access_logging: Vec<String>,
}

/// Istio's `meshMTLS` / `tlsDefaults`. The mesh's TLS is 1.3 only, so any
/// `minProtocolVersion` is met; the curves and suites a proxy offers are BoringSSL's,
/// so a list that restricts them would be ignored: refused instead.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TlsSettings {
    #[serde(default)]
    pub min_protocol_version: Option<String>,
    #[serde(default)]
    pub ecdh_curves: Vec<String>,
    #[serde(default)]
    pub cipher_suites: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CertificateData {
    #[serde(default)]
    pub pem: Option<String>,
    #[serde(default)]
    pub spiffe_bundle_url: Option<String>,
    #[serde(default)]
    pub cert_signers: Vec<String>,
    #[serde(default)]
    pub trust_domains: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DefaultConfig {
    #[serde(default)]
    pub proxy_metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub tracing: Option<ProxyTracing>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProxyTracing {
    /// Percent of requests traced when no Telemetry resource says (Istio: 1).
    #[serde(default)]
    pub sampling: Option<f64>,
}

/// The proxy metadata keys that name a workload's signer, the first one set winning.
pub const CERT_SIGNER_KEYS: [&str; 2] = ["CERT_SIGNER", "ISTIO_META_CERT_SIGNER"];

/// The signer a `proxyMetadata` names (Istio's `CERT_SIGNER`).
pub fn cert_signer_of(metadata: &BTreeMap<String, String>) -> Option<&str> {
    CERT_SIGNER_KEYS
        .iter()
        .find_map(|k| metadata.get(*k))
        .map(String::as_str)
}

impl MeshConfig {
    /// The format meshConfig's `accessLogEncoding` and `accessLogFormat` say: Istio's
    /// default text or JSON when the format is unset.
    pub fn access_log_format(
        &self,
    ) -> Result<(Option<String>, Option<trellis_config::JsonFormat>), String> {
        let c = self;
        let json = c.access_log_encoding.as_deref() == Some("JSON");
        let format = c
            .access_log_format
            .as_deref()
            .filter(|f| !f.trim().is_empty());
        Ok(match (json, format) {
            (false, None) => (Some("istio".into()), None),
            // As istiod: a line per request.
            (false, Some(f)) if f.ends_with('\n') => (Some(f.to_string()), None),
            (false, Some(f)) => (Some(format!("{f}\n")), None),
            (true, None) => (
                None,
                Some(trellis_config::JsonFormat::Named("istio".into())),
            ),
            (true, Some(f)) => {
                let fields: BTreeMap<String, String> = serde_json::from_str(f)
                    .map_err(|e| format!("with JSON encoding, an object of format strings: {e}"))?;
                (None, Some(trellis_config::JsonFormat::Fields(fields)))
            }
        })
    }

    /// `defaultConfig.proxyMetadata`'s `CERT_SIGNER` (or `ISTIO_META_CERT_SIGNER`).
    pub fn cert_signer(&self) -> Option<&str> {
        cert_signer_of(&self.default_config.as_ref()?.proxy_metadata)
    }
}

/// The checks of a meshConfig; `prefix` is where it sits in its document.
pub(crate) fn validate(c: &MeshConfig, prefix: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if let Some(ns) = c
        .root_namespace
        .as_deref()
        .filter(|ns| *ns != crate::ROOT_NAMESPACE)
    {
        errors.push(format!(
            "{prefix}.rootNamespace: {ns:?}: Trellis's root namespace is {}; policies meant mesh-wide there would apply to one namespace",
            crate::ROOT_NAMESPACE
        ));
    }
    if let Some(mode) = c
        .outbound_traffic_policy
        .as_ref()
        .and_then(|p| p.mode.as_deref())
        .filter(|m| !matches!(*m, "REGISTRY_ONLY" | "ALLOW_ANY"))
    {
        errors.push(format!(
            "{prefix}.outboundTrafficPolicy.mode: {mode:?} is not REGISTRY_ONLY or ALLOW_ANY"
        ));
    }
    if let Some(e) = c
        .access_log_encoding
        .as_deref()
        .filter(|e| !matches!(*e, "TEXT" | "JSON"))
    {
        errors.push(format!(
            "{prefix}.accessLogEncoding: {e:?} is not TEXT or JSON"
        ));
    }
    if let Err(e) = c.access_log_format() {
        errors.push(format!("{prefix}.accessLogFormat: {e}"));
    }
    for (i, p) in c.extension_providers.iter().enumerate() {
        if let Some(f) = &p.envoy_file_access_log {
            let lf = f.log_format.as_ref();
            if f.path.is_empty() {
                errors.push(format!(
                    "{prefix}.extensionProviders[{i}].envoyFileAccessLog.path is required"
                ));
            }
            if lf.is_some_and(|l| l.text.is_some() && l.labels.is_some()) {
                errors.push(format!("{prefix}.extensionProviders[{i}].envoyFileAccessLog.logFormat: text or labels, not both"));
            }
        }
        if let Some(o) = &p.opentelemetry {
            if o.service.is_empty() || o.port == 0 {
                errors.push(format!(
                    "{prefix}.extensionProviders[{i}].opentelemetry: service and port are required"
                ));
            }
        }
    }
    if let Some(s) = c
        .default_config
        .as_ref()
        .and_then(|d| d.tracing.as_ref())
        .and_then(|t| t.sampling)
        .filter(|s| !(0.0..=100.0).contains(s))
    {
        errors.push(format!(
            "{prefix}.defaultConfig.tracing.sampling: {s} is not a percentage (0 to 100)"
        ));
    }
    for (field, tls) in [("meshMTLS", &c.mesh_mtls), ("tlsDefaults", &c.tls_defaults)] {
        let Some(tls) = tls else { continue };
        for (sub, list) in [
            ("ecdhCurves", &tls.ecdh_curves),
            ("cipherSuites", &tls.cipher_suites),
        ] {
            if !list.is_empty() {
                errors.push(format!(
                    "{prefix}.{field}.{sub}: restricting them is not supported by Trellis (its proxies offer BoringSSL's defaults); remove it"
                ));
            }
        }
    }
    if let Some(td) = &c.trust_domain {
        if !valid_trust_domain(td) {
            errors.push(format!(
                "{prefix}.trustDomain: {td:?} is not a trust domain"
            ));
        }
    }
    for (i, a) in c.trust_domain_aliases.iter().enumerate() {
        if !valid_trust_domain(a) {
            errors.push(format!(
                "{prefix}.trustDomainAliases[{i}]: {a:?} is not a trust domain"
            ));
        }
    }
    for (i, e) in c.ca_certificates.iter().enumerate() {
        let p = format!("{prefix}.caCertificates[{i}]");
        if e.spiffe_bundle_url.is_some() {
            errors.push(format!(
                "{p}.spiffeBundleUrl: fetching SPIFFE bundles is not supported by Trellis; give pem"
            ));
        }
        match &e.pem {
            Some(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => {}
            Some(_) => errors.push(format!("{p}.pem: no PEM certificate")),
            None if e.spiffe_bundle_url.is_none() => errors.push(format!("{p}.pem: required")),
            None => {}
        }
        for (j, td) in e.trust_domains.iter().enumerate() {
            if !valid_trust_domain(td) {
                errors.push(format!(
                    "{p}.trustDomains[{j}]: {td:?} is not a trust domain"
                ));
            }
        }
        for (j, s) in e.cert_signers.iter().enumerate() {
            if s.is_empty() {
                errors.push(format!("{p}.certSigners[{j}]: empty"));
            }
        }
    }
    errors
}

/// A SPIFFE trust domain: lowercase letters, digits, `.`, `-`, `_`.
pub fn valid_trust_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        })
}
