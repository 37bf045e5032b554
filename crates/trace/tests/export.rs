//! The export queue is bounded and never holds a request up: with the collector
//! unreachable and slow to fail, spans beyond the queue are dropped and counted, and
//! every span submitted ends up counted once (exported, dropped or failed).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use trellis_trace::{ExportCounters, Exporter, Kind, Span, SpanContext, Started, Target};

fn span(i: u64) -> Span {
    let mut trace_id = [1; 16];
    trace_id[..8].copy_from_slice(&i.to_be_bytes());
    Span {
        started: Started {
            context: SpanContext {
                trace_id,
                span_id: [2; 8],
                sampled: true,
            },
            parent: None,
            start: SystemTime::now(),
        },
        end: SystemTime::now(),
        kind: Kind::Server,
        name: "reviews.default.svc.cluster.local:9080/*".into(),
        error: false,
        attributes: Vec::new(),
        tags: Arc::new([]),
    }
}

#[test]
fn a_full_queue_drops_and_counts_and_every_span_is_accounted_for() {
    // Nothing listens there; the first connection attempt also stalls a second.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let target: Target = Arc::new(move || {
        if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
            std::thread::sleep(Duration::from_secs(1));
        }
        vec![closed]
    });
    let counters = ExportCounters::default();
    let exporter = Exporter::start("test.default", target, counters.clone()).unwrap();
    let n = 20_000;
    for i in 0..n {
        exporter.submit(span(i));
    }
    assert!(counters.dropped.get() > 0, "the queue is bounded");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let accounted = counters.exported.get() + counters.dropped.get() + counters.failed.get();
        if accounted == n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{accounted} of {n} spans accounted for"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(counters.exported.get(), 0);
    assert!(counters.failed.get() > 0);
}
