//! The kinds the test API server knows (recorded ones, the built-in ones, those of
//! applied CRDs) and the discovery documents that describe them to clients.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{json, Value};

use super::Watch;

/// What discovery says about a kind, and what the server enforces for it.
#[derive(Clone, Debug)]
pub(super) struct KindInfo {
    pub api_version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    /// Subresources: `status`, and `approval` for CertificateSigningRequests.
    pub subresources: Vec<&'static str>,
    /// A custom resource's structural schema (`openAPIV3Schema`).
    pub schema: Option<Value>,
}

pub(super) struct Collection {
    pub info: KindInfo,
    /// (namespace, name) → object, with its apiVersion and kind.
    pub items: BTreeMap<(String, String), Value>,
    /// Events (resourceVersion, object's key, line), for watches that resume from an
    /// older version.
    pub log: Vec<(u64, (String, String), Bytes)>,
    /// Watches from a version below this get 410 Expired.
    pub compacted: u64,
    pub watches: Vec<Watch>,
}

impl Collection {
    pub fn new(info: KindInfo) -> Collection {
        Collection {
            info,
            items: BTreeMap::new(),
            log: Vec::new(),
            compacted: 0,
            watches: Vec::new(),
        }
    }
}

fn plural_of(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    if let Some(stem) = lower.strip_suffix('y') {
        format!("{stem}ies")
    } else if lower.ends_with('s') {
        format!("{lower}es")
    } else {
        format!("{lower}s")
    }
}

fn path_of(api_version: &str, plural: &str) -> String {
    if api_version.contains('/') {
        format!("/apis/{api_version}/{plural}")
    } else {
        format!("/api/{api_version}/{plural}")
    }
}

/// `/api/v1/pods` for (`v1`, `Pod`); `/apis/networking.istio.io/v1/virtualservices`.
pub(super) fn collection_path(api_version: &str, kind: &str) -> String {
    path_of(api_version, &plural_of(kind))
}

const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "Node",
    "CustomResourceDefinition",
    "CertificateSigningRequest",
];

impl KindInfo {
    /// A kind known from a recorded list.
    pub fn recorded(api_version: &str, kind: &str) -> KindInfo {
        KindInfo {
            api_version: api_version.into(),
            kind: kind.into(),
            plural: plural_of(kind),
            singular: kind.to_ascii_lowercase(),
            namespaced: !CLUSTER_SCOPED.contains(&kind),
            short_names: Vec::new(),
            subresources: Vec::new(),
            schema: None,
        }
    }

    pub fn path(&self) -> String {
        path_of(&self.api_version, &self.plural)
    }

    /// The group (empty for the core group).
    pub fn group(&self) -> &str {
        self.api_version
            .split_once('/')
            .map(|(g, _)| g)
            .unwrap_or_default()
    }

    /// Built-in kinds' list items carry no apiVersion/kind; custom resources' do.
    pub fn built_in(&self) -> bool {
        let g = self.group();
        g.is_empty() || g.ends_with(".k8s.io") || !g.contains('.')
    }
}

/// The kinds every server knows.
pub(super) fn built_in() -> BTreeMap<String, Collection> {
    let kinds = [
        KindInfo {
            short_names: vec!["crd".into(), "crds".into()],
            subresources: vec!["status"],
            ..KindInfo::recorded("apiextensions.k8s.io/v1", "CustomResourceDefinition")
        },
        KindInfo {
            short_names: vec!["csr".into()],
            subresources: vec!["status", "approval"],
            ..KindInfo::recorded("certificates.k8s.io/v1", "CertificateSigningRequest")
        },
        KindInfo::recorded("v1", "Secret"),
    ];
    kinds
        .into_iter()
        .map(|k| (k.path(), Collection::new(k)))
        .collect()
}

/// The kinds a CustomResourceDefinition serves (one per served version).
pub(super) fn from_crd(crd: &Value) -> Result<Vec<KindInfo>, String> {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().ok_or("spec.group is required")?;
    let names = &spec["names"];
    let kind = names["kind"]
        .as_str()
        .ok_or("spec.names.kind is required")?;
    let plural = names["plural"]
        .as_str()
        .ok_or("spec.names.plural is required")?;
    let namespaced = match spec["scope"].as_str() {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        other => {
            return Err(format!(
                "spec.scope: {other:?} is not Namespaced or Cluster"
            ))
        }
    };
    let expected = format!("{plural}.{group}");
    if crd["metadata"]["name"].as_str() != Some(expected.as_str()) {
        return Err(format!("metadata.name: must be {expected:?}"));
    }
    let mut out = Vec::new();
    for v in spec["versions"].as_array().into_iter().flatten() {
        if v["served"] != Value::Bool(true) {
            continue;
        }
        let version = v["name"]
            .as_str()
            .ok_or("spec.versions[].name is required")?;
        let schema = v["schema"]["openAPIV3Schema"].clone();
        if schema.is_null() {
            return Err(format!(
                "spec.versions[{version}].schema.openAPIV3Schema is required"
            ));
        }
        out.push(KindInfo {
            api_version: format!("{group}/{version}"),
            kind: kind.into(),
            plural: plural.into(),
            singular: names["singular"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| kind.to_ascii_lowercase()),
            namespaced,
            short_names: names["shortNames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect(),
            subresources: if v["subresources"]["status"].is_object() {
                vec!["status"]
            } else {
                Vec::new()
            },
            schema: Some(schema),
        });
    }
    if out.is_empty() {
        return Err("spec.versions: no version is served".into());
    }
    Ok(out)
}

/// `GET /api`, `/apis`, `/api/v1`, `/apis/<group>/<version>`, `/version` and the
/// OpenAPI v3 index; None for any other path.
pub(super) fn discovery(collections: &BTreeMap<String, Collection>, path: &str) -> Option<Value> {
    let path = path.trim_end_matches('/');
    let infos = || collections.values().map(|c| &c.info);
    match path {
        "/version" => Some(json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0",
            "platform": "linux/amd64", "goVersion": "go1.24.0", "compiler": "gc",
            "gitCommit": "", "gitTreeState": "clean", "buildDate": "2025-04-23T00:00:00Z"})),
        "/api" => Some(json!({"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]})),
        "/apis" => {
            let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for i in infos() {
                if let Some((g, v)) = i.api_version.split_once('/') {
                    let versions = groups.entry(g).or_default();
                    if !versions.contains(&v) {
                        versions.push(v);
                    }
                }
            }
            let groups: Vec<Value> = groups
                .into_iter()
                .map(|(g, vs)| {
                    let versions: Vec<Value> = vs
                        .iter()
                        .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                        .collect();
                    json!({"name": g, "versions": versions, "preferredVersion": versions[0]})
                })
                .collect();
            Some(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
        }
        "/openapi/v3" => {
            // kubectl reads this index to learn that a kind's POST and PUT take
            // `fieldValidation`, and then leaves validation to the server.
            let mut paths = serde_json::Map::new();
            for i in infos() {
                let gv = group_version_path(&i.api_version);
                paths.insert(
                    gv.trim_start_matches('/').to_string(),
                    json!({"serverRelativeURL": format!("/openapi/v3{gv}")}),
                );
            }
            Some(json!({ "paths": paths }))
        }
        _ => {
            if let Some(gv) = path.strip_prefix("/openapi/v3") {
                return openapi_group(infos(), gv);
            }
            let api_version = path
                .strip_prefix("/apis/")
                .filter(|gv| gv.matches('/').count() == 1)
                .or_else(|| path.strip_prefix("/api/").filter(|v| !v.contains('/')))?;
            let mut resources = Vec::new();
            for i in infos().filter(|i| i.api_version == api_version) {
                resources.push(json!({"name": i.plural, "singularName": i.singular,
                    "namespaced": i.namespaced, "kind": i.kind, "shortNames": i.short_names,
                    "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}));
                for sub in &i.subresources {
                    resources.push(json!({"name": format!("{}/{sub}", i.plural),
                        "singularName": "", "namespaced": i.namespaced, "kind": i.kind,
                        "verbs": ["get", "patch", "update"]}));
                }
            }
            if resources.is_empty() {
                return None;
            }
            Some(json!({"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": api_version, "resources": resources}))
        }
    }
}

fn group_version_path(api_version: &str) -> String {
    if api_version.contains('/') {
        format!("/apis/{api_version}")
    } else {
        format!("/api/{api_version}")
    }
}

/// The OpenAPI v3 document of one group version: for each kind its create and update
/// operations, with the `fieldValidation` parameter and the kind they take.
fn openapi_group<'a>(infos: impl Iterator<Item = &'a KindInfo>, gv: &str) -> Option<Value> {
    let mut paths = serde_json::Map::new();
    for i in infos.filter(|i| group_version_path(&i.api_version) == gv) {
        let (group, version) = match i.api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", i.api_version.as_str()),
        };
        let gvk = json!([{"group": group, "version": version, "kind": i.kind}]);
        let op = |action: &str| {
            json!({"x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk[0],
                   "parameters": [{"name": "fieldValidation", "in": "query",
                                   "schema": {"type": "string", "uniqueItems": true}}],
                   "responses": {}})
        };
        let ns = if i.namespaced {
            "/namespaces/{namespace}"
        } else {
            ""
        };
        paths.insert(
            format!("{gv}{ns}/{}", i.plural),
            json!({"post": op("post"), "get": op("list")}),
        );
        paths.insert(
            format!("{gv}{ns}/{}/{{name}}", i.plural),
            json!({"put": op("put"), "patch": op("patch"), "get": op("get")}),
        );
    }
    if paths.is_empty() {
        return None;
    }
    Some(
        json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.33.0"},
                "paths": paths, "components": {"schemas": {}}}),
    )
}
