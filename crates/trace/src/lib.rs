//! Distributed tracing for the proxy, as Envoy's tracers do it for Istio: a span per
//! proxy per request (the server's kind on a sidecar's inbound side, the client's on its
//! outbound side), its context propagated in W3C and B3 headers ([`context`]), a
//! sampling decision made once per trace ([`Sampling`]), and finished spans exported
//! over OTLP/gRPC by a thread of their own ([`Exporter`]): the request path only pushes
//! a record into a bounded queue, and a full queue drops and counts the span.

pub mod context;
mod export;
mod sampling;
mod span;

pub use context::{Incoming, SpanContext, SpanId, TraceId};
pub use export::{ExportCounters, Exporter, Target};
pub use sampling::Sampling;
pub use span::{Kind, Span, Started, Value};
