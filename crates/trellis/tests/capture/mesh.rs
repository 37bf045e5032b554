//! A captured mesh on network-namespace hosts: `trellis control` in host 100, a client
//! workload in host 1 and reviews-v1 in host 2, each host with `trellis init`'s rules and
//! a sidecar running with the proxy group (1337), the apps unmodified.

use crate::hosts::{self, eventually, Host, Network, Stack, Started, BIN};
use std::path::PathBuf;
use std::time::Duration;

/// The family the client app uses (its name resolves to that virtual IP).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Family {
    V4,
    V6,
}

pub const VIP4: &str = "10.96.0.10";
pub const VIP6: &str = "fd00:96::10";

pub struct CaptureMesh {
    pub client: Host,
    pub server: Host,
    pub control: Started,
    sidecars: Vec<Started>,
    dir: PathBuf,
}

pub fn peer_authentication(mode: &str) -> String {
    format!("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{ name: default, namespace: default }}\nspec:\n  mtls: {{ mode: {mode} }}\n")
}

fn workload_entry(name: &str, sa: &str, address: &str, more: &str, ports: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: {name}
  namespace: default
  annotations:
    sidecar.istio.io/interceptionMode: REDIRECT
    sidecar.trellis.dev/additional-addresses: "{more}"
spec:
  address: "{address}"
  ports: {{ {ports} }}
  labels: {{ app: {sa} }}
  serviceAccount: {sa}
---
"#
    )
}

/// The host's address of its own: IPv4 when it has one and `prefer_v4`.
fn address(h: &Host, prefer_v4: bool) -> String {
    match (&h.v4, &h.v6) {
        (Some(a), _) if prefer_v4 => a.clone(),
        (_, Some(a)) => a.clone(),
        (Some(a), None) => a.clone(),
        (None, None) => unreachable!(),
    }
}

impl CaptureMesh {
    pub fn start(
        net: &mut Network,
        client: Stack,
        server: Stack,
        control: Stack,
        app: Family,
        extra_yaml: &str,
    ) -> CaptureMesh {
        let ctl = net.host(100, control);
        let client = net.host(1, client);
        let server = net.host(2, server);
        let dir = net.dir.path().join("mesh");
        std::fs::create_dir_all(&dir).unwrap();
        let state = net.dir.path().join("state");
        // The control plane is reached over IPv4 when every host has it.
        let v4 = [&ctl, &client, &server].iter().all(|h| h.v4.is_some());
        let ctl_addr = trellis_mesh::socket(&address(&ctl, v4), 15012);
        let client_addr = address(&client, app == Family::V4);
        let server_addr = address(&server, app == Family::V4);
        // A dual-stack server is one endpoint with both addresses.
        let server_more = address(&server, app != Family::V4);
        let server_more = if server_more == server_addr {
            String::new()
        } else {
            server_more
        };
        let services = format!(
            r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{ name: reviews, namespace: default }}
spec:
  hosts: [reviews.default.svc.cluster.local]
  addresses: ["{VIP4}", "{VIP6}"]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{ number: 9080, name: http, protocol: HTTP }}]
  workloadSelector: {{ labels: {{ app: reviews }} }}
---
{}{}{extra_yaml}"#,
            workload_entry(
                "reviews-v1",
                "reviews",
                &server_addr,
                &server_more,
                "http: 9080, web: 7000, echo: 7001"
            ),
            workload_entry("client", "client", &client_addr, "", ""),
        );
        std::fs::write(dir.join("mesh.yaml"), services).unwrap();
        std::fs::write(
            dir.join("peer-authentication.yaml"),
            peer_authentication("STRICT"),
        )
        .unwrap();
        let (_, root, control) = ctl.start_control_on(&ctl_addr, &dir, &state, net.dir.path());

        let vip = if app == Family::V4 { VIP4 } else { VIP6 };
        client.set_hosts(&[(vip, "reviews"), (vip, "reviews.default.svc.cluster.local")]);
        server.spawn(
            "app",
            BIN,
            &[
                "demo-app",
                "--listen",
                "0.0.0.0:9080",
                "--name",
                "reviews-v1",
            ],
        );
        let mut sidecars = Vec::new();
        for (host, name, sa, addr) in [
            (&client, "client", "client", &client_addr),
            (&server, "reviews-v1", "reviews", &server_addr),
        ] {
            let out = host.trellis(&["init"]);
            assert!(
                out.status.success(),
                "trellis init: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let token_file = net.dir.path().join(format!("{name}.token"));
            hosts::token_file(
                &state,
                &format!("spiffe://cluster.local/ns/default/sa/{sa}"),
                &token_file,
            );
            let boot = net.dir.path().join(format!("{name}.yaml"));
            std::fs::write(
                &boot,
                format!(
                    "identity:\n  ca_address: \"{ctl_addr}\"\n  ca_root: \"{}\"\n  token_file: \"{}\"\n",
                    root.display(),
                    token_file.display()
                ),
            )
            .unwrap();
            let ready = net.dir.path().join(format!("{name}.ready.json"));
            let node = format!("sidecar~{addr}~{name}.default~default.svc.cluster.local");
            let s = host.spawn_sidecar(
                name,
                &[
                    "proxy",
                    "--config",
                    boot.to_str().unwrap(),
                    "--xds",
                    &ctl_addr,
                    "--xds-tls",
                    "--node-id",
                    &node,
                    "--ready-file",
                    ready.to_str().unwrap(),
                    "--workers",
                    "1",
                ],
            );
            s.wait_file(&ready, Duration::from_secs(20));
            sidecars.push(s);
        }
        CaptureMesh {
            client,
            server,
            control,
            sidecars,
            dir,
        }
    }

    /// Writes (or replaces) a file of the control plane's config directory.
    pub fn write(&self, name: &str, yaml: &str) {
        std::fs::write(self.dir.join(name), yaml).unwrap();
    }

    pub fn logs(&self) -> String {
        let mut all = format!("--- control\n{}", self.control.log());
        for s in &self.sidecars {
            all += &format!("--- {}\n{}", s.log.display(), s.log());
        }
        all
    }

    /// `curl http://reviews:9080<path>` from the client app until it answers 200.
    pub fn call_reviews(&self, path: &str) -> String {
        let url = format!("http://reviews:9080{path}");
        let mut last = (0, 0, String::new());
        let ok = eventually(Duration::from_secs(20), || {
            last = self.client.curl(&url, &[]);
            last.1 == 200
        });
        assert!(ok, "curl {url}: {last:?}\n{}", self.logs());
        last.2
    }

    /// Waits until the client's sidecar has its listener for reviews' port and the
    /// server's its capture listeners.
    pub fn wait_configured(&self) {
        let has = |host: &Host, name: &str| {
            let (_, _, body) = host.curl("http://127.0.0.1:15000/listeners", &[]);
            body.contains(name)
        };
        let ok = eventually(Duration::from_secs(20), || {
            has(&self.client, "0.0.0.0_9080")
                && has(&self.server, "virtualInbound")
                && has(&self.server, "inbound|9080")
        });
        assert!(ok, "sidecars not configured:\n{}", self.logs());
    }

    fn metric(host: &Host, prefix: &str) -> f64 {
        let (_, _, text) = host.curl("http://127.0.0.1:15000/stats/prometheus", &[]);
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }

    pub fn server_metric(&self, prefix: &str) -> f64 {
        Self::metric(&self.server, prefix)
    }

    pub fn client_metric(&self, prefix: &str) -> f64 {
        Self::metric(&self.client, prefix)
    }
}
