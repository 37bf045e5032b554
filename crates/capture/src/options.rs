//! What to capture: the sidecar's ports and identity, and Istio's include/exclude lists,
//! from flags or from a Pod's (or WorkloadEntry's) annotations with Istio's names.

use crate::Error;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Istio's annotation names and the option each sets.
pub const ANNOTATIONS: &[(&str, &str)] = &[
    (
        "traffic.sidecar.istio.io/includeOutboundIPRanges",
        "include-outbound-ip-ranges",
    ),
    (
        "traffic.sidecar.istio.io/excludeOutboundIPRanges",
        "exclude-outbound-ip-ranges",
    ),
    (
        "traffic.sidecar.istio.io/includeOutboundPorts",
        "include-outbound-ports",
    ),
    (
        "traffic.sidecar.istio.io/excludeOutboundPorts",
        "exclude-outbound-ports",
    ),
    (
        "traffic.sidecar.istio.io/includeInboundPorts",
        "include-inbound-ports",
    ),
    (
        "traffic.sidecar.istio.io/excludeInboundPorts",
        "exclude-inbound-ports",
    ),
];

/// Ports, or every port (`*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortList {
    All,
    Ports(Vec<u16>),
}

impl PortList {
    pub fn parse(field: &str, value: &str) -> Result<PortList, Error> {
        if value.trim() == "*" {
            return Ok(PortList::All);
        }
        let mut ports = Vec::new();
        for p in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => ports.push(n),
                _ => {
                    return Err(Error::Invalid {
                        field: field.into(),
                        value: value.into(),
                        reason: format!("{p:?} is not a port (1-65535) or *"),
                    })
                }
            }
        }
        Ok(PortList::Ports(ports))
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, PortList::Ports(p) if p.is_empty())
    }
}

/// CIDRs, or every address (`*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RangeList {
    All,
    Ranges(Vec<(IpAddr, u8)>),
}

impl RangeList {
    pub fn parse(field: &str, value: &str) -> Result<RangeList, Error> {
        if value.trim() == "*" {
            return Ok(RangeList::All);
        }
        let mut ranges = Vec::new();
        for r in value.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            let bad = |reason: &str| Error::Invalid {
                field: field.into(),
                value: value.into(),
                reason: format!("{r:?} {reason}"),
            };
            let (ip, len) = r.split_once('/').unwrap_or((r, ""));
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| bad("is not an IP address or CIDR"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let len = if len.is_empty() {
                max
            } else {
                len.parse::<u8>()
                    .ok()
                    .filter(|l| *l <= max)
                    .ok_or_else(|| bad(&format!("has a prefix length outside 0-{max}")))?
            };
            ranges.push((ip, len));
        }
        Ok(RangeList::Ranges(ranges))
    }
}

/// Everything `trellis init` installs, with Istio's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// The sidecar's outbound capture port (Istio `-p`).
    pub outbound_port: u16,
    /// The sidecar's inbound capture port (Istio `-z`).
    pub inbound_port: u16,
    /// The sidecar runs as this uid or gid: its own connections are not captured.
    pub proxy_uid: Option<u32>,
    pub proxy_gid: Option<u32>,
    pub include_outbound_ip_ranges: RangeList,
    pub exclude_outbound_ip_ranges: RangeList,
    pub include_outbound_ports: PortList,
    pub exclude_outbound_ports: PortList,
    pub include_inbound_ports: PortList,
    /// The sidecar's own ports are never captured inbound (Istio adds 15090, 15021,
    /// 15020 and 15008; admin 15000 too).
    pub exclude_inbound_ports: PortList,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            outbound_port: 15001,
            inbound_port: 15006,
            proxy_uid: Some(1337),
            proxy_gid: Some(1337),
            include_outbound_ip_ranges: RangeList::All,
            exclude_outbound_ip_ranges: RangeList::Ranges(Vec::new()),
            include_outbound_ports: PortList::Ports(Vec::new()),
            exclude_outbound_ports: PortList::Ports(Vec::new()),
            include_inbound_ports: PortList::All,
            exclude_inbound_ports: PortList::Ports(Vec::new()),
        }
    }
}

impl Options {
    /// Sets the option named `flag` (the flag's name without `--`) from `value`.
    pub fn set(&mut self, flag: &str, value: &str) -> Result<(), Error> {
        match flag {
            "include-outbound-ip-ranges" => {
                self.include_outbound_ip_ranges = RangeList::parse(flag, value)?
            }
            "exclude-outbound-ip-ranges" => {
                self.exclude_outbound_ip_ranges = RangeList::parse(flag, value)?
            }
            "include-outbound-ports" => self.include_outbound_ports = PortList::parse(flag, value)?,
            "exclude-outbound-ports" => self.exclude_outbound_ports = PortList::parse(flag, value)?,
            "include-inbound-ports" => self.include_inbound_ports = PortList::parse(flag, value)?,
            "exclude-inbound-ports" => self.exclude_inbound_ports = PortList::parse(flag, value)?,
            _ => {
                return Err(Error::Invalid {
                    field: flag.into(),
                    value: value.into(),
                    reason: "not a capture option".into(),
                })
            }
        }
        if let PortList::All = self.exclude_inbound_ports {
            return Err(Error::Invalid {
                field: flag.into(),
                value: value.into(),
                reason: "* excludes every port: use include-inbound-ports \"\" instead".into(),
            });
        }
        if let PortList::All = self.exclude_outbound_ports {
            return Err(Error::Invalid {
                field: flag.into(),
                value: value.into(),
                reason: "* excludes every port: use include-outbound-ip-ranges \"\" instead".into(),
            });
        }
        Ok(())
    }

    /// Applies the Istio annotations of a Pod or WorkloadEntry manifest (`file` names
    /// it in errors). `sidecar.istio.io/interceptionMode` must be REDIRECT if set.
    pub fn apply_annotations(&mut self, file: &str, manifest: &str) -> Result<(), Error> {
        #[derive(serde::Deserialize)]
        struct Manifest {
            #[serde(default)]
            metadata: Metadata,
        }
        #[derive(Default, serde::Deserialize)]
        struct Metadata {
            #[serde(default)]
            annotations: BTreeMap<String, String>,
        }
        let m: Manifest = serde_yaml::from_str(manifest).map_err(|e| Error::Invalid {
            field: file.into(),
            value: String::new(),
            reason: format!("not a Kubernetes manifest: {e}"),
        })?;
        let annotations = m.metadata.annotations;
        if let Some(mode) = annotations.get("sidecar.istio.io/interceptionMode") {
            if mode != "REDIRECT" {
                return Err(Error::Invalid {
                    field: format!("{file}: metadata.annotations.sidecar.istio.io/interceptionMode"),
                    value: mode.clone(),
                    reason: "trellis init installs REDIRECT capture only (TPROXY is not supported; NONE means no capture: do not run trellis init)".into(),
                });
            }
        }
        for (annotation, flag) in ANNOTATIONS {
            if let Some(v) = annotations.get(*annotation) {
                self.set(flag, v).map_err(|e| match e {
                    Error::Invalid { value, reason, .. } => Error::Invalid {
                        field: format!("{file}: metadata.annotations.{annotation}"),
                        value,
                        reason,
                    },
                    other => other,
                })?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_set_the_lists_and_bad_values_name_the_annotation() {
        let mut o = Options::default();
        o.apply_annotations(
            "pod.yaml",
            "metadata:\n  annotations:\n    traffic.sidecar.istio.io/excludeOutboundPorts: \"5432, 6379\"\n    traffic.sidecar.istio.io/includeOutboundIPRanges: \"10.96.0.0/12,fd00:96::/108\"\n",
        )
        .unwrap();
        assert_eq!(o.exclude_outbound_ports, PortList::Ports(vec![5432, 6379]));
        assert_eq!(
            o.include_outbound_ip_ranges,
            RangeList::Ranges(vec![
                ("10.96.0.0".parse().unwrap(), 12),
                ("fd00:96::".parse().unwrap(), 108)
            ])
        );
        let err = Options::default()
            .apply_annotations(
                "pod.yaml",
                "metadata:\n  annotations:\n    traffic.sidecar.istio.io/includeInboundPorts: \"9080,http\"\n",
            )
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "pod.yaml: metadata.annotations.traffic.sidecar.istio.io/includeInboundPorts: \"9080,http\": \"http\" is not a port (1-65535) or *"
        );
        let err = Options::default()
            .apply_annotations(
                "pod.yaml",
                "metadata:\n  annotations:\n    sidecar.istio.io/interceptionMode: TPROXY\n",
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("REDIRECT capture only"), "{err}");
        assert!(RangeList::parse("x", "10.0.0.0/33").is_err());
    }
}
