//! `trellis up --netns`: each workload on a host of its own, made of a network
//! namespace joined to a bridge (in a switch namespace) by a veth pair, with an IPv4 and
//! an IPv6 address; its traffic captured by `trellis init`. Nothing is added to the
//! machine's own network namespace. Dropping the network deletes the namespaces and
//! their `/etc/netns` files.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::Command;

use anyhow::Context as _;

pub(crate) struct Network {
    prefix: String,
    namespaces: Vec<String>,
}

/// Host `i`'s addresses.
pub(crate) fn v4(i: usize) -> String {
    format!("10.244.0.{i}")
}

pub(crate) fn v6(i: usize) -> String {
    format!("fd00:244::{i:x}")
}

/// Service `i`'s virtual IPs (ServiceEntry `addresses`).
pub(crate) fn vip4(i: usize) -> String {
    format!("10.96.0.{i}")
}

pub(crate) fn vip6(i: usize) -> String {
    format!("fd00:96::{i:x}")
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (Debian's iproute2)")?;
    if !out.status.success() {
        anyhow::bail!(
            "ip {}: {} (trellis up --netns needs root)",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Network {
    /// The switch and hosts 1..=`hosts`.
    pub(crate) fn create(hosts: usize) -> anyhow::Result<Network> {
        anyhow::ensure!(hosts <= 250, "--netns: at most 250 hosts, not {hosts}");
        let mut net = Network {
            prefix: format!("tu{}", std::process::id() % 100_000),
            namespaces: Vec::new(),
        };
        let switch = format!("{}sw", net.prefix);
        ip(&["netns", "add", &switch])?;
        net.namespaces.push(switch.clone());
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &switch, "link", "set", "br0", "up"])?;
        for i in 1..=hosts {
            let ns = net.ns(i);
            ip(&["netns", "add", &ns])?;
            net.namespaces.push(ns.clone());
            let outer = format!("{ns}o");
            ip(&[
                "link", "add", &outer, "netns", &switch, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ])?;
            ip(&["-n", &switch, "link", "set", &outer, "master", "br0"])?;
            ip(&["-n", &switch, "link", "set", &outer, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", v4(i)),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "route", "add", "default", "dev", "eth0"])?;
            let a6 = format!("{}/64", v6(i));
            ip(&["-n", &ns, "-6", "addr", "add", &a6, "dev", "eth0", "nodad"])?;
            ip(&["-n", &ns, "-6", "route", "add", "default", "dev", "eth0"])?;
        }
        Ok(net)
    }

    /// Host `i`'s namespace name.
    pub(crate) fn ns(&self, i: usize) -> String {
        format!("{}h{i}", self.prefix)
    }

    /// `program` to be run in host `i` (`ip netns exec` also mounts its hosts file).
    pub(crate) fn command(&self, i: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(i)]).arg(program);
        c
    }

    /// The names host `i` resolves (its `/etc/hosts` under `ip netns exec`).
    pub(crate) fn hosts_file(&self, i: usize, text: &str) -> anyhow::Result<()> {
        let dir = PathBuf::from("/etc/netns").join(self.ns(i));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("hosts"), text)?;
        Ok(())
    }

    /// Moves this thread, and the threads it starts from now on, into host `i`: the
    /// built-in client's requests then leave from that host and are captured there.
    pub(crate) fn enter(&self, i: usize) -> anyhow::Result<()> {
        let path = format!("/run/netns/{}", self.ns(i));
        let f = std::fs::File::open(&path).with_context(|| path.clone())?;
        rustix::thread::move_into_link_name_space(
            f.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .with_context(|| format!("setns {path}"))
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
            let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(ns));
        }
    }
}
