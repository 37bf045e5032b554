//! Endpoint selection: weighted round robin, least request (power of two choices),
//! random, ring hash and Maglev. Every policy skips ejected endpoints unless fewer
//! than half are available, in which case (Envoy's panic threshold) all are used.

use super::Endpoint;
use rand::Rng;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use trellis_config::LbPolicy;
use xxhash_rust::xxh64::xxh64;

const RING_MIN_SIZE: usize = 1024;
const MAGLEV_TABLE_SIZE: usize = 65537;

pub enum Balancer {
    RoundRobin { schedule: Vec<usize> },
    LeastRequest,
    Random { cumulative: Vec<u64> },
    RingHash { ring: Vec<(u64, usize)> },
    Maglev { table: Vec<u32> },
}

impl Balancer {
    pub fn build(policy: LbPolicy, endpoints: &[Arc<Endpoint>]) -> Balancer {
        let weights: Vec<u32> = endpoints.iter().map(|e| e.weight.max(1)).collect();
        match policy {
            LbPolicy::RoundRobin => Balancer::RoundRobin {
                schedule: smooth_schedule(&weights),
            },
            LbPolicy::LeastRequest => Balancer::LeastRequest,
            LbPolicy::Random => Balancer::Random {
                cumulative: weights
                    .iter()
                    .scan(0u64, |acc, w| {
                        *acc += u64::from(*w);
                        Some(*acc)
                    })
                    .collect(),
            },
            LbPolicy::RingHash => Balancer::RingHash {
                ring: build_ring(endpoints, &weights),
            },
            LbPolicy::Maglev => Balancer::Maglev {
                table: build_maglev(endpoints),
            },
        }
    }

    /// Picks an endpoint index. `hash` is the request's hash key for ring hash / Maglev.
    pub fn pick(
        &self,
        endpoints: &[Arc<Endpoint>],
        rr: &AtomicUsize,
        hash: Option<u64>,
        now_ms: u64,
    ) -> Option<usize> {
        let n = endpoints.len();
        if n == 0 {
            return None;
        }
        let available_count = endpoints
            .iter()
            .filter(|e| e.health.is_available(now_ms))
            .count();
        let panic = available_count * 2 < n;
        let ok = |i: usize| panic || endpoints[i].health.is_available(now_ms);
        let mut rng = rand::thread_rng();
        match self {
            Balancer::RoundRobin { schedule } => {
                let start = rr.fetch_add(1, Ordering::Relaxed);
                (0..schedule.len())
                    .map(|k| schedule[(start + k) % schedule.len()])
                    .find(|&i| ok(i))
            }
            Balancer::LeastRequest => {
                let candidates: Vec<usize> = (0..n).filter(|&i| ok(i)).collect();
                match candidates.len() {
                    0 => None,
                    1 => Some(candidates[0]),
                    len => {
                        let a = candidates[rng.gen_range(0..len)];
                        let mut b = candidates[rng.gen_range(0..len - 1)];
                        if b == a {
                            b = candidates[len - 1];
                        }
                        // Compare active/weight without dividing.
                        let la = u64::from(endpoints[a].active_requests())
                            * u64::from(endpoints[b].weight.max(1));
                        let lb = u64::from(endpoints[b].active_requests())
                            * u64::from(endpoints[a].weight.max(1));
                        Some(if lb < la { b } else { a })
                    }
                }
            }
            Balancer::Random { cumulative } => {
                let total = *cumulative.last()?;
                for _ in 0..n {
                    let x = rng.gen_range(0..total);
                    let i = cumulative.partition_point(|&c| c <= x);
                    if ok(i) {
                        return Some(i);
                    }
                }
                (0..n).find(|&i| ok(i))
            }
            Balancer::RingHash { ring } => {
                let h = hash.unwrap_or_else(|| rng.gen());
                let start = ring.partition_point(|(p, _)| *p < h);
                (0..ring.len())
                    .map(|k| ring[(start + k) % ring.len()].1)
                    .find(|&i| ok(i))
            }
            Balancer::Maglev { table } => {
                let mut h = hash.unwrap_or_else(|| rng.gen());
                for _ in 0..8 {
                    let i = table[(h % table.len() as u64) as usize] as usize;
                    if ok(i) {
                        return Some(i);
                    }
                    h = xxh64(&h.to_le_bytes(), 1);
                }
                (0..n).find(|&i| ok(i))
            }
        }
    }
}

/// nginx's smooth weighted round robin, unrolled into a schedule so picking is one
/// atomic increment. Weights are scaled down so the schedule stays small.
fn smooth_schedule(weights: &[u32]) -> Vec<usize> {
    let max = *weights.iter().max().unwrap_or(&1);
    let scale = (weights.iter().map(|w| u64::from(*w)).sum::<u64>() / 4096).max(1) as u32;
    let w: Vec<i64> = weights
        .iter()
        .map(|x| i64::from((x / scale).max(1)))
        .collect();
    if weights.iter().all(|x| *x == max) {
        return (0..weights.len()).collect();
    }
    let total: i64 = w.iter().sum();
    let mut current = vec![0i64; w.len()];
    (0..total)
        .map(|_| {
            for (c, wi) in current.iter_mut().zip(&w) {
                *c += wi;
            }
            let best = (0..w.len())
                .max_by_key(|&i| (current[i], -(i as i64)))
                .unwrap();
            current[best] -= total;
            best
        })
        .collect()
}

fn build_ring(endpoints: &[Arc<Endpoint>], weights: &[u32]) -> Vec<(u64, usize)> {
    let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
    let mut ring = Vec::new();
    for (i, e) in endpoints.iter().enumerate() {
        let share = (RING_MIN_SIZE as u64 * u64::from(weights[i])).div_ceil(total.max(1));
        for k in 0..share.max(1) {
            let key = format!("{}_{k}", e.addr);
            ring.push((xxh64(key.as_bytes(), 0), i));
        }
    }
    ring.sort_unstable();
    ring
}

/// Maglev lookup table (Eisenbud et al. 2016): each endpoint fills slots from its own
/// permutation until the table is full; weights are not considered.
fn build_maglev(endpoints: &[Arc<Endpoint>]) -> Vec<u32> {
    let m = MAGLEV_TABLE_SIZE as u64;
    let perms: Vec<(u64, u64)> = endpoints
        .iter()
        .map(|e| {
            let key = e.addr.to_string();
            let offset = xxh64(key.as_bytes(), 0) % m;
            let skip = xxh64(key.as_bytes(), 1) % (m - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; endpoints.len()];
    let mut table = vec![u32::MAX; MAGLEV_TABLE_SIZE];
    let mut filled = 0;
    'outer: loop {
        for (i, (offset, skip)) in perms.iter().enumerate() {
            let mut c = (offset + next[i] * skip) % m;
            while table[c as usize] != u32::MAX {
                next[i] += 1;
                c = (offset + next[i] * skip) % m;
            }
            table[c as usize] = i as u32;
            next[i] += 1;
            filled += 1;
            if filled == MAGLEV_TABLE_SIZE {
                break 'outer;
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooth_schedule_interleaves_by_weight() {
        let s = smooth_schedule(&[5, 1, 1]);
        assert_eq!(s.len(), 7);
        assert_eq!(s.iter().filter(|&&i| i == 0).count(), 5);
        assert_eq!(s, vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_schedule(&[2, 2]), vec![0, 1]);
    }
}
