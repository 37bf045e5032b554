//! A cgroup of the mesh's own under the cgroup v2 hierarchy: made for a run, holding
//! the processes that join it, and removed afterwards.

use std::path::{Path, PathBuf};

use crate::BypassError;

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup` or, in hybrid setups,
/// `/sys/fs/cgroup/unified`).
pub fn cgroup2_mount() -> Option<PathBuf> {
    crate::preflight::mounts()
        .into_iter()
        .find(|m| m.fstype == "cgroup2")
        .map(|m| m.point)
}

/// A child cgroup that is removed on drop: its processes move back to the parent
/// first, so the directory can go.
pub struct ChildCgroup {
    path: PathBuf,
}

impl ChildCgroup {
    /// Creates `<cgroup v2 mount>/<name>`.
    pub fn create(name: &str) -> Result<ChildCgroup, BypassError> {
        let root = cgroup2_mount().ok_or_else(|| BypassError::Cgroup {
            path: PathBuf::from("/sys/fs/cgroup"),
            reason: "no cgroup v2 hierarchy is mounted".into(),
        })?;
        let path = root.join(name);
        std::fs::create_dir(&path).map_err(|e| BypassError::Cgroup {
            path: path.clone(),
            reason: format!("cannot create it ({e})"),
        })?;
        Ok(ChildCgroup { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the calling process (and so everything it starts from now on) in.
    pub fn join(&self) -> Result<(), BypassError> {
        std::fs::write(self.path.join("cgroup.procs"), "0").map_err(|e| BypassError::Cgroup {
            path: self.path.clone(),
            reason: format!("cannot move this process in ({e})"),
        })
    }
}

impl Drop for ChildCgroup {
    fn drop(&mut self) {
        let parent = self.path.parent().map(|p| p.join("cgroup.procs"));
        if let (Some(parent), Ok(pids)) = (
            parent,
            std::fs::read_to_string(self.path.join("cgroup.procs")),
        ) {
            for pid in pids.lines() {
                let _ = std::fs::write(&parent, pid);
            }
        }
        for _ in 0..50 {
            if std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
