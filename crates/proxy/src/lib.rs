//! The Trellis data-plane proxy: listeners, the HTTP connection manager, the TCP
//! proxy, clusters (load balancing, pools, circuit breakers, outlier detection),
//! the admin listener and the process lifecycle. See ARCHITECTURE.md.

pub mod access_log;
pub mod admin;
mod authz;
pub mod body;
pub mod capture;
pub mod cluster;
pub mod conn;
pub mod http;
pub mod identity;
mod interest;
mod io;
pub mod istio_stats;
mod keys;
pub mod listener;
mod metric_overrides;
mod peer_exchange;
pub mod server;
mod serving;
mod sniff;
pub mod stats;
pub mod tcp;
mod tls;
mod tracer;
mod trust;
mod workload_key;
pub mod xds;

pub use interest::SidecarInterest;
pub use server::{run, ProxyOptions};
pub use xds::{HeldResources, XdsOptions};
