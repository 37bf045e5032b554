//! What must hold before BPF programs can be loaded and attached, each failure with an
//! error that says what is wrong and what to do.

use std::path::{Path, PathBuf};

/// The oldest kernel the bypass supports: cgroup BPF links (5.7), sk_msg's `size`
/// field and IPv6 tuples in sk_msg, and a long-term release to test against.
pub const MIN_KERNEL: (u32, u32) = (5, 10);

#[derive(Debug, thiserror::Error)]
pub enum BypassError {
    #[error(
        "the bypass needs root (CAP_BPF and CAP_NET_ADMIN, or CAP_SYS_ADMIN); \
         this process has effective capabilities {0:#x}"
    )]
    NotPrivileged(u64),
    #[error("kernel {found} is too old: the bypass needs Linux {}.{} or newer", MIN_KERNEL.0, MIN_KERNEL.1)]
    KernelTooOld { found: String },
    #[error("cgroup {path}: {reason}")]
    Cgroup { path: PathBuf, reason: String },
    #[error("BPF filesystem: {0}")]
    BpfFs(String),
    #[error("already enabled on cgroup {cgroup} (pinned under {pin_dir}); run `trellis bypass disable` first")]
    AlreadyEnabled { cgroup: String, pin_dir: PathBuf },
    #[error("not enabled: nothing is pinned under {0}")]
    NotEnabled(PathBuf),
    #[error("BPF is unavailable or refused the bypass: {what}: {detail}")]
    Bpf { what: String, detail: String },
}

impl BypassError {
    pub(crate) fn bpf(what: impl Into<String>, err: impl std::fmt::Display) -> Self {
        // aya's errors chain their causes; the kernel's errno is the useful part.
        BypassError::Bpf {
            what: what.into(),
            detail: err.to_string(),
        }
    }
}

/// The caller may load and attach BPF programs.
pub(crate) fn check_privileges() -> Result<(), BypassError> {
    const CAP_NET_ADMIN: u64 = 1 << 12;
    const CAP_SYS_ADMIN: u64 = 1 << 21;
    const CAP_BPF: u64 = 1 << 39;
    let caps = effective_capabilities();
    let bpf = caps & CAP_BPF != 0 && caps & CAP_NET_ADMIN != 0;
    if bpf || caps & CAP_SYS_ADMIN != 0 {
        Ok(())
    } else {
        Err(BypassError::NotPrivileged(caps))
    }
}

fn effective_capabilities() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

pub(crate) fn check_kernel() -> Result<(), BypassError> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    match parse_release(&release) {
        Some(v) if v >= MIN_KERNEL => Ok(()),
        _ => Err(BypassError::KernelTooOld { found: release }),
    }
}

fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

pub(crate) struct Mount {
    pub point: PathBuf,
    pub fstype: String,
}

pub(crate) fn mounts() -> Vec<Mount> {
    // mountinfo: id parent major:minor root mount-point options... - fstype source super
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let point = fields.get(4)?;
            let dash = fields.iter().position(|f| *f == "-")?;
            Some(Mount {
                point: PathBuf::from(unescape_mount(point)),
                fstype: fields.get(dash + 1)?.to_string(),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mount(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// The innermost mount containing `path`.
fn mount_of(path: &Path) -> Option<Mount> {
    mounts()
        .into_iter()
        .filter(|m| path.starts_with(&m.point))
        .max_by_key(|m| m.point.components().count())
}

/// `path` is a non-root directory of a cgroup v2 hierarchy; returns it canonical.
pub(crate) fn check_cgroup(path: &Path) -> Result<PathBuf, BypassError> {
    let err = |reason: String| BypassError::Cgroup {
        path: path.to_path_buf(),
        reason,
    };
    let canonical = path
        .canonicalize()
        .map_err(|e| err(format!("cannot open it ({e})")))?;
    let mount = mount_of(&canonical).ok_or_else(|| err("not on any mount".into()))?;
    if mount.fstype != "cgroup2" {
        let v2: Vec<String> = mounts()
            .into_iter()
            .filter(|m| m.fstype == "cgroup2")
            .map(|m| m.point.display().to_string())
            .collect();
        let hint = if v2.is_empty() {
            "no cgroup v2 hierarchy is mounted (mount -t cgroup2 none /sys/fs/cgroup/unified)"
                .into()
        } else {
            format!("cgroup v2 is mounted at {}", v2.join(", "))
        };
        return Err(err(format!(
            "is on a {} filesystem, not cgroup v2; {hint}",
            mount.fstype
        )));
    }
    if canonical == mount.point {
        return Err(err(
            "is the root of the cgroup v2 hierarchy: every socket on the host would be \
             touched; give the mesh its own cgroup (trellis up --bypass creates one)"
                .into(),
        ));
    }
    if !canonical.join("cgroup.procs").exists() {
        return Err(err("is not a cgroup directory (no cgroup.procs)".into()));
    }
    Ok(canonical)
}

/// `dir`'s parent is on a BPF filesystem; mounts bpffs at /sys/fs/bpf when that is
/// where it belongs and nothing is mounted there yet (as Cilium and Istio CNI do).
pub(crate) fn ensure_bpffs(dir: &Path) -> Result<(), BypassError> {
    let parent = dir
        .parent()
        .ok_or_else(|| BypassError::BpfFs(format!("{} has no parent directory", dir.display())))?;
    if mount_of(parent).is_some_and(|m| m.fstype == "bpf") {
        return Ok(());
    }
    let default_root = Path::new("/sys/fs/bpf");
    if parent.starts_with(default_root) {
        let status = std::process::Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(default_root)
            .status()
            .map_err(|e| BypassError::BpfFs(format!("cannot run mount: {e}")))?;
        if status.success() && mount_of(parent).is_some_and(|m| m.fstype == "bpf") {
            return Ok(());
        }
    }
    Err(BypassError::BpfFs(format!(
        "{} is not on a BPF filesystem (mount -t bpf bpf /sys/fs/bpf)",
        parent.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_releases_parse() {
        assert_eq!(parse_release("6.18.44-fc-v657"), Some((6, 18)));
        assert_eq!(parse_release("5.10.0-28-amd64"), Some((5, 10)));
        assert_eq!(parse_release("4.19"), Some((4, 19)));
        assert_eq!(parse_release("garbage"), None);
        assert!(parse_release("5.4.0").unwrap() < MIN_KERNEL);
    }

    #[test]
    fn a_plain_directory_is_not_a_cgroup() {
        let dir = tempfile::tempdir().unwrap();
        let e = check_cgroup(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not cgroup v2"), "{e}");
        let e = check_cgroup(Path::new("/no/such/cgroup"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/no/such/cgroup") && e.contains("cannot open"),
            "{e}"
        );
    }
}
