//! The connection manager's tracing (Envoy's `tracing` with the OpenTelemetry tracer,
//! as istiod writes it for an `opentelemetry` extension provider) and the listener's
//! traffic direction, which decides the spans' kind.

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::trace::v3 as trace;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::r#type::tracing::v3 as tag;
use envoy_types::pb::envoy::r#type::v3::Percent;
use prost::Message;
use trellis_config as tc;

pub const OPENTELEMETRY: &str = "envoy.tracers.opentelemetry";
pub const OPENTELEMETRY_CONFIG: &str =
    "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig";

type Tracing = hcm::http_connection_manager::Tracing;

pub fn encode(t: &tc::Tracing) -> Tracing {
    let collector = trace::OpenTelemetryConfig {
        grpc_service: Some(core::GrpcService {
            target_specifier: Some(core::grpc_service::TargetSpecifier::EnvoyGrpc(
                core::grpc_service::EnvoyGrpc {
                    cluster_name: t.provider.opentelemetry.cluster.clone(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
        service_name: t.provider.opentelemetry.service_name.clone(),
        ..Default::default()
    };
    Tracing {
        client_sampling: Some(Percent {
            value: t.client_sampling,
        }),
        random_sampling: Some(Percent {
            value: t.random_sampling,
        }),
        overall_sampling: Some(Percent {
            value: t.overall_sampling,
        }),
        custom_tags: t
            .tags
            .iter()
            .map(|(k, v)| tag::CustomTag {
                tag: k.clone(),
                r#type: Some(tag::custom_tag::Type::Literal(tag::custom_tag::Literal {
                    value: v.clone(),
                })),
            })
            .collect(),
        provider: Some(trace::tracing::Http {
            name: OPENTELEMETRY.into(),
            config_type: Some(trace::tracing::http::ConfigType::TypedConfig(crate::any(
                OPENTELEMETRY_CONFIG,
                &collector,
            ))),
        }),
        ..Default::default()
    }
}

/// The listener's `traffic_direction` for spans of `kind`.
pub fn direction(kind: tc::SpanKind) -> i32 {
    match kind {
        tc::SpanKind::Server => core::TrafficDirection::Inbound as i32,
        tc::SpanKind::Client => core::TrafficDirection::Outbound as i32,
    }
}

/// The spans' kind of a listener with `traffic_direction` (Envoy's: an outbound
/// listener's spans are the client's, all others the server's).
pub fn span_kind(traffic_direction: i32) -> tc::SpanKind {
    if traffic_direction == core::TrafficDirection::Outbound as i32 {
        tc::SpanKind::Client
    } else {
        tc::SpanKind::Server
    }
}

/// The tracing a connection manager asks for (the kind is the listener's, set by the
/// caller); an error names the field the proxy cannot honour.
pub fn decode(t: &Tracing) -> Result<tc::Tracing, (String, String)> {
    let refuse = |field: &str, why: &str| Err((format!("tracing.{field}"), why.to_string()));
    if t.verbose {
        return refuse("verbose", "span annotations are not recorded");
    }
    if t.max_path_tag_length.is_some() {
        return refuse("max_path_tag_length", "not supported");
    }
    if t.spawn_upstream_span.is_some_and(|s| s.value) {
        return refuse("spawn_upstream_span", "one span per proxy per request");
    }
    let mut tags = std::collections::BTreeMap::new();
    for (i, c) in t.custom_tags.iter().enumerate() {
        match &c.r#type {
            Some(tag::custom_tag::Type::Literal(l)) => {
                tags.insert(c.tag.clone(), l.value.clone());
            }
            _ => {
                return refuse(
                    &format!("custom_tags[{i}]"),
                    "only literal tags are supported",
                )
            }
        }
    }
    let Some(provider) = &t.provider else {
        return refuse("provider", "a tracer is required");
    };
    if provider.name != OPENTELEMETRY {
        return refuse(
            "provider.name",
            &format!("{:?}: only {OPENTELEMETRY} is supported", provider.name),
        );
    }
    let Some(trace::tracing::http::ConfigType::TypedConfig(any)) = &provider.config_type else {
        return refuse("provider.typed_config", "required");
    };
    if any.type_url != OPENTELEMETRY_CONFIG {
        return refuse(
            "provider.typed_config",
            &format!("expected {OPENTELEMETRY_CONFIG}, got {}", any.type_url),
        );
    }
    let c = trace::OpenTelemetryConfig::decode(any.value.as_slice())
        .map_err(|e| ("tracing.provider.typed_config".to_string(), e.to_string()))?;
    let cfg = "provider.typed_config";
    if c.http_service.is_some() || c.exporter.is_some() {
        return refuse(
            cfg,
            "only the gRPC service of a cluster (envoy_grpc) is supported",
        );
    }
    if !c.resource_detectors.is_empty() || c.sampler.is_some() {
        return refuse(cfg, "resource_detectors and sampler are not supported");
    }
    let cluster = match c.grpc_service.and_then(|g| g.target_specifier) {
        Some(core::grpc_service::TargetSpecifier::EnvoyGrpc(g)) if !g.cluster_name.is_empty() => {
            g.cluster_name
        }
        _ => {
            return refuse(
                &format!("{cfg}.grpc_service"),
                "envoy_grpc.cluster_name is required",
            )
        }
    };
    let percent = |p: &Option<Percent>| p.as_ref().map_or(100.0, |p| p.value);
    Ok(tc::Tracing {
        span_kind: tc::SpanKind::Server,
        random_sampling: percent(&t.random_sampling),
        client_sampling: percent(&t.client_sampling),
        overall_sampling: percent(&t.overall_sampling),
        tags,
        provider: tc::TraceProvider {
            opentelemetry: tc::OpenTelemetry {
                cluster,
                service_name: c.service_name,
            },
        },
    })
}
