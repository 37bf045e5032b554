//! Loading, attaching and pinning the programs; reading them back; removing them.

use std::fs::File;
use std::path::{Path, PathBuf};

use aya::maps::{Array, Map, MapData, PerCpuArray, SockHash};
use aya::programs::links::FdLink;
use aya::programs::{CgroupAttachMode, SkMsg, SockOps};
use aya::{Ebpf, EbpfLoader};
use serde::Serialize;

use crate::pins::pins;
use crate::preflight::{self, BypassError};
use crate::sockets::SockKey;
use crate::{Counters, BPF_OBJECT};

/// `struct info` of `bpf/bypass.c`: the cgroup path, NUL-padded.
type Info = [u8; 4096];

/// What `status` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub pin_dir: PathBuf,
    pub cgroup: String,
    /// The sockops program is attached to the cgroup (its link is pinned).
    pub attached: bool,
    /// Sockets in the map right now.
    pub sockets_tracked: usize,
    pub counters: Counters,
}

/// Loads the programs, attaches sockops to `cgroup` and sk_msg to the socket map, and
/// pins all of it under `pin_dir`. On any failure nothing stays pinned or attached.
pub fn enable(cgroup: &Path, pin_dir: &Path) -> Result<Status, BypassError> {
    preflight::check_privileges()?;
    preflight::check_kernel()?;
    let cgroup = preflight::check_cgroup(cgroup)?;
    preflight::ensure_bpffs(pin_dir)?;
    if let Ok(existing) = read_info(&pins(pin_dir).info) {
        return Err(BypassError::AlreadyEnabled {
            cgroup: existing,
            pin_dir: pin_dir.to_path_buf(),
        });
    }
    std::fs::create_dir_all(pin_dir)
        .map_err(|e| BypassError::BpfFs(format!("cannot create {}: {e}", pin_dir.display())))?;

    let mut rollback = Rollback {
        dir: pin_dir.to_path_buf(),
        armed: true,
    };
    let mut bpf = EbpfLoader::new()
        .load(BPF_OBJECT)
        .map_err(|e| BypassError::bpf("loading the BPF object", error_chain(&e)))?;
    pin_and_attach(&mut bpf, &cgroup, pin_dir)?;
    rollback.armed = false;
    drop(bpf);
    status(pin_dir)
}

fn pin_and_attach(bpf: &mut Ebpf, cgroup: &Path, dir: &Path) -> Result<(), BypassError> {
    let p = pins(dir);
    let fail = |what: &str| {
        let what = what.to_string();
        move |e: &dyn std::fmt::Display| BypassError::bpf(what, e)
    };

    // Maps stay owned by `bpf` until the programs are loaded: the programs refer to
    // them by descriptor. The info map says which cgroup this instance serves.
    for (name, pin) in [
        ("trellis_info", &p.info),
        ("trellis_counters", &p.counters),
        ("trellis_socks", &p.socks),
        ("trellis_passed", &p.passed),
    ] {
        bpf.map(name)
            .ok_or_else(|| fail(name)(&"missing from the object"))?
            .pin(pin)
            .map_err(|e| fail(&format!("pinning {name}"))(&e))?;
    }
    let mut record = [0u8; 4096];
    let path = cgroup.display().to_string();
    let n = path.len().min(record.len() - 1);
    record[..n].copy_from_slice(&path.as_bytes()[..n]);
    let info = bpf.map_mut("trellis_info").expect("pinned above");
    Array::<_, Info>::try_from(info)
        .and_then(|mut info| info.set(0, record, 0))
        .map_err(|e| fail("writing trellis_info")(&e))?;
    let socks_fd =
        SockHash::<_, SockKey>::try_from(bpf.map("trellis_socks").expect("pinned above"))
            .map_err(|e| fail("trellis_socks")(&e))?
            .fd()
            .try_clone()
            .map_err(|e| fail("trellis_socks")(&e))?;

    // sk_msg before sockops: a socket recorded from the first moment gets the verdict.
    let msg: &mut SkMsg = bpf
        .program_mut("trellis_sk_msg")
        .ok_or_else(|| fail("trellis_sk_msg")(&"missing from the object"))?
        .try_into()
        .map_err(|e| fail("trellis_sk_msg")(&e))?;
    msg.load()
        .map_err(|e| fail("loading trellis_sk_msg")(&error_chain(&e)))?;
    msg.pin(&p.sk_msg)
        .map_err(|e| fail("pinning trellis_sk_msg")(&e))?;
    let id = msg
        .attach(&socks_fd)
        .map_err(|e| fail("attaching trellis_sk_msg to the socket map")(&error_chain(&e)))?;
    let link = msg
        .take_link(id)
        .map_err(|e| fail("trellis_sk_msg link")(&e))?;
    // sk_msg is attached to the map itself (BPF_PROG_ATTACH; no link object in this
    // aya) and stays attached while the map has users: its pin, and until this process
    // exits, the descriptor inside `link`. Dropping the wrapper would detach it.
    std::mem::forget(link);

    let ops: &mut SockOps = bpf
        .program_mut("trellis_sockops")
        .ok_or_else(|| fail("trellis_sockops")(&"missing from the object"))?
        .try_into()
        .map_err(|e| fail("trellis_sockops")(&e))?;
    ops.load()
        .map_err(|e| fail("loading trellis_sockops")(&error_chain(&e)))?;
    ops.pin(&p.sockops)
        .map_err(|e| fail("pinning trellis_sockops")(&e))?;
    let cgroup_dir = File::open(cgroup).map_err(|e| BypassError::Cgroup {
        path: cgroup.to_path_buf(),
        reason: format!("cannot open it ({e})"),
    })?;
    // A BPF link (Linux 5.7+) takes no flags and coexists with other programs on the
    // cgroup (a CNI's, say); "Single" is aya's name for no flags.
    let id = ops
        .attach(&cgroup_dir, CgroupAttachMode::Single)
        .map_err(|e| fail("attaching trellis_sockops to the cgroup")(&error_chain(&e)))?;
    let link: FdLink = ops
        .take_link(id)
        .map_err(|e| fail("trellis_sockops link")(&e))?
        .try_into()
        .map_err(|e| fail("trellis_sockops link")(&e))?;
    link.pin(&p.sockops_link)
        .map_err(|e| fail("pinning the trellis_sockops link")(&e))?;
    Ok(())
}

/// Removes the pins under `pin_dir`: the links go first (detaching sockops from the
/// cgroup and sk_msg from the map), then programs and maps, then the directory. The
/// kernel frees each object when its last pin and descriptor are gone.
pub fn disable(pin_dir: &Path) -> Result<Status, BypassError> {
    preflight::check_privileges()?;
    let before = status(pin_dir)?;
    remove_pins(pin_dir).map_err(|e| BypassError::BpfFs(format!("{}: {e}", pin_dir.display())))?;
    Ok(before)
}

fn remove_pins(dir: &Path) -> std::io::Result<()> {
    let p = pins(dir);
    for file in [
        &p.sockops_link,
        &p.sockops,
        &p.sk_msg,
        &p.socks,
        &p.passed,
        &p.counters,
        &p.info,
    ] {
        match std::fs::remove_file(file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Reads what is pinned under `pin_dir`.
pub fn status(pin_dir: &Path) -> Result<Status, BypassError> {
    let p = pins(pin_dir);
    let cgroup = read_info(&p.info).map_err(|_| BypassError::NotEnabled(pin_dir.to_path_buf()))?;
    let counters = read_counters(&p.counters)?;
    let sockets_tracked = crate::tracked_sockets(pin_dir)?.len();
    Ok(Status {
        pin_dir: pin_dir.to_path_buf(),
        cgroup,
        attached: p.sockops_link.exists(),
        sockets_tracked,
        counters,
    })
}

fn open_pinned(path: &Path) -> Result<Map, BypassError> {
    let data =
        MapData::from_pin(path).map_err(|e| BypassError::bpf(path.display().to_string(), e))?;
    Map::from_map_data(data).map_err(|e| BypassError::bpf(path.display().to_string(), e))
}

fn read_info(path: &Path) -> Result<String, BypassError> {
    let info: Array<MapData, Info> = Array::try_from(open_pinned(path)?)
        .map_err(|e| BypassError::bpf(path.display().to_string(), e))?;
    let record = info
        .get(&0, 0)
        .map_err(|e| BypassError::bpf(path.display().to_string(), e))?;
    let end = record.iter().position(|&b| b == 0).unwrap_or(record.len());
    Ok(String::from_utf8_lossy(&record[..end]).into_owned())
}

fn read_counters(path: &Path) -> Result<Counters, BypassError> {
    let map: PerCpuArray<MapData, u64> = PerCpuArray::try_from(open_pinned(path)?)
        .map_err(|e| BypassError::bpf(path.display().to_string(), e))?;
    let mut slots = [0u64; Counters::LEN as usize];
    for (i, slot) in slots.iter_mut().enumerate() {
        let per_cpu = map
            .get(&(i as u32), 0)
            .map_err(|e| BypassError::bpf(path.display().to_string(), e))?;
        *slot = per_cpu.iter().sum();
    }
    Ok(Counters::from_slots(&slots))
}

/// An error with its causes, the kernel's verifier log and errno included.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Removes whatever `enable` pinned unless it finished.
struct Rollback {
    dir: PathBuf,
    armed: bool,
}

impl Drop for Rollback {
    fn drop(&mut self) {
        if self.armed {
            let _ = remove_pins(&self.dir);
        }
    }
}
