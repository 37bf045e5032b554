//! The capture rules of one family, as `iptables-restore --noflush` input.
//!
//! Istio's REDIRECT layout, in chains of our own:
//!
//! ```text
//! PREROUTING -p tcp → TRELLIS_INBOUND: the sidecar's own ports and excluded ports RETURN;
//!                     included ports (or all) → TRELLIS_IN_REDIRECT → REDIRECT :15006
//! OUTPUT -p tcp     → TRELLIS_OUTPUT: excluded ports, the proxy's uid/gid, loopback and
//!                     excluded CIDRs RETURN; included ports, then included CIDRs (or
//!                     all) → TRELLIS_REDIRECT → REDIRECT :15001
//! ```

use crate::{Family, Options, PortList, RangeList};

/// The chains the rules create (and `--cleanup` removes), in creation order.
pub const CHAINS: [&str; 4] = [
    "TRELLIS_INBOUND",
    "TRELLIS_IN_REDIRECT",
    "TRELLIS_OUTPUT",
    "TRELLIS_REDIRECT",
];

/// The jumps from the built-in chains into ours.
pub(crate) const JUMPS: [(&str, &str); 2] = [
    ("PREROUTING", "-A PREROUTING -p tcp -j TRELLIS_INBOUND"),
    ("OUTPUT", "-A OUTPUT -p tcp -j TRELLIS_OUTPUT"),
];

/// Ports of the sidecar itself that inbound capture never takes (Istio's 15008,
/// 15020, 15021, 15090; Trellis' admin 15000).
const SIDECAR_PORTS: [u16; 5] = [15000, 15008, 15020, 15021, 15090];

/// The `*nat` section that installs capture for `family`.
pub fn render(o: &Options, family: Family) -> String {
    let mut r = vec!["*nat".to_string()];
    for c in CHAINS {
        r.push(format!(":{c} - [0:0]"));
    }
    r.push(format!(
        "-A TRELLIS_IN_REDIRECT -p tcp -j REDIRECT --to-ports {}",
        o.inbound_port
    ));
    r.push(format!(
        "-A TRELLIS_REDIRECT -p tcp -j REDIRECT --to-ports {}",
        o.outbound_port
    ));
    // Inbound.
    let mut excluded: Vec<u16> = SIDECAR_PORTS.to_vec();
    excluded.push(o.inbound_port);
    excluded.push(o.outbound_port);
    if let PortList::Ports(p) = &o.exclude_inbound_ports {
        excluded.extend(p);
    }
    excluded.sort_unstable();
    excluded.dedup();
    match &o.include_inbound_ports {
        PortList::All => {
            for p in &excluded {
                r.push(format!("-A TRELLIS_INBOUND -p tcp --dport {p} -j RETURN"));
            }
            r.push("-A TRELLIS_INBOUND -p tcp -j TRELLIS_IN_REDIRECT".into());
        }
        PortList::Ports(ports) => {
            for p in ports.iter().filter(|p| !excluded.contains(p)) {
                r.push(format!(
                    "-A TRELLIS_INBOUND -p tcp --dport {p} -j TRELLIS_IN_REDIRECT"
                ));
            }
        }
    }
    // Outbound.
    if let PortList::Ports(p) = &o.exclude_outbound_ports {
        for p in p {
            r.push(format!("-A TRELLIS_OUTPUT -p tcp --dport {p} -j RETURN"));
        }
    }
    if let Some(uid) = o.proxy_uid {
        r.push(format!(
            "-A TRELLIS_OUTPUT -m owner --uid-owner {uid} -j RETURN"
        ));
    }
    if let Some(gid) = o.proxy_gid {
        r.push(format!(
            "-A TRELLIS_OUTPUT -m owner --gid-owner {gid} -j RETURN"
        ));
    }
    r.push("-A TRELLIS_OUTPUT -o lo -j RETURN".into());
    if let RangeList::Ranges(ranges) = &o.exclude_outbound_ip_ranges {
        for (ip, len) in ranges.iter().filter(|(ip, _)| family.holds(ip)) {
            r.push(format!("-A TRELLIS_OUTPUT -d {ip}/{len} -j RETURN"));
        }
    }
    if let PortList::Ports(p) = &o.include_outbound_ports {
        for p in p {
            r.push(format!(
                "-A TRELLIS_OUTPUT -p tcp --dport {p} -j TRELLIS_REDIRECT"
            ));
        }
    }
    match &o.include_outbound_ip_ranges {
        RangeList::All => r.push("-A TRELLIS_OUTPUT -j TRELLIS_REDIRECT".into()),
        RangeList::Ranges(ranges) => {
            for (ip, len) in ranges.iter().filter(|(ip, _)| family.holds(ip)) {
                r.push(format!(
                    "-A TRELLIS_OUTPUT -d {ip}/{len} -j TRELLIS_REDIRECT"
                ));
            }
        }
    }
    r.extend(JUMPS.iter().map(|(_, rule)| rule.to_string()));
    r.push("COMMIT".into());
    r.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_per_family_follow_the_lists() {
        let mut o = Options::default();
        o.set("include-outbound-ip-ranges", "10.96.0.0/12,fd00:96::/108")
            .unwrap();
        o.set("exclude-outbound-ports", "5432").unwrap();
        o.set("include-inbound-ports", "9080,15000").unwrap();
        let v4 = render(&o, Family::V4);
        assert!(v4.contains("-A TRELLIS_OUTPUT -d 10.96.0.0/12 -j TRELLIS_REDIRECT"));
        assert!(!v4.contains("fd00"));
        assert!(v4.contains("-A TRELLIS_OUTPUT -p tcp --dport 5432 -j RETURN"));
        assert!(v4.contains("-A TRELLIS_INBOUND -p tcp --dport 9080 -j TRELLIS_IN_REDIRECT"));
        // The sidecar's admin port is never captured, even when listed.
        assert!(!v4.contains("--dport 15000 -j TRELLIS_IN_REDIRECT"));
        let v6 = render(&o, Family::V6);
        assert!(v6.contains("-A TRELLIS_OUTPUT -d fd00:96::/108 -j TRELLIS_REDIRECT"));
        assert!(!v6.contains("10.96"));
        assert!(v6.ends_with("-A OUTPUT -p tcp -j TRELLIS_OUTPUT\nCOMMIT\n"));
    }
}
