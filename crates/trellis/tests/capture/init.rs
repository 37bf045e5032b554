//! `trellis init` on its own: what it installs, that `--cleanup` leaves the rule set
//! exactly as it was (iptables-save before and after, both backends), and that a
//! conflict or missing privileges change nothing.

use crate::hosts::{require_netns, Network, Stack, BIN};

/// `iptables-save` and `ip6tables-save` of the backend, without their comment lines
/// (which carry the time) and packet counters (traffic, not rules).
fn saved(host: &crate::hosts::Host, backend: &str) -> String {
    let mut all = String::new();
    for family in ["iptables", "ip6tables"] {
        let cmd = match backend {
            "default" => format!("{family}-save"),
            b => format!("{family}-{b}-save"),
        };
        let out = host.run(&cmd, &[]);
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            if l.starts_with('#') {
                continue;
            }
            // `:CHAIN POLICY [packets:bytes]`
            match l.rsplit_once(" [") {
                Some((chain, _)) if l.starts_with(':') => all.push_str(chain),
                _ => all.push_str(l),
            }
            all.push('\n');
        }
    }
    all
}

fn rules(host: &crate::hosts::Host, backend: &str, restore: &str) {
    for family in ["iptables", "ip6tables"] {
        let cmd = format!("{family}-{backend}-restore");
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &host.ns, &cmd, "--noflush"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(restore.as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn cleanup_leaves_the_rule_set_exactly_as_before_with_both_backends() {
    require_netns!();
    let mut net = Network::new();
    for (i, backend) in [(1, "nft"), (2, "legacy")] {
        let host = net.host(i, Stack::Dual);
        // Rules of the namespace's own that must survive: a nat rule and a filter rule.
        rules(
            &host,
            backend,
            "*nat\n-A POSTROUTING -o eth0 -j MASQUERADE\nCOMMIT\n*filter\n-A INPUT -p tcp --dport 22 -j ACCEPT\nCOMMIT\n",
        );
        let before = saved(&host, backend);
        let out = host.trellis(&[
            "init",
            "--backend",
            backend,
            "--exclude-outbound-ports",
            "5432",
            "--include-outbound-ip-ranges",
            "10.96.0.0/12,fd00:96::/108",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let during = saved(&host, backend);
        assert!(
            during.contains("-A TRELLIS_REDIRECT -p tcp -j REDIRECT --to-ports 15001"),
            "{during}"
        );
        assert!(
            during.contains("-A TRELLIS_OUTPUT -d 10.96.0.0/12 -j TRELLIS_REDIRECT"),
            "{during}"
        );
        assert!(
            during.contains("-A TRELLIS_OUTPUT -d fd00:96::/108 -j TRELLIS_REDIRECT"),
            "{during}"
        );
        assert!(during.contains("--gid-owner 1337 -j RETURN"), "{during}");
        // Installing twice is refused, and names what is in the way.
        let again = host.trellis(&["init", "--backend", backend]);
        assert!(!again.status.success());
        let err = String::from_utf8_lossy(&again.stderr);
        assert!(
            err.contains("-A PREROUTING -p tcp -j TRELLIS_INBOUND"),
            "{err}"
        );
        assert_eq!(
            saved(&host, backend),
            during,
            "a refused init changed the rules"
        );

        let out = host.trellis(&["init", "--cleanup", "--backend", backend]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            saved(&host, backend),
            before,
            "{backend}: cleanup left a difference"
        );
        // A second cleanup finds nothing and changes nothing.
        let out = host.trellis(&["init", "--cleanup", "--backend", backend]);
        assert!(String::from_utf8_lossy(&out.stdout).contains("nothing removed"));
        assert_eq!(saved(&host, backend), before);
    }
}

#[test]
fn a_conflict_in_one_family_installs_nothing_in_either() {
    require_netns!();
    let mut net = Network::new();
    let host = net.host(1, Stack::Dual);
    // Istio's capture already in place for IPv6 only.
    let out = host.run("ip6tables", &["-t", "nat", "-N", "ISTIO_REDIRECT"]);
    assert!(out.status.success());
    let out = host.run(
        "ip6tables",
        &[
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-p",
            "tcp",
            "-j",
            "ISTIO_REDIRECT",
        ],
    );
    assert!(out.status.success());
    let before = saved(&host, "default");
    let out = host.trellis(&["init"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("IPv6: the nat table already has rules that capture traffic"),
        "{err}"
    );
    assert!(err.contains("-A OUTPUT -p tcp -j ISTIO_REDIRECT"), "{err}");
    assert_eq!(saved(&host, "default"), before, "IPv4 was installed anyway");
}

#[test]
fn bad_input_and_missing_privileges_are_named_and_change_nothing() {
    require_netns!();
    let mut net = Network::new();
    let host = net.host(1, Stack::Dual);
    let before = saved(&host, "default");
    let out = host.trellis(&["init", "--include-inbound-ports", "9080,http"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("include-inbound-ports: \"9080,http\": \"http\" is not a port"),
        "{err}"
    );

    let pod = net.dir.path().join("pod.yaml");
    std::fs::write(&pod, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  annotations:\n    traffic.sidecar.istio.io/excludeOutboundIPRanges: \"10.0.0.0/8,300.1.1.1\"\n").unwrap();
    let out = host.trellis(&["init", "--annotations", pod.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("metadata.annotations.traffic.sidecar.istio.io/excludeOutboundIPRanges: \"10.0.0.0/8,300.1.1.1\": \"300.1.1.1\" is not an IP address or CIDR"),
        "{err}"
    );

    // As nobody, without CAP_NET_ADMIN.
    let out = host.run(
        "setpriv",
        &[
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            BIN,
            "init",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs root (CAP_NET_ADMIN)"), "{err}");
    assert_eq!(saved(&host, "default"), before);
}

#[test]
fn istios_init_container_command_line_is_accepted() {
    require_netns!();
    let mut net = Network::new();
    let host = net.host(1, Stack::Dual);
    let before = saved(&host, "default");
    // The arguments Istio's injector gives istio-iptables.
    let istio = [
        "init",
        "-p",
        "15001",
        "-z",
        "15006",
        "-u",
        "1337",
        "-m",
        "REDIRECT",
        "-i",
        "*",
        "-x",
        "",
        "-b",
        "*",
        "-d",
        "15090,15021,15020",
    ];
    let out = host.trellis(&istio);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let during = saved(&host, "default");
    assert!(
        during.contains("-A TRELLIS_INBOUND -p tcp -m tcp --dport 15090 -j RETURN"),
        "{during}"
    );
    assert!(
        during.contains("-A TRELLIS_OUTPUT -j TRELLIS_REDIRECT"),
        "{during}"
    );
    let out = host.trellis(&["init", "--cleanup-only"]);
    assert!(out.status.success());
    // (nf_tables keeps the nat table the install created, empty.)
    let after = saved(&host, "default");
    assert!(
        !after.contains("-A ") && before.lines().all(|l| after.contains(l)),
        "{after}"
    );
    let out = host.trellis(&["init", "-m", "TPROXY"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("only REDIRECT is supported"));
}
