//! SoftHSM2 tokens in a directory of their own, for tests and benchmarks: the module
//! reads its configuration (`SOFTHSM2_CONF`, set here for this process and every process
//! it starts) once per process, so one directory serves a whole test binary, and each
//! test initializes tokens of its own in it. Nothing outside that directory is touched.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where Debian's softhsm2 installs the module.
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// The user PIN of every token made here (in `pin_file`); the SO PIN is 0000.
pub const PIN: &str = "1234";

pub struct TestTokens {
    dir: PathBuf,
}

impl TestTokens {
    /// A token directory under `dir` and the configuration naming it, made the
    /// process's SoftHSM2 configuration; Err says what is missing (the module or
    /// `softhsm2-util`).
    pub fn new(dir: &Path) -> Result<TestTokens, String> {
        let util = Command::new("softhsm2-util").arg("--version").output();
        if !Path::new(MODULE).exists() || util.is_err() {
            return Err("SoftHSM2 (Debian softhsm2) is not installed".into());
        }
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).map_err(|e| format!("{}: {e}", tokens.display()))?;
        let conf = dir.join("softhsm2.conf");
        let text = format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        );
        std::fs::write(&conf, text).map_err(|e| format!("{}: {e}", conf.display()))?;
        std::fs::write(dir.join("pin"), format!("{PIN}\n")).map_err(|e| e.to_string())?;
        std::env::set_var("SOFTHSM2_CONF", &conf);
        Ok(TestTokens {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file holding the user PIN.
    pub fn pin_file(&self) -> PathBuf {
        self.dir.join("pin")
    }

    /// Initializes a fresh token labelled `label` (user PIN [`PIN`]) and returns its URI,
    /// with the module and the PIN file in its query.
    pub fn init(&self, label: &str) -> Result<String, String> {
        // `--free` takes the first free slot: two at once could both take the same one.
        static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let out = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", label])
            .args(["--so-pin", "0000", "--pin", PIN])
            .output()
            .map_err(|e| format!("softhsm2-util: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(self.uri(label, None))
    }

    /// The URI of token `label`, or of `object` in it.
    pub fn uri(&self, label: &str, object: Option<&str>) -> String {
        let object = object.map(|o| format!(";object={o}")).unwrap_or_default();
        format!(
            "pkcs11:token={label}{object}?module-path={MODULE}&pin-source=file:{}",
            self.pin_file().display()
        )
    }
}
