//! Same-host TCP/IP bypass for mesh hops.
//!
//! On one host a request crosses the TCP/IP stack three times with sidecars: app →
//! sidecar, sidecar → sidecar, sidecar → app. Two small BPF programs (`bpf/bypass.c`)
//! take those hops off the stack:
//!
//! - a **sockops** program, attached to the mesh's cgroup, records every established TCP
//!   socket (IPv4 and IPv6) in a sockhash keyed by its tuple (the kernel drops it when
//!   its owner closes it);
//! - an **sk_msg** program, attached to that sockhash, looks up the peer of each send
//!   under the mirrored tuple and, when the peer is there (local, in the mesh), moves the
//!   data straight onto the peer's receive queue. Anything else takes the normal path.
//!
//! Sockets of processes outside the cgroup are never recorded, so nothing changes for
//! them. Applications see ordinary TCP: ordering, half-close and reset behave as before.
//!
//! [`enable`] loads the programs and pins programs, maps and links under a directory of
//! the BPF filesystem (default [`DEFAULT_PIN_DIR`]) so they outlive the loader;
//! [`disable`] removes the pins, which detaches everything; [`status`] reads the
//! counters back.

mod cgroup;
mod counters;
mod loader;
mod pins;
mod preflight;
mod sockets;

pub use cgroup::{cgroup2_mount, ChildCgroup};
pub use counters::Counters;
pub use loader::{disable, enable, status, Status};
pub use preflight::{BypassError, MIN_KERNEL};
pub use sockets::{tracked_sockets, TrackedSocket};

/// Where `trellis bypass enable` pins its programs and maps.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/trellis";

/// The compiled BPF object, built from `bpf/bypass.c` by `build.rs`.
pub(crate) const BPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bypass.o"));
