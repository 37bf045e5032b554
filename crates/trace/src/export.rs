//! Finished spans to an OpenTelemetry collector over OTLP/gRPC (`opentelemetry-otlp`'s
//! tonic exporter), from a thread of their own: the request path pushes a [`Span`] into
//! a bounded queue and never waits; the thread batches the queue (up to 512 spans, or
//! what arrived within a second of the first) and exports each batch. A full queue
//! drops the span and counts it; a failed export counts its spans and moves on.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::{SpanKind, Status, TraceFlags, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use opentelemetry_sdk::Resource;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use crate::span::{Kind, Span, Value};

const BATCH: usize = 512;
const FLUSH: Duration = Duration::from_secs(1);
const QUEUE: usize = 4096;

/// Where the collector is: the addresses to try, asked again on every connection (the
/// cluster the provider names may change its endpoints).
pub type Target = Arc<dyn Fn() -> Vec<SocketAddr> + Send + Sync>;

#[derive(Clone, Debug, Default)]
pub struct ExportCounters {
    pub exported: Counter,
    /// Spans dropped because the queue was full.
    pub dropped: Counter,
    /// Spans of batches the collector did not take.
    pub failed: Counter,
}

/// A handle on one export thread; the thread ends, after exporting what is queued,
/// when the last handle is dropped.
#[derive(Clone)]
pub struct Exporter {
    queue: mpsc::Sender<Span>,
    dropped: Counter,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Exporter")
    }
}

impl Exporter {
    /// Starts the export thread for the spans of `service_name` (the OTLP resource's
    /// `service.name`).
    pub fn start(
        service_name: &str,
        target: Target,
        counters: ExportCounters,
    ) -> std::io::Result<Exporter> {
        let (queue, spans) = mpsc::channel(QUEUE);
        let dropped = counters.dropped.clone();
        let service = service_name.to_string();
        std::thread::Builder::new()
            .name("trellis-otlp".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a current-thread runtime");
                runtime.block_on(run(service, target, spans, counters));
            })?;
        Ok(Exporter { queue, dropped })
    }

    /// Queues a finished span; never waits.
    pub fn submit(&self, span: Span) {
        if self.queue.try_send(span).is_err() {
            self.dropped.inc();
        }
    }
}

async fn run(
    service: String,
    target: Target,
    mut spans: mpsc::Receiver<Span>,
    counters: ExportCounters,
) {
    let connector = tower::service_fn(move |_: http::Uri| {
        let addrs = target();
        async move {
            let mut last = std::io::Error::other("the tracing provider's cluster has no endpoint");
            for addr in addrs {
                match tokio::net::TcpStream::connect(addr).await {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        return Ok(hyper_util::rt::TokioIo::new(s));
                    }
                    Err(e) => last = e,
                }
            }
            Err(last)
        }
    });
    // The URI only names the HTTP/2 authority; the connector picks the address.
    let channel = tonic::transport::Endpoint::from_static("http://otlp-collector")
        .connect_timeout(Duration::from_secs(2))
        .connect_with_connector_lazy(connector);
    let mut exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_channel(channel)
        .with_timeout(Duration::from_secs(5))
        .build()
    {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "the OTLP exporter could not be built; spans are dropped");
            while let Some(_span) = spans.recv().await {
                counters.failed.inc();
            }
            return;
        }
    };
    exporter.set_resource(&Resource::builder_empty().with_service_name(service).build());
    let scope = InstrumentationScope::builder("trellis").build();
    let mut warned = false;
    while let Some(first) = spans.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + FLUSH;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, spans.recv()).await {
                Ok(Some(span)) => batch.push(span),
                Ok(None) | Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        let data = batch.into_iter().map(|s| otlp(s, &scope)).collect();
        match exporter.export(data).await {
            Ok(()) => {
                counters.exported.inc_by(n);
                warned = false;
            }
            Err(e) => {
                counters.failed.inc_by(n);
                if !warned {
                    tracing::warn!(error = %e, spans = n, "exporting spans failed");
                    warned = true;
                }
            }
        }
    }
}

/// A span as the OpenTelemetry SDK exports it.
fn otlp(s: Span, scope: &InstrumentationScope) -> SpanData {
    let flags = if s.started.context.sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let mut attributes: Vec<KeyValue> = s
        .attributes
        .into_iter()
        .map(|(k, v)| match v {
            Value::Str(v) => KeyValue::new(k, v),
            Value::Int(v) => KeyValue::new(k, v),
        })
        .collect();
    attributes.extend(
        s.tags
            .iter()
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
    );
    SpanData {
        span_context: opentelemetry::trace::SpanContext::new(
            opentelemetry::trace::TraceId::from_bytes(s.started.context.trace_id),
            opentelemetry::trace::SpanId::from_bytes(s.started.context.span_id),
            flags,
            false,
            TraceState::default(),
        ),
        parent_span_id: opentelemetry::trace::SpanId::from_bytes(
            s.started.parent.unwrap_or_default(),
        ),
        parent_span_is_remote: s.started.parent.is_some(),
        span_kind: match s.kind {
            Kind::Server => SpanKind::Server,
            Kind::Client => SpanKind::Client,
        },
        name: Cow::Owned(s.name),
        start_time: s.started.start,
        end_time: s.end,
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: if s.error {
            Status::error("")
        } else {
            Status::Unset
        },
        instrumentation_scope: scope.clone(),
    }
}
