//! Connecting to an endpoint with several addresses (a dual-stack workload): Happy
//! Eyeballs v2 (RFC 8305). Addresses are tried IPv6 first, the families interleaved;
//! each next attempt starts when the one before has failed or has not connected after
//! the attempt delay (250 ms, the RFC's recommended value); the first connection wins
//! and the others are dropped.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

pub const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// `addrs` in the order they are tried: IPv6 first, then alternating families, each
/// family in its given order.
pub fn order(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    let (mut v6, mut v4): (Vec<SocketAddr>, Vec<SocketAddr>) =
        addrs.iter().partition(|a| a.is_ipv6());
    v6.reverse();
    v4.reverse();
    let mut out = Vec::with_capacity(addrs.len());
    loop {
        match (v6.pop(), v4.pop()) {
            (None, None) => return out,
            (a, b) => out.extend(a.into_iter().chain(b)),
        }
    }
}

/// The first connection to any of `addrs` (tried as [`order`] says), and its address.
pub async fn connect(addrs: &[SocketAddr], delay: Duration) -> io::Result<(TcpStream, SocketAddr)> {
    let ordered = order(addrs);
    if let [only] = ordered.as_slice() {
        return TcpStream::connect(only).await.map(|s| (s, *only));
    }
    let mut next = ordered.into_iter();
    let mut racing = JoinSet::new();
    let mut last_error = None;
    loop {
        if let Some(addr) = next.next() {
            racing.spawn(async move { TcpStream::connect(addr).await.map(|s| (s, addr)) });
        } else if racing.is_empty() {
            return Err(last_error.unwrap_or_else(|| io::Error::other("no address to connect to")));
        }
        // The next result; while addresses remain, waited for at most the attempt delay
        // (then the next attempt starts beside the ones still running).
        let joined = if next.len() > 0 {
            match tokio::time::timeout(delay, racing.join_next()).await {
                Ok(j) => j,
                Err(_) => continue,
            }
        } else {
            racing.join_next().await
        };
        match joined {
            Some(Ok(Ok(won))) => return Ok(won),
            // A failure starts the next attempt at once.
            Some(Ok(Err(e))) => last_error = Some(e),
            Some(Err(e)) => last_error = Some(io::Error::other(e)),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_first_then_the_families_alternate() {
        let got = order(&[
            a("10.0.0.1:80"),
            a("10.0.0.2:80"),
            a("[fd00::1]:80"),
            a("[fd00::2]:80"),
        ]);
        assert_eq!(
            got,
            [
                a("[fd00::1]:80"),
                a("10.0.0.1:80"),
                a("[fd00::2]:80"),
                a("10.0.0.2:80")
            ]
        );
        assert_eq!(order(&[a("10.0.0.1:80")]), [a("10.0.0.1:80")]);
    }

    #[tokio::test]
    async fn a_refused_address_moves_on_at_once_and_all_refused_is_an_error() {
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live_addr = live.local_addr().unwrap();
        // A port nobody listens on: refused at once.
        let refused = {
            let l = std::net::TcpListener::bind("[::1]:0").unwrap();
            l.local_addr().unwrap()
        };
        let t = std::time::Instant::now();
        let (_, won) = connect(&[live_addr, refused], Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(won, live_addr);
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        // Everything refused: the last error.
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        assert!(connect(&[dead, refused], ATTEMPT_DELAY).await.is_err());
    }
}
