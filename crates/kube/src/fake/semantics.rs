//! What the API server enforces beyond storage: a custom resource pruned and checked
//! against its CRD's structural schema, and the rules of CertificateSigningRequests
//! (kubernetes/pkg/registry/certificates/certificates/strategy.go and
//! pkg/apis/certificates/validation).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{Map, Value};

use super::kinds::KindInfo;

/// A refusal: the API server's Status object (its `code` is the HTTP status).
pub(super) type Refusal = Value;

/// 422 Invalid with one cause per `field: message`, as kubectl prints them.
fn invalid(info: &KindInfo, name: &str, causes: &[String]) -> Refusal {
    let group = info.group();
    let kind = if group.is_empty() {
        info.kind.clone()
    } else {
        format!("{}.{group}", info.kind)
    };
    let mut s = super::status(
        422,
        "Invalid",
        &format!("{kind} {name:?} is invalid: {}", causes.join(", ")),
    );
    let causes: Vec<Value> = causes
        .iter()
        .map(|c| {
            let (field, message) = c.split_once(": ").unwrap_or(("", c));
            serde_json::json!({"reason": "FieldValueInvalid", "message": message, "field": field})
        })
        .collect();
    s["details"] =
        serde_json::json!({"name": name, "group": group, "kind": info.kind, "causes": causes});
    s
}

/// Checks a new object of `info`'s kind and sets what the server sets on create.
pub(super) fn on_create(info: &KindInfo, object: &mut Value, user: &str) -> Result<(), Refusal> {
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if info.subresources.contains(&"status") {
        // Status is the controllers' to write, through the subresource.
        if let Some(o) = object.as_object_mut() {
            o.remove("status");
        }
    }
    if info.kind == "CertificateSigningRequest" {
        let spec = &mut object["spec"];
        spec["username"] = user.into();
        spec["groups"] = serde_json::json!(["system:authenticated"]);
        let mut causes = Vec::new();
        if !spec["request"]
            .as_str()
            .and_then(|r| B64.decode(r).ok())
            .is_some_and(|pem| is_pem(&pem, "CERTIFICATE REQUEST"))
        {
            causes.push("spec.request: Invalid value: []byte{...}: must be a PEM-encoded CSR with one CERTIFICATE REQUEST block".into());
        }
        if spec["signerName"].as_str().is_none_or(|s| !s.contains('/')) {
            causes.push(format!(
                "spec.signerName: Invalid value: {}: must be a fully qualified domain and path of the form 'example.com/signer-name'",
                spec["signerName"]
            ));
        }
        if spec["usages"].as_array().is_none_or(|u| u.is_empty()) {
            causes.push("spec.usages: Required value".into());
        }
        if let Some(e) = spec.get("expirationSeconds").filter(|e| !e.is_null()) {
            if e.as_i64().is_none_or(|s| s < 600) {
                causes.push(format!(
                    "spec.expirationSeconds: Invalid value: {e}: may not specify a duration less than 600 seconds (10 minutes)"
                ));
            }
        }
        if !causes.is_empty() {
            return Err(invalid(info, &name, &causes));
        }
    }
    check_schema(info, object, &name)
}

/// The object an update of `sub` (None: the main resource) makes of `old` with the
/// client's `new`.
pub(super) fn on_update(
    info: &KindInfo,
    sub: Option<&str>,
    old: &Value,
    mut new: Value,
) -> Result<Value, Refusal> {
    let name = old["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let has_status = info.subresources.contains(&"status");
    match sub {
        None if has_status => new["status"] = old["status"].clone(),
        None => {}
        Some(_) => {
            // A subresource changes status only; the rest stays as stored.
            let status = new["status"].take();
            new = old.clone();
            new["status"] = status;
        }
    }
    if info.kind == "CertificateSigningRequest" {
        new["spec"] = old["spec"].clone();
        csr_status(info, sub, old, &mut new, &name)?;
    }
    if let Some(o) = new.as_object_mut() {
        if o.get("status").is_some_and(Value::is_null) {
            o.remove("status");
        }
    }
    check_schema(info, &mut new, &name)?;
    Ok(new)
}

fn conditions(o: &Value) -> Vec<Value> {
    o["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn is_approval(c: &Value) -> bool {
    matches!(c["type"].as_str(), Some("Approved" | "Denied"))
}

/// `status` may not touch Approved/Denied (they are kept as they were); `approval`
/// may touch nothing else; the certificate is set once, as PEM, never with Denied or
/// Failed, and Approved and Denied exclude each other.
fn csr_status(
    info: &KindInfo,
    sub: Option<&str>,
    old: &Value,
    new: &mut Value,
    name: &str,
) -> Result<(), Refusal> {
    let (old_c, new_c) = (conditions(old), conditions(new));
    let merged: Vec<Value> = match sub {
        Some("approval") => {
            new["status"]["certificate"] = old["status"]["certificate"].clone();
            let mut c: Vec<Value> = old_c.iter().filter(|c| !is_approval(c)).cloned().collect();
            c.extend(new_c.iter().filter(|c| is_approval(c)).cloned());
            c
        }
        _ => {
            let mut c: Vec<Value> = old_c.iter().filter(|c| is_approval(c)).cloned().collect();
            c.extend(new_c.iter().filter(|c| !is_approval(c)).cloned());
            c
        }
    };
    let has = |t: &str| {
        merged
            .iter()
            .any(|c| c["type"] == t && c["status"] == "True")
    };
    let mut causes = Vec::new();
    if has("Approved") && has("Denied") {
        causes.push(
            "status.conditions[1].type: Invalid value: \"Denied\": Approved and Denied conditions are mutually exclusive"
                .to_string(),
        );
    }
    let (old_cert, new_cert) = (&old["status"]["certificate"], &new["status"]["certificate"]);
    if !old_cert.is_null() && old_cert != new_cert {
        causes.push(
            "status.certificate: Forbidden: updates may not modify existing certificate content"
                .into(),
        );
    }
    if !new_cert.is_null() && old_cert.is_null() {
        let pem = new_cert.as_str().and_then(|c| B64.decode(c).ok());
        if !pem.is_some_and(|p| is_pem(&p, "CERTIFICATE")) {
            causes.push("status.certificate: Invalid value: \"<certificate data>\": must contain at least one CERTIFICATE PEM block".into());
        }
        if has("Denied") || has("Failed") {
            causes.push(
                "status.certificate: Forbidden: certificate cannot be set on a denied or failed request"
                    .into(),
            );
        }
        if !has("Approved") {
            causes.push(
                "status.certificate: Forbidden: certificate can only be set on an approved request"
                    .into(),
            );
        }
    }
    if !causes.is_empty() {
        return Err(invalid(info, name, &causes));
    }
    if merged.is_empty() {
        if let Some(s) = new["status"].as_object_mut() {
            s.remove("conditions");
        }
    } else {
        new["status"]["conditions"] = Value::Array(merged);
    }
    Ok(())
}

/// Whether `bytes` hold PEM blocks, all of type `label`, and at least one.
fn is_pem(bytes: &[u8], label: &str) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut blocks = 0;
    let mut rest = text.trim();
    while !rest.is_empty() {
        let Some(body) = rest.strip_prefix(&begin) else {
            return false;
        };
        let Some((data, after)) = body.split_once(&end) else {
            return false;
        };
        let data: String = data.split_whitespace().collect();
        if data.is_empty() || B64.decode(data).is_err() {
            return false;
        }
        blocks += 1;
        rest = after.trim();
    }
    blocks > 0
}

/// Prunes fields the CRD's schema does not declare and refuses values of the wrong
/// type, missing required fields and values outside an enum, as a structural schema
/// does.
fn check_schema(info: &KindInfo, object: &mut Value, name: &str) -> Result<(), Refusal> {
    let Some(schema) = &info.schema else {
        return Ok(());
    };
    let mut causes = Vec::new();
    let Some(o) = object.as_object_mut() else {
        return Err(invalid(info, name, &["body: must be an object".into()]));
    };
    let props = &schema["properties"];
    let keys: Vec<String> = o.keys().cloned().collect();
    for k in keys {
        if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        match props.get(&k) {
            Some(s) => walk(s, o.get_mut(&k).unwrap(), &k, &mut causes),
            None if schema["x-kubernetes-preserve-unknown-fields"] == true => {}
            None => {
                o.remove(&k);
            }
        }
    }
    required(schema, o, "", &mut causes);
    if causes.is_empty() {
        Ok(())
    } else {
        Err(invalid(info, name, &causes))
    }
}

fn required(schema: &Value, o: &Map<String, Value>, path: &str, causes: &mut Vec<String>) {
    for r in schema["required"].as_array().into_iter().flatten() {
        if let Some(r) = r.as_str() {
            if !o.contains_key(r) {
                let p = if path.is_empty() {
                    r.to_string()
                } else {
                    format!("{path}.{r}")
                };
                causes.push(format!("{p}: Required value"));
            }
        }
    }
}

fn walk(schema: &Value, v: &mut Value, path: &str, causes: &mut Vec<String>) {
    if v.is_null() && schema["nullable"] == true {
        return;
    }
    let int_or_string = schema["x-kubernetes-int-or-string"] == true;
    let ty = schema["type"].as_str().unwrap_or_default();
    let ok = match ty {
        _ if int_or_string => v.is_string() || v.is_i64() || v.is_u64(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        _ => true,
    };
    if !ok {
        let got = match v {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_f64() => "number",
            Value::Number(_) => "integer",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        causes.push(format!(
            "{path}: Invalid value: \"{got}\": {path} in body must be of type {ty}: \"{got}\""
        ));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(v) {
            let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
            causes.push(format!(
                "{path}: Unsupported value: {v}: supported values: {}",
                list.join(", ")
            ));
        }
    }
    if let (Some(min), Some(n)) = (schema["minimum"].as_i64(), v.as_i64()) {
        if n < min {
            causes.push(format!(
                "{path}: Invalid value: {n}: {path} in body should be greater than or equal to {min}"
            ));
        }
    }
    match v {
        Value::Object(o) => {
            let props = &schema["properties"];
            let preserve = schema["x-kubernetes-preserve-unknown-fields"] == true;
            let additional = &schema["additionalProperties"];
            let keys: Vec<String> = o.keys().cloned().collect();
            for k in keys {
                let sub = format!("{path}.{k}");
                match props.get(&k) {
                    Some(s) => walk(s, o.get_mut(&k).unwrap(), &sub, causes),
                    None if additional.is_object() => {
                        walk(additional, o.get_mut(&k).unwrap(), &sub, causes)
                    }
                    None if preserve || additional == &Value::Bool(true) => {}
                    None => {
                        o.remove(&k);
                    }
                }
            }
            required(schema, o, path, causes);
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                walk(&schema["items"], item, &format!("{path}[{i}]"), causes);
            }
        }
        _ => {}
    }
}
