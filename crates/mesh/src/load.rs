//! Reading Istio resources from YAML files: each document is accepted, accepted with
//! warnings naming the fields Trellis ignores, or refused with the file, the resource
//! and the field at fault. A refused document never affects the others.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_yaml::Value;

use crate::annotations::{parse_go_bool, DRY_RUN};
use crate::fail_closed;
use crate::inputs::{Diagnostic, Loaded, Resource};
use crate::istio::*;
use crate::validate;

const NETWORKING: &[&str] = &[
    "networking.istio.io/v1",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1alpha3",
];
const SECURITY: &[&str] = &["security.istio.io/v1", "security.istio.io/v1beta1"];
const TRELLIS: &str = "trellis.io/v1alpha1";
const TELEMETRY: &[&str] = &["telemetry.istio.io/v1", "telemetry.istio.io/v1alpha1"];
const GATEWAY_API: &[&str] = &[
    "gateway.networking.k8s.io/v1",
    "gateway.networking.k8s.io/v1beta1",
    // TLSRoute's and TCPRoute's versions.
    "gateway.networking.k8s.io/v1alpha2",
    "gateway.networking.k8s.io/v1alpha3",
];

/// Every `*.yaml` / `*.yml` file under `dir` (not recursive), in name order.
pub fn load_dir(dir: &Path) -> Result<Loaded, String> {
    let mut loaded = Loaded::default();
    load_dir_into(dir, &mut loaded)?;
    validate::cross_check(&mut loaded);
    Ok(loaded)
}

/// Adds `dir`'s files to `loaded`; call [`cross_check`](crate::cross_check) after the last.
pub fn load_dir_into(dir: &Path, loaded: &mut Loaded) -> Result<(), String> {
    load_dir_cached(dir, loaded, None)
}

/// As [`load_dir_into`]; with a cache, unchanged documents are not parsed again.
pub fn load_dir_cached(
    dir: &Path,
    loaded: &mut Loaded,
    cache: Option<&mut DocCache>,
) -> Result<(), String> {
    let mut fresh = DocCache::default();
    let cache = cache.unwrap_or(&mut fresh);
    cache.refresh(dir)?;
    cache.load_into(dir, loaded);
    Ok(())
}

/// Parsed documents by file and position, with a hash of their text, so that a reload
/// parses only the documents that changed (one edited endpoint among 100 000 documents
/// costs one parse, not 100 000), and can tell what changed.
#[derive(Default)]
pub struct DocCache {
    /// Per file, per document position: the hash of its text and what it gave.
    files: HashMap<String, Vec<(u64, Arc<Loaded>)>>,
    /// Per directory, its files at the last refresh in name order.
    listing: HashMap<std::path::PathBuf, Vec<String>>,
    seen: HashSet<String>,
    changes: Vec<DocChange>,
}

/// One document that differs from the last read: what it gave before and what it
/// gives now (`None`: there was or is no document at that place). Shared with the
/// cache, so recording a change copies nothing.
#[derive(Clone, Debug)]
pub struct DocChange {
    pub before: Option<Arc<Loaded>>,
    pub after: Option<Arc<Loaded>>,
}

impl DocCache {
    /// Reads every `*.yaml` / `*.yml` file of `dir`, parsing only documents whose
    /// text changed; the changes are kept for [`take_changes`](Self::take_changes).
    pub fn refresh(&mut self, dir: &Path) -> Result<(), String> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
            .collect();
        files.sort();
        let mut names = Vec::with_capacity(files.len());
        for file in files {
            let name = file.display().to_string();
            match std::fs::read_to_string(&file) {
                Ok(text) => self.refresh_text(&text, &name),
                Err(e) => {
                    // Counted as one refused document, so the file's old documents go.
                    let mut fragment = Loaded::default();
                    fragment.refused.push(Diagnostic {
                        resource: name.clone(),
                        message: format!("cannot read: {e}"),
                        key: None,
                    });
                    self.seen.insert(name.clone());
                    self.forget(&name, 0);
                    self.set(&name, 0, 0, fragment);
                }
            }
            names.push(name);
        }
        self.listing.insert(dir.to_path_buf(), names);
        Ok(())
    }

    /// Adds what `dir`'s documents gave at the last refresh to `loaded`.
    pub fn load_into(&self, dir: &Path, loaded: &mut Loaded) {
        for file in self.listing.get(dir).into_iter().flatten() {
            for (_, fragment) in self.files.get(file).into_iter().flatten() {
                loaded.extend_from(fragment);
            }
        }
    }

    /// Forgets files that no refresh read since the last sweep (their documents count
    /// as removed).
    pub fn sweep(&mut self) {
        let seen = std::mem::take(&mut self.seen);
        let gone: Vec<String> = self
            .files
            .keys()
            .filter(|f| !seen.contains(*f))
            .cloned()
            .collect();
        for f in gone {
            self.forget(&f, 0);
            self.files.remove(&f);
        }
        self.listing
            .retain(|_, files| files.iter().all(|f| self.files.contains_key(f)));
    }

    /// The documents that changed since the last call.
    pub fn take_changes(&mut self) -> Vec<DocChange> {
        std::mem::take(&mut self.changes)
    }

    /// Drops `file`'s documents from position `from` on, recording them as removed.
    fn forget(&mut self, file: &str, from: usize) {
        let Some(cached) = self.files.get_mut(file) else {
            return;
        };
        for (_, before) in cached.drain(from.min(cached.len())..) {
            self.changes.push(DocChange {
                before: Some(before),
                after: None,
            });
        }
    }

    /// Sets the document at position `i` of `file` (at most one past its last),
    /// recording the change.
    fn set(&mut self, file: &str, i: usize, hash: u64, fragment: Loaded) {
        let fragment = Arc::new(fragment);
        let cached = self.files.entry(file.to_string()).or_default();
        let before = if i < cached.len() {
            Some(std::mem::replace(&mut cached[i], (hash, fragment.clone())).1)
        } else {
            cached.push((hash, fragment.clone()));
            None
        };
        self.changes.push(DocChange {
            before,
            after: Some(fragment),
        });
    }

    fn refresh_text(&mut self, text: &str, file: &str) {
        self.seen.insert(file.to_string());
        let docs = documents(text);
        self.forget(file, docs.len());
        let cached = self.files.entry(file.to_string()).or_default();
        let changed: Vec<(usize, u64, &str)> = docs
            .into_iter()
            .enumerate()
            .map(|(i, doc)| (i, xxhash_rust::xxh3::xxh3_64(doc.as_bytes()), doc))
            .filter(|(i, hash, _)| cached.get(*i).is_none_or(|(h, _)| h != hash))
            .collect();
        for (i, hash, doc) in changed {
            let source = format!("{file}#{}", i + 1);
            let mut fragment = Loaded::default();
            match serde_yaml::from_str::<Value>(doc) {
                Ok(Value::Null) => {}
                Ok(v) => load_value(v, &source, &mut fragment),
                Err(e) => fragment.refused.push(Diagnostic {
                    resource: source,
                    message: format!("not YAML: {e}"),
                    key: None,
                }),
            }
            self.set(file, i, hash, fragment);
        }
    }
}

/// The documents of a YAML stream: split at `---` lines (a document marker at column 0
/// cannot be content, which is indented under its key); a leading marker opens the
/// first document.
fn documents(text: &str) -> Vec<&str> {
    // Marker lines found by substring search (a large registry has a million lines).
    let marker_end = |i: usize| -> Option<usize> {
        let eol = text[i + 3..]
            .find('\n')
            .map_or(text.len(), |n| i + 3 + n + 1);
        let tail = &text[i + 3..eol];
        (tail.trim_end().is_empty() || tail.starts_with(' ')).then_some(eol)
    };
    // Search on from the newline that ends a marker, so the next line can be one.
    let after = |end: usize| end - usize::from(end > 0 && text.as_bytes()[end - 1] == b'\n');
    let mut markers = Vec::new();
    let mut from = 0;
    if text.starts_with("---") {
        if let Some(end) = marker_end(0) {
            markers.push((0, end));
            from = after(end);
        }
    }
    let finder = memchr::memmem::Finder::new("\n---");
    while let Some(n) = finder.find(&text.as_bytes()[from..]) {
        let line = from + n + 1;
        from = line;
        if let Some(end) = marker_end(line) {
            markers.push((line, end));
            from = after(end);
        }
    }
    let mut docs = Vec::new();
    let mut start = 0;
    for (line, end) in markers {
        if line > 0 {
            docs.push(&text[start..line]);
        }
        start = end;
    }
    if start < text.len() || docs.is_empty() {
        docs.push(&text[start..]);
    }
    docs
}

/// Adds the documents of one file to `loaded`.
pub fn load_str(text: &str, file: &str, loaded: &mut Loaded) {
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let source = format!("{file}#{}", i + 1);
        let value = match Value::deserialize(doc) {
            Ok(Value::Null) => continue,
            Ok(v) => v,
            Err(e) => {
                // The parser cannot resync after a syntax error: the rest of the file
                // is refused with this document.
                loaded.refused.push(Diagnostic {
                    resource: source,
                    message: format!(
                        "not YAML (this document and the rest of the file are refused): {e}"
                    ),
                    key: None,
                });
                break;
            }
        };
        load_value(value, &source, loaded);
    }
}

/// Adds one resource already parsed (a Kubernetes object) to `loaded`; `source`
/// names where it came from in diagnostics.
pub fn load_value(value: Value, source: &str, loaded: &mut Loaded) {
    let stand_in = fail_closed::stand_in(&value);
    let meta = stand_in.as_ref().and_then(|_| {
        value
            .get("metadata")
            .and_then(|m| serde_yaml::from_value::<Metadata>(m.clone()).ok())
    });
    if let Err(d) = load_doc(value, source, loaded) {
        if let (Some(spec), Some((_, namespace, name))) = (stand_in, &d.key) {
            let meta = meta.unwrap_or_default();
            loaded.inputs.fail_closed.push(Resource {
                name: name.clone(),
                namespace: namespace.clone(),
                labels: meta.labels,
                annotations: meta.annotations,
                spec,
                source: d.resource.clone(),
            });
        }
        loaded.refused.push(d);
    }
}

fn load_doc(value: Value, source: &str, loaded: &mut Loaded) -> Result<(), Diagnostic> {
    let refuse = |resource: &str, message: String| Diagnostic {
        resource: resource.to_string(),
        message,
        key: None,
    };
    let Value::Mapping(map) = value else {
        return Err(refuse(
            source,
            "a resource must be a mapping with apiVersion, kind, metadata and spec".into(),
        ));
    };
    let field = |k: &str| map.get(Value::String(k.into()));
    let text = |k: &str| {
        field(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let (api, kind) = (text("apiVersion"), text("kind"));
    if kind.is_empty() || api.is_empty() {
        return Err(refuse(source, "apiVersion and kind are required".into()));
    }
    let meta: Metadata = match field("metadata") {
        Some(m) => serde_yaml::from_value(m.clone())
            .map_err(|e| refuse(source, format!("{kind}: metadata: {e}")))?,
        None => return Err(refuse(source, format!("{kind}: metadata.name is required"))),
    };
    if meta.name.is_empty() {
        return Err(refuse(source, format!("{kind}: metadata.name is required")));
    }
    if mesh_config(&api, &kind, &meta, &map, source, loaded)? {
        return Ok(());
    }
    // A Namespace gives its labels (the Gateway API's and Tenants' namespace
    // selectors read them), as the cluster's do in Kubernetes mode.
    if api == "v1" && kind == "Secret" {
        let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
        let resource = format!("{source} Secret {namespace}/{}", meta.name);
        match crate::credentials::from_secret(&map) {
            Ok(Some(credential)) => loaded.inputs.credentials.push(Resource {
                name: meta.name.clone(),
                namespace,
                labels: meta.labels.clone(),
                annotations: Default::default(),
                spec: credential,
                source: resource,
            }),
            Ok(None) => {}
            Err(message) => {
                return Err(Diagnostic {
                    resource,
                    message,
                    key: Some(("Secret".into(), namespace, meta.name.clone())),
                })
            }
        }
        return Ok(());
    }
    if api == "v1" && kind == "Namespace" {
        loaded
            .inputs
            .namespace_labels
            .insert(meta.name.clone(), meta.labels.clone());
        return Ok(());
    }
    let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
    // A Tenant and a GatewayClass are cluster-scoped: named without a namespace.
    let resource = if kind == "Tenant" || kind == "GatewayClass" {
        format!("{source} {kind} {}", meta.name)
    } else {
        format!("{source} {kind} {namespace}/{}", meta.name)
    };
    // The Gateway API's kinds are keyed with their group: its Gateway is not Istio's.
    let key_kind = if GATEWAY_API.contains(&api.as_str()) {
        format!("{kind}.gateway.networking.k8s.io")
    } else {
        kind.clone()
    };
    let key = Some((key_kind, namespace.clone(), meta.name.clone()));
    let refuse = |resource: &str, message: String| Diagnostic {
        resource: resource.to_string(),
        message,
        key: key.clone(),
    };
    for key in map.keys().filter_map(|k| k.as_str()) {
        if !matches!(key, "apiVersion" | "kind" | "metadata" | "spec" | "status") {
            loaded.warnings.push(refuse(
                &resource,
                format!("{key} is not supported by Trellis; ignored"),
            ));
        }
    }
    let spec = field("spec")
        .cloned()
        .unwrap_or(Value::Mapping(Default::default()));
    let group = if NETWORKING.contains(&api.as_str()) {
        "networking"
    } else if SECURITY.contains(&api.as_str()) {
        "security"
    } else if api == TRELLIS {
        "trellis"
    } else if TELEMETRY.contains(&api.as_str()) {
        "telemetry"
    } else if GATEWAY_API.contains(&api.as_str()) {
        "gateway"
    } else {
        return Err(refuse(&resource, format!("apiVersion {api} is not one Trellis reads (networking.istio.io/v1, security.istio.io/v1, telemetry.istio.io/v1, gateway.networking.k8s.io/v1, trellis.io/v1alpha1)")));
    };
    // An ignored field of a security resource could widen access: refuse instead. A
    // Gateway's TLS settings (client certificate pinning, say) are security settings too.
    // The Gateway API is read strictly too: what its CRDs define and Trellis does not
    // read would route differently if ignored.
    // Telemetry changes what is observed, not who may reach what: read leniently.
    let strict = !matches!(group, "networking" | "telemetry") || kind == "Gateway";
    if let Some(value) = meta.annotations.get(DRY_RUN) {
        let action = spec
            .get("action")
            .and_then(Value::as_str)
            .unwrap_or("ALLOW");
        if kind != "AuthorizationPolicy" {
            return Err(refuse(&resource, format!("metadata.annotations.{DRY_RUN}: only an AuthorizationPolicy can be dry-run; remove the annotation")));
        }
        if parse_go_bool(value).is_none() {
            return Err(refuse(
                &resource,
                format!("metadata.annotations.{DRY_RUN}: {value:?} is not a boolean"),
            ));
        }
        if !matches!(action, "ALLOW" | "DENY") {
            return Err(refuse(&resource, format!("metadata.annotations.{DRY_RUN}: only ALLOW and DENY policies can be dry-run, not {action}")));
        }
    }
    let interception = meta
        .annotations
        .get(crate::annotations::INTERCEPTION_MODE)
        .filter(|_| kind == "WorkloadEntry");
    if let Some(mode) = interception {
        let annotation = crate::annotations::INTERCEPTION_MODE;
        if mode == "TPROXY" {
            return Err(refuse(&resource, format!("metadata.annotations.{annotation}: TPROXY is not supported by Trellis (its capture is REDIRECT)")));
        } else if !matches!(mode.as_str(), "REDIRECT" | "NONE") {
            return Err(refuse(
                &resource,
                format!(
                    "metadata.annotations.{annotation}: {mode:?} is not REDIRECT, TPROXY or NONE"
                ),
            ));
        }
    }
    if let Some(list) = meta
        .annotations
        .get(crate::annotations::ADDITIONAL_ADDRESSES)
        .filter(|_| kind == "WorkloadEntry")
    {
        let annotation = crate::annotations::ADDITIONAL_ADDRESSES;
        for a in list.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            if a.parse::<std::net::IpAddr>().is_err() {
                return Err(refuse(
                    &resource,
                    format!("metadata.annotations.{annotation}: {a:?} is not an IP address"),
                ));
            }
        }
    }
    macro_rules! accept {
        ($field:ident, $check:path) => {{
            if let Some(first) = crate::unhonoured::refusals(&kind, &spec).into_iter().next() {
                return Err(refuse(&resource, first));
            }
            let parsed = parse(&spec, &resource, strict, &mut loaded.warnings)
                .map_err(|d| refuse(&resource, d.message))?;
            let errors = $check(&parsed);
            if let Some(first) = errors.into_iter().next() {
                return Err(refuse(&resource, first));
            }
            for note in crate::unhonoured::notes(&kind, &spec) {
                loaded.warnings.push(refuse(&resource, note));
            }
            loaded.inputs.$field.push(Resource {
                name: meta.name.clone(),
                namespace,
                labels: meta.labels.clone(),
                annotations: meta.annotations.clone(),
                spec: parsed,
                source: resource.clone(),
            });
        }};
    }
    match (group, kind.as_str()) {
        ("networking", "VirtualService") => accept!(virtual_services, validate::virtual_service),
        ("networking", "DestinationRule") => accept!(destination_rules, validate::destination_rule),
        ("networking", "ServiceEntry") => accept!(service_entries, validate::service_entry),
        ("networking", "WorkloadEntry") => accept!(workload_entries, validate::workload_entry),
        ("networking", "Sidecar") => accept!(sidecars, validate::sidecar),
        ("networking", "Gateway") => accept!(gateways, crate::gateway::validate),
        ("security", "PeerAuthentication") => {
            accept!(peer_authentications, validate::peer_authentication)
        }
        ("security", "AuthorizationPolicy") => {
            accept!(authorization_policies, validate::authorization_policy)
        }
        ("security", "RequestAuthentication") => {
            accept!(request_authentications, validate::request_authentication)
        }
        ("trellis", "Tenant") => accept!(tenants, crate::tenant::validate),
        ("telemetry", "Telemetry") => accept!(telemetries, crate::telemetry_api::validate),
        ("gateway", "GatewayClass") => {
            accept!(k8s_gateway_classes, crate::gateway_api::gateway_class)
        }
        ("gateway", "Gateway") => accept!(k8s_gateways, crate::gateway_api::gateway),
        ("gateway", "HTTPRoute") => accept!(http_routes, crate::gateway_api::http_route),
        ("gateway", "GRPCRoute") => accept!(grpc_routes, crate::gateway_api::grpc_route),
        ("gateway", "TLSRoute") => accept!(tls_routes, crate::gateway_api::tls_route),
        ("gateway", "TCPRoute") => accept!(tcp_routes, crate::gateway_api::tcp_route),
        ("gateway", "ReferenceGrant") => {
            accept!(reference_grants, crate::gateway_api::reference_grant)
        }
        ("gateway", other) => {
            return Err(refuse(
                &resource,
                format!("kind {other} of the Gateway API is not supported by Trellis yet (GatewayClass, Gateway, HTTPRoute, GRPCRoute, TLSRoute, TCPRoute and ReferenceGrant are)"),
            ))
        }
        _ => {
            return Err(refuse(
                &resource,
                format!("kind {kind} ({api}) is not supported by Trellis"),
            ))
        }
    }
    Ok(())
}

/// Reads a ConfigMap or an IstioOperator document: `Ok(false)` when it is not one of
/// those kinds; a refusal names the field.
fn mesh_config(
    api: &str,
    kind: &str,
    meta: &Metadata,
    doc: &serde_yaml::Mapping,
    source: &str,
    loaded: &mut Loaded,
) -> Result<bool, Diagnostic> {
    let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
    let resource = format!("{source} {kind} {namespace}/{}", meta.name);
    let refuse = |message: String| Diagnostic {
        resource: resource.clone(),
        message,
        key: Some(("MeshConfig".into(), namespace.clone(), meta.name.clone())),
    };
    let field = |k: &str| doc.get(Value::String(k.into()));
    let (value, prefix) = match (api, kind) {
        ("v1", "ConfigMap") => {
            if meta.name != "istio" || namespace != crate::ROOT_NAMESPACE {
                return Err(refuse(format!(
                    "of ConfigMaps only istio-system/istio (Istio's meshConfig) is read; this is {namespace}/{}",
                    meta.name
                )));
            }
            if let Some(Value::Mapping(data)) = field("data") {
                for k in data
                    .keys()
                    .filter_map(Value::as_str)
                    .filter(|k| *k != "mesh")
                {
                    loaded
                        .warnings
                        .push(refuse(format!("data.{k} is not read by Trellis; ignored")));
                }
            }
            let text = field("data")
                .and_then(|d| d.get("mesh"))
                .and_then(Value::as_str)
                .ok_or_else(|| refuse("data.mesh: missing (the meshConfig as YAML)".into()))?;
            let value: Value = serde_yaml::from_str(text)
                .map_err(|e| refuse(format!("data.mesh: not YAML: {e}")))?;
            (value, "data.mesh")
        }
        ("install.istio.io/v1alpha1", "IstioOperator") => {
            let spec = field("spec").cloned().unwrap_or(Value::Null);
            if let Value::Mapping(m) = &spec {
                for k in m
                    .keys()
                    .filter_map(Value::as_str)
                    .filter(|k| *k != "meshConfig")
                {
                    loaded.warnings.push(refuse(format!(
                        "spec.{k}: install-time settings are not read by Trellis; ignored"
                    )));
                }
            }
            let mesh = spec.get("meshConfig").cloned().unwrap_or(Value::Null);
            (mesh, "spec.meshConfig")
        }
        _ => return Ok(false),
    };
    let value = match value {
        Value::Null => Value::Mapping(Default::default()),
        v => v,
    };
    let mut ignored = Vec::new();
    let mut note = |p: serde_ignored::Path| ignored.push(crate::load::field_path(&p));
    let de = serde_ignored::Deserializer::new(value, &mut note);
    let config: crate::mesh_config::MeshConfig = serde_path_to_error::deserialize(de)
        .map_err(|e| refuse(format!("{prefix}.{}: {}", e.path(), e.inner())))?;
    for p in ignored {
        loaded.warnings.push(refuse(format!(
            "{prefix}.{p} is not read by Trellis (of meshConfig it reads trustDomain, trustDomainAliases, caCertificates, outboundTrafficPolicy and defaultConfig.proxyMetadata.CERT_SIGNER); ignored"
        )));
    }
    if let Some(first) = crate::mesh_config::validate(&config, prefix)
        .into_iter()
        .next()
    {
        return Err(refuse(first));
    }
    loaded.inputs.mesh_config.push(Resource {
        name: meta.name.clone(),
        namespace,
        labels: meta.labels.clone(),
        annotations: meta.annotations.clone(),
        spec: config,
        source: resource.clone(),
    });
    Ok(true)
}

/// Deserializes `spec`, reporting every field it had to ignore; `strict` refuses
/// instead (security resources).
fn parse<T: DeserializeOwned>(
    spec: &Value,
    resource: &str,
    strict: bool,
    warnings: &mut Vec<Diagnostic>,
) -> Result<T, Diagnostic> {
    let mut ignored = Vec::new();
    let mut note = |path: serde_ignored::Path| ignored.push(field_path(&path));
    let de = serde_ignored::Deserializer::new(spec.clone(), &mut note);
    let result: Result<T, _> = serde_path_to_error::deserialize(de);
    let parsed = result.map_err(|e| {
        let path = e.path().to_string();
        Diagnostic {
            resource: resource.to_string(),
            message: if path == "." {
                format!("spec: {}", e.inner())
            } else {
                format!("spec.{path}: {}", e.inner())
            },
            key: None,
        }
    })?;
    if strict && !ignored.is_empty() {
        return Err(Diagnostic {
            resource: resource.to_string(),
            message: format!(
                "{} not supported by Trellis yet; a security resource is refused rather than \
                 read without what it says",
                ignored
                    .iter()
                    .map(|p| format!("spec.{p}"))
                    .collect::<Vec<_>>()
                    .join(", ")
                    + if ignored.len() == 1 { " is" } else { " are" }
            ),
            key: None,
        });
    }
    for path in ignored {
        warnings.push(Diagnostic {
            resource: resource.to_string(),
            message: format!("spec.{path} is not supported by Trellis yet; ignored"),
            key: None,
        });
    }
    Ok(parsed)
}

/// A path as the other messages write it: `http[0].corsPolicy`.
fn field_path(path: &serde_ignored::Path) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", field_path(parent)),
        Path::Map { parent, key } => {
            let parent = field_path(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => field_path(parent),
    }
}

#[cfg(test)]
mod tests {
    /// The line-by-line reading of YAML document markers that `documents` speeds up.
    fn by_lines(text: &str) -> Vec<&str> {
        let (mut docs, mut start, mut pos) = (Vec::new(), 0, 0);
        for line in text.split_inclusive('\n') {
            let bare = line.trim_end();
            if bare == "---" || bare.starts_with("--- ") {
                if pos > 0 {
                    docs.push(&text[start..pos]);
                }
                start = pos + line.len();
            }
            pos += line.len();
        }
        if start < text.len() || docs.is_empty() {
            docs.push(&text[start..]);
        }
        docs
    }

    #[test]
    fn documents_split_where_lines_say() {
        for text in [
            "",
            "---",
            "---\n",
            "a: 1\n",
            "---\na: 1\n---\nb: 2\n",
            "a: 1\n---\n---\nb: 2",
            "a: 1\n--- # c\nb: 2\n---\r\nc: 3\r\n",
            "a: |\n  ---\n----\nb: 2\n---x\n--- \n",
            "a: 1\n---",
            "\n---\n\n---\n",
        ] {
            assert_eq!(super::documents(text), by_lines(text), "{text:?}");
        }
    }
}
