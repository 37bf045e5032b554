//! The Kubernetes Gateway API conformance suite's HTTPRoute cases, run through real
//! gateways. The suite's manifests (fixtures/gateway-api: its base manifests and each
//! test's, verbatim) go to `trellis control` as files; each Gateway is served by a
//! `trellis gateway` on a host of its own (a network namespace, so that every Gateway
//! has its own address and ports, as in a cluster); each backend Deployment is a
//! `trellis demo-app` on a host of its own, which echoes the request as the suite's echo
//! server does. The Services and Deployments become ServiceEntries and WorkloadEntries
//! (no cluster here). The cases are those `extract.py` read from the suite's Go files:
//! each request is sent with curl from a client host and its response compared as the
//! suite's CompareRoundTrip compares it. Tests run one at a time, each with its own
//! manifests, as the suite runs them.

use super::hosts::{self, require_netns, Host, Network, Stack, BIN};
use serde_json::Value as Json;
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gateway-api");
const CLASS: &str = "trellis";

/// Cases Trellis does not pass yet, by test, with why. A case that passes while listed
/// fails the run too, so that this list stays true.
const KNOWN_FAILING: &[(&str, &str)] = &[];

/// Tests not run, with why.
const NOT_RUN: &[(&str, &str)] = &[
    (
        "httproute-request-mirror",
        "mirrored requests are checked in the backends' logs",
    ),
    (
        "httproute-request-multiple-mirrors",
        "mirrored requests are checked in the backends' logs",
    ),
    (
        "httproute-weight",
        "checks a distribution over many requests, not cases",
    ),
    (
        "httproute-backend-protocol-h2c",
        "h2c to the backend is checked by its protocol",
    ),
    (
        "httproute-backend-protocol-websocket",
        "websocket to the backend",
    ),
];

fn docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.replace("{GATEWAY_CLASS_NAME}", CLASS);
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

use serde::Deserialize;

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut v = v;
    for p in path {
        v = &v[*p];
    }
    v.as_str().unwrap_or_default()
}

/// A Deployment: its namespace, name, pod labels, container ports.
struct Backend {
    ns: String,
    name: String,
    labels: BTreeMap<String, String>,
    ports: Vec<u64>,
}

fn backends(all: &[Value]) -> Vec<Backend> {
    all.iter()
        .filter(|d| s(d, &["kind"]) == "Deployment")
        .map(|d| {
            let labels =
                serde_yaml::from_value(d["spec"]["template"]["metadata"]["labels"].clone())
                    .unwrap_or_default();
            let mut ports: Vec<u64> = d["spec"]["template"]["spec"]["containers"]
                .as_sequence()
                .into_iter()
                .flatten()
                .flat_map(|c| c["ports"].as_sequence().cloned().unwrap_or_default())
                .filter_map(|p| p["containerPort"].as_u64())
                .collect();
            if ports.is_empty() {
                ports = vec![3000, 3001];
            }
            Backend {
                ns: s(d, &["metadata", "namespace"]).to_string(),
                name: s(d, &["metadata", "name"]).to_string(),
                labels,
                ports,
            }
        })
        .collect()
}

/// The documents as `trellis control` reads them: the Gateway API's and Namespaces as
/// they are; Services as ServiceEntries; the rest (Deployments, Secrets, ConfigMaps,
/// EndpointSlices) left to the harness.
fn translate(docs: &[Value], backends: &[Backend], ips: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    for d in docs {
        let api = s(d, &["apiVersion"]);
        let kind = s(d, &["kind"]);
        if api.starts_with("gateway.networking.k8s.io") || kind == "Namespace" {
            out += &serde_yaml::to_string(d).unwrap();
            out += "---\n";
        } else if kind == "Service" {
            let ns = s(d, &["metadata", "namespace"]);
            let name = s(d, &["metadata", "name"]);
            let ports: Vec<String> = d["spec"]["ports"]
                .as_sequence()
                .into_iter()
                .flatten()
                .map(|p| {
                    let protocol = match p["appProtocol"].as_str() {
                        Some("kubernetes.io/h2c") => "HTTP2",
                        _ => "HTTP",
                    };
                    format!(
                        "{{ number: {}, name: {}, protocol: {protocol}, targetPort: {} }}",
                        p["port"].as_u64().unwrap(),
                        p["name"].as_str().unwrap_or("http"),
                        p["targetPort"]
                            .as_u64()
                            .unwrap_or(p["port"].as_u64().unwrap()),
                    )
                })
                .collect();
            let selector: BTreeMap<String, String> =
                serde_yaml::from_value(d["spec"]["selector"].clone()).unwrap_or_default();
            out += &format!(
                "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{ name: {name}, namespace: {ns} }}\nspec:\n  hosts: [{name}.{ns}.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{}]\n  workloadSelector: {{ labels: {} }}\n---\n",
                ports.join(", "),
                serde_json::to_string(&selector).unwrap(),
            );
        }
    }
    for b in backends {
        out += &format!(
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{ name: {}, namespace: {} }}\nspec: {{ address: {}, labels: {} }}\n---\n",
            b.name,
            b.ns,
            ips[&format!("{}/{}", b.ns, b.name)],
            serde_json::to_string(&b.labels).unwrap(),
        );
    }
    out
}

/// A Gateway of the manifests: namespace, name, its listeners' (port, protocol).
type GatewayDoc = (String, String, Listeners);
/// (port, protocol) per listener.
type Listeners = Vec<(u64, String)>;

fn gateways(all: &[Value]) -> Vec<GatewayDoc> {
    let mut out: Vec<GatewayDoc> = all
        .iter()
        .filter(|d| s(d, &["kind"]) == "Gateway" && s(d, &["apiVersion"]).starts_with("gateway."))
        .map(|d| {
            let listeners = d["spec"]["listeners"]
                .as_sequence()
                .into_iter()
                .flatten()
                .map(|l| {
                    (
                        l["port"].as_u64().unwrap_or(0),
                        s(l, &["protocol"]).to_string(),
                    )
                })
                .collect();
            (
                s(d, &["metadata", "namespace"]).to_string(),
                s(d, &["metadata", "name"]).to_string(),
                listeners,
            )
        })
        .collect();
    out.sort();
    out.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
    out
}

/// What curl got: status, response headers (lowercase names, values joined by `,`),
/// body.
struct Got {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

/// The case's request with curl from `client` to the Gateway at `gw_ip`; an HTTPS
/// listener is reached as the suite reaches it (server name `example.org` unless the
/// case says another, the certificate checked against the suite's `ca`).
fn request(
    client: &Host,
    gw_ip: &str,
    listeners: &Listeners,
    ca: &Path,
    case: &Json,
    dir: &Path,
) -> Got {
    let req = &case["Request"];
    let mut host = req["Host"].as_str().unwrap_or_default().to_string();
    // The port the suite connects to: the Host's when the Gateway listens there, else
    // the Gateway's first listener's.
    let port = host
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u64>().ok())
        .filter(|p| listeners.iter().any(|(q, _)| q == p))
        .unwrap_or(listeners[0].0);
    let https = listeners.iter().any(|(q, p)| *q == port && p == "HTTPS");
    let path = req["Path"].as_str().unwrap_or("/");
    let mut tls_args: Vec<String> = Vec::new();
    let url = if https {
        if host.is_empty() {
            host = "example.org".into();
        }
        let name = host.split(':').next().unwrap_or_default().to_string();
        tls_args = vec![
            "--cacert".into(),
            ca.display().to_string(),
            "--resolve".into(),
            format!("{name}:{port}:{gw_ip}"),
        ];
        format!("https://{name}:{port}{path}")
    } else {
        format!("http://{gw_ip}:{port}{path}")
    };
    let head = dir.join("head");
    let body = dir.join("body");
    let mut args: Vec<String> = vec![
        "-s".into(),
        "--max-time".into(),
        "5".into(),
        "-D".into(),
        head.display().to_string(),
        "-o".into(),
        body.display().to_string(),
        "-w".into(),
        "%{http_code}".into(),
        "--path-as-is".into(),
    ];
    args.extend(tls_args);
    let method = req["Method"].as_str().unwrap_or("GET");
    if method == "HEAD" {
        args.push("-I".into());
    } else if method != "GET" {
        args.extend(["-X".into(), method.to_string()]);
    }
    if !host.is_empty() {
        args.extend(["-H".into(), format!("Host: {host}")]);
    } else if port != 80 {
        args.extend(["-H".into(), format!("Host: {gw_ip}:{port}")]);
    }
    for (k, v) in req["Headers"].as_object().into_iter().flatten() {
        args.extend([
            "-H".into(),
            format!("{k}: {}", v.as_str().unwrap_or_default()),
        ]);
    }
    if let Some(set) = case["BackendSetResponseHeaders"].as_object() {
        let pairs: Vec<String> = set
            .iter()
            .map(|(k, v)| format!("{k}:{}", v.as_str().unwrap_or_default()))
            .collect();
        args.extend([
            "-H".into(),
            format!("X-Echo-Set-Header: {}", pairs.join(",")),
        ]);
    }
    args.push(url);
    let _ = std::fs::remove_file(&head);
    let _ = std::fs::remove_file(&body);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = client.run("curl", &argv);
    let status = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for line in std::fs::read_to_string(&head)
        .unwrap_or_default()
        .lines()
        .skip(1)
    {
        if let Some((k, v)) = line.split_once(':') {
            headers
                .entry(k.trim().to_ascii_lowercase())
                .and_modify(|e| {
                    e.push(',');
                    e.push_str(v.trim());
                })
                .or_insert_with(|| v.trim().to_string());
        }
    }
    Got {
        status,
        headers,
        body: std::fs::read_to_string(&body).unwrap_or_default(),
    }
}

/// The suite's CompareRoundTrip, for what a case says.
fn compare(case: &Json, got: &Got) -> Result<(), String> {
    let resp = &case["Response"];
    let mut codes: Vec<u64> = resp["StatusCodes"]
        .as_array()
        .map(|a| a.iter().filter_map(Json::as_u64).collect())
        .unwrap_or_default();
    if let Some(c) = resp["StatusCode"].as_u64() {
        codes.push(c);
    }
    if codes.is_empty() {
        codes.push(200);
    }
    if !codes.contains(&u64::from(got.status)) {
        return Err(format!(
            "status {} (want {codes:?}); {}",
            got.status,
            got.body.chars().take(200).collect::<String>()
        ));
    }
    let lower = |s: &str| s.to_ascii_lowercase();
    // A backend is expected to have answered when the case names one (a CORS
    // preflight is answered by the gateway).
    let backend = case["Backend"].as_str().is_some_and(|b| !b.is_empty())
        || case["Namespace"].as_str().is_some_and(|n| !n.is_empty());
    if (got.status == 200 || got.status == 204) && backend {
        let echoed: Json = serde_json::from_str(&got.body)
            .map_err(|e| format!("not an echo: {e}: {}", got.body))?;
        let expected = if case["ExpectedRequest"].is_null() {
            case["Request"].clone()
        } else {
            case["ExpectedRequest"]["Request"].clone()
        };
        let mut seen_path = echoed["path"].as_str().unwrap_or_default().to_string();
        if let Some(q) = echoed["query"].as_str().filter(|q| !q.is_empty()) {
            seen_path = format!("{seen_path}?{q}");
        }
        let want_path = expected["Path"].as_str().unwrap_or("/");
        if want_path != seen_path {
            return Err(format!("backend saw path {seen_path}, want {want_path}"));
        }
        let want_method = expected["Method"].as_str().unwrap_or("GET");
        if echoed["method"] != want_method {
            return Err(format!(
                "backend saw method {}, want {want_method}",
                echoed["method"]
            ));
        }
        if let Some(h) = expected["Host"].as_str().filter(|h| !h.is_empty()) {
            if echoed["headers"]["host"] != h {
                return Err(format!(
                    "backend saw host {}, want {h}",
                    echoed["headers"]["host"]
                ));
            }
        }
        let (ns, pod) = echoed["service"]
            .as_str()
            .unwrap_or_default()
            .split_once('/')
            .unwrap_or_default();
        if case["Namespace"].as_str().unwrap_or_default() != ns {
            return Err(format!(
                "served by namespace {ns}, want {}",
                case["Namespace"]
            ));
        }
        if !pod.starts_with(case["Backend"].as_str().unwrap_or_default()) {
            return Err(format!("served by {pod}, want {}", case["Backend"]));
        }
        if !case["ExpectedRequest"].is_null() {
            for (k, v) in expected["Headers"].as_object().into_iter().flatten() {
                let seen = &echoed["headers"][lower(k)];
                if seen != v {
                    return Err(format!("backend saw header {k}: {seen}, want {v}"));
                }
            }
            for k in case["ExpectedRequest"]["AbsentHeaders"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let k = lower(k.as_str().unwrap_or_default());
                if !echoed["headers"][&k].is_null() {
                    return Err(format!("backend saw header {k}, which should be absent"));
                }
            }
        }
    }
    if got.status == 200 || got.status == 204 {
        let ws = resp["IgnoreWhitespace"].as_bool().unwrap_or(false);
        let norm = |s: &str| {
            if ws {
                s.replace(' ', "")
            } else {
                s.to_string()
            }
        };
        for (k, v) in resp["Headers"].as_object().into_iter().flatten() {
            let seen = got.headers.get(&lower(k)).map(|s| norm(s));
            if seen.as_deref() != Some(norm(v.as_str().unwrap_or_default()).as_str()) {
                return Err(format!("response header {k}: {seen:?}, want {v}"));
            }
        }
        for (k, vs) in resp["ValidHeaderValues"].as_object().into_iter().flatten() {
            let seen = got
                .headers
                .get(&lower(k))
                .map(|s| norm(s))
                .unwrap_or_default();
            let ok = vs
                .as_array()
                .into_iter()
                .flatten()
                .any(|v| norm(v.as_str().unwrap_or_default()) == seen);
            if !ok {
                return Err(format!("response header {k}: {seen:?}, want one of {vs}"));
            }
        }
        for k in resp["AbsentHeaders"].as_array().into_iter().flatten() {
            let k = lower(k.as_str().unwrap_or_default());
            if got.headers.contains_key(&k) {
                return Err(format!("response header {k} should be absent"));
            }
        }
    }
    if (300..400).contains(&got.status) && !case["RedirectRequest"].is_null() {
        let r = &case["RedirectRequest"];
        let location = got.headers.get("location").cloned().unwrap_or_default();
        let (scheme, rest) = location.split_once("://").unwrap_or(("", &location));
        let (authority, path) = rest
            .find('/')
            .map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => (h, p),
            _ => (authority, ""),
        };
        let want = |field: &str| r[field].as_str().unwrap_or_default();
        if !want("Scheme").is_empty() && want("Scheme") != scheme {
            return Err(format!(
                "redirect scheme {scheme}, want {}: {location}",
                want("Scheme")
            ));
        }
        if !want("Host").is_empty() && want("Host") != host {
            return Err(format!(
                "redirect host {host}, want {}: {location}",
                want("Host")
            ));
        }
        // The suite: an absent expected port allows the scheme's own port.
        let default = if scheme == "https" { "443" } else { "80" };
        let port_ok = if want("Port").is_empty() {
            port.is_empty() || port == default
        } else {
            want("Port") == port
        };
        if !port_ok {
            return Err(format!(
                "redirect port {port:?}, want {:?}: {location}",
                want("Port")
            ));
        }
        let path_only = path.split('?').next().unwrap_or(path);
        if !want("Path").is_empty() && want("Path") != path_only {
            return Err(format!(
                "redirect path {path_only}, want {}: {location}",
                want("Path")
            ));
        }
    }
    Ok(())
}

struct Suite {
    _net: Network,
    client: Host,
    config: PathBuf,
    /// Per Gateway (namespace, name): its host's address and listeners.
    gateways: BTreeMap<(String, String), (String, Listeners)>,
    /// The certificate of the suite's `tls-validity-checks-certificate` Secret.
    ca: PathBuf,
    /// Each gateway's log, for what a failure says.
    logs: BTreeMap<(String, String), hosts::Started>,
    control: hosts::Started,
    scratch: tempfile::TempDir,
}

impl Suite {
    fn start() -> Suite {
        let cases: Json = serde_json::from_str(
            &std::fs::read_to_string(format!("{FIXTURES}/cases.json")).unwrap(),
        )
        .unwrap();
        let base = docs(&PathBuf::from(format!("{FIXTURES}/base.yaml")));
        let mut all = base.clone();
        for (_, t) in cases["tests"].as_object().unwrap() {
            for m in t["manifests"].as_array().unwrap() {
                all.extend(docs(&PathBuf::from(format!(
                    "{FIXTURES}/{}",
                    m.as_str().unwrap()
                ))));
            }
        }
        let mut net = Network::new();
        let control = net.host(1, Stack::V4);
        let client = net.host(2, Stack::V4);
        let config = net.dir.path().join("config");
        std::fs::create_dir_all(&config).unwrap();
        let state = net.dir.path().join("state");

        let backends = backends(&all);
        let mut ips = BTreeMap::new();
        for (i, b) in backends.iter().enumerate() {
            let host = net.host(10 + i as u8, Stack::V4);
            let ip = host.addr(false).to_string();
            for p in &b.ports {
                host.spawn(
                    &format!("{}-{p}", b.name),
                    BIN,
                    &[
                        "demo-app",
                        "--listen",
                        &format!("0.0.0.0:{p}"),
                        "--name",
                        &format!("{}/{}", b.ns, b.name),
                        "--workers",
                        "1",
                    ],
                );
            }
            ips.insert(format!("{}/{}", b.ns, b.name), ip);
        }
        std::fs::write(config.join("base.yaml"), translate(&base, &backends, &ips)).unwrap();
        // The Secret the suite makes for its HTTPS listeners: a self-signed certificate
        // for `*`, `*.org` and `*.wildcard.org` (and, since curl's OpenSSL does not let
        // `*.org` match a name, as Go's TLS does, the names the cases use).
        let ca = net.dir.path().join("tls-validity-checks.crt");
        let key = net.dir.path().join("tls-validity-checks.key");
        let made = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"])
            .args(["-subj", "/CN=gateway-conformance"])
            .args(["-addext", "subjectAltName=DNS:*,DNS:*.org,DNS:*.wildcard.org,DNS:example.org,DNS:second-example.org"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&ca)
            .output()
            .expect("openssl");
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        {
            use base64::Engine as _;
            let b64 = |p: &Path| {
                base64::engine::general_purpose::STANDARD.encode(std::fs::read(p).unwrap())
            };
            std::fs::write(
                config.join("secrets.yaml"),
                format!(
                    "apiVersion: v1\nkind: Secret\nmetadata: {{ name: tls-validity-checks-certificate, namespace: gateway-conformance-infra }}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n",
                    b64(&ca),
                    b64(&key)
                ),
            )
            .unwrap();
        }

        let found = gateways(&all);
        let mut entries = String::new();
        let mut hosts = Vec::new();
        for (i, (ns, name, _)) in found.iter().enumerate() {
            let host = net.host(100 + i as u8, Stack::V4);
            entries += &format!(
                "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{ name: {name}, namespace: {ns} }}\nspec: {{ address: {}, labels: {{ gateway.networking.k8s.io/gateway-name: {name} }}, serviceAccount: {name} }}\n---\n",
                host.addr(false)
            );
            hosts.push(host);
        }
        std::fs::write(config.join("gateways.yaml"), entries).unwrap();
        let (ctl, root, _control) = control.start_control(&config, &state, net.dir.path());
        let mut gateways = BTreeMap::new();
        let mut logs = BTreeMap::new();
        for ((ns, name, listeners), host) in found.iter().zip(&hosts) {
            let token_file = net.dir.path().join(format!("{ns}.{name}.token"));
            hosts::token_file(
                &state,
                &format!("spiffe://cluster.local/ns/{ns}/sa/{name}"),
                &token_file,
            );
            let ready = net.dir.path().join(format!("{ns}.{name}.ready.json"));
            let g = host.spawn(
                &format!("gateway-{name}"),
                BIN,
                &[
                    "gateway",
                    "--control",
                    &ctl,
                    "--ca-root",
                    root.to_str().unwrap(),
                    "--token-file",
                    token_file.to_str().unwrap(),
                    "--name",
                    name,
                    "--namespace",
                    ns,
                    "--ip",
                    host.addr(false),
                    "--admin",
                    "127.0.0.1:15000",
                    "--workers",
                    "1",
                    "--ready-file",
                    ready.to_str().unwrap(),
                ],
            );
            g.wait_file(&ready, Duration::from_secs(30));
            logs.insert((ns.clone(), name.clone()), g);
            gateways.insert(
                (ns.clone(), name.clone()),
                (host.addr(false).to_string(), listeners.clone()),
            );
        }
        Suite {
            _net: net,
            client,
            config,
            gateways,
            ca,
            logs,
            control: _control,
            scratch: tempfile::tempdir().unwrap(),
        }
    }

    /// Runs one case until it passes or `within` ends; the last failure otherwise.
    fn run(&self, case: &Json, within: Duration) -> Result<(), String> {
        let gw = &case["Gateway"];
        let key = (
            gw[0].as_str().unwrap_or_default().to_string(),
            gw[1].as_str().unwrap_or_default().to_string(),
        );
        let Some((ip, listeners)) = self.gateways.get(&key) else {
            return Err(format!("no gateway {key:?}"));
        };
        let deadline = Instant::now() + within;
        loop {
            let got = request(
                &self.client,
                ip,
                listeners,
                &self.ca,
                case,
                self.scratch.path(),
            );
            match compare(case, &got) {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    // What the gateway and the control plane said last.
                    let tail = |log: String| {
                        let lines: Vec<&str> = log.lines().collect();
                        lines[lines.len().saturating_sub(3)..].join("\n      ")
                    };
                    let gw = self
                        .logs
                        .get(&key)
                        .map(|l| tail(l.log()))
                        .unwrap_or_default();
                    return Err(format!(
                        "{e}\n      gateway: {gw}\n      control: {}",
                        tail(self.control.log())
                    ));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

#[test]
fn gateway_api_conformance_httproute_cases_pass_through_real_gateways() {
    require_netns!();
    let cases: Json =
        serde_json::from_str(&std::fs::read_to_string(format!("{FIXTURES}/cases.json")).unwrap())
            .unwrap();
    eprintln!("cases from {}", cases["source"]);
    let suite = Suite::start();
    let (mut passed, mut failed, mut not_run) = (Vec::new(), Vec::new(), Vec::new());
    for (test, t) in cases["tests"].as_object().unwrap() {
        let list = t["cases"].as_array().unwrap();
        if let Some((_, why)) = NOT_RUN.iter().find(|(n, _)| n == test) {
            not_run.push(format!("{test} ({} cases): {why}", list.len()));
            continue;
        }
        if list.is_empty() {
            match t["not_read"].as_array().and_then(|a| a.first()) {
                Some(why) => not_run.push(format!(
                    "{test}: extract.py could not read its cases ({why})"
                )),
                None => not_run.push(format!("{test}: no HTTP case (its checks are on status)")),
            }
            continue;
        }
        let mut manifests = Vec::new();
        for m in t["manifests"].as_array().unwrap() {
            manifests.extend(docs(&PathBuf::from(format!(
                "{FIXTURES}/{}",
                m.as_str().unwrap()
            ))));
        }
        let write = |deleted: &[Json]| {
            let kept: Vec<Value> = manifests
                .iter()
                .filter(|d| {
                    !deleted.iter().any(|x| {
                        x[0] == s(d, &["kind"])
                            && x[1] == s(d, &["metadata", "namespace"])
                            && x[2] == s(d, &["metadata", "name"])
                    })
                })
                .cloned()
                .collect();
            std::fs::write(
                suite.config.join("test.yaml"),
                translate(&kept, &[], &BTreeMap::new()),
            )
            .unwrap();
        };
        write(&[]);
        let mut deleted_now = 0;
        // The first case waits for the new manifests to be served; the rest are then
        // tried for a short while each (eventual consistency, as the suite allows).
        for (i, case) in list.iter().enumerate() {
            let within = if i == 0 || case["AfterDeleting"].is_array() {
                Duration::from_secs(10)
            } else {
                Duration::from_secs(3)
            };
            let name = format!(
                "{test}/{i} {}",
                case["Request"]["Path"].as_str().unwrap_or_default()
            );
            if case["MirroredTo"].is_array() || case["Request"]["Protocol"].is_string() {
                not_run.push(format!("{name}: mirror or protocol checks"));
                continue;
            }
            let gw = &case["Gateway"];
            let key = (
                gw[0].as_str().unwrap_or_default().to_string(),
                gw[1].as_str().unwrap_or_default().to_string(),
            );
            if !suite.gateways.contains_key(&key) {
                not_run.push(format!("{name}: no Gateway {key:?} in the manifests"));
                continue;
            }
            // A step of the test deletes an object first (a ReferenceGrant, say).
            let deleted = case["AfterDeleting"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if deleted.len() != deleted_now {
                write(&deleted);
                deleted_now = deleted.len();
            }
            match suite.run(case, within) {
                Ok(()) => passed.push(name),
                Err(e) => failed.push(format!("{name}: {e}")),
            }
        }
        std::fs::remove_file(suite.config.join("test.yaml")).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    eprintln!(
        "Gateway API conformance (HTTPRoute): {} cases passed, {} failed, {} not run",
        passed.len(),
        failed.len(),
        not_run.len()
    );
    for f in &failed {
        eprintln!("  FAILED {f}");
    }
    for n in &not_run {
        eprintln!("  not run: {n}");
    }
    let unexpected: Vec<&String> = failed
        .iter()
        .filter(|f| !KNOWN_FAILING.iter().any(|(n, _)| f.starts_with(n)))
        .collect();
    let stale: Vec<&&str> = KNOWN_FAILING
        .iter()
        .map(|(n, _)| n)
        .filter(|n| !failed.iter().any(|f| f.starts_with(**n)))
        .collect();
    assert!(
        unexpected.is_empty() && stale.is_empty(),
        "failed: {unexpected:#?}\nlisted as failing but passed: {stale:?}"
    );
}
