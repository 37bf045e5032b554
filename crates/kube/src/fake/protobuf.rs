//! Kubernetes' protobuf encoding of CertificateSigningRequests and Namespaces, read into
//! JSON: kubectl's typed client (`kubectl certificate approve|deny`, `kubectl create
//! namespace`) writes them as `application/vnd.kubernetes.protobuf`. The field numbers are those of
//! k8s.io/api/certificates/v1/generated.proto and apimachinery's ObjectMeta and Time.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Map, Value};

/// The envelope's magic: `k8s\0`, then a `runtime.Unknown`.
const MAGIC: &[u8] = b"k8s\0";

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn varint(b: &[u8], i: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let c = *b.get(*i)?;
        *i += 1;
        v |= u64::from(c & 0x7f) << shift;
        if c < 0x80 {
            return Some(v);
        }
    }
    None
}

/// The fields of one message, in order; None if it is not well formed (or uses the
/// fixed-width wire types, which none of these messages do).
fn fields(b: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let key = varint(b, &mut i)?;
        let field = match key & 7 {
            0 => Field::Varint(varint(b, &mut i)?),
            2 => {
                let len = usize::try_from(varint(b, &mut i)?).ok()?;
                let v = b.get(i..i.checked_add(len)?)?;
                i += len;
                Field::Bytes(v)
            }
            _ => return None,
        };
        out.push((key >> 3, field));
    }
    Some(out)
}

fn text(b: &[u8]) -> Option<Value> {
    std::str::from_utf8(b).ok().map(|s| Value::String(s.into()))
}

fn time(b: &[u8]) -> Option<Value> {
    let mut secs = 0i64;
    for (n, f) in fields(b)? {
        if let (1, Field::Varint(v)) = (n, f) {
            secs = v as i64;
        }
    }
    Some(super::rfc3339(secs).into())
}

fn map_entry(b: &[u8], into: &mut Map<String, Value>) -> Option<()> {
    let (mut k, mut v) = (String::new(), Value::String(String::new()));
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(s)) => k = std::str::from_utf8(s).ok()?.into(),
            (2, Field::Bytes(s)) => v = text(s)?,
            _ => {}
        }
    }
    into.insert(k, v);
    Some(())
}

fn push(o: &mut Map<String, Value>, key: &str, v: Value) {
    o.entry(key)
        .or_insert_with(|| Value::Array(Vec::new()))
        .as_array_mut()
        .expect("an array")
        .push(v);
}

fn metadata(b: &[u8]) -> Option<Value> {
    let mut m = Map::new();
    let (mut labels, mut annotations) = (Map::new(), Map::new());
    for (n, f) in fields(b)? {
        let key = match n {
            1 => "name",
            2 => "generateName",
            3 => "namespace",
            5 => "uid",
            6 => "resourceVersion",
            _ => "",
        };
        match (n, f) {
            (7, Field::Varint(v)) => {
                m.insert("generation".into(), v.into());
            }
            (11, Field::Bytes(e)) => map_entry(e, &mut labels)?,
            (12, Field::Bytes(e)) => map_entry(e, &mut annotations)?,
            (_, Field::Bytes(s)) if !key.is_empty() && !s.is_empty() => {
                m.insert(key.into(), text(s)?);
            }
            _ => {}
        }
    }
    if !labels.is_empty() {
        m.insert("labels".into(), labels.into());
    }
    if !annotations.is_empty() {
        m.insert("annotations".into(), annotations.into());
    }
    Some(m.into())
}

fn spec(b: &[u8]) -> Option<Value> {
    let mut s = Map::new();
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(r)) => {
                s.insert("request".into(), B64.encode(r).into());
            }
            (2, Field::Bytes(u)) => {
                s.insert("username".into(), text(u)?);
            }
            (3, Field::Bytes(u)) => {
                s.insert("uid".into(), text(u)?);
            }
            (4, Field::Bytes(g)) => push(&mut s, "groups", text(g)?),
            (5, Field::Bytes(u)) => push(&mut s, "usages", text(u)?),
            (7, Field::Bytes(n)) => {
                s.insert("signerName".into(), text(n)?);
            }
            (8, Field::Varint(e)) => {
                s.insert("expirationSeconds".into(), (e as i32).into());
            }
            _ => {}
        }
    }
    Some(s.into())
}

fn condition(b: &[u8]) -> Option<Value> {
    let mut c = Map::new();
    for (n, f) in fields(b)? {
        let Field::Bytes(v) = f else { continue };
        let (key, value) = match n {
            1 => ("type", text(v)?),
            2 => ("reason", text(v)?),
            3 => ("message", text(v)?),
            4 => ("lastUpdateTime", time(v)?),
            5 => ("lastTransitionTime", time(v)?),
            6 => ("status", text(v)?),
            _ => continue,
        };
        if !(value == "" || v.is_empty() && key.starts_with("last")) {
            c.insert(key.into(), value);
        }
    }
    Some(c.into())
}

fn status(b: &[u8]) -> Option<Value> {
    let mut s = Map::new();
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(c)) => push(&mut s, "conditions", condition(c)?),
            (2, Field::Bytes(c)) if !c.is_empty() => {
                s.insert("certificate".into(), B64.encode(c).into());
            }
            _ => {}
        }
    }
    Some(s.into())
}

/// A protobuf-encoded CertificateSigningRequest (or a Namespace's metadata) as JSON;
/// Err says why not.
pub(super) fn to_json(body: &[u8]) -> Result<Value, String> {
    let bad = || "not a protobuf-encoded CertificateSigningRequest".to_string();
    let envelope = body.strip_prefix(MAGIC).ok_or_else(bad)?;
    let (mut type_meta, mut raw) = (None, None);
    for (n, f) in fields(envelope).ok_or_else(bad)? {
        match (n, f) {
            (1, Field::Bytes(t)) => type_meta = Some(t),
            (2, Field::Bytes(r)) => raw = Some(r),
            _ => {}
        }
    }
    let (mut api_version, mut kind) = (Value::Null, Value::Null);
    for (n, f) in fields(type_meta.ok_or_else(bad)?).ok_or_else(bad)? {
        match (n, f) {
            (1, Field::Bytes(a)) => api_version = text(a).ok_or_else(bad)?,
            (2, Field::Bytes(k)) => kind = text(k).ok_or_else(bad)?,
            _ => {}
        }
    }
    let csr = kind == "CertificateSigningRequest";
    if !csr && kind != "Namespace" {
        return Err(format!(
            "the test API server reads protobuf for CertificateSigningRequests and Namespaces only, not {kind}"
        ));
    }
    let mut o = json!({"apiVersion": api_version, "kind": kind});
    for (n, f) in fields(raw.ok_or_else(bad)?).ok_or_else(bad)? {
        let Field::Bytes(b) = f else { continue };
        match n {
            1 => o["metadata"] = metadata(b).ok_or_else(bad)?,
            2 if csr => o["spec"] = spec(b).ok_or_else(bad)?,
            3 if csr => o["status"] = status(b).ok_or_else(bad)?,
            _ => {}
        }
    }
    Ok(o)
}
