//! Transparent traffic capture for a workload's network namespace: what Istio's
//! `istio-iptables` (the init container) does, as `trellis init`.
//!
//! The rules (`rules.rs`) REDIRECT the namespace's inbound TCP to the sidecar's
//! inbound capture port (15006) and the app's outbound TCP to its outbound capture
//! port (15001); the sidecar's own traffic (its uid or gid, 1337 as in Istio) and
//! loopback are left alone, and Istio's include/exclude lists of ports and CIDRs
//! narrow both. They live in chains of their own (`TRELLIS_*`) and are installed per
//! family with one `iptables-restore --noflush` each (`iptables.rs`), so a family is
//! installed whole or not at all, and a failure in the second family removes the first.
//! `--cleanup` removes exactly those chains and the two jumps into them.

mod iptables;
mod options;
mod rules;

pub use iptables::{cleanup, install, save, Backend, Installed, Tables};
pub use options::{Options, PortList, RangeList, ANNOTATIONS};
pub use rules::{render, CHAINS};

/// Why capture could not be installed or removed; nothing was left half-done.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag or annotation with a value that is not what it should be.
    #[error("{field}: {value:?}: {reason}")]
    Invalid {
        field: String,
        value: String,
        reason: String,
    },
    /// Rules already in the namespace that would fight ours.
    #[error("{family}: the nat table already has rules that capture traffic; remove them first (or run `trellis init --cleanup` if they are Trellis's own):\n{}", rules.join("\n"))]
    Conflict { family: Family, rules: Vec<String> },
    /// An iptables command failed (missing privileges, missing kernel support).
    #[error("{command}: {message}")]
    Command { command: String, message: String },
}

/// An address family: the rules of each go through its own iptables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub(crate) fn holds(self, ip: &std::net::IpAddr) -> bool {
        matches!(
            (self, ip),
            (Family::V4, std::net::IpAddr::V4(_)) | (Family::V6, std::net::IpAddr::V6(_))
        )
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}
