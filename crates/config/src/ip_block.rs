//! IP addresses and CIDR blocks as policy writes them (`10.0.0.1`, `10.0.0.0/8`,
//! `2001:db8::/32`), read by one parser wherever they are checked: the control plane
//! refuses what the proxy would refuse. The forms are those Go's `netip` accepts (what
//! Istio validates with): no leading zeros, no sign, a prefix length within the family.

use std::net::IpAddr;

/// The address and prefix length of a block (a bare address is a full-length block).
pub fn parse_ip_block(s: &str) -> Result<(IpAddr, u8), String> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("{s:?} is not an IP address or CIDR"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => {
            let digits = !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
            let canonical = !(p.len() > 1 && p.starts_with('0'));
            match p.parse::<u8>() {
                Ok(n) if digits && canonical && n <= max => n,
                _ => return Err(format!("{s:?}: the prefix length must be 0..={max}")),
            }
        }
    };
    Ok((ip, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_go_netip_reads() {
        for ok in [
            "10.0.0.1",
            "10.0.0.0/8",
            "0.0.0.0/0",
            "2001:db8::/32",
            "::/0",
            "::1",
        ] {
            assert!(parse_ip_block(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "x",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/08",
            "10.0.0.0/-1",
            "010.0.0.1",
            "10.0.0.0/8/8",
            "1.2.3",
            "10.0.0.0 /8",
        ] {
            assert!(parse_ip_block(bad).is_err(), "{bad}");
        }
    }
}
