//! The service graph from Istio's standard metrics: each sidecar's
//! `istio_requests_total` and `istio_request_duration_milliseconds` series, summed per
//! (source workload, destination workload), and between two scrapes the rate, the error
//! rate and the quantiles (as Prometheus' `histogram_quantile` reads buckets). The
//! server's side (`reporter="destination"`) is the count of record, as in Kiali; an edge
//! only a client's side reports (a destination without a sidecar) counts from there.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::model::Edge;

type Key = (String, String);

/// One edge's counters at a scrape.
#[derive(Clone, Debug, Default, PartialEq)]
struct Counts {
    requests: f64,
    errors: f64,
    mtls: bool,
    /// Cumulative buckets by upper bound (`le`), in milliseconds.
    buckets: BTreeMap<Bound, f64>,
}

/// A bucket bound that orders as a number (`+Inf` last).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Bound(f64);

impl Eq for Bound {}

impl PartialOrd for Bound {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Bound {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// The sidecars' counters at one moment.
#[derive(Clone, Debug)]
pub struct Scrape {
    at: Instant,
    by_edge: BTreeMap<Key, Counts>,
}

impl Scrape {
    /// The counters in `texts`, each a sidecar's Prometheus exposition.
    pub fn parse<'a>(texts: impl IntoIterator<Item = &'a str>, at: Instant) -> Scrape {
        let mut server: BTreeMap<Key, Counts> = BTreeMap::new();
        let mut client: BTreeMap<Key, Counts> = BTreeMap::new();
        for text in texts {
            for line in text.lines() {
                let Some((name, labels, value)) = sample(line) else {
                    continue;
                };
                let get = |k: &str| {
                    labels
                        .iter()
                        .find(|(n, _)| *n == k)
                        .map(|(_, v)| v.as_str())
                        .unwrap_or("")
                };
                let key = (
                    get("source_workload").to_string(),
                    get("destination_workload").to_string(),
                );
                let side = match get("reporter") {
                    "destination" => &mut server,
                    "source" => &mut client,
                    _ => continue,
                };
                match name {
                    "istio_requests_total" => {
                        let c = side.entry(key).or_default();
                        c.requests += value;
                        if get("response_code").starts_with('5') {
                            c.errors += value;
                        }
                        if get("connection_security_policy") == "mutual_tls" {
                            c.mtls = true;
                        }
                    }
                    "istio_request_duration_milliseconds_bucket" => {
                        let le = match get("le") {
                            "+Inf" => f64::INFINITY,
                            le => match le.parse() {
                                Ok(v) => v,
                                Err(_) => continue,
                            },
                        };
                        *side
                            .entry(key)
                            .or_default()
                            .buckets
                            .entry(Bound(le))
                            .or_default() += value;
                    }
                    _ => {}
                }
            }
        }
        for (key, counts) in client {
            server.entry(key).or_insert(counts);
        }
        Scrape {
            at,
            by_edge: server,
        }
    }
}

/// The edges between two scrapes of the same sidecars: rates over the interval, totals
/// as of `now`. An edge with no request in the interval keeps its totals, at rate 0.
pub fn edges(before: &Scrape, now: &Scrape) -> Vec<Edge> {
    let seconds = now.at.duration_since(before.at).as_secs_f64().max(1e-3);
    now.by_edge
        .iter()
        .filter(|((source, destination), _)| !source.is_empty() && !destination.is_empty())
        .map(|((source, destination), c)| {
            let empty = Counts::default();
            let b = before
                .by_edge
                .get(&(source.clone(), destination.clone()))
                .unwrap_or(&empty);
            // A restarted sidecar's counters start over: count from zero then.
            let b = if c.requests < b.requests { &empty } else { b };
            let requests = c.requests - b.requests;
            let buckets: Vec<(f64, f64)> = c
                .buckets
                .iter()
                .map(|(le, n)| (le.0, n - b.buckets.get(le).copied().unwrap_or(0.0)))
                .collect();
            Edge {
                source: source.clone(),
                destination: destination.clone(),
                rps: requests / seconds,
                error_rate: if requests > 0.0 {
                    (c.errors - b.errors) / requests
                } else {
                    0.0
                },
                p50_ms: quantile(0.5, &buckets),
                p99_ms: quantile(0.99, &buckets),
                mtls: c.mtls,
                total: c.requests,
            }
        })
        .collect()
}

/// Prometheus' `histogram_quantile` over cumulative `(le, count)` buckets: linear
/// within the bucket the rank falls in; the highest finite bound when it falls in
/// `+Inf`; None without observations.
fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let within = count - lower.1;
            let share = if within > 0.0 {
                (rank - lower.1) / within
            } else {
                1.0
            };
            return Some(lower.0 + (le - lower.0) * share);
        }
        lower = (le, count);
    }
    Some(lower.0)
}

/// A sample's labels, by name.
type Labels<'a> = Vec<(&'a str, String)>;

/// A sample line: its name, labels and value.
fn sample(line: &str) -> Option<(&str, Labels<'_>, f64)> {
    if !line.starts_with("istio_request") {
        return None;
    }
    let (name, rest) = line.split_once('{')?;
    let (labels, value) = rest.rsplit_once("} ")?;
    let value: f64 = value.split_whitespace().next()?.parse().ok()?;
    let mut out = Vec::new();
    let mut rest = labels;
    while let Some((key, after)) = rest.split_once("=\"") {
        // Values are escaped Prometheus strings: `\"` and `\\` inside.
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, ch)) = chars.next() {
            match ch {
                '\\' => {
                    if let Some((_, next)) = chars.next() {
                        value.push(if next == 'n' { '\n' } else { next });
                    }
                }
                '"' => {
                    end = Some(i);
                    break;
                }
                other => value.push(other),
            }
        }
        out.push((key.trim_start_matches(','), value));
        rest = &after[end? + 1..];
    }
    Some((name, out, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn text(page_to_reviews: u32, errors: u32, fast: u32) -> String {
        let labels = |reporter: &str, code: &str| {
            format!("reporter=\"{reporter}\",source_workload=\"productpage-v1\",destination_workload=\"reviews-v2\",response_code=\"{code}\",connection_security_policy=\"{}\"", if reporter == "destination" { "mutual_tls" } else { "unknown" })
        };
        let ok = page_to_reviews - errors;
        format!(
            "# TYPE istio_requests_total counter\n\
             istio_requests_total{{{}}} {ok}\n\
             istio_requests_total{{{}}} {errors}\n\
             istio_requests_total{{{}}} {page_to_reviews}\n\
             istio_request_duration_milliseconds_bucket{{{},le=\"5.0\"}} {fast}\n\
             istio_request_duration_milliseconds_bucket{{{},le=\"10.0\"}} {page_to_reviews}\n\
             istio_request_duration_milliseconds_bucket{{{},le=\"+Inf\"}} {page_to_reviews}\n\
             istio_requests_total{{reporter=\"source\",source_workload=\"client\",destination_workload=\"unknown\",response_code=\"200\",connection_security_policy=\"unknown\"}} 4\n",
            labels("destination", "200"),
            labels("destination", "503"),
            labels("source", "200"),
            labels("destination", "200"),
            labels("destination", "200"),
            labels("destination", "200"),
        )
    }

    #[test]
    fn edges_are_rates_between_scrapes_from_the_servers_side() {
        let t = Instant::now();
        let before = Scrape::parse([text(100, 0, 50).as_str()], t);
        let now = Scrape::parse([text(300, 20, 150).as_str()], t + Duration::from_secs(10));
        let edges = edges(&before, &now);
        assert_eq!(edges.len(), 2, "{edges:?}");
        let e = edges
            .iter()
            .find(|e| e.destination == "reviews-v2")
            .unwrap();
        assert_eq!(e.source, "productpage-v1");
        assert!((e.rps - 20.0).abs() < 1e-9, "{e:?}");
        assert!((e.error_rate - 0.1).abs() < 1e-9);
        assert!(e.mtls);
        assert_eq!(e.total, 300.0);
        // 100 of 200 in the interval took ≤ 5 ms: the median is at 5 ms; the 99th
        // percentile is 98% of the way through the 5–10 ms bucket.
        assert!((e.p50_ms.unwrap() - 5.0).abs() < 1e-9, "{e:?}");
        assert!((e.p99_ms.unwrap() - 9.9).abs() < 1e-9, "{e:?}");
        // The client's side alone knows the call to a destination without a sidecar.
        let c = edges.iter().find(|e| e.source == "client").unwrap();
        assert_eq!(c.destination, "unknown");
        assert!(!c.mtls);
        assert_eq!(c.rps, 0.0);
    }

    #[test]
    fn quantiles_read_buckets_as_prometheus_does() {
        assert_eq!(quantile(0.5, &[]), None);
        assert_eq!(quantile(0.5, &[(1.0, 0.0), (f64::INFINITY, 0.0)]), None);
        assert_eq!(quantile(0.5, &[(1.0, 0.0), (2.0, 10.0)]), Some(1.5));
        // In +Inf: the highest finite bound.
        assert_eq!(
            quantile(0.99, &[(1.0, 5.0), (f64::INFINITY, 10.0)]),
            Some(1.0)
        );
    }

    #[test]
    fn escaped_label_values_are_read() {
        let (name, labels, value) = sample(r#"istio_requests_total{a="x\"y",b="c\\d"} 3"#).unwrap();
        assert_eq!(name, "istio_requests_total");
        assert_eq!(
            labels,
            vec![("a", "x\"y".to_string()), ("b", "c\\d".to_string())]
        );
        assert_eq!(value, 3.0);
    }
}
