//! Starts real `trellis` processes on loopback port 0 and talks to them with real
//! clients. Every process is killed when its handle drops, even on panic.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_trellis");

pub struct Proc {
    child: Child,
    pub dir: tempfile::TempDir,
}

impl Proc {
    pub fn spawn(args: &[&str], dir: tempfile::TempDir) -> Proc {
        let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let child = Command::new(BIN)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn trellis");
        Proc { child, dir }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for exit; returns the exit code, or None on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn wait_ready(&mut self, file: &Path) -> Value {
        self.wait_ready_for(file, Duration::from_secs(20))
    }

    pub fn wait_ready_for(&mut self, file: &Path, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(text) = std::fs::read_to_string(file) {
                return serde_json::from_str(&text).unwrap();
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("trellis exited early ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "not ready in time:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `trellis demo-app` upstream.
pub struct App {
    /// Held so that the process lives as long as the handle.
    _proc: Proc,
    pub addr: SocketAddr,
}

pub fn app(name: &str, extra: &[&str]) -> App {
    app_on(name, "127.0.0.1:0", extra)
}

pub fn app_on(name: &str, listen: &str, extra: &[&str]) -> App {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready.json");
    let mut args = vec![
        "demo-app",
        "--listen",
        listen,
        "--name",
        name,
        "--workers",
        "1",
        "--ready-file",
    ];
    let r = ready.to_str().unwrap().to_string();
    args.push(&r);
    args.extend_from_slice(extra);
    let mut proc = Proc::spawn(&args, dir);
    let doc = proc.wait_ready(&ready);
    let addr = doc["addresses"][0].as_str().unwrap().parse().unwrap();
    App { _proc: proc, addr }
}

/// A running `trellis proxy` with its config file.
pub struct Proxy {
    pub proc: Proc,
    pub admin: SocketAddr,
    pub listeners: HashMap<String, Vec<SocketAddr>>,
}

pub fn proxy(yaml: &str) -> Proxy {
    proxy_with(yaml, &[])
}

pub fn proxy_with(yaml: &str, extra: &[&str]) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.yaml");
    std::fs::write(&config, with_admin(yaml)).unwrap();
    let ready = dir.path().join("ready.json");
    let c = config.to_str().unwrap().to_string();
    let r = ready.to_str().unwrap().to_string();
    let mut args = vec![
        "proxy",
        "--config",
        &c,
        // One worker: the current-thread data path that sidecars and the benchmarks use
        // (the demo test runs the multi-threaded one).
        "--workers",
        "1",
        "--ready-file",
        &r,
    ];
    if !extra.contains(&"--watch-interval") {
        args.extend_from_slice(&["--watch-interval", "100ms"]);
    }
    args.extend_from_slice(extra);
    let mut proc = Proc::spawn(&args, dir);
    let doc = proc.wait_ready(&ready);
    let listeners = doc["listeners"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let addrs = v
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().parse().unwrap())
                .collect();
            (k.clone(), addrs)
        })
        .collect();
    Proxy {
        admin: doc["admin"].as_str().unwrap().parse().unwrap(),
        listeners,
        proc,
    }
}

/// Tests never use the default admin port, so that they can run in parallel.
fn with_admin(yaml: &str) -> String {
    if yaml.contains("admin:") {
        yaml.to_string()
    } else {
        format!("admin:\n  address: 127.0.0.1:0\n{yaml}")
    }
}

impl Proxy {
    pub fn addr(&self, listener: &str) -> SocketAddr {
        self.listeners[listener][0]
    }

    pub fn url(&self, listener: &str, path: &str) -> String {
        format!("http://{}{path}", self.addr(listener))
    }

    pub fn config_path(&self) -> PathBuf {
        self.proc.dir.path().join("proxy.yaml")
    }

    /// Replaces the config file in one rename, as config management tools do.
    pub fn write_config(&self, yaml: &str) {
        let tmp = self.proc.dir.path().join("proxy.yaml.new");
        std::fs::write(&tmp, with_admin(yaml)).unwrap();
        std::fs::rename(&tmp, self.config_path()).unwrap();
    }

    pub async fn admin_get(&self, path: &str) -> Resp {
        get(&format!("http://{}{path}", self.admin)).await
    }

    /// Sum of a metric's samples whose line starts with `prefix` (name plus labels).
    pub async fn metric(&self, prefix: &str) -> f64 {
        let text = self.admin_get("/stats/prometheus").await.body;
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }

    /// Waits until the proxy log contains `needle`.
    pub async fn wait_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.proc.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "log never showed {needle:?}:\n{}",
                self.proc.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
    pub trailers: Option<http::HeaderMap>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn served_by(&self) -> String {
        self.header("x-served-by").unwrap_or("-").to_string()
    }
}

pub async fn get(url: &str) -> Resp {
    send(Req::get(url))
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

pub struct Req {
    pub method: http::Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub h2: bool,
}

impl Req {
    pub fn get(url: &str) -> Req {
        Req {
            method: http::Method::GET,
            url: url.to_string(),
            headers: Vec::new(),
            body: Bytes::new(),
            h2: false,
        }
    }
    pub fn method(mut self, m: &str) -> Req {
        self.method = m.parse().unwrap();
        self
    }
    pub fn header(mut self, k: &str, v: &str) -> Req {
        self.headers.push((k.into(), v.into()));
        self
    }
    pub fn body(mut self, b: impl Into<Bytes>) -> Req {
        self.body = b.into();
        self
    }
    pub fn h2(mut self) -> Req {
        self.h2 = true;
        self
    }
}

pub async fn send(req: Req) -> Result<Resp, String> {
    let mut builder = Client::builder(TokioExecutor::new());
    if req.h2 {
        builder.http2_only(true);
    }
    let client: Client<_, Full<Bytes>> = builder.build_http();
    let mut r = http::Request::builder().method(req.method).uri(&req.url);
    for (k, v) in &req.headers {
        r = r.header(k, v);
    }
    let r = r.body(Full::new(req.body)).map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(20), client.request(r))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| format!("{e:?}"))?;
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.map_err(|e| e.to_string())?;
    let trailers = collected.trailers().cloned();
    Ok(Resp {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: String::from_utf8_lossy(&collected.to_bytes()).to_string(),
        trailers,
    })
}

/// A cluster block with static endpoints and optional extra YAML lines.
pub fn cluster(name: &str, endpoints: &[SocketAddr], extra: &str) -> String {
    let eps: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    let mut s = format!("  - name: {name}\n    endpoints: [{}]\n", eps.join(", "));
    for line in extra.lines().filter(|l| !l.trim().is_empty()) {
        s.push_str("    ");
        s.push_str(line);
        s.push('\n');
    }
    s
}

/// One HTTP listener named `web` on 127.0.0.1:0 with one catch-all virtual host.
pub fn http_listener(routes: &str) -> String {
    format!(
        "listeners:\n  - name: web\n    address: 127.0.0.1:0\n    http:\n      virtual_hosts:\n        - name: all\n          domains: [\"*\"]\n          routes:\n{}",
        indent(routes, 12)
    )
}

pub fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    let mut out = String::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        out.push_str(&pad);
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// A running `trellis ca` with its own state directory.
pub struct Ca {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub root_pem: String,
    pub state_dir: PathBuf,
}

pub fn ca(extra: &[&str]) -> Ca {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    ca_at(dir, state, "127.0.0.1:0", extra)
}

/// A CA with a given state directory and listen address (to restart one in place).
pub fn ca_at(dir: tempfile::TempDir, state: PathBuf, listen: &str, extra: &[&str]) -> Ca {
    let ready = dir.path().join("ready.json");
    let (s, r) = (state.display().to_string(), ready.display().to_string());
    let mut args = vec![
        "ca",
        "--state-dir",
        &s,
        "--listen",
        listen,
        "--ready-file",
        &r,
    ];
    args.extend_from_slice(extra);
    let mut proc = Proc::spawn(&args, dir);
    let doc = proc.wait_ready(&ready);
    Ca {
        addr: doc["address"].as_str().unwrap().parse().unwrap(),
        root_pem: doc["root_pem"].as_str().unwrap().to_string(),
        state_dir: state,
        proc,
    }
}

impl Ca {
    /// Mints a bootstrap token with `trellis ca token`.
    pub fn token(&self, identity: &str, ttl: &str) -> String {
        let out = Command::new(BIN)
            .args(["ca", "--state-dir"])
            .arg(&self.state_dir)
            .args(["token", "--identity", identity, "--ttl", ttl])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
}

impl Ca {
    /// Writes the root to a file a proxy config can name.
    pub fn root_file(&self, dir: &Path) -> String {
        let p = dir.join("ca-root.pem");
        std::fs::write(&p, &self.root_pem).unwrap();
        p.display().to_string()
    }

    /// Writes a bootstrap token for `identity` to a file.
    pub fn token_file(&self, dir: &Path, identity: &str) -> String {
        let p = dir.join(format!("{}.token", identity.rsplit('/').next().unwrap()));
        std::fs::write(&p, self.token(identity, "1h")).unwrap();
        p.display().to_string()
    }
}

/// Runs `openssl s_client` against `addr` (SNI `localhost` unless `args` name another);
/// returns everything it printed.
pub fn s_client(addr: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            "localhost",
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl (Debian package openssl) must be installed");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// What h2load reported for a bounded run.
#[derive(Debug)]
pub struct H2load {
    pub succeeded: u64,
    pub failed: u64,
    pub status_2xx: u64,
    pub protocol: String,
    pub out: String,
}

/// Runs nghttp2's `h2load` with `args` (a request count, connections, streams, URI):
/// the HTTP/2 load generator users point at a proxy, as the issue asks for.
pub fn h2load(args: &[&str]) -> H2load {
    let out = Command::new("h2load")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("h2load (Debian package nghttp2-client) must be installed");
    let out =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    // "requests: 200 total, 200 started, 200 done, 200 succeeded, 0 failed, ..."
    let count = |line: &str, what: &str| -> u64 {
        line.split(',')
            .map(str::trim)
            .find_map(|part| part.strip_suffix(what).map(str::trim))
            .and_then(|n| n.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    let line = |prefix: &str| {
        out.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or("")
            .to_string()
    };
    let requests = line("requests:");
    let codes = line("status codes:");
    H2load {
        succeeded: count(&requests, "succeeded"),
        failed: count(&requests, "failed"),
        status_2xx: count(&codes, "2xx"),
        protocol: line("Application protocol:")
            .trim_start_matches("Application protocol:")
            .trim()
            .to_string(),
        out,
    }
}

/// `openssl s_server -www -tlsextdebug` on `127.0.0.1:port` with `args` (certificate,
/// key, client CA); what it prints (the SNI it received, among others) is in `out`.
pub struct SServer {
    child: std::process::Child,
    pub out: PathBuf,
}

impl SServer {
    pub fn start(port: u16, args: &[&str], dir: &Path) -> SServer {
        let out = dir.join(format!("s_server-{port}.out"));
        let child = Command::new("openssl")
            .args(["s_server", "-accept", &format!("127.0.0.1:{port}")])
            .args(args)
            .args(["-www", "-tlsextdebug"])
            .stdin(Stdio::piped())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl (Debian package openssl) must be installed");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "s_server never listened"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        SServer { child, out }
    }
}

impl SServer {
    /// The server name the last client sent, from s_server's `-tlsextdebug` hex dump
    /// (16 bytes a line, the text from column 57).
    pub fn sni(&self) -> String {
        let seen = std::fs::read_to_string(&self.out).unwrap_or_default();
        seen.lines()
            .skip_while(|l| !l.contains("\"server name\""))
            .skip(1)
            .take(2)
            .filter_map(|l| l.get(57..))
            .collect()
    }
}

impl Drop for SServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `trellis gateway` for the workload `namespace/name` of control plane `c`, with a
/// token for `identity`; returns it once its admin port is up.
pub fn gateway_in(c: &Control, namespace: &str, name: &str, identity: &str) -> Proc {
    let dir = tempfile::tempdir().unwrap();
    let root = c.ca.root_file(dir.path());
    let token = c.ca.token_file(dir.path(), identity);
    let ready = dir.path().join("ready.json");
    let ca = c.ca.addr.to_string();
    let ready_arg = ready.display().to_string();
    let mut p = Proc::spawn(
        &[
            "gateway",
            "--control",
            &ca,
            "--ca-root",
            &root,
            "--token-file",
            &token,
            "--name",
            name,
            "--namespace",
            namespace,
            "--admin",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--ready-file",
            &ready_arg,
        ],
        dir,
    );
    p.wait_ready(&ready);
    p
}

/// A running `trellis control` (xDS and the embedded CA) reading `mesh_dir`.
pub struct Control {
    pub ca: Ca,
    pub xds: SocketAddr,
}

pub fn control(mesh_dir: &Path) -> Control {
    control_with(&["--config-dir", &mesh_dir.display().to_string()])
}

/// `trellis control` reading its inputs from where `inputs` say (`--config-dir`,
/// `--kubeconfig`).
pub fn control_with(inputs: &[&str]) -> Control {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let ready = dir.path().join("ready.json");
    let (s, r) = (state.display().to_string(), ready.display().to_string());
    let mut args = vec!["control"];
    args.extend_from_slice(inputs);
    args.extend_from_slice(&[
        "--xds-listen",
        "127.0.0.1:0",
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
        &s,
        "--ready-file",
        &r,
        "--poll-interval",
        "50ms",
    ]);
    let mut proc = Proc::spawn(&args, dir);
    let doc = proc.wait_ready(&ready);
    Control {
        xds: doc["xds"].as_str().unwrap().parse().unwrap(),
        ca: Ca {
            addr: doc["ca"].as_str().unwrap().parse().unwrap(),
            root_pem: doc["root_pem"].as_str().unwrap().to_string(),
            state_dir: state,
            proc,
        },
    }
}

/// A port that was free a moment ago (for configs that must name ports up front).
/// Taken below the kernel's ephemeral range (32768-60999), where port 0 binds and
/// outgoing connections never land, and each at most once per test process: a port
/// handed out here cannot be taken meanwhile by another test's listener or client.
pub fn free_port() -> u16 {
    free_ports(1)
}

/// The first of `n` consecutive ports reserved as [`free_port`] does (for a process
/// that takes its ports upwards from a base, as `trellis up --base-port` does); the
/// first is free, the others are only never handed out again.
pub fn free_ports(n: u16) -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        20_000 + (std::process::id() % 40) as u16 * 300,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let port = NEXT.fetch_add(n, Ordering::SeqCst);
        assert!(port < 32_768 - n, "the test process used up its ports");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Held for the whole of a test that asserts how long something takes, and of a test
/// that keeps both cores busy (batch signing, a Python gRPC client), so that the two
/// kinds never run at the same moment: on this two-core machine a config edit's
/// 1 s deadline failed now and then while a batch-signing test ran beside it.
pub async fn quiet() -> tokio::sync::MutexGuard<'static, ()> {
    static QUIET: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    QUIET.lock().await
}
