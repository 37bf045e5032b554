//! `trellis up`: a whole mesh on this machine from one mesh file. The control plane
//! (xDS and CA), and for every workload its application and its own sidecar; the
//! applications reach each other only through their sidecars, and sidecars talk mTLS.
//! A built-in client sends the file's traffic through a sidecar of its own, and a live
//! view shows what the mesh does with it. Ctrl-C stops everything.

mod meshfile;
mod netns;
mod proxy_config;
mod view;
mod workdir;

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use crate::demo::{spawn, wait_for_file, Children};
use meshfile::MeshFile;
use workdir::WorkDir;

#[derive(Args)]
pub struct UpArgs {
    /// The mesh file, or a directory with `mesh.yaml` (see examples/).
    path: PathBuf,
    /// The client sidecar's outbound port (use it as an HTTP proxy to reach services);
    /// other ports are taken from here upwards.
    #[arg(long, default_value_t = 15100)]
    base_port: u16,
    /// Stop after this long (default: until Ctrl-C).
    #[arg(long, value_parser = crate::parse_duration)]
    duration: Option<Duration>,
    /// Write the mesh's addresses here as JSON once everything is up.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Keep the mesh's state and logs here: a directory trellis up creates, owner-only
    /// (it must not exist yet). Default: a new temporary directory, removed on exit.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Run the mesh in a cgroup of its own with the eBPF same-host bypass on it
    /// (needs root); both are removed on exit.
    #[arg(long)]
    bypass: bool,
    /// Put each workload on a host of its own: a network namespace on a bridge, with
    /// an IPv4 and an IPv6 address, its traffic captured by `trellis init` (needs root;
    /// removed on exit). Apps reach services by name (`/etc/netns/<host>/hosts`), not
    /// through an HTTP proxy.
    #[arg(long)]
    netns: bool,
    /// Serve the web dashboard (the service graph, workloads, config status and live
    /// requests) on this address; `off` for none. By default on 127.0.0.1:15080, or
    /// another free loopback port when that one is taken (the live view says which).
    #[arg(long, default_value = "auto")]
    dashboard: String,
}

/// Where a process runs: this machine's network, or host `i` of `--netns`.
fn command_in(
    net: Option<&netns::Network>,
    host: usize,
    program: impl AsRef<std::ffi::OsStr>,
) -> Command {
    match net {
        Some(n) => n.command(host, program),
        None => Command::new(program),
    }
}

/// The `--netns` host numbers: the control plane, the client, then the workloads.
const CONTROL_HOST: usize = 1;
const CLIENT_HOST: usize = 2;
const FIRST_WORKLOAD_HOST: usize = 3;

/// The mesh's cgroup and its bypass, taken down in reverse order on drop.
struct Bypass {
    pin_dir: PathBuf,
    cgroup: trellis_bypass::ChildCgroup,
}

impl Bypass {
    fn start() -> anyhow::Result<Bypass> {
        let name = format!("trellis-up-{}", std::process::id());
        let cgroup = trellis_bypass::ChildCgroup::create(&name)?;
        let pin_dir = PathBuf::from("/sys/fs/bpf").join(&name);
        trellis_bypass::enable(cgroup.path(), &pin_dir)?;
        let bypass = Bypass { pin_dir, cgroup };
        bypass.cgroup.join()?;
        tracing::info!(cgroup = %bypass.cgroup.path().display(), pins = %bypass.pin_dir.display(), "same-host bypass on");
        Ok(bypass)
    }
}

impl Drop for Bypass {
    fn drop(&mut self) {
        if let Err(e) = trellis_bypass::disable(&self.pin_dir) {
            eprintln!("trellis up: removing the bypass: {e}");
        }
    }
}

/// One workload as started: its ports and its sidecar's admin address.
pub(crate) struct Running {
    pub service: String,
    pub name: String,
    pub namespace: String,
    /// Its SPIFFE ID.
    pub identity: String,
    /// `client`, `gateway` or `workload`.
    pub kind: &'static str,
    pub admin: SocketAddr,
    /// The tenant of its namespace and its trust domain.
    pub tenant: (String, String),
}

struct Ports(u16);

impl Ports {
    /// The next port from the base that nothing listens on.
    fn next(&mut self) -> anyhow::Result<u16> {
        while self.0 < u16::MAX {
            let p = self.0;
            self.0 += 1;
            if TcpListener::bind(("127.0.0.1", p)).is_ok() {
                return Ok(p);
            }
        }
        anyhow::bail!("no free port left above --base-port")
    }
}

pub fn run(args: UpArgs) -> anyhow::Result<()> {
    let (mesh, base) = MeshFile::load(&args.path)?;
    // Bound first, in this machine's network: with --netns the supervisor later moves
    // into the client's host, and the page must stay reachable from here.
    let dashboard = match args.dashboard.as_str() {
        "off" => None,
        "auto" => {
            let l = TcpListener::bind("127.0.0.1:15080")
                .or_else(|_| TcpListener::bind("127.0.0.1:0"))
                .context("--dashboard: no loopback port")?;
            l.set_nonblocking(true)?;
            Some(l)
        }
        addr => {
            let addr: SocketAddr = addr
                .parse()
                .with_context(|| format!("--dashboard {addr:?}: not an address"))?;
            let l = TcpListener::bind(addr).with_context(|| format!("--dashboard {addr}"))?;
            l.set_nonblocking(true)?;
            Some(l)
        }
    };
    let dashboard_url = match &dashboard {
        Some(l) => Some(format!("http://{}/", l.local_addr()?)),
        None => None,
    };
    // Before any child starts, so that all of them are in the mesh's cgroup. Dropped
    // last (declared first): children go, then the bypass, then the cgroup.
    let bypass = if args.bypass {
        Some(Bypass::start()?)
    } else {
        None
    };
    let work = WorkDir::create(args.work_dir.as_deref())?;
    let registry_dir = work.dir("registry")?;
    let logs = work.dir("logs")?;
    work.dir("sidecars")?;
    let config_dir = match &mesh.config {
        Some(c) => base.join(c),
        None => work.dir("config")?,
    };
    let mut ports = Ports(args.base_port);
    let client_outbound = ports.next()?;
    let ns = mesh.namespace.clone();

    // The registry: a ServiceEntry per service, a WorkloadEntry per workload (and one
    // for the client), with the ports of each sidecar and app.
    struct Planned<'a> {
        service: &'a meshfile::ServiceDef,
        workload: &'a meshfile::WorkloadDef,
        name: String,
        ns: String,
        sa: String,
        app: u16,
        inbound: u16,
        outbound: u16,
        keys: trellis_config::PrivateKeyProvider,
        cert_signer: Option<String>,
    }
    let mut planned = Vec::new();
    for (i, s) in mesh.services.iter().enumerate() {
        for (j, w) in s.workloads.iter().enumerate() {
            let name = format!("{}-{}", s.name, w.version);
            planned.push(Planned {
                service: s,
                workload: w,
                keys: mesh.key_provider(i, j, &name).map_err(anyhow::Error::msg)?,
                cert_signer: mesh.cert_signer(Some((i, j))).map_err(anyhow::Error::msg)?,
                name,
                ns: s.namespace.clone().unwrap_or_else(|| ns.clone()),
                sa: s.service_account.clone().unwrap_or_else(|| s.name.clone()),
                app: ports.next()?,
                inbound: ports.next()?,
                outbound: ports.next()?,
            });
        }
    }
    let tenants = tenants_of(&config_dir);
    // Declared before the children: they stop first, then the namespaces go.
    let net = if args.netns {
        Some(netns::Network::create(
            FIRST_WORKLOAD_HOST - 1 + planned.len() + mesh.gateways.len(),
        )?)
    } else {
        None
    };
    let network = net;
    let net = network.as_ref();
    let mut registry = String::new();
    let mut names = String::from("127.0.0.1 localhost\n::1 localhost\n");
    for (i, s) in mesh.services.iter().enumerate() {
        let ns = s.namespace.as_deref().unwrap_or(&ns);
        // With --netns, each service has virtual IPs its apps resolve its names to.
        let addresses = match net {
            Some(_) => {
                let (a4, a6) = (netns::vip4(i + 1), netns::vip6(i + 1));
                for vip in [&a4, &a6] {
                    let _ = writeln!(
                        names,
                        "{vip} {n} {n}.{ns} {n}.{ns}.svc.cluster.local",
                        n = s.name
                    );
                }
                format!("  addresses: [\"{a4}\", \"{a6}\"]\n")
            }
            None => String::new(),
        };
        let _ = write!(
            registry,
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{ name: {name}, namespace: {ns} }}\nspec:\n  hosts: [{name}.{ns}.svc.cluster.local]\n{addresses}  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{ number: {port}, name: {proto}, protocol: {upper} }}]\n  workloadSelector: {{ labels: {{ app: {name} }} }}\n---\n",
            name = s.name,
            port = s.port,
            proto = s.protocol,
            upper = s.protocol.to_uppercase(),
        );
    }
    if let Some(n) = net {
        for host in CLIENT_HOST..FIRST_WORKLOAD_HOST + planned.len() {
            n.hosts_file(host, &names)?;
        }
    }
    for (k, p) in planned.iter().enumerate().filter(|_| net.is_some()) {
        let host = FIRST_WORKLOAD_HOST + k;
        let _ = write!(
            registry,
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: {name}\n  namespace: {wns}\n  annotations:\n    sidecar.istio.io/interceptionMode: REDIRECT\n    sidecar.trellis.dev/additional-addresses: \"{a6}\"\nspec:\n  address: {a4}\n  ports: {{ {proto}: {port} }}\n  labels: {{ app: {svc}, version: {ver} }}\n  serviceAccount: {sa}\n---\n",
            name = p.name,
            proto = p.service.protocol,
            port = p.service.port,
            a4 = netns::v4(host),
            a6 = netns::v6(host),
            svc = p.service.name,
            ver = p.workload.version,
            sa = p.sa,
            wns = p.ns,
        );
    }
    for p in planned.iter().filter(|_| net.is_none()) {
        let _ = write!(
            registry,
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: {name}\n  namespace: {wns}\n  annotations:\n    sidecar.trellis.dev/app-ports: \"{proto}={app}\"\n    sidecar.trellis.dev/outbound: \"127.0.0.1:{out}\"\nspec:\n  address: 127.0.0.1\n  ports: {{ {proto}: {inbound} }}\n  labels: {{ app: {svc}, version: {ver} }}\n  serviceAccount: {sa}\n---\n",
            name = p.name,
            proto = p.service.protocol,
            app = p.app,
            out = p.outbound,
            inbound = p.inbound,
            svc = p.service.name,
            ver = p.workload.version,
            sa = p.sa,
            wns = p.ns,
        );
    }
    // Gateways: a workload each with its labels (after the workloads' hosts).
    for (k, g) in mesh.gateways.iter().enumerate() {
        let address = match net {
            Some(_) => netns::v4(FIRST_WORKLOAD_HOST + planned.len() + k),
            None => "127.0.0.1".into(),
        };
        let labels: Vec<String> = g.labels.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let _ = write!(
            registry,
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  address: {address}\n  labels: {{ {labels} }}\n  serviceAccount: {name}\n---\n",
            name = g.name,
            labels = labels.join(", "),
        );
    }
    let client_annotations = match net {
        Some(_) => format!(
            "sidecar.istio.io/interceptionMode: REDIRECT\n    sidecar.trellis.dev/additional-addresses: \"{}\"",
            netns::v6(CLIENT_HOST)
        ),
        None => format!("sidecar.trellis.dev/outbound: \"127.0.0.1:{client_outbound}\""),
    };
    let client_address = match net {
        Some(_) => netns::v4(CLIENT_HOST),
        None => "127.0.0.1".into(),
    };
    let _ = write!(
        registry,
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: client\n  namespace: {ns}\n  annotations:\n    {client_annotations}\nspec:\n  address: {client_address}\n  labels: {{ app: client }}\n  serviceAccount: client\n"
    );
    work.write("registry/registry.yaml", registry)?;

    let mut children = Children(Vec::new());
    // One log file per process, shared by its stdout and stderr.
    let log = |name: &str| -> anyhow::Result<(std::fs::File, std::fs::File)> {
        let f = work.file(format!("logs/{name}.log"))?;
        Ok((f.try_clone()?, f))
    };

    // The control plane with its CA.
    let state = work.path.join("ca");
    let control_ready = work.path.join("control.json");
    let (control_listen, status_listen) = match net {
        Some(_) => (
            format!("{}:15012", netns::v4(CONTROL_HOST)),
            format!("{}:15014", netns::v4(CONTROL_HOST)),
        ),
        None => ("127.0.0.1:0".to_string(), "127.0.0.1:0".to_string()),
    };
    let mut control = command_in(net, CONTROL_HOST, std::env::current_exe()?);
    control
        .args(["control", "--config-dir"])
        .arg(&config_dir)
        .arg("--config-dir")
        .arg(&registry_dir)
        // xDS only over mutual TLS on the CA port: no plaintext port.
        .args([
            "--listen",
            &control_listen,
            "--poll-interval",
            "100ms",
            "--state-dir",
        ])
        .arg(&state)
        .arg("--ready-file")
        .arg(&control_ready)
        .args(["--status-listen", &status_listen])
        .stdin(Stdio::null());
    if let Some(ttl) = &mesh.certificate_ttl {
        control.args(["--max-cert-ttl", ttl]);
    }
    let (out, err) = log("control")?;
    control.stdout(out).stderr(err);
    children.0.push(control.spawn()?);
    let control_pid = children.0.last().map(|c| c.id()).unwrap_or_default();
    let doc = wait_for_file(&control_ready, children.0.last_mut().unwrap())?;
    let ca = doc["ca"].as_str().unwrap_or_default().to_string();
    let control_status = doc["status"].as_str().unwrap_or_default().to_string();
    let xds = ca.clone();
    let root = work.write("root.pem", doc["root_pem"].as_str().unwrap_or_default())?;

    // Sidecars first (each gets its certificate before it serves), then the apps.
    let mut running = Vec::new();
    struct Sidecar {
        name: String,
        ns: String,
        sa: String,
        service: String,
        keys: trellis_config::PrivateKeyProvider,
        cert_signer: Option<String>,
        /// Its --netns host.
        host: usize,
        /// A gateway (node type `router`): not captured, serves Gateways.
        router: bool,
    }
    let mut sidecars: Vec<Sidecar> = planned
        .iter()
        .enumerate()
        .map(|(k, p)| Sidecar {
            host: FIRST_WORKLOAD_HOST + k,
            router: false,
            name: p.name.clone(),
            ns: p.ns.clone(),
            sa: p.sa.clone(),
            service: p.service.name.clone(),
            keys: p.keys.clone(),
            cert_signer: p.cert_signer.clone(),
        })
        .collect();
    let client_keys = match &mesh.default_config {
        Some(c) => c
            .provider("default_config", "client")
            .map_err(anyhow::Error::msg)?,
        None => trellis_config::PrivateKeyProvider::Memory,
    };
    sidecars.push(Sidecar {
        name: "client".into(),
        ns: ns.clone(),
        sa: "client".into(),
        service: "client".into(),
        keys: client_keys,
        cert_signer: mesh.cert_signer(None).map_err(anyhow::Error::msg)?,
        host: CLIENT_HOST,
        router: false,
    });
    for (k, g) in mesh.gateways.iter().enumerate() {
        sidecars.push(Sidecar {
            name: g.name.clone(),
            ns: ns.clone(),
            sa: g.name.clone(),
            service: "gateway".into(),
            keys: trellis_config::PrivateKeyProvider::Memory,
            cert_signer: mesh.cert_signer(None).map_err(anyhow::Error::msg)?,
            host: FIRST_WORKLOAD_HOST + planned.len() + k,
            router: true,
        });
    }
    let mut starting = Vec::new();
    for Sidecar {
        name,
        ns,
        sa,
        service,
        keys,
        cert_signer,
        host,
        router,
    } in &sidecars
    {
        let host = *host;
        let kind = if *router { "router" } else { "sidecar" };
        // With --netns: the host's capture rules first. The client host leaves the
        // admin and status ports alone: the live view reads them from there.
        if let Some(n) = net.filter(|_| !*router) {
            let mut init = n.command(host, std::env::current_exe()?);
            init.arg("init");
            if host == CLIENT_HOST {
                init.args(["--exclude-outbound-ports", "15000,15014"]);
            }
            let out = init.output()?;
            if !out.status.success() {
                anyhow::bail!(
                    "trellis init on {name}'s host: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        let (admin, node_ip) = match net {
            Some(_) => (format!("{}:15000", netns::v4(host)), netns::v4(host)),
            None => ("127.0.0.1:0".to_string(), "127.0.0.1".to_string()),
        };
        let dir = work.dir(format!("sidecars/{name}"))?;
        let (tenant, trust_domain) = tenant_of(&tenants, ns);
        let token = Command::new(std::env::current_exe()?)
            .args(["ca", "--state-dir"])
            .arg(&state)
            .args([
                "token",
                "--identity",
                // The identity the CA issues: the trust domain of the namespace's tenant.
                &format!("spiffe://{trust_domain}/ns/{ns}/sa/{sa}"),
                // Long enough for the sidecar to start; the token is good for one
                // key, and the sidecar renews with its certificate after that.
                "--ttl",
                "5m",
            ])
            .output()?;
        if !token.status.success() {
            anyhow::bail!(
                "minting a token for {name}: {}",
                String::from_utf8_lossy(&token.stderr)
            );
        }
        work.write(format!("sidecars/{name}/token"), &token.stdout)?;
        let boot = format!(
            "admin: {{ address: \"{admin}\" }}\nidentity:\n  ca_address: \"{ca}\"\n  ca_root: \"{}\"\n  token_file: \"{}\"\n{}",
            root.display(),
            dir.join("token").display(),
            proxy_config::bootstrap_lines(keys, cert_signer.as_deref()),
        );
        work.write(format!("sidecars/{name}/bootstrap.yaml"), boot)?;
        let ready = dir.join("ready.json");
        let node = format!("{kind}~{node_ip}~{name}.{ns}~{ns}.svc.cluster.local");
        // A captured sidecar runs with the group its host's rules leave alone.
        let mut cmd = match net {
            Some(n) => {
                let mut c = n.command(host, "setpriv");
                c.args(["--regid", "1337", "--clear-groups"])
                    .arg(std::env::current_exe()?);
                c
            }
            None => Command::new(std::env::current_exe()?),
        };
        if *router {
            // A gateway is what a user runs: `trellis gateway`, its identity and xDS
            // from the control plane's mutual-TLS port.
            cmd.arg("gateway")
                .args(["--control", &ca, "--ca-root"])
                .arg(&root)
                .arg("--token-file")
                .arg(dir.join("token"))
                .args([
                    "--name",
                    name,
                    "--namespace",
                    ns,
                    "--ip",
                    &node_ip,
                    "--admin",
                    &admin,
                    "--workers",
                    "1",
                    "--ready-file",
                ])
                .arg(&ready)
                .stdin(Stdio::null());
            if let Some(signer) = cert_signer {
                cmd.args(["--cert-signer", signer]);
            }
        } else {
            cmd.arg("proxy")
                .arg("--config")
                .arg(dir.join("bootstrap.yaml"))
                // xDS over mutual TLS on the CA's port, with the workload certificate.
                .args([
                    "--workers",
                    "1",
                    "--xds",
                    &ca,
                    "--xds-tls",
                    "--node-id",
                    &node,
                    "--ready-file",
                ])
                .arg(&ready)
                .stdin(Stdio::null());
        }
        let (out, err) = log(&format!("sidecar-{name}"))?;
        cmd.stdout(out).stderr(err);
        children.0.push(cmd.spawn()?);
        let kind = match (*router, service.as_str()) {
            (true, _) => "gateway",
            (false, "client") => "client",
            _ => "workload",
        };
        starting.push((
            children.0.len() - 1,
            ready,
            Running {
                service: service.clone(),
                name: name.clone(),
                namespace: ns.clone(),
                identity: format!("spiffe://{trust_domain}/ns/{ns}/sa/{sa}"),
                kind,
                admin: SocketAddr::from(([0, 0, 0, 0], 0)),
                tenant: (tenant, trust_domain),
            },
        ));
    }
    // All sidecars start at once; each is ready once it holds its certificate.
    for (i, ready, mut r) in starting {
        let doc = wait_for_file(&ready, &mut children.0[i])?;
        r.admin = doc["admin"].as_str().unwrap_or_default().parse()?;
        running.push(r);
    }
    for (k, p) in planned.iter().enumerate() {
        let host = FIRST_WORKLOAD_HOST + k;
        let child = match &p.workload.command {
            Some(command) => {
                // Captured: the app listens on the service's port and calls services
                // by name; otherwise on its own port, with its sidecar as HTTP proxy.
                let port = match net {
                    Some(_) => p.service.port.to_string(),
                    None => p.app.to_string(),
                };
                let argv: Vec<String> =
                    command.iter().map(|a| a.replace("{port}", &port)).collect();
                let (out, err) = log(&format!("app-{}", p.name))?;
                let mut app = command_in(net, host, &argv[0]);
                if net.is_none() {
                    let proxy = format!("http://127.0.0.1:{}", p.outbound);
                    app.env("HTTP_PROXY", &proxy).env("http_proxy", &proxy);
                }
                app.args(&argv[1..])
                    .env("PORT", &port)
                    .current_dir(&base)
                    .stdin(Stdio::null())
                    .stdout(out)
                    .stderr(err)
                    .spawn()
                    .with_context(|| format!("{}: starting {:?}", p.name, argv))?
            }
            None => {
                let listen = match net {
                    Some(_) => format!("0.0.0.0:{}", p.service.port),
                    None => format!("127.0.0.1:{}", p.app),
                };
                let mut a = vec![
                    "demo-app",
                    "--listen",
                    &listen,
                    "--name",
                    &p.name,
                    "--workers",
                    "1",
                ];
                let rate = p.workload.fail_rate.map(|r| r.to_string());
                if let Some(r) = &rate {
                    a.extend_from_slice(&["--fail-rate", r]);
                }
                if let Some(d) = &p.workload.delay {
                    a.extend_from_slice(&["--delay", d]);
                }
                // Calls go through the sidecar: as its HTTP proxy, or captured.
                let via = format!("127.0.0.1:{}", p.outbound);
                for url in &p.workload.calls {
                    a.extend_from_slice(&["--call", url]);
                }
                if !p.workload.calls.is_empty() && net.is_none() {
                    a.extend_from_slice(&["--via", &via]);
                }
                match net {
                    Some(n) => n
                        .command(host, std::env::current_exe()?)
                        .args(&a)
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()?,
                    None => spawn(&a, true)?,
                }
            }
        };
        children.0.push(child);
    }
    // Traffic starts once every application and every sidecar listener (those come
    // over xDS, after the sidecar's certificate) accepts connections.
    let mut expected: Vec<(String, u16)> = vec![("the client sidecar".into(), client_outbound)];
    for p in &planned {
        expected.push((format!("{}'s application", p.name), p.app));
        expected.push((format!("{}'s sidecar (inbound)", p.name), p.inbound));
        expected.push((format!("{}'s sidecar (outbound)", p.name), p.outbound));
    }
    // (With --netns those are on hosts of their own: the client checks below.)
    for (what, port) in expected.into_iter().filter(|_| net.is_none()) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if std::time::Instant::now() > deadline {
                anyhow::bail!(
                    "{what} never listened on 127.0.0.1:{port} (see {})",
                    logs.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    let client: SocketAddr = ([127, 0, 0, 1], client_outbound).into();
    // With --netns the built-in client sends from the client's host, captured there: to
    // each service's virtual IP, as an app that resolved its name.
    let entry = match net {
        Some(n) => {
            n.enter(CLIENT_HOST)?;
            let mut vips = std::collections::BTreeMap::new();
            for (i, s) in mesh.services.iter().enumerate() {
                let sns = s.namespace.as_deref().unwrap_or(&ns);
                let vip: std::net::IpAddr = netns::vip4(i + 1).parse()?;
                for name in [
                    s.name.clone(),
                    format!("{}.{sns}", s.name),
                    format!("{}.{sns}.svc.cluster.local", s.name),
                ] {
                    vips.insert(name, vip);
                }
            }
            view::Entry::Captured {
                namespace: n.ns(CLIENT_HOST),
                vips,
            }
        }
        None => view::Entry::Proxy(client),
    };
    if net.is_some() {
        wait_captured(&entry, &mesh, &logs)?;
    }
    if let Some(path) = &args.ready_file {
        let sidecars: serde_json::Map<String, serde_json::Value> = running
            .iter()
            .map(|r| (r.name.clone(), r.admin.to_string().into()))
            .collect();
        let workloads: serde_json::Map<String, serde_json::Value> = planned
            .iter()
            .map(|p| {
                let (tenant, trust_domain) = tenant_of(&tenants, &p.ns);
                let doc = serde_json::json!({
                    "namespace": p.ns,
                    "tenant": tenant,
                    "trust_domain": trust_domain,
                    "outbound": format!("127.0.0.1:{}", p.outbound),
                    "inbound": format!("127.0.0.1:{}", p.inbound),
                    "host": format!("{}.{}.svc.cluster.local:{}", p.service.name, p.ns, p.service.port),
                });
                (p.name.clone(), doc)
            })
            .collect();
        let doc = serde_json::json!({
            "client": net.is_none().then(|| client.to_string()),
            "netns": net.map(|n| serde_json::json!({
                "client": n.ns(CLIENT_HOST),
                "control": n.ns(CONTROL_HOST),
                "workloads": planned.iter().enumerate()
                    .map(|(k, p)| (p.name.clone(), n.ns(FIRST_WORKLOAD_HOST + k).into()))
                    .collect::<serde_json::Map<String, serde_json::Value>>(),
            })),
            "xds": xds,
            "ca": ca,
            "control_status": control_status,
            "control_pid": control_pid,
            "bypass": bypass.as_ref().map(|b| serde_json::json!({
                "cgroup": b.cgroup.path().display().to_string(),
                "pin_dir": b.pin_dir.display().to_string(),
            })),
            "sidecars": sidecars,
            "workloads": workloads,
            "dashboard": &dashboard_url,
            "logs": logs.display().to_string(),
        });
        crate::write_atomically(path, doc.to_string().as_bytes())?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let ingress = ingress_urls(&config_dir, &mesh, |k| match net {
        Some(_) => netns::v4(FIRST_WORKLOAD_HOST + planned.len() + k),
        None => "localhost".into(),
    });
    let summary = rt.block_on(view::drive(view::Setup {
        entry,
        ingress,
        traffic: mesh.traffic,
        sidecars: running,
        config_dir: config_dir.clone(),
        logs: logs.clone(),
        xds,
        duration: args.duration,
        bypass_pins: bypass.as_ref().map(|b| b.pin_dir.clone()),
        dashboard,
        control_status: control_status.clone(),
        dashboard_url,
    }))?;
    drop(children);
    drop(bypass);
    println!("{summary}");
    Ok(())
}

/// Namespace → (tenant, trust domain) from the config directory's Tenant resources (the
/// control plane refuses bad ones; their namespaces stay the default tenant's).
fn tenants_of(
    config_dir: &std::path::Path,
) -> std::collections::BTreeMap<String, (String, String)> {
    let Ok(loaded) = trellis_mesh::load_dir(config_dir) else {
        return Default::default();
    };
    let mut out = std::collections::BTreeMap::new();
    for t in &loaded.inputs.tenants {
        for ns in &t.spec.namespaces {
            out.insert(ns.clone(), (t.name.clone(), t.spec.trust_domain.clone()));
        }
    }
    out
}

fn tenant_of(
    tenants: &std::collections::BTreeMap<String, (String, String)>,
    ns: &str,
) -> (String, String) {
    tenants.get(ns).cloned().unwrap_or_else(|| {
        (
            trellis_mesh::tenant::DEFAULT_TENANT.to_string(),
            "cluster.local".to_string(),
        )
    })
}

/// With --netns: waits until the mesh answers (any HTTP response) for each service the
/// traffic names, from the client's host.
fn wait_captured(
    entry: &view::Entry,
    mesh: &MeshFile,
    logs: &std::path::Path,
) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let requests = mesh
        .traffic
        .as_ref()
        .map(|t| t.requests.as_slice())
        .unwrap_or(&[]);
    for r in requests {
        let Some((addr, authority, path)) = entry.target(&r.url) else {
            continue;
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let answered = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                .and_then(|mut c| {
                    c.set_read_timeout(Some(Duration::from_secs(5)))?;
                    write!(
                        c,
                        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
                    )?;
                    let mut head = [0u8; 12];
                    c.read_exact(&mut head)?;
                    Ok(head.starts_with(b"HTTP/1.1 "))
                })
                .unwrap_or(false);
            if answered {
                break;
            }
            if std::time::Instant::now() > deadline {
                anyhow::bail!(
                    "{} never answered through the mesh (see {})",
                    r.url,
                    logs.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

/// Where each gateway of the mesh file serves (`http(s)://<host>:<port>/`): the ports of
/// the config directory's Gateways that select its labels.
fn ingress_urls(
    config_dir: &std::path::Path,
    mesh: &MeshFile,
    host: impl Fn(usize) -> String,
) -> Vec<String> {
    let Ok(mut loaded) = trellis_mesh::load_dir(config_dir) else {
        return Vec::new();
    };
    // The Gateway API's Gateways, as the Istio ones they are served as.
    let registry = trellis_mesh::Registry::from_inputs(&loaded.inputs);
    trellis_mesh::gateway_api::convert(&mut loaded.inputs, &registry);
    let mut urls = Vec::new();
    for (k, g) in mesh.gateways.iter().enumerate() {
        for gw in &loaded.inputs.gateways {
            if !trellis_mesh::selects(&gw.spec.selector, &g.labels) {
                continue;
            }
            for server in &gw.spec.servers {
                let Some(port) = &server.port else { continue };
                let scheme = if port.protocol.eq_ignore_ascii_case("HTTPS") {
                    "https"
                } else {
                    "http"
                };
                // A converted Gateway API Gateway is `<gateway>~<listener>`.
                let what = match gw.name.split_once('~') {
                    Some((name, _)) => format!("Gateway API Gateway {}/{name}", gw.namespace),
                    None => format!("Gateway {}/{}", gw.namespace, gw.name),
                };
                urls.push(format!(
                    "{scheme}://{}:{}/  ({}, {what})",
                    host(k),
                    port.number,
                    g.name,
                ));
            }
        }
    }
    urls
}
