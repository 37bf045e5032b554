//! The real kubectl against a test API server, as tests drive it.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::FakeApiServer;

pub struct Kubectl {
    config: PathBuf,
    /// kubectl's HOME (its discovery cache), beside the kubeconfig.
    home: PathBuf,
}

/// What a kubectl run printed.
pub struct Output {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Kubectl {
    /// kubectl with a kubeconfig for `server` written into `dir`; None, with the reason
    /// printed, where kubectl is not installed (a failure under `CI=true`).
    pub fn new(server: &FakeApiServer, dir: &Path) -> Option<Kubectl> {
        let installed = Command::new("kubectl")
            .args(["version", "--client"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !installed {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true: kubectl is needed (Debian kubernetes-client)"
            );
            eprintln!("skipped: kubectl is not installed");
            return None;
        }
        let config = dir.join("kubeconfig");
        std::fs::write(&config, server.kubeconfig()).ok()?;
        Some(Kubectl {
            config,
            home: dir.to_path_buf(),
        })
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.config
    }

    /// Runs `kubectl args`, with `stdin` fed to it.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.config)
            .args(args)
            .env("HOME", &self.home)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl starts");
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes())
                .expect("kubectl reads its input");
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().expect("kubectl ends");
        Output {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs `kubectl args`, which must succeed: what it printed.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args, None);
        assert!(out.success, "kubectl {args:?} failed: {}", out.stderr);
        out.stdout
    }

    /// `kubectl apply -f -` with `yaml`.
    pub fn apply(&self, yaml: &str) -> Output {
        self.run(&["apply", "-f", "-"], Some(yaml))
    }
}
