//! A proxy's span of one request: started when the request arrives, finished when
//! its response ends.

use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderMap;
use rand::Rng;

use crate::context::{self, Incoming, SpanContext, SpanId};
use crate::Sampling;

/// Envoy's span kinds: the server's on a sidecar's inbound side, the client's on its
/// outbound side and on gateways.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Server,
    Client,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
}

/// A span begun: its context (written into the request for the next hop) and its
/// parent.
#[derive(Clone, Copy, Debug)]
pub struct Started {
    pub context: SpanContext,
    pub parent: Option<SpanId>,
    pub start: SystemTime,
}

impl Started {
    /// The span of a request with `headers`: a child of the caller's span when it sent
    /// one, else the root of a new trace; sampled as the caller decided or as
    /// `sampling` says. The request's trace headers then name this span.
    pub fn begin(headers: &mut HeaderMap, sampling: &Sampling) -> Started {
        let incoming: Incoming = context::extract(headers);
        let sampled = sampling.decide(incoming.sampled, headers);
        let mut rng = rand::thread_rng();
        let trace_id = match incoming.parent {
            Some((trace, _)) => trace,
            None => nonzero(|| rng.gen()),
        };
        let started = Started {
            context: SpanContext {
                trace_id,
                span_id: nonzero(|| rng.gen()),
                sampled,
            },
            parent: incoming.parent.map(|(_, span)| span),
            start: SystemTime::now(),
        };
        context::inject(
            headers,
            &started.context,
            started.parent,
            incoming.b3_single,
        );
        started
    }
}

fn nonzero<const N: usize>(mut draw: impl FnMut() -> [u8; N]) -> [u8; N] {
    loop {
        let id = draw();
        if id.iter().any(|b| *b != 0) {
            return id;
        }
    }
}

/// A finished span, as the export thread turns it into OTLP.
#[derive(Clone, Debug)]
pub struct Span {
    pub started: Started,
    pub end: SystemTime,
    pub kind: Kind,
    pub name: String,
    /// An error (a 5xx response, or no response): the span's status.
    pub error: bool,
    pub attributes: Vec<(&'static str, Value)>,
    /// The listener's literal tags (Istio's `istio.canonical_service`, ...).
    pub tags: Arc<[(String, String)]>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_continues_its_callers_trace_and_names_itself_to_the_next_hop() {
        let mut h = HeaderMap::new();
        let root = Started::begin(&mut h, &Sampling::default());
        assert_eq!(root.parent, None);
        assert!(root.context.sampled);
        let child = Started::begin(&mut h, &Sampling::default());
        assert_eq!(child.context.trace_id, root.context.trace_id);
        assert_eq!(child.parent, Some(root.context.span_id));
        assert_ne!(child.context.span_id, root.context.span_id);
        assert_eq!(
            context::extract(&h).parent,
            Some((child.context.trace_id, child.context.span_id))
        );
        // An unsampled trace stays so at every hop, whatever this hop's rate.
        let mut h = HeaderMap::new();
        let never = Sampling {
            random: 0.0,
            ..Sampling::default()
        };
        assert!(!Started::begin(&mut h, &never).context.sampled);
        assert!(!Started::begin(&mut h, &Sampling::default()).context.sampled);
    }
}
