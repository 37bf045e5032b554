//! JSON ↔ `google.protobuf.Struct`, for the settings carried in `TypedStruct`s.
//!
//! The Struct here is our own message with the same wire format as
//! `google.protobuf.Struct`, its fields in a `BTreeMap`: the generated one keeps them in
//! a `HashMap`, so the same settings encoded twice could come out in another order,
//! with another content version, and every full rebuild re-sent every listener that
//! carries one (the inbound listeners of workloads with an AuthorizationPolicy).

use std::collections::BTreeMap;

use envoy_types::pb::google::protobuf::Any;

use serde_json::{Map, Number, Value as Json};

/// `xds.type.v3.TypedStruct`: an extension's config as a Struct, named by its type URL
/// (envoy-types does not generate the xds.type package).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TypedStruct {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<Struct>,
}

/// `google.protobuf.Struct`, encoded in key order.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Struct {
    #[prost(btree_map = "string, message", tag = "1")]
    pub fields: BTreeMap<String, Value>,
}

/// `google.protobuf.Value`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Value {
    #[prost(oneof = "Kind", tags = "1, 2, 3, 4, 5, 6")]
    pub kind: Option<Kind>,
}

/// `google.protobuf.Value.kind` (`null_value` is the enum `NullValue`, a varint). The
/// variants keep the generated type's names.
#[allow(clippy::enum_variant_names)]
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Kind {
    #[prost(int32, tag = "1")]
    NullValue(i32),
    #[prost(double, tag = "2")]
    NumberValue(f64),
    #[prost(string, tag = "3")]
    StringValue(String),
    #[prost(bool, tag = "4")]
    BoolValue(bool),
    #[prost(message, tag = "5")]
    StructValue(Struct),
    #[prost(message, tag = "6")]
    ListValue(ListValue),
}

/// `google.protobuf.ListValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListValue {
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<Value>,
}

pub fn to_struct(json: &Json) -> Struct {
    match to_value(json).kind {
        Some(Kind::StructValue(s)) => s,
        _ => Struct::default(),
    }
}

fn to_value(json: &Json) -> Value {
    let kind = match json {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(*b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Json::String(s) => Kind::StringValue(s.clone()),
        Json::Array(a) => Kind::ListValue(ListValue {
            values: a.iter().map(to_value).collect(),
        }),
        Json::Object(o) => Kind::StructValue(Struct {
            fields: o.iter().map(|(k, v)| (k.clone(), to_value(v))).collect(),
        }),
    };
    Value { kind: Some(kind) }
}

pub fn from_struct(s: &Struct) -> Json {
    Json::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), from_value(v)))
            .collect::<Map<_, _>>(),
    )
}

fn from_value(v: &Value) -> Json {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::BoolValue(b)) => Json::Bool(*b),
        Some(Kind::NumberValue(n)) => {
            // Integers were integers before they became doubles.
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                Json::Number(Number::from(*n as i64))
            } else {
                Number::from_f64(*n).map(Json::Number).unwrap_or(Json::Null)
            }
        }
        Some(Kind::StringValue(s)) => Json::String(s.clone()),
        Some(Kind::ListValue(l)) => Json::Array(l.values.iter().map(from_value).collect()),
        Some(Kind::StructValue(s)) => from_struct(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf as pb;
    use prost::Message;

    fn settings() -> Json {
        serde_json::json!({
            "policies": [{"name": "shop.ratings-admin", "action": "DENY",
                          "rules": [{"to": [{"operation": {"paths": ["/admin*"]}}]}]}],
            "zeta": null, "alpha": true, "count": 3, "ratio": 0.5,
        })
    }

    /// Equal settings encode to equal bytes, however they were built.
    #[test]
    fn encoding_is_in_key_order() {
        let a = to_struct(&settings()).encode_to_vec();
        for _ in 0..20 {
            let mut reordered = serde_json::Map::new();
            let obj = settings();
            let mut keys: Vec<_> = obj.as_object().unwrap().keys().cloned().collect();
            keys.reverse();
            for k in keys {
                reordered.insert(k.clone(), obj[&k].clone());
            }
            assert_eq!(to_struct(&Json::Object(reordered)).encode_to_vec(), a);
        }
    }

    /// The wire format is google.protobuf.Struct's: the generated type reads ours and
    /// ours reads it.
    #[test]
    fn wire_format_is_google_protobuf_struct() {
        let ours = to_struct(&settings());
        let theirs = pb::Struct::decode(ours.encode_to_vec().as_slice()).unwrap();
        let back = Struct::decode(theirs.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back, ours);
        assert_eq!(from_struct(&back), settings());
        assert!(matches!(
            theirs.fields["alpha"].kind,
            Some(pb::value::Kind::BoolValue(true))
        ));
    }
}

/// `envoy.config.rbac.v3.RBAC` with its policies in name order (the generated one keeps
/// them in a `HashMap`, and the same policies would encode in another order each time).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RbacRules {
    #[prost(int32, tag = "1")]
    pub action: i32,
    #[prost(btree_map = "string, message", tag = "2")]
    pub policies: BTreeMap<String, envoy_types::pb::envoy::config::rbac::v3::Policy>,
}

/// `envoy.extensions.filters.http.rbac.v3.RBAC`, the fields Trellis writes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HttpRbac {
    #[prost(message, optional, tag = "1")]
    pub rules: Option<RbacRules>,
    #[prost(message, optional, tag = "2")]
    pub shadow_rules: Option<RbacRules>,
    #[prost(string, tag = "3")]
    pub shadow_rules_stat_prefix: String,
}

/// `envoy.extensions.filters.network.rbac.v3.RBAC`, the fields Trellis writes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NetworkRbac {
    #[prost(message, optional, tag = "1")]
    pub rules: Option<RbacRules>,
    #[prost(message, optional, tag = "2")]
    pub shadow_rules: Option<RbacRules>,
    #[prost(string, tag = "3")]
    pub stat_prefix: String,
    #[prost(string, tag = "5")]
    pub shadow_rules_stat_prefix: String,
}

/// `json` as a TypedStruct of `type_url`, in an `Any` (how Envoy is given an extension's
/// config without its message).
pub(crate) fn typed_struct(type_url: &str, json: &serde_json::Value) -> Any {
    crate::any(
        crate::types::TYPED_STRUCT,
        &TypedStruct {
            type_url: type_url.to_string(),
            value: Some(to_struct(json)),
        },
    )
}
