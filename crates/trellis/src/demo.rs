//! `trellis demo`: the proxy in front of three demo services, driven by a built-in
//! load generator, with a live view of what the proxy does (weighted routing,
//! retries hiding a failing version, fault injection).

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Where the proxy listens for the demo's traffic.
    #[arg(long, default_value = "127.0.0.1:10000")]
    listen: String,
    /// The proxy's admin address.
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin: String,
    /// Requests per second from the built-in client.
    #[arg(long, default_value_t = 50)]
    rps: u32,
    /// Stop after this long (default: run until Ctrl-C).
    #[arg(long, value_parser = crate::parse_duration)]
    duration: Option<Duration>,
}

/// Children are killed when the demo ends, however it ends.
pub(crate) struct Children(pub(crate) Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            // SIGTERM first so the proxy drains; then make sure.
            let _ = Command::new("kill").arg(c.id().to_string()).status();
        }
        std::thread::sleep(Duration::from_millis(200));
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub(crate) fn wait_for_file(path: &Path, child: &mut Child) -> anyhow::Result<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return Ok(serde_json::from_str(&text)?);
        }
        if let Some(status) = child.try_wait()? {
            bail!("a child process exited early ({status}); see its log above");
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {}", path.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(crate) fn spawn(args: &[&str], quiet: bool) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("finding the trellis binary")?;
    let mut cmd = Command::new(exe);
    cmd.args(args).stdin(Stdio::null());
    if quiet {
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
    }
    Ok(cmd.spawn()?)
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let dir = tempdir()?;
    let mut children = Children(Vec::new());
    let apps = [("reviews-v1", "0"), ("reviews-v2", "0.3"), ("ratings", "0")];
    let mut addrs = BTreeMap::new();
    for (name, fail) in apps {
        let ready = dir.join(format!("{name}.json"));
        let r = ready.to_str().unwrap().to_string();
        children.0.push(spawn(
            &[
                "demo-app",
                "--listen",
                "127.0.0.1:0",
                "--name",
                name,
                "--fail-rate",
                fail,
                "--workers",
                "1",
                "--ready-file",
                &r,
            ],
            true,
        )?);
        let doc = wait_for_file(&ready, children.0.last_mut().unwrap())?;
        addrs.insert(
            name,
            doc["addresses"][0].as_str().unwrap_or_default().to_string(),
        );
    }
    let config = format!(
        r#"admin:
  address: "{admin}"
listeners:
  - name: demo
    address: "{listen}"
    http:
      virtual_hosts:
        - name: bookinfo
          domains: ["*"]
          routes:
            - name: reviews
              match: {{ prefix: "/reviews" }}
              route:
                weighted_clusters: [{{ name: reviews-v1, weight: 80 }}, {{ name: reviews-v2, weight: 20 }}]
                retry_policy: {{ retry_on: "5xx", num_retries: 2, per_try_timeout: 500ms }}
            - name: ratings
              match: {{ prefix: "/ratings" }}
              fault:
                delay: {{ fixed: 200ms, percent: 10 }}
                abort: {{ status: 503, percent: 5 }}
              route: {{ cluster: ratings }}
            - name: home
              match: {{ prefix: "/" }}
              direct_response: {{ status: 200, body: "Trellis demo: try /reviews and /ratings\n" }}
clusters:
  - name: reviews-v1
    endpoints: ["{v1}"]
  - name: reviews-v2
    endpoints: ["{v2}"]
  - name: ratings
    endpoints: ["{ratings}"]
"#,
        admin = args.admin,
        listen = args.listen,
        v1 = addrs["reviews-v1"],
        v2 = addrs["reviews-v2"],
        ratings = addrs["ratings"],
    );
    let config_path = dir.join("demo.yaml");
    std::fs::write(&config_path, &config)?;
    let ready = dir.join("proxy.json");
    children.0.push(spawn(
        &[
            "proxy",
            "--config",
            config_path.to_str().unwrap(),
            "--workers",
            "1",
            "--ready-file",
            ready.to_str().unwrap(),
        ],
        false,
    )?);
    let doc = wait_for_file(&ready, children.0.last_mut().unwrap())?;
    let proxy = doc["listeners"]["demo"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let admin = doc["admin"].as_str().unwrap_or_default().to_string();
    println!(
        "Trellis demo: proxy on http://{proxy}  admin on http://{admin}  config {}",
        config_path.display()
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let summary = rt.block_on(drive(proxy, admin, args.rps, args.duration, config_path));
    drop(children);
    let _ = std::fs::remove_dir_all(&dir);
    println!("{}", summary?);
    Ok(())
}

#[derive(Default)]
struct Tally {
    sent: u64,
    by_status: BTreeMap<u16, u64>,
    by_backend: BTreeMap<String, u64>,
    latencies_us: Vec<u64>,
    errors: u64,
}

async fn drive(
    proxy: String,
    admin: String,
    rps: u32,
    duration: Option<Duration>,
    config_path: PathBuf,
) -> anyhow::Result<String> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let window = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rps.max(1))));
    let mut report = tokio::time::interval(Duration::from_secs(1));
    report.tick().await;
    let tty = std::io::stdout().is_terminal();
    let mut n: u64 = 0;
    // Made once, so a Ctrl-C during a scrape is not missed by the next select.
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                n += 1;
                let path = if n.is_multiple_of(3) { "/ratings" } else { "/reviews" };
                let uri: hyper::Uri = format!("http://{proxy}{path}").parse()?;
                let client = client.clone();
                let (tally, window) = (tally.clone(), window.clone());
                tokio::spawn(async move {
                    let t = Instant::now();
                    let result = client.get(uri).await;
                    let us = t.elapsed().as_micros() as u64;
                    for t in [&tally, &window] {
                        let mut t = t.lock().unwrap();
                        t.sent += 1;
                        match &result {
                            Ok(resp) => {
                                *t.by_status.entry(resp.status().as_u16()).or_default() += 1;
                                let backend = resp.headers().get("x-served-by").and_then(|v| v.to_str().ok()).unwrap_or("(proxy)").to_string();
                                *t.by_backend.entry(backend).or_default() += 1;
                                t.latencies_us.push(us);
                            }
                            Err(_) => t.errors += 1,
                        }
                    }
                    if let Ok(resp) = result {
                        let _ = resp.into_body().collect().await;
                    }
                });
            }
            _ = report.tick() => {
                let w = std::mem::take(&mut *window.lock().unwrap());
                let proxy_stats = scrape(&client, &admin).await.unwrap_or_default();
                let view = render(&w, &tally.lock().unwrap(), &proxy_stats, started.elapsed(), &proxy, &admin, &config_path);
                let mut out = std::io::stdout().lock();
                if tty {
                    let _ = write!(out, "\x1b[2J\x1b[H{view}");
                } else {
                    let _ = writeln!(out, "{view}");
                }
                let _ = out.flush();
                if duration.is_some_and(|d| started.elapsed() >= d) {
                    break;
                }
            }
            _ = int.recv() => break,
        }
    }
    let t = tally.lock().unwrap();
    let ok = t
        .by_status
        .iter()
        .filter(|(s, _)| **s < 500)
        .map(|(_, n)| n)
        .sum::<u64>();
    Ok(format!(
        "demo finished: {} requests, {} answered below 500, {} transport errors",
        t.sent, ok, t.errors
    ))
}

/// Proxy counters the demo shows, summed over label sets.
async fn scrape(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    admin: &str,
) -> anyhow::Result<BTreeMap<String, f64>> {
    let uri: hyper::Uri = format!("http://{admin}/stats/prometheus").parse()?;
    let body = client
        .get(uri)
        .await?
        .into_body()
        .collect()
        .await?
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    let wanted = [
        ("trellis_upstream_rq_retry_total{", "retries"),
        ("trellis_outlier_ejections_total{", "ejections"),
        (
            "trellis_upstream_rq_total{cluster=\"reviews-v2\",code_class=\"5xx\"}",
            "reviews-v2 5xx",
        ),
        (
            "trellis_upstream_rq_total{cluster=\"reviews-v2\",code_class=\"2xx\"}",
            "reviews-v2 2xx",
        ),
    ];
    let out = wanted
        .iter()
        .map(|(prefix, name)| (name.to_string(), crate::metric_sum(&text, prefix)))
        .collect();
    Ok(out)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn render(
    w: &Tally,
    total: &Tally,
    proxy: &BTreeMap<String, f64>,
    elapsed: Duration,
    addr: &str,
    admin: &str,
    config: &Path,
) -> String {
    let mut lat = w.latencies_us.clone();
    lat.sort_unstable();
    let mut s = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(
        s,
        "Trellis demo — {}s — proxy http://{addr}  admin http://{admin}",
        elapsed.as_secs()
    );
    let _ = writeln!(s, "  /reviews → reviews-v1 80% | reviews-v2 20% (v2 fails 30% of requests; the route retries 5xx up to 2 times)");
    let _ = writeln!(
        s,
        "  /ratings → ratings (fault injection: 10% delayed 200 ms, 5% aborted with 503)"
    );
    let _ = writeln!(
        s,
        "last second: {} req/s  p50 {:.1} ms  p99 {:.1} ms  statuses {:?}",
        w.sent,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        w.by_status
    );
    let _ = writeln!(
        s,
        "since start: {} requests, statuses {:?}, transport errors {}",
        total.sent, total.by_status, total.errors
    );
    let served: u64 = total.by_backend.values().sum();
    for (backend, n) in &total.by_backend {
        let _ = writeln!(
            s,
            "  served by {backend:<12} {n:>7}  {:>5.1}%",
            100.0 * *n as f64 / served.max(1) as f64
        );
    }
    let get = |k: &str| proxy.get(k).copied().unwrap_or(0.0);
    let _ = writeln!(
        s,
        "proxy: retries {}  reviews-v2 answered 5xx {} / 2xx {} (the client saw the retried result)  ejections {}",
        get("retries"),
        get("reviews-v2 5xx"),
        get("reviews-v2 2xx"),
        get("ejections")
    );
    let _ = writeln!(s, "try: curl -s http://{addr}/reviews  |  curl -s http://{admin}/stats/prometheus  |  edit {} (applied on save)  |  Ctrl-C stops", config.display());
    s
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("trellis-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
