use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use aya::maps::{Map, MapData, SockHash};
use serde::Serialize;

use crate::pins::pins;
use crate::BypassError;

/// `struct sock_key` of `bpf/bypass.c` as eleven 32-bit words: family, local port,
/// remote port, local address, remote address (ports and addresses in network order).
pub(crate) type SockKey = [u32; 11];

const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;

/// A socket the sockops program recorded, by its own tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct TrackedSocket {
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

impl TrackedSocket {
    fn from_key(key: &SockKey) -> Option<Self> {
        let port = |w: u32| u16::from_be_bytes((w as u16).to_ne_bytes());
        let addr = |words: &[u32]| -> Option<IpAddr> {
            match key[0] {
                AF_INET => Some(Ipv4Addr::from(words[0].to_ne_bytes()).into()),
                AF_INET6 => {
                    let mut bytes = [0u8; 16];
                    for (chunk, w) in bytes.chunks_exact_mut(4).zip(words) {
                        chunk.copy_from_slice(&w.to_ne_bytes());
                    }
                    Some(Ipv6Addr::from(bytes).into())
                }
                _ => None,
            }
        };
        Some(TrackedSocket {
            local: SocketAddr::new(addr(&key[3..7])?, port(key[1])),
            remote: SocketAddr::new(addr(&key[7..11])?, port(key[2])),
        })
    }
}

/// The sockets recorded right now under `pin_dir`.
pub fn tracked_sockets(pin_dir: &Path) -> Result<Vec<TrackedSocket>, BypassError> {
    let map = pins(pin_dir).socks;
    if !map.exists() {
        return Err(BypassError::NotEnabled(pin_dir.to_path_buf()));
    }
    let data =
        MapData::from_pin(&map).map_err(|e| BypassError::bpf(map.display().to_string(), e))?;
    let socks: SockHash<MapData, SockKey> =
        Map::from_map_data(data)
            .and_then(SockHash::try_from)
            .map_err(|e| BypassError::bpf(map.display().to_string(), e))?;
    let mut out = Vec::new();
    for key in socks.keys() {
        // A socket closing during the walk ends it early with ENOENT; what was read stands.
        let Ok(key) = key else { break };
        out.extend(TrackedSocket::from_key(&key));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_decode_as_the_bpf_program_builds_them() {
        // 127.0.0.1:8080 -> 127.0.0.2:40000, as sockops writes it on little-endian.
        let be16 = |p: u16| u32::from(u16::from_ne_bytes(p.to_be_bytes()));
        let ip4 = |a: [u8; 4]| u32::from_ne_bytes(a);
        let mut key: SockKey = [0; 11];
        key[0] = AF_INET;
        key[1] = be16(8080);
        key[2] = be16(40000);
        key[3] = ip4([127, 0, 0, 1]);
        key[7] = ip4([127, 0, 0, 2]);
        let s = TrackedSocket::from_key(&key).unwrap();
        assert_eq!(s.local, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(s.remote, "127.0.0.2:40000".parse().unwrap());

        key[0] = AF_INET6;
        key[3..7].copy_from_slice(&[0, 0, 0, ip4([0, 0, 0, 1])]);
        key[7..11].copy_from_slice(&[ip4([0xfd, 0, 0, 0]), 0, 0, ip4([0, 0, 0, 2])]);
        let s = TrackedSocket::from_key(&key).unwrap();
        assert_eq!(s.local, "[::1]:8080".parse().unwrap());
        assert_eq!(s.remote, "[fd00::2]:40000".parse().unwrap());

        key[0] = 99;
        assert_eq!(TrackedSocket::from_key(&key), None);
    }
}
