//! A connection manager's or tcp_proxy's access log as Envoy's file access logger
//! (`envoy.access_loggers.file`, `FileAccessLog` with a `log_format`), as istiod writes
//! it for meshConfig's `accessLogFile` and the Telemetry API. Formats named by Trellis's
//! config (`istio`) go out as the format strings they stand for; a JSON format is a
//! Struct encoded in key order (our own message: the generated Struct is a HashMap, so
//! the same config could encode differently each time).

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::accesslog::v3 as al;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::extensions::access_loggers::file::v3 as file;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use trellis_config::{self as tc, log_formats};

use crate::structs::{Kind, Struct, Value};

pub const FILE: &str = "envoy.access_loggers.file";
pub const FILE_TYPE: &str =
    "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog";

/// `FileAccessLog`, with the format in its `log_format` (tag 5).
#[derive(Clone, PartialEq, prost::Message)]
struct OrderedFileAccessLog {
    #[prost(string, tag = "1")]
    path: String,
    #[prost(message, optional, tag = "5")]
    log_format: Option<OrderedFormat>,
}

/// `SubstitutionFormatString`: `json_format` (tag 2) or `text_format_source` (tag 5).
#[derive(Clone, PartialEq, prost::Message)]
struct OrderedFormat {
    #[prost(message, optional, tag = "2")]
    json_format: Option<Struct>,
    #[prost(message, optional, tag = "5")]
    text_format_source: Option<InlineString>,
}

/// `DataSource` with `inline_string` (tag 3).
#[derive(Clone, PartialEq, prost::Message)]
struct InlineString {
    #[prost(string, tag = "3")]
    inline_string: String,
}

/// The Envoy access log of `a`; an error names what has no Envoy form.
pub fn encode(a: &tc::AccessLog) -> Result<al::AccessLog, String> {
    let string = |s: &str| Value {
        kind: Some(Kind::StringValue(s.to_string())),
    };
    let format = match (&a.text_format, &a.json_format) {
        (Some(t), None) => OrderedFormat {
            json_format: None,
            text_format_source: Some(InlineString {
                inline_string: if t == "istio" {
                    log_formats::ISTIO_TEXT.to_string()
                } else {
                    t.clone()
                },
            }),
        },
        (None, Some(j)) => {
            let fields: BTreeMap<String, Value> = match j {
                tc::JsonFormat::Named(n) if n == "istio" => log_formats::ISTIO_JSON
                    .iter()
                    .map(|(k, v)| (k.to_string(), string(v)))
                    .collect(),
                tc::JsonFormat::Named(n) => {
                    return Err(format!("json_format: {n:?} is not a format"))
                }
                tc::JsonFormat::Fields(f) => {
                    f.iter().map(|(k, v)| (k.clone(), string(v))).collect()
                }
            };
            OrderedFormat {
                json_format: Some(Struct { fields }),
                text_format_source: None,
            }
        }
        _ => {
            return Err(
                "Trellis's own JSON entry has no Envoy form: name text_format or json_format"
                    .into(),
            )
        }
    };
    let config = OrderedFileAccessLog {
        path: if a.path == "stdout" {
            "/dev/stdout".into()
        } else {
            a.path.clone()
        },
        log_format: Some(format),
    };
    Ok(al::AccessLog {
        name: FILE.into(),
        filter: None,
        config_type: Some(al::access_log::ConfigType::TypedConfig(Any {
            type_url: FILE_TYPE.into(),
            value: config.encode_to_vec(),
        })),
    })
}

/// The proxy's access log from Envoy's; the error is (field, why).
pub fn decode(a: &al::AccessLog) -> Result<tc::AccessLog, (String, String)> {
    let refuse = |field: &str, why: &str| Err((field.to_string(), why.to_string()));
    if a.filter.is_some() {
        return refuse("filter", "access log filters are not supported");
    }
    let Some(al::access_log::ConfigType::TypedConfig(any)) = &a.config_type else {
        return refuse("typed_config", "required");
    };
    if any.type_url != FILE_TYPE {
        return refuse(
            "typed_config",
            &format!(
                "{}: only the file access logger ({FILE}) is supported",
                any.type_url
            ),
        );
    }
    let f = file::FileAccessLog::decode(any.value.as_slice())
        .map_err(|e| ("typed_config".to_string(), e.to_string()))?;
    let mut out = tc::AccessLog {
        path: f.path,
        text_format: None,
        json_format: None,
    };
    use file::file_access_log::AccessLogFormat as F;
    #[allow(deprecated)]
    match f.access_log_format {
        None => out.text_format = Some(log_formats::ENVOY_DEFAULT_TEXT.into()),
        Some(F::Format(t)) => out.text_format = Some(t),
        Some(F::JsonFormat(s)) | Some(F::TypedJsonFormat(s)) => {
            out.json_format = Some(json_fields(&s).map_err(|e| ("json_format".to_string(), e))?)
        }
        Some(F::LogFormat(s)) => {
            let field = "log_format";
            if s.omit_empty_values
                || !s.content_type.is_empty()
                || !s.formatters.is_empty()
                || s.json_format_options.is_some()
            {
                return refuse(
                    field,
                    "omit_empty_values, content_type, formatters and json_format_options are not supported",
                );
            }
            use core::substitution_format_string::Format as S;
            match s.format {
                Some(S::TextFormat(t)) => out.text_format = Some(t),
                Some(S::JsonFormat(j)) => {
                    out.json_format =
                        Some(json_fields(&j).map_err(|e| (format!("{field}.json_format"), e))?)
                }
                Some(S::TextFormatSource(d)) => match d.specifier {
                    Some(core::data_source::Specifier::InlineString(t)) => {
                        out.text_format = Some(t)
                    }
                    _ => return refuse(field, "text_format_source: only inline_string"),
                },
                None => out.text_format = Some(log_formats::ENVOY_DEFAULT_TEXT.into()),
            }
        }
    }
    Ok(out)
}

/// A JSON format's fields: each a format string.
fn json_fields(s: &envoy_types::pb::google::protobuf::Struct) -> Result<tc::JsonFormat, String> {
    use envoy_types::pb::google::protobuf::value::Kind as K;
    s.fields
        .iter()
        .map(|(k, v)| match &v.kind {
            Some(K::StringValue(f)) => Ok((k.clone(), f.clone())),
            _ => Err(format!("{k}: only format strings are supported as values")),
        })
        .collect::<Result<BTreeMap<_, _>, _>>()
        .map(tc::JsonFormat::Fields)
}
