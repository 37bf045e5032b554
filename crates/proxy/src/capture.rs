//! Transparent capture: where a redirected connection was going, and which listener
//! takes it.
//!
//! `trellis init`'s rules REDIRECT an app's TCP to the sidecar's capture listeners
//! (15001 outbound, 15006 inbound). The kernel keeps the original destination in the
//! connection's NAT entry; a capture listener (`use_original_dst`) reads it and hands
//! the connection to the listener whose address it is, as Envoy does: the exact
//! address first, then the wildcard address of the same family and port. A
//! connection no listener claims stays with the capture listener.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use tokio::net::TcpStream;

/// The destination `stream` (accepted on `local`) had before a REDIRECT rule sent it
/// here; `None` when it was not redirected (it came to the listener's own address) or
/// the kernel has no NAT entry for it.
pub fn original_dst(stream: &TcpStream, local: SocketAddr) -> Option<SocketAddr> {
    let sock = socket2::SockRef::from(stream);
    let found = match local {
        SocketAddr::V4(_) => sock.original_dst_v4(),
        SocketAddr::V6(_) => sock.original_dst_v6(),
    };
    let dst = found.ok()?.as_socket()?;
    (dst != local).then_some(dst)
}

/// Every listener by address (`T`: how to reach one), for capture listeners' hand-offs.
/// Replaced whole on each config apply.
#[derive(Clone)]
pub struct Handoffs<T> {
    by_address: HashMap<SocketAddr, T>,
}

impl<T> Default for Handoffs<T> {
    fn default() -> Self {
        Handoffs {
            by_address: HashMap::new(),
        }
    }
}

impl<T> Handoffs<T> {
    pub fn insert(&mut self, addr: SocketAddr, target: T) {
        self.by_address.insert(addr, target);
    }

    /// The listener for `dst`: its exact address, else the wildcard of its family.
    pub fn find(&self, dst: SocketAddr) -> Option<&T> {
        self.by_address.get(&dst).or_else(|| {
            let any = match dst.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            };
            self.by_address.get(&SocketAddr::new(any, dst.port()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_address_wins_then_the_wildcard_of_the_family() {
        let mut h = Handoffs::default();
        h.insert("0.0.0.0:9080".parse().unwrap(), "0.0.0.0_9080");
        h.insert("10.1.0.7:9080".parse().unwrap(), "inbound|9080");
        h.insert("[::]:9080".parse().unwrap(), "v6");
        let name = |a: &str| h.find(a.parse().unwrap()).copied();
        assert_eq!(name("10.1.0.7:9080"), Some("inbound|9080"));
        assert_eq!(name("10.96.0.3:9080"), Some("0.0.0.0_9080"));
        assert_eq!(name("[fd00::3]:9080"), Some("v6"));
        assert_eq!(name("10.96.0.3:9081"), None);
    }
}
