//! Hosts made of network namespaces: a switch namespace holding a bridge, and per host a
//! namespace joined to it by a veth pair, with an IPv4 and/or an IPv6 address of its own
//! and a default route onto the bridge. Names resolve through `/etc/netns/<ns>/hosts`
//! (`ip netns exec` mounts it over `/etc/hosts`). Dropping the network (also on panic)
//! kills every process started in it and deletes the namespaces and files. Traffic
//! never leaves these namespaces.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_trellis");

/// Why these tests cannot run here, or None when they can.
pub fn missing_capability() -> Option<String> {
    let caps = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0);
    // CAP_NET_ADMIN and CAP_SYS_ADMIN (namespaces, mounts).
    if caps & (1 << 12) == 0 || caps & (1 << 21) == 0 {
        return Some("not root (CAP_NET_ADMIN / CAP_SYS_ADMIN missing)".into());
    }
    for tool in ["ip", "iptables-save", "ip6tables-save", "setpriv", "curl"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("{tool} not installed"));
        }
    }
    None
}

/// Skips the calling test with a printed reason when namespaces or iptables are not
/// available; with CI=true that is a failure instead.
macro_rules! require_netns {
    () => {
        if let Some(reason) = $crate::hosts::missing_capability() {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true and the capture tests cannot run: {reason}");
            }
            eprintln!("SKIPPED: {reason}; the capture tests need root, iproute2 and iptables");
            return;
        }
    };
}
pub(crate) use require_netns;

static NEXT: AtomicU32 = AtomicU32::new(0);

pub use trellis_netns::Stack;

/// The hosts of one test and the processes started in them.
pub struct Network {
    net: trellis_netns::Network,
    children: Arc<Mutex<Vec<Child>>>,
    pub dir: tempfile::TempDir,
}

#[derive(Clone)]
pub struct Host {
    pub ns: String,
    pub v4: Option<String>,
    pub v6: Option<String>,
    children: Arc<Mutex<Vec<Child>>>,
    logs: PathBuf,
}

impl Network {
    pub fn new() -> Network {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // Interface names (the namespace and one letter) must stay within 15 bytes.
        let prefix = format!("t{}x{n:x}", std::process::id() % 100_000);
        Network {
            net: trellis_netns::Network::create(&prefix).expect("the switch namespace"),
            children: Arc::default(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Host number `i` (1..=250): 10.244.0.<i>/24 and fd00:244::<i>/64 as `stack` says.
    pub fn host(&mut self, i: u8, stack: Stack) -> Host {
        let h = self
            .net
            .add_host(usize::from(i), stack)
            .expect("a host namespace");
        let logs = self.dir.path().join(&h.ns);
        std::fs::create_dir_all(&logs).unwrap();
        Host {
            ns: h.ns,
            v4: h.v4,
            v6: h.v6,
            children: self.children.clone(),
            logs,
        }
    }
}

impl Drop for Network {
    /// The processes first; the namespaces go with `net`.
    fn drop(&mut self) {
        for c in self.children.lock().unwrap().iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A process started in a host; killed with the network, or earlier with `kill`.
pub struct Started {
    pub log: PathBuf,
}

impl Host {
    /// Its address of the family of `v6`.
    pub fn addr(&self, v6: bool) -> &str {
        if v6 {
            self.v6.as_deref().expect("host has no IPv6 address")
        } else {
            self.v4.as_deref().expect("host has no IPv4 address")
        }
    }

    /// Names this host resolves (its /etc/hosts inside the namespace).
    pub fn set_hosts(&self, entries: &[(&str, &str)]) {
        let mut text = String::from("127.0.0.1 localhost\n::1 localhost\n");
        for (ip, name) in entries {
            text.push_str(&format!("{ip} {name}\n"));
        }
        trellis_netns::hosts_file(&self.ns, &text).unwrap();
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, program]).args(args);
        c
    }

    /// Runs a command to completion in the host.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        self.command(program, args).output().unwrap()
    }

    /// `trellis <args>` to completion in the host.
    pub fn trellis(&self, args: &[&str]) -> Output {
        self.run(BIN, args)
    }

    /// Starts `program` in the background (stderr and stdout to `<name>.log`).
    pub fn spawn(&self, name: &str, program: &str, args: &[&str]) -> Started {
        let log = self.logs.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = self
            .command(program, args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        self.children.lock().unwrap().push(child);
        Started { log }
    }

    /// `trellis <args>` in the background with the sidecar's group (1337), whose
    /// connections the capture rules leave alone.
    pub fn spawn_sidecar(&self, name: &str, args: &[&str]) -> Started {
        let mut full = vec!["--regid", "1337", "--clear-groups", BIN];
        full.extend_from_slice(args);
        self.spawn(name, "setpriv", &full)
    }

    /// curl in the host: (exit code, status or 0, body).
    pub fn curl(&self, url: &str, extra: &[&str]) -> (i32, u16, String) {
        let mut args = vec![
            "-sS",
            "--max-time",
            "5",
            "-o",
            "/dev/stdout",
            "-w",
            "\n%{http_code}",
        ];
        args.extend_from_slice(extra);
        args.push(url);
        let out = self.run("curl", &args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (
            out.status.code().unwrap_or(-1),
            code.trim().parse().unwrap_or(0),
            body.to_string() + &String::from_utf8_lossy(&out.stderr),
        )
    }
}

impl Host {
    /// curl in the host, timed by curl itself: (status or 0, time_total in seconds).
    pub fn curl_timed(&self, url: &str) -> (u16, f64) {
        let out = self.run(
            "curl",
            &[
                "-s",
                "--max-time",
                "5",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{time_total}",
                url,
            ],
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (code, time) = text.split_once(' ').unwrap_or(("0", "0"));
        (
            code.parse().unwrap_or(0),
            time.trim().parse().unwrap_or(0.0),
        )
    }
}

impl Started {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for `file` (a ready file) to appear; panics with the log after `timeout`.
    pub fn wait_file(&self, file: &Path, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(t) = std::fs::read_to_string(file) {
                if let Ok(v) = serde_json::from_str(&t) {
                    return v;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{} not written in time:\n{}",
                file.display(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Host {
    /// `trellis control` in this host reading `config`, its CA on `<v4>:15012`; returns
    /// that address and the root certificate's file (written in `dir`).
    pub fn start_control(
        &self,
        config: &Path,
        state: &Path,
        dir: &Path,
    ) -> (String, PathBuf, Started) {
        self.start_control_on(&format!("{}:15012", self.addr(false)), config, state, dir)
    }

    pub fn start_control_on(
        &self,
        listen: &str,
        config: &Path,
        state: &Path,
        dir: &Path,
    ) -> (String, PathBuf, Started) {
        let ready = dir.join("control.json");
        let control = self.spawn(
            "control",
            BIN,
            &[
                "control",
                "--config-dir",
                config.to_str().unwrap(),
                "--listen",
                listen,
                "--state-dir",
                state.to_str().unwrap(),
                "--ready-file",
                ready.to_str().unwrap(),
                "--poll-interval",
                "50ms",
            ],
        );
        let doc = control.wait_file(&ready, Duration::from_secs(30));
        let root = dir.join("root.pem");
        std::fs::write(&root, doc["root_pem"].as_str().unwrap()).unwrap();
        (listen.to_string(), root, control)
    }
}

/// A bootstrap token for `identity` from the CA in `state`, written to `file`.
pub fn token_file(state: &Path, identity: &str, file: &Path) {
    let token = Command::new(BIN)
        .args(["ca", "--state-dir", state.to_str().unwrap(), "token"])
        .args(["--identity", identity, "--ttl", "1h"])
        .output()
        .unwrap();
    assert!(
        token.status.success(),
        "{}",
        String::from_utf8_lossy(&token.stderr)
    );
    std::fs::write(file, token.stdout).unwrap();
}

/// Polls `f` until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}
