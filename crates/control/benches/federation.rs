//! Trust bundle push latency after a federation change: 100 sidecars (50 of tenant a
//! in team-a, 50 of tenant b in team-b) connected over real gRPC (trellis-xds client
//! engines on loopback, delta), the control plane in-process with its CA. Each round
//! switches the federation a → b on or off in the Tenant file and times, from the
//! reload's start, until every one of the 100 holds its changed resources (a's
//! sidecars their clusters, whose bundles gain or lose b's roots; b's their inbound
//! listeners, which gain or lose a's). The reload's own share is printed beside it.
//!
//! Usage: cargo bench -p trellis-control --bench federation -- [rounds]  (default 20)

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use trellis_xds::client::{self, ClientOptions, ClientState, Interest, Mode, Subscriber};
use trellis_xds::pb::envoy::config::core::v3::Node;
use trellis_xds::{Cache, ServerThread, CLUSTER, LISTENER};

const PER_TENANT: usize = 50;

/// A sidecar's xDS client that records when its listeners or clusters change.
#[derive(Clone, Default)]
struct Watcher {
    interest: Arc<trellis_proxy::SidecarInterest>,
    /// (listener revision, cluster revision), once it holds something.
    revisions: Arc<Mutex<Option<(u64, u64)>>>,
}

#[tonic::async_trait]
impl Subscriber for Watcher {
    fn interest(&self, state: &ClientState) -> Interest {
        self.interest.interest(state)
    }

    async fn apply(&mut self, state: &ClientState) -> Result<(), String> {
        if state.count(LISTENER) > 0 && state.count(CLUSTER) > 0 {
            *self.revisions.lock().unwrap() =
                Some((state.revision(LISTENER), state.revision(CLUSTER)));
        }
        Ok(())
    }
}

fn registry() -> String {
    let mut s = String::new();
    for (tenant, ns) in [("a", "team-a"), ("b", "team-b")] {
        for i in 0..5 {
            let _ = write!(
                s,
                "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{ name: {tenant}-svc-{i}, namespace: {ns} }}\nspec:\n  hosts: [{tenant}-svc-{i}.{ns}.svc.cluster.local]\n  ports: [{{ number: 8080, name: http, protocol: HTTP }}]\n  workloadSelector: {{ labels: {{ app: {tenant}-svc-{i} }} }}\n---\n"
            );
            for e in 0..PER_TENANT / 5 {
                let _ = write!(
                    s,
                    "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: {tenant}-svc-{i}-{e}\n  namespace: {ns}\n  annotations: {{ sidecar.trellis.dev/app-ports: \"http=9000\" }}\nspec:\n  address: 10.{}.{i}.{e}\n  ports: {{ http: 20000 }}\n  labels: {{ app: {tenant}-svc-{i} }}\n  serviceAccount: {tenant}-svc-{i}\n---\n",
                    if tenant == "a" { 1 } else { 2 }
                );
            }
        }
    }
    s
}

fn tenants(federated: bool) -> String {
    let federation = if federated {
        "  federation: [{ tenant: b, direction: Outbound }]\n"
    } else {
        ""
    };
    format!(
        "apiVersion: trellis.io/v1alpha1\nkind: Tenant\nmetadata: {{ name: a }}\nspec:\n  namespaces: [team-a]\n  trustDomain: a.example\n{federation}---\napiVersion: trellis.io/v1alpha1\nkind: Tenant\nmetadata: {{ name: b }}\nspec:\n  namespaces: [team-b]\n  trustDomain: b.example\n"
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    trellis_alloc::tune();
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("registry.yaml"), registry()).unwrap();
    std::fs::write(dir.path().join("tenants.yaml"), tenants(false)).unwrap();
    let ca = trellis_ca::Ca::build(&trellis_ca::CaConfig {
        state_dir: state.path().to_path_buf(),
        trust_domain: "cluster.local".into(),
        server_names: vec!["localhost".into()],
        signing: None,
        max_cert_ttl: Duration::from_secs(24 * 3600),
        kube_review: None,
        ra: None,
    })
    .unwrap();
    let cache = Cache::new();
    let plane = trellis_control::ControlPlane::new(&[dir.path().to_path_buf()], cache.clone())
        .with_tenancy(ca.tenancy());
    plane.reload().unwrap();
    let status = plane.status().borrow().clone();
    assert!(status.refused.is_empty(), "{:?}", status.refused);
    assert_eq!(status.tenants.len(), 3);
    let server = ServerThread::start(cache.clone(), "127.0.0.1:0".parse().unwrap()).unwrap();
    let nodes = cache.nodes();
    assert_eq!(nodes.len(), 2 * PER_TENANT);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sidecar-xds")
        .enable_all()
        .build()
        .unwrap();
    let watchers: Vec<Watcher> = nodes.iter().map(|_| Watcher::default()).collect();
    for (node, w) in nodes.iter().zip(&watchers) {
        let opts = ClientOptions {
            address: server.addr.to_string(),
            node: Node {
                id: node.clone(),
                ..Default::default()
            },
            mode: Mode::Delta,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            dial: None,
        };
        rt.spawn(client::run(opts, w.clone()));
    }
    let held = |w: &Watcher| *w.revisions.lock().unwrap();
    let started = Instant::now();
    while watchers.iter().any(|w| held(w).is_none()) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "clients never synced"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Settle: every view delivered.
    std::thread::sleep(Duration::from_millis(500));

    let mut pushes = Vec::new();
    let mut reloads = Vec::new();
    for round in 0..rounds {
        let before: Vec<(u64, u64)> = watchers.iter().map(|w| held(w).unwrap()).collect();
        std::fs::write(dir.path().join("tenants.yaml"), tenants(round % 2 == 0)).unwrap();
        let t0 = Instant::now();
        plane.reload().unwrap();
        reloads.push(t0.elapsed());
        loop {
            let changed = watchers.iter().zip(&before).all(|(w, b)| {
                let (l, c) = held(w).unwrap();
                l != b.0 || c != b.1
            });
            if changed {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "round {round}: not every sidecar got the change"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        pushes.push(t0.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    pushes.sort();
    reloads.sort();
    println!(
        "federation change → 100 sidecars hold their new trust bundles ({rounds} rounds, delta): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; of which the reload (tenant CAs, views regenerated) p50 {:.1} ms",
        percentile(&pushes, 0.5).as_secs_f64() * 1e3,
        percentile(&pushes, 0.99).as_secs_f64() * 1e3,
        pushes.last().unwrap().as_secs_f64() * 1e3,
        percentile(&reloads, 0.5).as_secs_f64() * 1e3,
    );
    drop(rt);
}
