//! Where `trellis up` keeps the mesh's state: the CA's key, the sidecars' bootstrap
//! tokens, the registry and the logs. A directory that only its owner can enter,
//! made new for each run (a random name under the temporary directory, or the
//! `--work-dir` asked for, which must not exist yet), so that nothing another local
//! user planted there first (a CA key, a symlink) is ever adopted or followed. Every
//! file is created new, owner-only.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;

pub struct WorkDir {
    pub path: PathBuf,
    /// Removed on drop (the default directory; one the user named stays).
    remove: bool,
}

impl WorkDir {
    pub fn create(requested: Option<&Path>) -> anyhow::Result<WorkDir> {
        let (path, remove) = match requested {
            Some(p) => {
                if let Some(parent) = p.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)
                        .with_context(|| format!("--work-dir: {}", parent.display()))?;
                }
                DirBuilder::new().mode(0o700).create(p).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::AlreadyExists {
                        anyhow::anyhow!(
                            "--work-dir {}: already exists; trellis up makes a new directory \
                             for each run (it holds the mesh's CA key and bootstrap tokens)",
                            p.display()
                        )
                    } else {
                        anyhow::anyhow!("--work-dir {}: {e}", p.display())
                    }
                })?;
                (p.to_path_buf(), false)
            }
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("trellis-up-")
                    .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
                    .tempdir()
                    .context("creating the work directory")?;
                (dir.keep(), true)
            }
        };
        Ok(WorkDir { path, remove })
    }

    /// A new owner-only directory inside.
    pub fn dir(&self, rel: impl AsRef<Path>) -> anyhow::Result<PathBuf> {
        let p = self.path.join(rel);
        DirBuilder::new()
            .mode(0o700)
            .create(&p)
            .with_context(|| p.display().to_string())?;
        Ok(p)
    }

    /// A new owner-only file inside: never an existing one, and never through a
    /// symlink (`O_CREAT | O_EXCL` refuses a link even to nowhere).
    pub fn file(&self, rel: impl AsRef<Path>) -> anyhow::Result<File> {
        let p = self.path.join(rel);
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&p)
            .with_context(|| p.display().to_string())
    }

    pub fn write(&self, rel: impl AsRef<Path>, bytes: impl AsRef<[u8]>) -> anyhow::Result<PathBuf> {
        let rel = rel.as_ref();
        let mut f = self.file(rel)?;
        f.write_all(bytes.as_ref())
            .with_context(|| self.path.join(rel).display().to_string())?;
        Ok(self.path.join(rel))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.remove {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
