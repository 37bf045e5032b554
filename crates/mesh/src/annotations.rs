//! Annotations Trellis reads: where a local-mode workload's sidecar and app listen
//! (sidecars run without traffic capture), and Istio's dry-run switch.

/// `host:port` of the sidecar's outbound HTTP listener (the app's HTTP proxy).
/// Default `127.0.0.1:15001`.
pub const OUTBOUND: &str = "sidecar.trellis.dev/outbound";
/// `<port name>=<port>,...`: where the application itself listens, on 127.0.0.1.
/// The WorkloadEntry's `ports` are the sidecar's inbound (mTLS) ports; a workload
/// without this annotation has no sidecar and is reached in plaintext.
pub const APP_PORTS: &str = "sidecar.trellis.dev/app-ports";

/// `<ip>,...`: the workload's addresses besides its WorkloadEntry `address` (a
/// dual-stack workload's other family). Peers race them with Happy Eyeballs; a captured
/// workload's inbound listeners take connections to each.
pub const ADDITIONAL_ADDRESSES: &str = "sidecar.trellis.dev/additional-addresses";

/// Istio's `sidecar.istio.io/interceptionMode`: `REDIRECT` means the workload's
/// traffic is captured by `trellis init`'s rules; `NONE` (Trellis' default for a
/// WorkloadEntry) means the app uses its sidecar as an HTTP proxy. `TPROXY` is refused.
pub const INTERCEPTION_MODE: &str = "sidecar.istio.io/interceptionMode";

/// Whether `annotations` ask for traffic capture.
pub fn captured(annotations: &crate::istio::Labels) -> bool {
    annotations.get(INTERCEPTION_MODE).map(String::as_str) == Some("REDIRECT")
}

/// The annotation that makes an AuthorizationPolicy dry-run (evaluated, never enforced).
pub const DRY_RUN: &str = "istio.io/dry-run";

/// A boolean as Go's `strconv.ParseBool` reads it (how Istio reads annotations).
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}
