//! The queue and the thread that computes batches.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use std::collections::HashMap;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use trellis_cryptomb::{ecdsa, private_batch, EcdsaKey, RsaKey};

/// Counters the proxy exports; cheap handles onto its registry.
#[derive(Clone)]
pub struct CryptoMbMetrics {
    /// Batches computed, by how many of the eight lanes were filled (index 0 = 1 lane).
    pub batches_by_fill: [Counter; 8],
    /// Time from joining the queue to the start of the batch, in seconds.
    pub queue_wait: Histogram,
    pub fallbacks: Counter,
    pub errors: Counter,
}

/// One private-key operation for the kernels.
pub(crate) enum Op {
    /// Raw RSA (`input^d mod n`) on a modulus-sized input.
    Rsa(Arc<RsaKey>, Vec<u8>),
    /// ECDSA P-256 over a digest; the result is a DER signature.
    EcdsaP256(Arc<EcdsaKey>, Vec<u8>),
}

impl Op {
    /// The queue: operations that can share a batch (one RSA size, or P-256).
    fn queue(&self) -> u32 {
        match self {
            Op::Rsa(k, _) => k.bits(),
            Op::EcdsaP256(..) => 0,
        }
    }
}

struct Job {
    op: Op,
    queued: Instant,
    reply: oneshot::Sender<Result<Vec<u8>, String>>,
}

/// Where batches are computed.
enum Mode {
    /// On the `trellis-cryptomb` thread, fed through a channel.
    Thread(mpsc::Sender<Job>),
    /// On the proxy worker that fills a queue or whose timer expires.
    Inline(Arc<InlineQueues>),
}

/// The inline mode's queues; a queue's generation changes each time it is taken, so a
/// timer armed for an earlier batch does nothing.
#[derive(Default)]
struct InlineQueues {
    queues: Mutex<HashMap<u32, (u64, Vec<Job>)>>,
}

impl InlineQueues {
    /// The queue's jobs if it is still generation `generation`.
    fn take(&self, queue: u32, generation: u64) -> Vec<Job> {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        match queues.get_mut(&queue) {
            Some((g, jobs)) if *g == generation => {
                *g += 1;
                std::mem::take(jobs)
            }
            _ => Vec::new(),
        }
    }
}

pub struct Batcher {
    mode: Mode,
    pub metrics: CryptoMbMetrics,
    pub poll_delay: Duration,
}

impl Batcher {
    /// Batches computed on a dedicated thread (`inline: false`).
    pub fn start(poll_delay: Duration, metrics: CryptoMbMetrics) -> Arc<Self> {
        let (tx, rx) = mpsc::channel();
        let m = metrics.clone();
        std::thread::Builder::new()
            .name("trellis-cryptomb".into())
            .spawn(move || run(rx, poll_delay, m))
            .expect("spawning the cryptomb thread");
        Arc::new(Batcher {
            mode: Mode::Thread(tx),
            metrics,
            poll_delay,
        })
    }

    /// Batches computed inline on the proxy's workers (the default), as Envoy's CryptoMB does: by the
    /// handshake that fills a queue, or by a timer task `poll_delay` after a queue's
    /// first operation.
    pub fn inline(poll_delay: Duration, metrics: CryptoMbMetrics) -> Arc<Self> {
        Arc::new(Batcher {
            mode: Mode::Inline(Arc::default()),
            metrics,
            poll_delay,
        })
    }

    pub fn inline_mode(&self) -> bool {
        matches!(self.mode, Mode::Inline(_))
    }

    pub(crate) fn submit(&self, op: Op) -> oneshot::Receiver<Result<Vec<u8>, String>> {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            op,
            queued: Instant::now(),
            reply,
        };
        match &self.mode {
            Mode::Thread(tx) => {
                let _ = tx.send(job);
            }
            Mode::Inline(queues) => self.submit_inline(queues, job),
        }
        rx
    }

    fn submit_inline(&self, queues: &Arc<InlineQueues>, job: Job) {
        let queue = job.op.queue();
        let (generation, len) = {
            let mut all = queues.queues.lock().unwrap_or_else(|p| p.into_inner());
            let (generation, jobs) = all.entry(queue).or_default();
            jobs.push(job);
            (*generation, jobs.len())
        };
        if len == 8 {
            compute(queues.take(queue, generation), &self.metrics);
        } else if len == 1 {
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                // No worker to wake us later: compute now.
                compute(queues.take(queue, generation), &self.metrics);
                return;
            };
            let (queues, metrics, delay) = (queues.clone(), self.metrics.clone(), self.poll_delay);
            runtime.spawn(async move {
                tokio::time::sleep(delay).await;
                let jobs = queues.take(queue, generation);
                if !jobs.is_empty() {
                    compute(jobs, &metrics);
                }
            });
        }
    }
}

/// One queue per RSA key size and one for P-256; a queue is computed when it holds eight operations or its
/// oldest has waited `poll_delay`.
fn run(rx: mpsc::Receiver<Job>, poll_delay: Duration, metrics: CryptoMbMetrics) {
    let mut queues: HashMap<u32, Vec<Job>> = HashMap::new();
    loop {
        let now = Instant::now();
        let next_due = queues
            .values()
            .filter_map(|q| q.first())
            .map(|j| (j.queued + poll_delay).saturating_duration_since(now))
            .min();
        let received = match next_due {
            Some(wait) => rx.recv_timeout(wait),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match received {
            Ok(job) => {
                // Take everything that queued up meanwhile (for instance during the last
                // batch) before deciding: a waiting operation must not be flushed alone
                // while others sit in the channel.
                let mut next = Some(job);
                while let Some(job) = next {
                    let q = queues.entry(job.op.queue()).or_default();
                    q.push(job);
                    if q.len() == 8 {
                        compute(std::mem::take(q), &metrics);
                    }
                    next = rx.try_recv().ok();
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                for (_, q) in queues.drain() {
                    if !q.is_empty() {
                        compute(q, &metrics);
                    }
                }
                return;
            }
        }
        let now = Instant::now();
        for q in queues.values_mut() {
            if q.first().is_some_and(|j| now >= j.queued + poll_delay) {
                compute(std::mem::take(q), &metrics);
            }
        }
    }
}

fn compute(jobs: Vec<Job>, metrics: &CryptoMbMetrics) {
    if jobs.is_empty() {
        return;
    }
    let start = Instant::now();
    for j in &jobs {
        metrics
            .queue_wait
            .observe(start.duration_since(j.queued).as_secs_f64());
    }
    metrics.batches_by_fill[jobs.len() - 1].inc();
    // A queue holds one kind of operation.
    let results: Vec<Result<Vec<u8>, String>> = match &jobs[0].op {
        Op::Rsa(..) => {
            let ops: Vec<(&RsaKey, &[u8])> = jobs
                .iter()
                .filter_map(|j| match &j.op {
                    Op::Rsa(k, input) => Some((&**k, input.as_slice())),
                    Op::EcdsaP256(..) => None,
                })
                .collect();
            private_batch(&ops)
                .into_iter()
                .map(|r| r.map_err(|e| e.to_string()))
                .collect()
        }
        Op::EcdsaP256(..) => {
            let ops: Vec<(&EcdsaKey, &[u8])> = jobs
                .iter()
                .filter_map(|j| match &j.op {
                    Op::EcdsaP256(k, digest) => Some((&**k, digest.as_slice())),
                    Op::Rsa(..) => None,
                })
                .collect();
            ecdsa::sign_batch(&ops)
                .into_iter()
                .map(|r| r.map_err(|e| e.to_string()))
                .collect()
        }
    };
    for (job, result) in jobs.into_iter().zip(results) {
        let _ = job.reply.send(result);
    }
}
