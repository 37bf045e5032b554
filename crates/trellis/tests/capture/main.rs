//! Transparent capture end to end: hosts made of network namespaces, `trellis init`'s
//! iptables rules in each workload host, `trellis control` in a host of its own, and
//! unmodified clients (curl) and servers (the demo app) that know nothing of the mesh.
//! Needs root; skipped with a printed reason elsewhere, a failure with CI=true.

mod gateway_api;
mod hosts;
mod init;
mod mesh;
mod up;

use hosts::{eventually, require_netns, Network, Stack};
use mesh::{CaptureMesh, Family};
use std::time::Duration;

const CLIENT_ID: &str = "spiffe://cluster.local/ns/default/sa/client";

/// curl in host 1 reaches reviews in host 2 by name, captured at both ends, over mTLS:
/// the app sees the client's identity (x-forwarded-client-cert, set only from a
/// verified peer certificate), and the server sidecar counted the handshake.
fn reaches_reviews_over_mtls(client: Stack, server: Stack, control: Stack, app: Family) {
    let mut net = Network::new();
    let mesh = CaptureMesh::start(&mut net, client, server, control, app, "");
    // Until the server's sidecar has its inbound listener, a request would go through
    // virtualInbound's own chain (mTLS, then passed to the app as bytes, without the
    // client's identity in a header).
    mesh.wait_configured();
    let body = mesh.call_reviews("/anything");
    let echoed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echoed["service"], "reviews-v1", "{body}");
    assert_eq!(
        echoed["headers"]["x-forwarded-client-cert"],
        format!("URI={CLIENT_ID}"),
        "{body}"
    );
    // REDIRECT capture: the app sees its sidecar's connection from loopback.
    let peer = echoed["peer"].as_str().unwrap();
    assert!(peer.starts_with("127.0.0.1:"), "{body}");
    let handshakes = mesh.server_metric(
        "trellis_downstream_tls_handshakes_total{listener=\"inbound|9080\",result=\"success\"}",
    );
    assert!(handshakes >= 1.0, "server sidecar handshakes: {handshakes}");
    // The request went by the service's route, nothing by the passthrough.
    let routed = mesh.client_metric(
        "trellis_upstream_rq_total{cluster=\"outbound|9080||reviews.default.svc.cluster.local\"",
    );
    assert!(
        routed >= 1.0,
        "client sidecar requests to reviews: {routed}"
    );
    assert_eq!(
        mesh.client_metric("trellis_upstream_rq_total{cluster=\"PassthroughCluster\""),
        0.0
    );
    // AuthorizationPolicy ipBlocks see the calling sidecar's address, of either family.
    let source = mesh.client.addr(server == Stack::V6);
    mesh.write(
        "deny.yaml",
        &format!("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{ name: deny-client, namespace: default }}\nspec:\n  action: DENY\n  rules: [{{ from: [{{ source: {{ ipBlocks: [\"{source}\"] }} }}] }}]\n"),
    );
    assert!(
        eventually(Duration::from_secs(10), || {
            mesh.client.curl("http://reviews:9080/", &[]).1 == 403
        }),
        "ipBlocks [{source}] did not deny"
    );
}

#[test]
fn curl_reaches_a_service_on_another_host_over_ipv4() {
    require_netns!();
    reaches_reviews_over_mtls(Stack::V4, Stack::V4, Stack::V4, Family::V4);
}

#[test]
fn curl_reaches_a_service_on_another_host_over_ipv6() {
    require_netns!();
    reaches_reviews_over_mtls(Stack::V6, Stack::V6, Stack::V6, Family::V6);
}

#[test]
fn an_ipv4_client_reaches_an_ipv6_only_server_through_a_dual_stack_sidecar() {
    require_netns!();
    // The client app resolves reviews to the IPv4 virtual IP; the only endpoint is the
    // server's IPv6 address, which its sidecar (with both families) reaches.
    reaches_reviews_over_mtls(Stack::Dual, Stack::V6, Stack::Dual, Family::V4);
}

#[test]
fn outside_the_registry_passes_with_allow_any_and_is_refused_with_registry_only() {
    require_netns!();
    let mut net = Network::new();
    let mesh = CaptureMesh::start(&mut net, Stack::V4, Stack::V4, Stack::V4, Family::V4, "");
    // A plain server on host 3, in no registry.
    let outside = net.host(3, Stack::V4);
    outside.spawn(
        "outside",
        hosts::BIN,
        &["demo-app", "--listen", "0.0.0.0:8080", "--name", "outside"],
    );
    outside.spawn(
        "outside-9080",
        hosts::BIN,
        &[
            "demo-app",
            "--listen",
            "0.0.0.0:9080",
            "--name",
            "outside-9080",
        ],
    );
    let url = "http://10.244.0.3:8080/anything";
    assert!(
        eventually(Duration::from_secs(10), || mesh.client.curl(url, &[]).1
            == 200),
        "ALLOW_ANY: {:?}",
        mesh.client.curl(url, &[])
    );
    // On a port a mesh service uses (HTTP), the catch-all route passes it through too.
    let (_, status, body) = mesh.client.curl("http://10.244.0.3:9080/anything", &[]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("outside-9080"), "{body}");
    assert!(mesh.client_metric("trellis_upstream_rq_total{cluster=\"PassthroughCluster\"") >= 1.0);
    assert!(mesh.client_metric("trellis_upstream_cx_total{cluster=\"PassthroughCluster\"") >= 2.0);

    // REGISTRY_ONLY: the TCP connection to an unknown port is closed, an HTTP request
    // on a mesh port gets 502 from the catch-all.
    mesh.write(
        "sidecar.yaml",
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: { name: default, namespace: default }\nspec:\n  outboundTrafficPolicy: { mode: REGISTRY_ONLY }\n",
    );
    assert!(
        eventually(Duration::from_secs(10), || mesh.client.curl(url, &[]).1
            == 0),
        "REGISTRY_ONLY still passes: {:?}",
        mesh.client.curl(url, &[])
    );
    let mesh_port = "http://10.244.0.3:9080/anything";
    assert!(
        eventually(Duration::from_secs(5), || mesh
            .client
            .curl(mesh_port, &[])
            .1
            == 502),
        "{:?}\n{}",
        mesh.client.curl(mesh_port, &["-v"]),
        mesh.logs()
    );
    // The mesh service still answers.
    mesh.call_reviews("/anything");
}

#[test]
fn inbound_capture_refuses_plaintext_under_strict_and_takes_it_under_permissive() {
    require_netns!();
    let mut net = Network::new();
    let mesh = CaptureMesh::start(&mut net, Stack::V4, Stack::V4, Stack::V4, Family::V4, "");
    // A client outside the mesh (no sidecar, no capture) calls the server's pod address.
    let outsider = net.host(3, Stack::V4);
    let url = format!("http://{}:9080/anything", mesh.server.addr(false));
    let (code, status, out) = outsider.curl(&url, &[]);
    assert!(
        status == 0 && code != 0,
        "STRICT takes plaintext: {code} {status} {out}"
    );
    // And a port the workload does not declare is under the same STRICT mode.
    let (code, status, out) =
        outsider.curl(&format!("http://{}:7070/", mesh.server.addr(false)), &[]);
    assert!(status == 0 && code != 0, "{code} {status} {out}");

    mesh.write(
        "peer-authentication.yaml",
        &mesh::peer_authentication("PERMISSIVE"),
    );
    assert!(
        eventually(Duration::from_secs(10), || outsider.curl(&url, &[]).1
            == 200),
        "PERMISSIVE refuses plaintext: {:?}",
        outsider.curl(&url, &[])
    );
    let (_, _, body) = outsider.curl(&url, &[]);
    let echoed: serde_json::Value = serde_json::from_str(&body).unwrap();
    // No client certificate: no identity, and a client-sent one is dropped.
    assert!(
        echoed["headers"]["x-forwarded-client-cert"].is_null(),
        "{body}"
    );
    let (_, _, body) = outsider.curl(
        &url,
        &[
            "-H",
            "x-forwarded-client-cert: URI=spiffe://cluster.local/ns/default/sa/admin",
        ],
    );
    assert!(!body.contains("sa/admin"), "{body}");
    // Meshed callers still go over mTLS.
    let body = mesh.call_reviews("/anything");
    assert!(body.contains(CLIENT_ID), "{body}");
}

/// Happy Eyeballs between a dual-stack endpoint's addresses: IPv6 first, IPv4 after the
/// attempt delay. `block` runs in the client host before the first request; returns the
/// first successful request's total time (curl's time_total).
fn first_call_with(block: &[(&str, &[&str])]) -> (CaptureMesh, f64, Network) {
    let mut net = Network::new();
    let mesh = CaptureMesh::start(
        &mut net,
        Stack::Dual,
        Stack::Dual,
        Stack::Dual,
        Family::V4,
        "",
    );
    // Both sidecars configured first: the first request's connection to the server is
    // then the only one, not one of the attempts made while the server side was not
    // listening yet (each of which would try the other family at once).
    mesh.wait_configured();
    for (tool, args) in block {
        let out = mesh.client.run(tool, args);
        assert!(
            out.status.success(),
            "{tool}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut last = (0, 0.0);
    let ok = eventually(Duration::from_secs(20), || {
        last = mesh.client.curl_timed("http://reviews:9080/anything");
        last.0 == 200
    });
    assert!(ok, "{last:?}\n{}", mesh.logs());
    (mesh, last.1, net)
}

/// The packets the filter table's OUTPUT rule with `target` has matched.
fn dropped(host: &hosts::Host, tool: &str, target: &str) -> u64 {
    let out = host.run(tool, &["-L", "OUTPUT", "-v", "-x", "-n"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.split_whitespace().nth(2) == Some(target))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {target} rule: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn happy_eyeballs_falls_back_to_ipv4_when_ipv6_is_blackholed() {
    require_netns!();
    // Packets to the server's IPv6 address vanish (no reset, no ICMP).
    let (mesh, seconds, _net) = first_call_with(&[(
        "ip6tables",
        &[
            "-A",
            "OUTPUT",
            "-d",
            "fd00:244::2",
            "-p",
            "tcp",
            "-j",
            "DROP",
        ],
    )]);
    // The IPv6 attempt was made and waited 250 ms, then IPv4 connected at once (not
    // after the 10 s connect timeout).
    eprintln!("IPv6 blackholed: first request in {seconds:.3} s");
    assert!(dropped(&mesh.client, "ip6tables", "DROP") >= 1);
    assert!(
        (0.25..2.0).contains(&seconds),
        "first request took {seconds} s"
    );
    assert!(mesh.call_reviews("/anything").contains(CLIENT_ID));
}

#[test]
fn happy_eyeballs_uses_ipv6_when_ipv4_is_refused_and_both_families_reach_the_service() {
    require_netns!();
    let (mesh, seconds, _net) = first_call_with(&[(
        "iptables",
        &[
            "-A",
            "OUTPUT",
            "-d",
            "10.244.0.2",
            "-p",
            "tcp",
            "-j",
            "REJECT",
            "--reject-with",
            "tcp-reset",
        ],
    )]);
    eprintln!("IPv4 refused: first request in {seconds:.3} s");
    // IPv6 went first and connected: IPv4 was never tried.
    assert_eq!(dropped(&mesh.client, "iptables", "REJECT"), 0);
    assert!(seconds < 1.0, "first request took {seconds} s");
    // The app reaches the service by either virtual IP.
    for url in [
        "http://10.96.0.10:9080/anything",
        "http://[fd00:96::10]:9080/anything",
    ] {
        let (_, status, body) = mesh.client.curl(url, &[]);
        assert_eq!(status, 200, "{url}: {body}");
        assert!(body.contains(CLIENT_ID), "{body}");
    }
}

#[test]
fn ports_of_undeclared_protocol_route_http_and_pass_the_rest_as_tcp() {
    require_netns!();
    // Kubernetes-style ports named without a protocol: Istio detects it per connection.
    let extra = r#"---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: web, namespace: default }
spec:
  hosts: [web.default.svc.cluster.local]
  addresses: ["10.96.0.20"]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 7000, name: web }]
  workloadSelector: { labels: { app: reviews } }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: echo, namespace: default }
spec:
  hosts: [echo.default.svc.cluster.local]
  addresses: ["10.96.0.21"]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 7001, name: echo }]
  workloadSelector: { labels: { app: reviews } }
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: web, namespace: default }
spec:
  hosts: [web.default.svc.cluster.local]
  http:
    - headers: { response: { add: { x-route: detected-http } } }
      route: [{ destination: { host: web.default.svc.cluster.local } }]
"#;
    let mut net = Network::new();
    let mesh = CaptureMesh::start(&mut net, Stack::V4, Stack::V4, Stack::V4, Family::V4, extra);
    mesh.server.spawn(
        "web",
        hosts::BIN,
        &["demo-app", "--listen", "0.0.0.0:7000", "--name", "web"],
    );
    mesh.server.spawn(
        "echo",
        hosts::BIN,
        &["net-probe", "echo", "--listen", "0.0.0.0:7001"],
    );
    mesh.call_reviews("/anything");
    let url = "http://10.96.0.20:7000/anything";
    let mut last = (0, 0, String::new());
    assert!(
        eventually(Duration::from_secs(10), || {
            last = mesh.client.curl(url, &["-D", "-"]);
            last.1 == 200
        }),
        "{last:?}\n{}",
        mesh.logs()
    );
    // Routed by the VirtualService at the client, and over mTLS through the server's
    // HTTP chain (which sets the client's identity).
    assert!(last.2.contains("x-route: detected-http"), "{}", last.2);
    assert!(last.2.contains(CLIENT_ID), "{}", last.2);
    // Bytes that are not HTTP take the TCP chains at both ends, byte-exact.
    let out = mesh.client.trellis(&[
        "net-probe",
        "transfer",
        "--to",
        "10.96.0.21:7001",
        "--bytes",
        "1000000",
        "--conns",
        "4",
    ]);
    assert!(
        out.status.success(),
        "{}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        mesh.logs()
    );
    let tls = mesh.server_metric(
        "trellis_downstream_tls_handshakes_total{listener=\"inbound|7001\",result=\"success\"}",
    );
    assert!(tls >= 4.0, "the TCP bytes went over mTLS: {tls}");
}
