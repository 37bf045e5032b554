//! Process lifecycle: two runtimes, applying configs atomically, hot reload on file
//! change and SIGHUP, and draining on SIGTERM.
//!
//! The main thread runs a single-threaded runtime for admin, reloads and signals;
//! traffic runs on a separate multi-threaded worker runtime (as in ztunnel), so
//! control work never competes with requests for a worker.

use crate::access_log::AccessLog;
use crate::admin::{self, AdminState, AdminView};
use crate::cluster::ClusterManager;
use crate::http::HttpManager;
use crate::listener::{Behaviour, Connections, Listener, ListenerRuntime};
use crate::serving::Serving;
use crate::stats::{Metrics, ResultLabels};
use crate::tcp::TcpProxy;
use anyhow::Context as _;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::signal::unix::{signal, SignalKind};
use trellis_config::Config;

pub struct ProxyOptions {
    pub config: PathBuf,
    /// Data-path worker threads; 0 means one per core.
    pub worker_threads: usize,
    /// When set, a JSON file with the admin and listener addresses is written here
    /// once everything is bound (useful with port 0).
    pub ready_file: Option<PathBuf>,
    /// How often the config file is checked for changes.
    pub watch_interval: Duration,
    /// Listeners and clusters from a control plane, beside the file's.
    pub xds: Option<crate::xds::XdsOptions>,
}

/// The running proxy's mutable state; only the main runtime touches it.
struct Proxy {
    worker: Handle,
    metrics: Arc<Metrics>,
    conns: Arc<Connections>,
    clusters: ClusterManager,
    listeners: HashMap<String, Listener>,
    /// Every listener but the capture listeners, by address: where capture listeners
    /// hand redirected connections.
    handoffs: Arc<arc_swap::ArcSwap<crate::capture::Handoffs<crate::listener::Target>>>,
    access_logs: HashMap<String, AccessLog>,
    exporters: crate::tracer::Exporters,
    admin: Arc<AdminState>,
    identity: Option<Arc<crate::identity::Agent>>,
    /// The last good config file, and what xDS added to it.
    base: Serving,
    dynamic: crate::xds::Dynamic,
    /// What is served: `base` with `dynamic`.
    serving: Arc<Serving>,
    /// The config each running listener was built from.
    listener_sources: HashMap<String, Arc<trellis_config::Listener>>,
    /// The workload the listeners were built for (as the first to name one names it).
    own: trellis_config::WorkloadMetadata,
    /// The xDS node id, sent with this workload's peer metadata.
    node_id: Option<String>,
}

/// How much of the config an apply builds anew.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rebuild {
    /// Listeners and clusters whose config changed (an xDS update).
    Changed,
    /// Everything: the file changed, or the certificate the TLS contexts hold.
    All,
}

impl Proxy {
    /// Applies an xDS update on top of the current file: what it changes.
    async fn apply_dynamic(&mut self, dynamic: crate::xds::Dynamic) -> Result<(), String> {
        let serving = self.base.with(&dynamic);
        self.apply(serving, Rebuild::Changed, "xDS").await?;
        tracing::info!(
            listeners = dynamic.listeners.len(),
            clusters = dynamic.clusters.len(),
            "xDS update applied"
        );
        self.dynamic = dynamic;
        Ok(())
    }

    /// Validates and applies `serving` completely or not at all (on error nothing
    /// changes); `source` names it in errors.
    async fn apply(
        &mut self,
        serving: Serving,
        mut rebuild: Rebuild,
        source: &str,
    ) -> Result<(), String> {
        let config = &*serving.settings;
        // The agent is started once, with the first config's identity section.
        if config.identity.as_ref() != self.identity.as_ref().map(|a| a.config()) {
            return Err("identity: changes need a restart".into());
        }
        // What is not a listener or cluster of its own reaches into all of them.
        if !Arc::ptr_eq(&serving.settings, &self.serving.settings)
            || serving.secrets != self.serving.secrets
        {
            rebuild = Rebuild::All;
        }
        // This workload, as its own listeners name it (a shared listener does not).
        let own = serving
            .listeners
            .iter()
            .filter_map(|l| l.istio_stats.as_ref()?.workload.as_ref())
            .next()
            .cloned()
            .unwrap_or_default();
        if own != self.own {
            rebuild = Rebuild::All;
        }
        let all = rebuild == Rebuild::All;
        // Check what changed; the rest was checked when it came. Once a cluster goes,
        // every listener is checked again for what it names.
        let (cluster_marks, kept) = self.clusters.marks(&serving.clusters, all);
        let removes = kept < self.clusters.count();
        let changed_listeners: Vec<bool> = serving
            .listeners
            .iter()
            .map(|l| {
                all || !self
                    .listener_sources
                    .get(&l.name)
                    .is_some_and(|s| Arc::ptr_eq(s, l) || s == l)
            })
            .collect();
        let listener_marks: Vec<_> = serving
            .listeners
            .iter()
            .zip(&changed_listeners)
            .map(|(l, changed)| (&**l, *changed || removes))
            .collect();
        config
            .check_with(source, &serving.secrets, &listener_marks, &cluster_marks)
            .map_err(|e| e.to_string())?;
        let cert = self.identity.as_ref().and_then(|a| a.current());
        let workload = crate::tls::Workload {
            cert: cert.as_deref(),
            secrets: &serving.secrets,
        };
        let clusters = self.clusters.build(&serving.clusters, &self.metrics, all);
        // TLS contexts first: a missing or bad certificate file refuses the config.
        let mut upstream_tls = Vec::new();
        for (c, cluster) in clusters.built() {
            let ctx = match &c.tls {
                Some(t) => Some(Arc::new(
                    crate::tls::client(t, c.http2, &self.metrics, workload)
                        .map_err(|e| format!("clusters {:?}: {e}", c.name))?,
                )),
                None => None,
            };
            upstream_tls.push((cluster.clone(), ctx));
        }
        let mut access_logs = self.access_logs.clone();
        // Listeners kept as they are keep their tracers, whose exporters stay.
        let mut exporters = match rebuild {
            Rebuild::All => crate::tracer::Exporters::default(),
            Rebuild::Changed => self.exporters.clone(),
        };
        let mut runtimes = Vec::new();
        let node_id = self.node_id.clone().unwrap_or_else(|| own.name.clone());
        self.metrics.istio.max_series.store(
            config.limits.max_istio_series as usize,
            std::sync::atomic::Ordering::Relaxed,
        );
        // The frame a listener writes names this workload unless the listener names
        // its own: made once, shared by the rest.
        let own_frame = crate::peer_exchange::frame(&own, &node_id);
        for (l, _) in serving
            .listeners
            .iter()
            .zip(&changed_listeners)
            .filter(|(_, changed)| **changed)
        {
            let stats = self.metrics.listener(&l.name);
            let authz = match &l.authorization {
                Some(a) => {
                    let mode = match crate::http::compiled_engine(config.matcher.engine) {
                        Some(engine) => trellis_authz::MatchMode::Compiled(engine),
                        None => trellis_authz::MatchMode::Sequential,
                    };
                    let engine = trellis_authz::Engine::with_mode(a, mode)
                        .map_err(|e| format!("listeners {:?}: authorization: {e}", l.name))?;
                    Some(Arc::new(crate::authz::ListenerAuthz {
                        listener: l.name.clone(),
                        engine,
                        counters: self.metrics.rbac(&l.name),
                    }))
                }
                None => None,
            };
            let jwt = match &l.jwt {
                Some(j) if l.http.is_some() => Some(Arc::new(
                    trellis_jwt::Authenticator::new(j)
                        .map_err(|e| format!("listeners {:?}: jwt: {e}", l.name))?,
                )),
                Some(_) => {
                    return Err(format!(
                        "listeners {:?}: jwt needs an http listener",
                        l.name
                    ))
                }
                None => None,
            };
            let peer_frame = match l.istio_stats.as_ref().and_then(|s| s.workload.as_ref()) {
                Some(w) if *w != own => crate::peer_exchange::frame(w, &node_id),
                _ => own_frame.clone(),
            };
            let telemetry = l.istio_stats.as_ref().map(|s| {
                Arc::new(crate::istio_stats::ListenerTelemetry::new(
                    self.metrics.istio.clone(),
                    s,
                    s.workload.as_ref().unwrap_or(&own),
                    &node_id,
                ))
            });
            let mut tcp_log = |t: &trellis_config::TcpProxy, field: &str| {
                let Some(a) = &t.access_log else {
                    return Ok(None);
                };
                let at = |e: String| format!("listeners {:?}: {field}.{e}", l.name);
                Ok::<_, String>(Some(crate::tcp::TcpLog {
                    log: AccessLog::shared(
                        &a.path,
                        &mut access_logs,
                        &self.metrics.access_log_dropped,
                    )
                    .map_err(at)?,
                    format: crate::access_log::LogFormat::of(a).map_err(at)?,
                    listener: l.name.clone(),
                }))
            };
            let tcp = match &l.tcp {
                Some(t) => Some(Arc::new(TcpProxy::new(
                    t,
                    &clusters,
                    stats.clone(),
                    authz.clone(),
                    telemetry.clone(),
                    peer_frame.clone(),
                    tcp_log(t, "tcp")?,
                ))),
                None => None,
            };
            let behaviour = if !l.sni_routes.is_empty() {
                let mut routes = trellis_tls::ServerNames::default();
                for (i, r) in l.sni_routes.iter().enumerate() {
                    let proxy = TcpProxy::new(
                        &r.tcp,
                        &clusters,
                        stats.clone(),
                        authz.clone(),
                        telemetry.clone(),
                        peer_frame.clone(),
                        tcp_log(&r.tcp, &format!("sni_routes[{i}].tcp"))?,
                    );
                    routes.insert(&r.server_names, Arc::new(proxy));
                }
                Behaviour::Passthrough(Arc::new(crate::listener::Passthrough {
                    routes,
                    default: tcp,
                }))
            } else if let Some(h) = &l.http {
                let tracer = match &h.tracing {
                    Some(t) => Some(
                        exporters
                            .tracer(&self.exporters, t, &clusters, &self.metrics, &node_id)
                            .map_err(|e| format!("listeners {:?}: {e}", l.name))?,
                    ),
                    None => None,
                };
                let m = HttpManager::build(
                    &l.name,
                    h,
                    jwt,
                    authz,
                    &config.limits,
                    &config.matcher,
                    &clusters,
                    &self.metrics,
                    &mut access_logs,
                    telemetry.clone(),
                    tracer,
                )
                .map_err(|e| format!("listeners {:?}: {e}", l.name))?;
                match tcp {
                    // Both: protocol detection (a port whose protocol is not declared).
                    Some(tcp) => Behaviour::Detect {
                        http: Arc::new(m),
                        codec: h.codec,
                        tcp,
                    },
                    None => Behaviour::Http(Arc::new(m), h.codec),
                }
            } else {
                Behaviour::Tcp(tcp.expect("validated: tcp or http"))
            };
            let tls = match &l.tls {
                Some(t) => {
                    let codec = l.http.as_ref().map(|h| h.codec);
                    let server = crate::tls::server(t, codec, &self.metrics, workload)
                        .map_err(|e| format!("listeners {:?}: {e}", l.name))?;
                    Some(crate::listener::DownstreamTls {
                        server,
                        handshake_timeout: t.handshake_timeout.get(),
                        handshakes: self.metrics.handshakes(&l.name),
                        permissive: t.mode == trellis_config::TlsMode::Permissive,
                    })
                }
                None => None,
            };
            let addrs: Vec<String> = l.all_addresses().cloned().collect();
            runtimes.push((
                l.name.clone(),
                addrs,
                ListenerRuntime {
                    behaviour,
                    limits: config.limits.clone(),
                    stats,
                    tls,
                    admission: crate::listener::Admission {
                        tls: l.tls.clone(),
                        tcp_authorization: (l.tcp.is_some() || !l.sni_routes.is_empty())
                            .then(|| l.authorization.clone())
                            .flatten(),
                    },
                    retired: Arc::new(tokio::sync::watch::channel(false).0),
                    capture: l.use_original_dst,
                    peer_frame,
                },
                l.bind_to_port,
            ));
        }
        // Bind every new or moved listener before changing anything, so that a port
        // conflict refuses the whole config.
        let mut fresh_listeners = Vec::new();
        let mut updates = Vec::new();
        for (name, addrs, rt, bind_to_port) in runtimes {
            match self.listeners.get(&name) {
                Some(existing)
                    if existing.configured == addrs && existing.bind_to_port == bind_to_port =>
                {
                    updates.push((name, rt))
                }
                _ => {
                    let l = Listener::bind(&name, addrs, bind_to_port, rt)
                        .map_err(|e| e.to_string())?;
                    fresh_listeners.push(l);
                }
            }
        }
        // Commit.
        for (cluster, tls) in upstream_tls {
            cluster.tls.store(tls);
        }
        let starts: Vec<_> = clusters
            .fresh
            .iter()
            .cloned()
            .map(|c| self.worker.spawn(async move { c.start().await }))
            .collect();
        for s in starts {
            let _ = s.await;
        }
        for (name, mut rt) in updates {
            let slot = &self.listeners[&name].runtime;
            rt.succeed(&slot.load(), &name);
            slot.store(Arc::new(rt));
        }
        let keep: std::collections::HashSet<&str> =
            serving.listeners.iter().map(|l| l.name.as_str()).collect();
        let moved: Vec<String> = fresh_listeners.iter().map(|l| l.name.clone()).collect();
        self.listeners.retain(|name, l| {
            let stays = keep.contains(name.as_str()) && !moved.contains(name);
            if !stays {
                tracing::info!(listener = %name, "listener removed; draining its connections");
                l.drain();
            }
            stays
        });
        for mut l in fresh_listeners {
            l.start(&self.worker, self.conns.clone(), self.handoffs.clone())
                .map_err(|e| e.to_string())?;
            if l.bind_to_port {
                tracing::info!(listener = %l.name, addresses = ?l.bound, "listening");
            } else {
                tracing::info!(listener = %l.name, addresses = ?l.bound, "taking connections captured for these addresses");
            }
            self.listeners.insert(l.name.clone(), l);
        }
        let mut handoffs = crate::capture::Handoffs::default();
        for l in self.listeners.values() {
            if !l.runtime.load().capture {
                for a in &l.bound {
                    handoffs.insert(*a, l.target());
                }
            }
        }
        self.handoffs.store(Arc::new(handoffs));
        self.clusters.commit(clusters.into_commit());
        self.access_logs = access_logs;
        exporters.commit();
        self.exporters = exporters;
        let mut listeners: Vec<_> = self
            .listeners
            .values()
            .map(|l| (l.name.clone(), l.bound.clone()))
            .collect();
        listeners.sort();
        self.listener_sources = serving
            .listeners
            .iter()
            .map(|l| (l.name.clone(), l.clone()))
            .collect();
        self.own = own;
        let serving = Arc::new(serving);
        self.admin.view.store(Arc::new(AdminView {
            serving: serving.clone(),
            clusters: self.clusters.all().cloned().collect(),
            listeners,
        }));
        self.serving = serving;
        Ok(())
    }

    async fn reload(&mut self, path: &Path) -> bool {
        let result = match Config::load(path) {
            Ok(c) => {
                let base = Serving::from_file(c);
                let source = format!("{} with the xDS config", path.display());
                match self
                    .apply(base.with(&self.dynamic), Rebuild::All, &source)
                    .await
                {
                    Ok(()) => {
                        self.base = base;
                        Ok(())
                    }
                    Err(e) => Err(format!("{}: {e}", path.display())),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        let label = ResultLabels {
            result: if result.is_ok() { "success" } else { "failure" },
        };
        self.metrics.config_reloads.get_or_create(&label).inc();
        match result {
            Ok(()) => {
                tracing::info!(file = %path.display(), "config reloaded");
                true
            }
            Err(e) => {
                tracing::error!("config refused, the previous config keeps serving:\n{e}");
                false
            }
        }
    }
}

/// How often the proxy looks at what malloc keeps.
const RELEASE_INTERVAL: Duration = Duration::from_secs(4);
/// Free memory malloc keeps for the next burst without handing it back.
const KEEP_FREE: usize = 4 << 20;

/// Hands memory freed after a burst (10 000 connections closed) back to the kernel.
/// The process's malloc settings keep what is freed for reuse (`trellis_alloc::tune`),
/// which suits xDS pushes but would leave a proxy at its peak for good; released here,
/// on the main thread, once freed memory outgrows what is in use.
async fn release_freed_memory() {
    let mut tick = tokio::time::interval(RELEASE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let usage = trellis_alloc::usage();
        if trellis_alloc::worth_releasing(usage, KEEP_FREE) {
            trellis_alloc::release();
            tracing::debug!(
                in_use = usage.in_use,
                free = usage.free,
                "freed memory handed back"
            );
        }
    }
}

/// Runs the proxy until SIGTERM or SIGINT, then drains and returns.
pub fn run(opts: ProxyOptions) -> anyhow::Result<()> {
    // Stamped before reading, so an edit racing the first load is seen by the watcher.
    let stamp = file_stamp(&opts.config);
    let config = Config::load(&opts.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let workers = Workers::start(opts.worker_threads)?;
    let main = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the main runtime")?;
    let result = main.block_on(run_main(opts, config, stamp, workers.handle()));
    workers.stop();
    result
}

/// The data-path runtime. With one worker it is a current-thread runtime driven by its
/// own thread: no work-stealing scheduler, no cross-thread wake-ups for a thread that
/// has no one to share with.
enum Workers {
    Single {
        handle: Handle,
        stop: tokio::sync::oneshot::Sender<()>,
        thread: std::thread::JoinHandle<()>,
    },
    Multi(tokio::runtime::Runtime),
}

impl Workers {
    fn start(threads: usize) -> anyhow::Result<Self> {
        if threads == 1 {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the worker runtime")?;
            let handle = rt.handle().clone();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name("trellis-worker".into())
                .spawn(move || {
                    rt.block_on(async {
                        let _ = stopped.await;
                    });
                    rt.shutdown_timeout(Duration::from_secs(1));
                })
                .context("starting the worker thread")?;
            return Ok(Workers::Single {
                handle,
                stop,
                thread,
            });
        }
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if threads > 0 {
            b.worker_threads(threads);
        }
        let rt = b
            .thread_name("trellis-worker")
            .enable_all()
            .build()
            .context("starting the worker runtime")?;
        Ok(Workers::Multi(rt))
    }

    fn handle(&self) -> Handle {
        match self {
            Workers::Single { handle, .. } => handle.clone(),
            Workers::Multi(rt) => rt.handle().clone(),
        }
    }

    fn stop(self) {
        match self {
            Workers::Single { stop, thread, .. } => {
                let _ = stop.send(());
                let _ = thread.join();
            }
            Workers::Multi(rt) => rt.shutdown_timeout(Duration::from_secs(1)),
        }
    }
}

async fn run_main(
    opts: ProxyOptions,
    config: Config,
    mut last_seen: Option<FileStamp>,
    worker: Handle,
) -> anyhow::Result<()> {
    let metrics = Metrics::new();
    let admin_addr = config.admin.address.clone();
    let admin = Arc::new(AdminState {
        view: ArcSwap::from_pointee(AdminView {
            serving: Default::default(),
            clusters: Vec::new(),
            listeners: Vec::new(),
        }),
        metrics: metrics.clone(),
        draining: Default::default(),
        identity: None,
    });
    let mut proxy = Proxy {
        worker,
        metrics,
        conns: Arc::new(Connections::default()),
        clusters: ClusterManager::default(),
        listeners: HashMap::new(),
        handoffs: Default::default(),
        access_logs: HashMap::new(),
        exporters: Default::default(),
        admin: admin.clone(),
        identity: None,
        base: Serving::default(),
        dynamic: Default::default(),
        serving: Default::default(),
        listener_sources: HashMap::new(),
        own: Default::default(),
        node_id: opts.xds.as_ref().map(|x| x.node_id.clone()),
    };
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    // The identity agent gets the first certificate before any listener starts, as
    // Istio's agent does before Envoy is ready.
    let (rotated_tx, mut rotated) = tokio::sync::mpsc::channel(4);
    if let Some(id) = &config.identity {
        let agent = crate::identity::Agent::new(id.clone(), proxy.metrics.clone());
        tokio::select! {
            _ = agent.first_certificate() => {}
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
        }
        tokio::spawn(agent.clone().rotate(rotated_tx));
        proxy.identity = Some(agent);
    }
    let admin = Arc::new(AdminState {
        view: ArcSwap::from_pointee(AdminView {
            serving: Default::default(),
            clusters: Vec::new(),
            listeners: Vec::new(),
        }),
        metrics: proxy.metrics.clone(),
        draining: Default::default(),
        identity: proxy.identity.clone(),
    });
    proxy.admin = admin.clone();
    let admin_listener = tokio::net::TcpListener::bind(&admin_addr)
        .await
        .with_context(|| format!("admin.address {admin_addr}: cannot bind"))?;
    let admin_bound = admin_listener.local_addr()?;
    let base = Serving::from_file(config);
    let source = opts.config.display().to_string();
    proxy
        .apply(base.clone(), Rebuild::All, &source)
        .await
        .map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
    proxy.base = base;
    tokio::spawn(admin::serve(admin_listener, admin.clone()));
    tokio::spawn(release_freed_memory());
    tracing::info!(admin = %admin_bound, "trellis proxy ready");
    if let Some(path) = &opts.ready_file {
        write_ready_file(path, admin_bound, &proxy)?;
    }

    // xDS updates come to this loop, which owns the proxy's state.
    let (xds_tx, mut xds_updates) = tokio::sync::mpsc::channel::<crate::xds::Update>(1);
    if let Some(x) = opts.xds.clone() {
        if x.tls && proxy.identity.is_none() {
            anyhow::bail!(
                "--xds-tls needs the identity section: the workload certificate is the xDS client certificate"
            );
        }
        tracing::info!(address = %x.address, node = %x.node_id, mode = ?x.mode, tls = x.tls, "xDS client starting");
        tokio::spawn(crate::xds::run(
            x,
            proxy.metrics.clone(),
            xds_tx.clone(),
            proxy.identity.clone(),
        ));
    }
    let mut hup = signal(SignalKind::hangup())?;
    // The first check is one interval away: an immediate tick would race a writer.
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + opts.watch_interval,
        opts.watch_interval,
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading config");
                last_seen = file_stamp(&opts.config);
                proxy.reload(&opts.config).await;
            }
            _ = tick.tick() => {
                let stamp = file_stamp(&opts.config);
                if stamp != last_seen {
                    last_seen = stamp;
                    proxy.reload(&opts.config).await;
                }
            }
            Some((dynamic, reply)) = xds_updates.recv() => {
                let result = proxy.apply_dynamic(dynamic).await;
                if let Err(e) = &result {
                    tracing::warn!("xDS update refused, the previous config keeps serving: {e}");
                }
                let _ = reply.send(result);
            }
            Some(()) = rotated.recv() => {
                // New certificate: rebuild the TLS contexts; open connections keep theirs.
                let serving = (*proxy.serving).clone();
                if let Err(e) = proxy.apply(serving, Rebuild::All, "the rotated certificate").await {
                    tracing::error!("installing the rotated certificate failed: {e}");
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    let drain_timeout = admin
        .view
        .load()
        .serving
        .settings
        .limits
        .drain_timeout
        .get();
    tracing::info!(timeout = ?drain_timeout, open = proxy.conns.active(), "draining");
    admin.draining.store(true, Ordering::Relaxed);
    for l in proxy.listeners.values() {
        l.drain();
    }
    let clean = proxy.conns.wait_idle(drain_timeout).await;
    if clean {
        tracing::info!("drained; exiting");
    } else {
        tracing::warn!(
            open = proxy.conns.active(),
            "drain timeout; closing remaining connections"
        );
    }
    Ok(())
}

type FileStamp = (std::time::SystemTime, u64, u64);

/// What changes when the file is edited in place or replaced.
fn file_stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

fn write_ready_file(path: &Path, admin: std::net::SocketAddr, proxy: &Proxy) -> anyhow::Result<()> {
    let listeners: serde_json::Map<String, serde_json::Value> = proxy
        .listeners
        .values()
        .map(|l| {
            (
                l.name.clone(),
                serde_json::json!(l.bound.iter().map(|a| a.to_string()).collect::<Vec<_>>()),
            )
        })
        .collect();
    let doc = serde_json::json!({
        "pid": std::process::id(),
        "admin": admin.to_string(),
        "listeners": listeners,
    });
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&doc)?)?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
