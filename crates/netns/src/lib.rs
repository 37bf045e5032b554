//! Hosts made of network namespaces: a switch namespace holding a bridge, and per host a
//! namespace joined to it by a veth pair, with an IPv4 and/or an IPv6 address of its own
//! (`10.244.0.<n>`, `fd00:244::<n>`) and a default route onto the bridge. Names resolve
//! through `/etc/netns/<namespace>/hosts`, which `ip netns exec` mounts over
//! `/etc/hosts`. Nothing is added to the machine's own network namespace. Dropping the
//! network deletes its namespaces and their `/etc/netns` files.

use std::io;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::Command;

/// Which addresses a host gets.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Stack {
    V4,
    V6,
    Dual,
}

/// Host `i`'s IPv4 address.
pub fn v4(i: usize) -> String {
    format!("10.244.0.{i}")
}

/// Host `i`'s IPv6 address.
pub fn v6(i: usize) -> String {
    format!("fd00:244::{i:x}")
}

/// A host as made: its namespace and addresses.
#[derive(Clone, Debug)]
pub struct Host {
    pub ns: String,
    pub v4: Option<String>,
    pub v6: Option<String>,
}

pub struct Network {
    prefix: String,
    /// The switch first, then the hosts.
    namespaces: Vec<String>,
}

fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("running ip (Debian's iproute2): {e}")))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "ip {}: {} (network namespaces need root)",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

impl Network {
    /// The switch namespace and its bridge. `prefix` names the namespaces (kept short:
    /// a host's veth is named after its namespace, and interface names have 15 bytes).
    pub fn create(prefix: &str) -> io::Result<Network> {
        let mut net = Network {
            prefix: prefix.to_string(),
            namespaces: Vec::new(),
        };
        let switch = format!("{prefix}sw");
        ip(&["netns", "add", &switch])?;
        net.namespaces.push(switch.clone());
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &switch, "link", "set", "br0", "up"])?;
        Ok(net)
    }

    /// Host number `i` (1..=250) on the bridge, with the addresses `stack` says.
    pub fn add_host(&mut self, i: usize, stack: Stack) -> io::Result<Host> {
        if !(1..=250).contains(&i) {
            return Err(io::Error::other(format!("host number {i} is not 1-250")));
        }
        let switch = self.namespaces[0].clone();
        let ns = self.ns(i);
        ip(&["netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        let outer = format!("{ns}o");
        ip(&[
            "link", "add", &outer, "netns", &switch, "type", "veth", "peer", "name", "eth0",
            "netns", &ns,
        ])?;
        ip(&["-n", &switch, "link", "set", &outer, "master", "br0"])?;
        ip(&["-n", &switch, "link", "set", &outer, "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        let a4 = (stack != Stack::V6).then(|| v4(i));
        let a6 = (stack != Stack::V4).then(|| v6(i));
        if let Some(a) = &a4 {
            ip(&["-n", &ns, "addr", "add", &format!("{a}/24"), "dev", "eth0"])?;
            ip(&["-n", &ns, "route", "add", "default", "dev", "eth0"])?;
        }
        if let Some(a) = &a6 {
            // No duplicate address detection: the address is usable at once.
            let cidr = format!("{a}/64");
            ip(&[
                "-n", &ns, "-6", "addr", "add", &cidr, "dev", "eth0", "nodad",
            ])?;
            ip(&["-n", &ns, "-6", "route", "add", "default", "dev", "eth0"])?;
        }
        Ok(Host { ns, v4: a4, v6: a6 })
    }

    /// Host `i`'s namespace name.
    pub fn ns(&self, i: usize) -> String {
        format!("{}h{i}", self.prefix)
    }

    /// `program` to be run in host `i` (`ip netns exec` also mounts its hosts file).
    pub fn command(&self, i: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(i)]).arg(program);
        c
    }

    /// The names host `i` resolves (its `/etc/hosts` under `ip netns exec`).
    pub fn hosts_file(&self, i: usize, text: &str) -> io::Result<()> {
        hosts_file(&self.ns(i), text)
    }

    /// Moves this thread, and the threads it starts from now on, into host `i`.
    pub fn enter(&self, i: usize) -> io::Result<()> {
        let path = format!("/run/netns/{}", self.ns(i));
        let f = std::fs::File::open(&path)?;
        rustix::thread::move_into_link_name_space(
            f.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .map_err(|e| io::Error::other(format!("setns {path}: {e}")))
    }
}

/// The names namespace `ns` resolves: `/etc/netns/<ns>/hosts`, which `ip netns exec`
/// mounts over `/etc/hosts` (removed with the network).
pub fn hosts_file(ns: &str, text: &str) -> io::Result<()> {
    let dir = PathBuf::from("/etc/netns").join(ns);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("hosts"), text)
}

impl Drop for Network {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
            let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(ns));
        }
    }
}
