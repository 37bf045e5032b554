//! Where `enable` pins the programs, maps and link under a pin directory; `status`,
//! `disable` and the socket listing find them there.

use std::path::{Path, PathBuf};

/// The files pinned under a pin directory. The names are the interface between
/// `enable`, `status` and `disable`, possibly run by different trellis versions.
pub(crate) struct Pins {
    pub sockops: PathBuf,
    pub sk_msg: PathBuf,
    pub sockops_link: PathBuf,
    pub socks: PathBuf,
    pub passed: PathBuf,
    pub counters: PathBuf,
    pub info: PathBuf,
}

pub(crate) fn pins(dir: &Path) -> Pins {
    Pins {
        sockops: dir.join("sockops"),
        sk_msg: dir.join("sk_msg"),
        sockops_link: dir.join("sockops_link"),
        socks: dir.join("socks"),
        passed: dir.join("passed"),
        counters: dir.join("counters"),
        info: dir.join("info"),
    }
}
