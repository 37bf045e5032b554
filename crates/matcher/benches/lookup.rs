//! Lookup time per request for N regex routes: sequential first match (Envoy's
//! behaviour, one `regex::Regex` per route) against the compiled index on each engine.
//! `cargo bench -p trellis-matcher --features hyperscan --bench lookup`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::hint::black_box;
use trellis_matcher::{Engine, Limits, PathIndex, PathPattern, PathRule};

/// Route i's regex and a path that only it matches: four realistic shapes.
fn route(i: usize) -> (String, String) {
    match i % 4 {
        0 => (
            format!("/api/v{i}/users/[0-9]+"),
            format!("/api/v{i}/users/12345"),
        ),
        1 => (
            format!("/svc-{i}/[a-z]+/items/[0-9]{{1,8}}"),
            format!("/svc-{i}/books/items/42"),
        ),
        2 => (
            format!("/static/{i}/.*\\.(js|css|png)"),
            format!("/static/{i}/app/main.css"),
        ),
        _ => (
            format!("/(en|fr|de)/shop-{i}/product/[A-Za-z0-9_-]+"),
            format!("/fr/shop-{i}/product/Blue_Shirt-42"),
        ),
    }
}

struct Sequential(Vec<regex::Regex>);

impl Sequential {
    fn first(&self, path: &str) -> Option<usize> {
        self.0.iter().position(|r| r.is_match(path))
    }
}

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_lookup");
    for n in [10usize, 100, 1_000, 10_000] {
        let routes: Vec<_> = (0..n).map(route).collect();
        let rules: Vec<PathRule> = routes
            .iter()
            .map(|(re, _)| PathRule {
                pattern: PathPattern::Regex(re.clone()),
                ignore_case: false,
            })
            .collect();
        let sequential = Sequential(
            routes
                .iter()
                .map(|(re, _)| regex::Regex::new(&format!("^(?:{re})$")).unwrap())
                .collect(),
        );
        // The request for the last route: the sequential worst case that a real
        // table hits for every route near its end.
        let path = routes[n - 1].1.clone();
        assert_eq!(sequential.first(&path), Some(n - 1));
        group.bench_with_input(BenchmarkId::new("sequential", n), &path, |b, p| {
            b.iter(|| sequential.first(black_box(p)))
        });
        for &engine in Engine::available() {
            let index = PathIndex::build(&rules, engine, Limits::default()).unwrap();
            assert_eq!(index.first_match(&path, |_| true), Some(n - 1));
            let name = format!("{engine:?}").to_lowercase();
            group.bench_with_input(BenchmarkId::new(name, n), &path, |b, p| {
                b.iter(|| index.first_match(black_box(p), |_| true))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, lookup);
criterion_main!(benches);
