//! The mesh's web dashboard, as `trellis up` serves it: the service graph (each edge's
//! request rate, error rate, p50 and p99, and whether it is mutual TLS, from Istio's
//! standard metrics that the sidecars export), each workload's tenant, identity,
//! certificate expiry and config status, what the control plane refused and why, and
//! the built-in client's live request table. The page and its script are in the binary
//! (no build step, nothing fetched at run time) and are updated live over server-sent
//! events.

mod graph;
pub mod model;
mod server;

pub use graph::{edges, Scrape};
pub use server::Dashboard;
