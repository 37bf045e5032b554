//! `trellis up --netns`: each workload on a host of its own (`trellis-netns`: a network
//! namespace on a bridge, IPv4 and IPv6), its traffic captured by `trellis init`; and the
//! services' virtual IPs its apps resolve their names to.

use anyhow::Context as _;

pub(crate) use trellis_netns::{v4, v6};

/// Service `i`'s virtual IPs (ServiceEntry `addresses`).
pub(crate) fn vip4(i: usize) -> String {
    format!("10.96.0.{i}")
}

pub(crate) fn vip6(i: usize) -> String {
    format!("fd00:96::{i:x}")
}

pub(crate) struct Network(trellis_netns::Network);

impl Network {
    /// The switch and hosts 1..=`hosts`, each with both families.
    pub(crate) fn create(hosts: usize) -> anyhow::Result<Network> {
        anyhow::ensure!(hosts <= 250, "--netns: at most 250 hosts, not {hosts}");
        let prefix = format!("tu{}", std::process::id() % 100_000);
        let mut net = trellis_netns::Network::create(&prefix).context("--netns")?;
        for i in 1..=hosts {
            net.add_host(i, trellis_netns::Stack::Dual)
                .context("--netns")?;
        }
        Ok(Network(net))
    }

    pub(crate) fn ns(&self, i: usize) -> String {
        self.0.ns(i)
    }

    pub(crate) fn command(
        &self,
        i: usize,
        program: impl AsRef<std::ffi::OsStr>,
    ) -> std::process::Command {
        self.0.command(i, program)
    }

    pub(crate) fn hosts_file(&self, i: usize, text: &str) -> anyhow::Result<()> {
        self.0
            .hosts_file(i, text)
            .with_context(|| format!("the hosts file of {}", self.ns(i)))
    }

    /// The built-in client's requests then leave from host `i` and are captured there.
    pub(crate) fn enter(&self, i: usize) -> anyhow::Result<()> {
        self.0.enter(i).context("--netns")
    }
}
