//! A bypass instance of the test's own: a child cgroup under the cgroup v2 mount, a pin
//! directory of its own on bpffs, and the processes the test starts inside the cgroup.
//! Dropping it (also on panic) kills those processes, disables the bypass, removes the
//! pins and the cgroup. Nothing is ever attached to the root cgroup.

use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_trellis");

/// Why eBPF tests cannot run here, or None when they can.
pub fn missing_capability() -> Option<String> {
    let caps = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0);
    if caps & (1 << 21) == 0 {
        return Some("not root (CAP_SYS_ADMIN missing)".into());
    }
    if cgroup2_mount().is_none() {
        return Some("no cgroup v2 hierarchy mounted".into());
    }
    if !Path::new("/sys/fs/bpf").is_dir() {
        return Some("no /sys/fs/bpf".into());
    }
    None
}

/// Skips the calling test with a printed reason when eBPF is unavailable.
macro_rules! require_bpf {
    () => {
        if let Some(reason) = $crate::host::missing_capability() {
            eprintln!("SKIPPED: {reason}; the bypass tests need root, BPF and cgroup v2");
            return;
        }
    };
}
pub(crate) use require_bpf;

pub use trellis_bypass::cgroup2_mount;

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct Mesh {
    pub cgroup: PathBuf,
    pub pin_dir: PathBuf,
    children: Vec<Child>,
    _dir: tempfile::TempDir,
    logs: PathBuf,
}

impl Mesh {
    /// A fresh cgroup and pin directory, bypass not yet enabled.
    pub fn new() -> Mesh {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("trellis-test-{}-{n}", std::process::id());
        let cgroup = cgroup2_mount().unwrap().join(&name);
        std::fs::create_dir(&cgroup).expect("create the test cgroup");
        let dir = tempfile::tempdir().unwrap();
        Mesh {
            cgroup,
            pin_dir: PathBuf::from("/sys/fs/bpf").join(name),
            children: Vec::new(),
            logs: dir.path().to_path_buf(),
            _dir: dir,
        }
    }

    pub fn enabled() -> Mesh {
        let mesh = Mesh::new();
        let out = mesh.cli(&["enable", "--cgroup", mesh.cgroup.to_str().unwrap()]);
        assert!(out.status.success(), "enable: {}", stderr(&out));
        mesh
    }

    /// `trellis bypass ARGS --pin-dir <ours>`.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("bypass")
            .args(args)
            .arg("--pin-dir")
            .arg(&self.pin_dir)
            .output()
            .unwrap()
    }

    pub fn status(&self) -> Value {
        let out = self.cli(&["status", "--json", "--sockets"]);
        assert!(out.status.success(), "status: {}", stderr(&out));
        let text = String::from_utf8(out.stdout).unwrap();
        let mut lines = text.lines();
        let mut status: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        if let Some(sockets) = lines.next() {
            status["sockets"] = serde_json::from_str(sockets).unwrap();
        }
        status
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.status()["counters"][name].as_u64().unwrap()
    }

    fn command(&self, inside: bool, args: &[&str]) -> Command {
        if inside {
            // The shell joins the cgroup, then becomes the probe: every socket the probe
            // opens belongs to the cgroup from birth.
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg("echo $$ > \"$0/cgroup.procs\" && exec \"$@\"")
                .arg(&self.cgroup)
                .arg(BIN)
                .args(args);
            c
        } else {
            let mut c = Command::new(BIN);
            c.args(args);
            c
        }
    }

    /// Starts an echo server (inside the cgroup or not) on IPv4 and IPv6 loopback and
    /// returns its addresses and the path of its stderr.
    pub fn echo_server(&mut self, inside: bool) -> (SocketAddr, SocketAddr, PathBuf) {
        let n = self.children.len();
        let ready = self.logs.join(format!("echo-{n}.json"));
        let log = self.logs.join(format!("echo-{n}.log"));
        let child = self
            .command(
                inside,
                &[
                    "net-probe",
                    "echo",
                    "--listen",
                    "127.0.0.1:0",
                    "--listen",
                    "[::1]:0",
                    "--ready-file",
                    ready.to_str().unwrap(),
                ],
            )
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        self.children.push(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready.exists() {
            assert!(Instant::now() < deadline, "echo server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        let addrs: Vec<String> = serde_json::from_slice(&std::fs::read(&ready).unwrap()).unwrap();
        (addrs[0].parse().unwrap(), addrs[1].parse().unwrap(), log)
    }

    /// Runs a probe to completion (60 s at most) and returns its JSON report.
    pub fn probe(&self, inside: bool, args: &[&str]) -> Value {
        let mut child = self
            .command(inside, &[&["net-probe"], args].concat())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("net-probe {args:?} did not finish in 60 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "net-probe {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Sends `bytes` on each of `conns` connections to an echo server and checks that
    /// every echo came back byte-exact.
    pub fn transfer(&self, inside: bool, to: SocketAddr, bytes: u64, conns: u32) {
        let (to, bytes_arg, conns_arg) = (to.to_string(), bytes.to_string(), conns.to_string());
        let args = [
            "transfer", "--to", &to, "--bytes", &bytes_arg, "--conns", &conns_arg,
        ];
        let report = self.probe(inside, &args);
        assert_eq!(report["ok"], conns, "{to} {bytes} B: {report}");
    }

    /// Starts a probe in the background, killed when the mesh drops.
    pub fn spawn_probe(&mut self, inside: bool, args: &[&str]) {
        let child = self
            .command(inside, &[&["net-probe"], args].concat())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.children.push(child);
    }

    pub fn stop_processes(&mut self) {
        for mut c in self.children.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.stop_processes();
        if self.pin_dir.exists() {
            let _ = self.cli(&["disable"]);
            let _ = std::fs::remove_dir_all(&self.pin_dir);
        }
        // Anything still in the cgroup goes back to the parent so the cgroup can go.
        let parent = self.cgroup.parent().unwrap().join("cgroup.procs");
        if let Ok(pids) = std::fs::read_to_string(self.cgroup.join("cgroup.procs")) {
            for pid in pids.lines() {
                let _ = std::fs::write(&parent, pid);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::remove_dir(&self.cgroup).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child that gets Ctrl-C (SIGINT) when dropped, so it can take down what it set up
/// (cgroups, pins) even when the test fails first.
pub struct Interrupt(pub Child);

impl Interrupt {
    /// SIGINT, then waits up to `timeout`; true when it exited by itself.
    pub fn interrupt(&mut self, timeout: Duration) -> bool {
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let exited = eventually(timeout, || self.0.try_wait().ok().flatten().is_some());
        if !exited {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
        exited
    }
}

impl Drop for Interrupt {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            self.interrupt(Duration::from_secs(15));
        }
    }
}
