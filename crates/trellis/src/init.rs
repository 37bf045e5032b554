//! `trellis init`: install (or `--cleanup` remove) the capture rules in the current
//! network namespace, as Istio's init container runs istio-iptables before the pod's
//! containers start. Run it inside the workload's namespace (`ip netns exec`, or a pod's
//! init container), as root.

use anyhow::Context;
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use trellis_capture::{Backend, Family, Options, Tables};

/// The flags take Istio's istio-iptables names too (`-p 15001 -z 15006 -u 1337 -m
/// REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020`), so an init container's command
/// line can be reused.
#[derive(Args)]
pub struct InitArgs {
    /// Remove the rules an earlier `trellis init` installed, and nothing else.
    #[arg(long, visible_alias = "cleanup-only")]
    cleanup: bool,
    /// Print the rules (iptables-restore input) instead of installing them.
    #[arg(long, short = 'n', conflicts_with = "cleanup")]
    dry_run: bool,
    /// The sidecar's outbound capture port.
    #[arg(
        long,
        short = 'p',
        visible_alias = "envoy-port",
        default_value_t = 15001
    )]
    outbound_port: u16,
    /// The sidecar's inbound capture port.
    #[arg(
        long,
        short = 'z',
        visible_alias = "inbound-capture-port",
        default_value_t = 15006
    )]
    inbound_port: u16,
    /// The sidecar runs as this uid: its connections are not captured ("" for none).
    #[arg(long, short = 'u', default_value = "1337")]
    proxy_uid: String,
    /// The sidecar runs with this gid: its connections are not captured ("" for none).
    #[arg(long, short = 'g', default_value = "1337")]
    proxy_gid: String,
    /// How inbound traffic is captured: REDIRECT (TPROXY is not supported).
    #[arg(
        long,
        short = 'm',
        visible_alias = "istio-inbound-interception-mode",
        default_value = "REDIRECT"
    )]
    mode: String,
    /// CIDRs whose outbound traffic is captured, or * (traffic.sidecar.istio.io/includeOutboundIPRanges).
    #[arg(long, short = 'i', visible_alias = "istio-service-cidr")]
    include_outbound_ip_ranges: Option<String>,
    /// CIDRs never captured (traffic.sidecar.istio.io/excludeOutboundIPRanges).
    #[arg(long, short = 'x', visible_alias = "istio-service-exclude-cidr")]
    exclude_outbound_ip_ranges: Option<String>,
    /// Outbound ports always captured (traffic.sidecar.istio.io/includeOutboundPorts).
    #[arg(long, short = 'q', visible_alias = "istio-outbound-ports")]
    include_outbound_ports: Option<String>,
    /// Outbound ports never captured (traffic.sidecar.istio.io/excludeOutboundPorts).
    #[arg(
        long,
        short = 'o',
        visible_alias = "istio-local-outbound-ports-exclude"
    )]
    exclude_outbound_ports: Option<String>,
    /// Inbound ports captured, or * (traffic.sidecar.istio.io/includeInboundPorts).
    #[arg(long, short = 'b', visible_alias = "istio-inbound-ports")]
    include_inbound_ports: Option<String>,
    /// Inbound ports never captured (traffic.sidecar.istio.io/excludeInboundPorts).
    #[arg(long, short = 'd', visible_alias = "istio-local-exclude-ports")]
    exclude_inbound_ports: Option<String>,
    /// A Pod or WorkloadEntry manifest whose traffic.sidecar.istio.io/* annotations set
    /// the lists (flags given as well win).
    #[arg(long)]
    annotations: Option<PathBuf>,
    /// Which iptables: the host's default, or the nf_tables or legacy backend by name.
    #[arg(long, value_enum, default_value_t = BackendArg::Default)]
    backend: BackendArg,
    /// The families to capture.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [FamilyArg::Ipv4, FamilyArg::Ipv6])]
    families: Vec<FamilyArg>,
}

#[derive(Clone, Copy, ValueEnum)]
enum BackendArg {
    Default,
    Nft,
    Legacy,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum FamilyArg {
    Ipv4,
    Ipv6,
}

impl std::fmt::Display for FamilyArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FamilyArg::Ipv4 => "ipv4",
            FamilyArg::Ipv6 => "ipv6",
        })
    }
}

fn id(field: &str, v: &str) -> Result<Option<u32>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    v.parse()
        .map(Some)
        .map_err(|_| format!("--{field}: {v:?} is not a numeric id"))
}

fn options(a: &InitArgs) -> Result<Options, String> {
    if a.mode != "REDIRECT" {
        return Err(format!(
            "--istio-inbound-interception-mode: {:?}: only REDIRECT is supported",
            a.mode
        ));
    }
    let mut o = Options {
        outbound_port: a.outbound_port,
        inbound_port: a.inbound_port,
        proxy_uid: id("proxy-uid", &a.proxy_uid)?,
        proxy_gid: id("proxy-gid", &a.proxy_gid)?,
        ..Options::default()
    };
    if let Some(file) = &a.annotations {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("--annotations {}: {e}", file.display()))?;
        o.apply_annotations(&file.display().to_string(), &text)
            .map_err(|e| e.to_string())?;
    }
    for (flag, value) in [
        ("include-outbound-ip-ranges", &a.include_outbound_ip_ranges),
        ("exclude-outbound-ip-ranges", &a.exclude_outbound_ip_ranges),
        ("include-outbound-ports", &a.include_outbound_ports),
        ("exclude-outbound-ports", &a.exclude_outbound_ports),
        ("include-inbound-ports", &a.include_inbound_ports),
        ("exclude-inbound-ports", &a.exclude_inbound_ports),
    ] {
        if let Some(v) = value {
            o.set(flag, v).map_err(|e| format!("--{e}"))?;
        }
    }
    if o.proxy_uid.is_none() && o.proxy_gid.is_none() {
        return Err(
            "--proxy-uid and --proxy-gid are both empty: the sidecar's own traffic would be captured again (a loop)"
                .into(),
        );
    }
    Ok(o)
}

pub fn run(a: InitArgs) -> anyhow::Result<()> {
    let tables = Tables {
        backend: match a.backend {
            BackendArg::Default => Backend::Default,
            BackendArg::Nft => Backend::Nft,
            BackendArg::Legacy => Backend::Legacy,
        },
        families: a
            .families
            .iter()
            .map(|f| match f {
                FamilyArg::Ipv4 => Family::V4,
                FamilyArg::Ipv6 => Family::V6,
            })
            .collect(),
    };
    if a.cleanup {
        let removed = trellis_capture::cleanup(&tables).context("init --cleanup")?;
        if removed.is_empty() {
            println!("no Trellis capture rules here; nothing removed");
        }
        for f in removed {
            println!("{f}: capture rules removed");
        }
        return Ok(());
    }
    let o = options(&a).map_err(|e| anyhow::anyhow!("init: {e}"))?;
    if a.dry_run {
        for &f in &tables.families {
            println!("# {f}\n{}", trellis_capture::render(&o, f));
        }
        return Ok(());
    }
    let installed = trellis_capture::install(&o, &tables).context("init")?;
    for (f, n) in installed.families {
        println!(
            "{f}: {n} capture rules installed (outbound → :{}, inbound → :{})",
            o.outbound_port, o.inbound_port
        );
    }
    Ok(())
}
