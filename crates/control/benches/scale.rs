//! Control-plane scale: N services × 10 endpoints, 100 sidecars connected over real
//! gRPC (trellis-xds client engines on loopback, each decoding what it receives with
//! the proxy's decoder), in state-of-the-world and delta:
//!   - control plane memory (RSS growth after loading and generating every view);
//!   - time to push the full config to all 100 (from views being set in the cache to
//!     every client holding every listener, route configuration, cluster and endpoint
//!     assignment of its view), when the control plane made the last response of it,
//!     and the CPU time it took the control plane and the sidecars (they share the
//!     machine's cores here, as they would not in a cluster);
//!   - time for one endpoint change on disk to reach all of them (reload included),
//!     five times: the median and the best.
//!
//! The same in Kubernetes mode (`kube` lines): Services and EndpointSlices from the
//! replaying API server, delta clients; the endpoint change is an EndpointSlice watch
//! event (an endpoint's readiness), timed from the event to every client holding it.
//!
//! Usage: cargo bench -p trellis-control --bench scale -- [services...]  (default 1000);
//! one measurement: `--one N sotw|delta|kube`.

#[path = "scale/kube.rs"]
mod kube;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use trellis_xds::client::{self, ClientOptions, ClientState, Interest, Mode, Subscriber};
use trellis_xds::pb::envoy::config::core::v3::Node;
use trellis_xds::{Cache, ServerThread, CLUSTER, ENDPOINT, LISTENER, ROUTE};

const PROXIES: usize = 100;
const ENDPOINTS: usize = 10;

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        })
        .unwrap_or(0)
}

/// Services svc-0..N, each with 10 workloads (ports 20000+); the first 100 workloads
/// have sidecars.
fn write_registry(dir: &std::path::Path, services: usize, changed_port: u16) {
    let mut s = String::with_capacity(services * 3000);
    let mut sidecars = 0;
    for i in 0..services {
        let _ = write!(
            s,
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{ name: svc-{i}, namespace: default }}\nspec:\n  hosts: [svc-{i}.default.svc.cluster.local]\n  ports: [{{ number: 8080, name: http, protocol: HTTP }}]\n  workloadSelector: {{ labels: {{ app: svc-{i} }} }}\n---\n"
        );
        for e in 0..ENDPOINTS {
            let annotations = if sidecars < PROXIES {
                sidecars += 1;
                "\n  annotations: { sidecar.trellis.dev/app-ports: \"http=9000\" }"
            } else {
                ""
            };
            let port = if i == 0 && e == 0 {
                changed_port
            } else {
                20000 + e as u16
            };
            let _ = write!(
                s,
                "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: svc-{i}-{e}\n  namespace: default{annotations}\nspec:\n  address: 10.{}.{}.{e}\n  ports: {{ http: {port} }}\n  labels: {{ app: svc-{i} }}\n---\n",
                i / 256,
                i % 256
            );
        }
    }
    std::fs::write(dir.join("registry.yaml.tmp"), s).unwrap();
    std::fs::rename(dir.join("registry.yaml.tmp"), dir.join("registry.yaml")).unwrap();
}

const TYPES: [&str; 4] = [LISTENER, ROUTE, CLUSTER, ENDPOINT];

/// What a client holds: how many resources of each of `TYPES`, and the version of
/// svc-0's endpoint assignment.
type Holding = ([usize; 4], Option<String>);

/// A sidecar's xDS client that decodes what it holds as the proxy does (its decoder:
/// only what changed), and counts it. Applying it (clusters, route tables, listeners) is
/// the real sidecar's part, measured by `bench/sidecar-xds.sh`.
#[derive(Clone)]
struct Counter {
    interest: Arc<trellis_proxy::SidecarInterest>,
    decoder: Arc<Mutex<trellis_envoy::Decoder>>,
    state: Arc<Mutex<Holding>>,
    /// How many of each type its view has.
    view: [usize; 4],
}

impl Counter {
    fn svc0(&self) -> Option<String> {
        self.state.lock().unwrap().1.clone()
    }

    fn holds_its_view(&self) -> bool {
        self.state.lock().unwrap().0 == self.view
    }
}

#[tonic::async_trait]
impl Subscriber for Counter {
    fn interest(&self, state: &ClientState) -> Interest {
        self.interest.interest(state)
    }

    async fn apply(&mut self, state: &ClientState) -> Result<(), String> {
        self.decoder
            .lock()
            .unwrap()
            .decode(&trellis_proxy::HeldResources(state))
            .map_err(|e| e.to_string())?;
        let svc0 = state
            .get(ENDPOINT, "outbound|8080||svc-0.default.svc.cluster.local")
            .map(|r| r.version().to_string());
        *self.state.lock().unwrap() = (TYPES.map(|t| state.count(t)), svc0);
        Ok(())
    }
}

fn wait_all(clients: &[Counter], what: &str, done: impl Fn(&Counter) -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if clients.iter().all(&done) {
            return start.elapsed();
        }
        if start.elapsed() > Duration::from_secs(300) {
            panic!("{what}: not all clients got there in 300 s");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// When a push ended, from the control plane's side: its last response made, and the
/// last byte of it written into a socket; and the CPU time the push took on each side.
#[derive(Clone, Copy, Default)]
struct ServerDone {
    made: Duration,
    written: Duration,
    /// The control plane's (its server thread's).
    server_cpu: Duration,
    /// The 100 simulated sidecars' together.
    clients_cpu: Duration,
}

/// The server's thread ([`ServerThread`] names it).
const SERVER_THREAD: &str = "trellis-xds";
/// The simulated sidecars' runtime threads.
const CLIENT_THREADS: &str = "sidecar-xds";

/// CPU time (user and system) of this process's threads named `name`, as the kernel
/// accounts it per thread: the clients and the control plane share two cores here, so
/// the wall time of a push is theirs together; this tells each side's part.
fn cpu_of_threads(name: &str) -> Duration {
    let tasks = std::fs::read_dir("/proc/self/task").expect("/proc/self/task");
    let ns: u64 = tasks
        .filter_map(|t| {
            let dir = t.ok()?.path();
            let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
            if comm.trim_end() != name {
                return None;
            }
            let stat = std::fs::read_to_string(dir.join("schedstat")).ok()?;
            stat.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum();
    Duration::from_nanos(ns)
}

/// Starts one client per node on a runtime of their own and waits until every one
/// holds its whole view: the runtime, the clients, the time that took and when the
/// control plane was done with it.
fn connect_all(
    server: &ServerThread,
    cache: &Cache,
    nodes: &[String],
    mode: Mode,
) -> (
    tokio::runtime::Runtime,
    Vec<Counter>,
    (Duration, ServerDone),
) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(CLIENT_THREADS)
        .enable_all()
        .build()
        .unwrap();
    let clients: Vec<Counter> = nodes
        .iter()
        .map(|node| {
            let view = cache.get(node).expect("every node has a view");
            Counter {
                interest: Default::default(),
                decoder: Default::default(),
                state: Default::default(),
                view: TYPES.map(|t| view.iter(t).count()),
            }
        })
        .collect();
    let server_cpu = cpu_of_threads(SERVER_THREAD);
    let clients_cpu = cpu_of_threads(CLIENT_THREADS);
    let start = Instant::now();
    for (node, c) in nodes.iter().zip(&clients) {
        let opts = ClientOptions {
            address: server.addr.to_string(),
            node: Node {
                id: node.clone(),
                ..Default::default()
            },
            mode,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            dial: None,
        };
        rt.spawn(client::run(opts, c.clone()));
    }
    // Meanwhile, when the control plane made its last response of the push: its own
    // share of the time, the rest being the clients' decoding on the same two cores.
    let server_done = Arc::new(Mutex::new(ServerDone::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (stats, written, server_done, stop) = (
            server.stats.clone(),
            server.written.clone(),
            server_done.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || {
            let mut made = stats.responses.load(Ordering::Relaxed);
            let mut bytes = written.load(Ordering::Relaxed);
            while !stop.load(Ordering::Relaxed) {
                let (now_made, now_bytes) = (
                    stats.responses.load(Ordering::Relaxed),
                    written.load(Ordering::Relaxed),
                );
                let mut done = server_done.lock().unwrap();
                if now_made != made {
                    made = now_made;
                    done.made = start.elapsed();
                }
                if now_bytes != bytes {
                    bytes = now_bytes;
                    done.written = start.elapsed();
                }
                drop(done);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let full = wait_all(&clients, "full push", Counter::holds_its_view);
    let server_cpu = cpu_of_threads(SERVER_THREAD).saturating_sub(server_cpu);
    let clients_cpu = cpu_of_threads(CLIENT_THREADS).saturating_sub(clients_cpu);
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    let server_done = ServerDone {
        server_cpu,
        clients_cpu,
        ..*server_done.lock().unwrap()
    };
    (rt, clients, (full, server_done))
}

/// A push's wall time, when the control plane was done with it, and each side's CPU.
fn push_summary((wall, done): (Duration, ServerDone)) -> String {
    format!(
        "{:.2} s (last response made at {:.2} s, last byte written at {:.2} s; CPU: control plane {:.2} s, sidecars {:.2} s, {:.0} ms each)",
        wall.as_secs_f64(),
        done.made.as_secs_f64(),
        done.written.as_secs_f64(),
        done.server_cpu.as_secs_f64(),
        done.clients_cpu.as_secs_f64(),
        done.clients_cpu.as_secs_f64() * 1000.0 / PROXIES as f64,
    )
}

/// The encoded size of a sidecar's view: the resources' bodies, by type, without the
/// envelope each is sent in.
fn view_size(cache: &Cache, node: &str) -> String {
    let view = cache.get(node).expect("every node has a view");
    let mb = |t: &str| {
        let bytes: usize = view.iter(t).map(|(_, r)| r.body.value.len()).sum();
        bytes as f64 / 1e6
    };
    let [l, r, c, e] = TYPES.map(mb);
    format!(
        "{:.2} MB (listeners {l:.2}, route configurations {r:.2}, clusters {c:.2}, endpoint sets {e:.2})",
        l + r + c + e
    )
}

/// Generates every view (timed, then the RSS after it) and serves them over ADS; the
/// sidecars' node ids.
fn generate_and_serve(
    plane: &trellis_control::ControlPlane,
    cache: &Cache,
) -> (Duration, u64, ServerThread, Vec<String>) {
    let t = Instant::now();
    plane.reload().unwrap();
    let generate = t.elapsed();
    let rss = rss_kb();
    let server = ServerThread::start(cache.clone(), "127.0.0.1:0".parse().unwrap()).unwrap();
    let nodes: Vec<String> = cache.nodes();
    assert_eq!(nodes.len(), PROXIES, "sidecars with views");
    (generate, rss, server, nodes)
}

fn run(services: usize, mode: Mode) {
    let dir = tempfile::tempdir().unwrap();
    write_registry(dir.path(), services, 20000);
    let rss0 = rss_kb();
    let cache = Cache::new();
    let plane = trellis_control::ControlPlane::new(&[dir.path().to_path_buf()], cache.clone());
    let (generate, rss1, server, nodes) = generate_and_serve(&plane, &cache);
    // The first push is into a fresh process: every buffer and every client's state is
    // memory touched for the first time. The 100 clients then go away and 100 new ones,
    // holding nothing, connect to the same control plane: that push reuses memory, as a
    // control plane that has been running does when its proxies reconnect.
    let view_size = view_size(&cache, &nodes[0]);
    let (rt, _, cold) = connect_all(&server, &cache, &nodes, mode);
    drop(rt);
    let sent = server.stats.resources_sent.load(Ordering::Relaxed);
    let (rt, clients, warm) = connect_all(&server, &cache, &nodes, mode);

    // One endpoint of svc-0 changes port on disk, five times: the median and the best.
    let mut changes = Vec::new();
    let mut last = None;
    for round in 0..5u16 {
        let before: Vec<Option<String>> = clients.iter().map(Counter::svc0).collect();
        write_registry(dir.path(), services, 20099 - round);
        let t = Instant::now();
        plane.reload().unwrap();
        let reload = t.elapsed();
        let change =
            wait_all(&clients, "endpoint change", |c| !before.contains(&c.svc0())) + reload;
        changes.push(change);
        last = Some((reload, plane.status().borrow().clone()));
        // Let the ACKs settle before the next round.
        std::thread::sleep(Duration::from_millis(200));
    }
    changes.sort();
    let (reload, status) = last.unwrap();
    let [parse, index, views] = status.reload_timing;
    let path = if status.endpoints_only {
        "endpoints only"
    } else {
        "full rebuild"
    };
    println!(
        "{services:>6} services x {ENDPOINTS} endpoints, {PROXIES} sidecars, {mode:?}: generate all views {:.2} s, control-plane RSS +{} MiB, full push {}, again to 100 new clients {}, endpoint change to all: median {:.0} ms, best {:.0} ms of 5 (last reload {:.0} ms, {path}: read {:.0}, registry {:.0}, views {:.0}), resources sent in the first push {sent}; one sidecar's view: {view_size}",
        generate.as_secs_f64(),
        rss1.saturating_sub(rss0) / 1024,
        push_summary(cold),
        push_summary(warm),
        changes[2].as_secs_f64() * 1000.0,
        changes[0].as_secs_f64() * 1000.0,
        reload.as_secs_f64() * 1000.0,
        parse.as_secs_f64() * 1000.0,
        index.as_secs_f64() * 1000.0,
        views.as_secs_f64() * 1000.0,
    );
    drop(rt);
    server.stop();
}

fn run_kube(services: usize) {
    let dir = tempfile::tempdir().unwrap();
    kube::write_cluster(dir.path(), services);
    let (fake, kubeconfig) = kube::serve(dir.path());
    let rss0 = rss_kb();
    let watchers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let t = Instant::now();
    let inputs = watchers.block_on(async {
        let client = trellis_kube::client(Some(&kubeconfig)).await.unwrap();
        let k = trellis_kube::KubeInputs::start(client, Default::default());
        k.synced(Duration::from_secs(300)).await.unwrap();
        k
    });
    let listed = t.elapsed();
    let cache = Cache::new();
    let plane = trellis_control::ControlPlane::new(&[], cache.clone()).with_kube(inputs.clone());
    let (generate, rss1, server, nodes) = generate_and_serve(&plane, &cache);
    let (_rt, clients, full) = connect_all(&server, &cache, &nodes, Mode::Delta);

    // Endpoint 9 of svc-0 turns not ready, ready, ...: five watch events.
    let mut changes = Vec::new();
    let mut seen = Vec::new();
    let mut rx = inputs.changes();
    let mut last = None;
    for round in 0..5 {
        let before: Vec<Option<String>> = clients.iter().map(Counter::svc0).collect();
        rx.borrow_and_update();
        let t = Instant::now();
        fake.apply(&kube::slice_event(round % 2 == 1)).unwrap();
        watchers.block_on(rx.changed()).unwrap();
        seen.push(t.elapsed());
        plane.reload().unwrap();
        last = Some(plane.status().borrow().clone());
        wait_all(&clients, "endpoint change", |c| !before.contains(&c.svc0()));
        changes.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(200));
    }
    // The same change with an unrelated Service edited too: the full rebuild, which is
    // what every EndpointSlice change took before the short path.
    let before: Vec<Option<String>> = clients.iter().map(Counter::svc0).collect();
    let seen_before = *rx.borrow_and_update();
    let t = Instant::now();
    // (Five rounds left endpoint 9 not ready.)
    fake.apply(&kube::slice_event(true)).unwrap();
    fake.apply(&kube::service_event(1)).unwrap();
    while *rx.borrow_and_update() < seen_before + 2 {
        watchers.block_on(rx.changed()).unwrap();
    }
    plane.reload().unwrap();
    assert!(!plane.status().borrow().endpoints_only);
    wait_all(&clients, "endpoint change", |c| !before.contains(&c.svc0()));
    let rebuild = t.elapsed();
    changes.sort();
    seen.sort();
    let status = last.unwrap();
    let path = if status.endpoints_only {
        "endpoints only"
    } else {
        "full rebuild"
    };
    println!(
        "{services:>6} services x {ENDPOINTS} endpoints, {PROXIES} sidecars, Kubernetes (delta): list {:.2} s, generate all views {:.2} s, control-plane RSS +{} MiB (watch store included), full push {}, endpoint change (watch event to all): median {:.0} ms, best {:.0} ms of 5 (event seen by the watcher: median {:.0} ms; last reload {path}: {:.0} ms); with a Service edited too (full rebuild) {:.0} ms",
        listed.as_secs_f64(),
        generate.as_secs_f64(),
        rss1.saturating_sub(rss0) / 1024,
        push_summary(full),
        changes[2].as_secs_f64() * 1000.0,
        changes[0].as_secs_f64() * 1000.0,
        seen[2].as_secs_f64() * 1000.0,
        status.reload_timing.iter().sum::<Duration>().as_secs_f64() * 1000.0,
        rebuild.as_secs_f64() * 1000.0,
    );
    server.stop();
}

fn main() {
    // As the `trellis` binary does; the bench plays its two roles (the control plane
    // and the sidecars' xDS clients) in one process.
    trellis_alloc::tune();
    let args: Vec<String> = std::env::args().collect();
    // One measurement per process, so that memory is the control plane's alone.
    if let [_, one, n, mode] = args.as_slice() {
        if one == "--one" && mode == "kube" {
            return run_kube(n.parse().unwrap());
        }
        if one == "--one" {
            let mode = if mode == "delta" {
                Mode::Delta
            } else {
                Mode::StateOfTheWorld
            };
            return run(n.parse().unwrap(), mode);
        }
    }
    let sizes: Vec<usize> = args.iter().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![1000] } else { sizes };
    println!(
        "machine: {} cores, kernel {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    for n in sizes {
        for mode in ["sotw", "delta", "kube"] {
            let status = std::process::Command::new(&args[0])
                .args(["--one", &n.to_string(), mode])
                .status()
                .unwrap();
            assert!(status.success());
        }
    }
}
