//! Test certificates made with the `openssl` command line: an implementation
//! independent of the BoringSSL code under test.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Pki {
    dir: tempfile::TempDir,
    pub root: PathBuf,
    root_key: PathBuf,
}

/// A leaf certificate and its key, as files.
#[derive(Clone)]
pub struct Leaf {
    pub cert: String,
    pub key: String,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (Debian package openssl) must be installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    /// A self-signed root CA named `name`.
    pub fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        openssl(
            dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-keyout",
                "root.key",
                "-out",
                "root.pem",
                "-subj",
                &format!("/O=trellis-test/CN={name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        Pki {
            root: dir.path().join("root.pem"),
            root_key: dir.path().join("root.key"),
            dir,
        }
    }

    pub fn root_path(&self) -> String {
        self.root.display().to_string()
    }

    /// A leaf signed by this root with the given SANs (`URI:spiffe://...`,
    /// `DNS:localhost`). `ec` makes an ECDSA P-256 key instead of RSA-2048.
    pub fn leaf(&self, name: &str, sans: &[&str], ec: bool) -> Leaf {
        let d = self.dir.path();
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let cert = format!("{name}.pem");
        let ext = format!("{name}.ext");
        let newkey = if ec { "ec" } else { "rsa:2048" };
        let mut args = vec!["req", "-new", "-nodes", "-keyout", &key, "-out", &csr];
        let subj = format!("/O=trellis-test/CN={name}");
        args.extend(["-subj", &subj, "-newkey", newkey]);
        if ec {
            args.extend(["-pkeyopt", "ec_paramgen_curve:P-256"]);
        }
        openssl(d, &args);
        std::fs::write(
            d.join(&ext),
            format!(
                "subjectAltName={}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n",
                sans.join(",")
            ),
        )
        .unwrap();
        let root = self.root.display().to_string();
        let root_key = self.root_key.display().to_string();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &root,
                "-CAkey",
                &root_key,
                "-CAcreateserial",
                "-days",
                "1",
                "-out",
                &cert,
                "-extfile",
                &ext,
            ],
        );
        Leaf {
            cert: d.join(cert).display().to_string(),
            key: d.join(key).display().to_string(),
        }
    }
}

pub fn spiffe(sa: &str) -> String {
    format!("spiffe://cluster.local/ns/default/sa/{sa}")
}
