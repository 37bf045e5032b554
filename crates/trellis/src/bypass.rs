//! `trellis bypass`: enable, inspect and remove the eBPF same-host bypass.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use trellis_bypass::{Status, DEFAULT_PIN_DIR};

#[derive(Args)]
pub struct BypassArgs {
    #[command(subcommand)]
    command: BypassCommand,
}

#[derive(Subcommand)]
enum BypassCommand {
    /// Load the sockops + sk_msg programs and attach them to a cgroup v2 (needs root).
    Enable {
        /// The mesh's cgroup, e.g. /sys/fs/cgroup/unified/mesh. Only sockets of its
        /// processes are touched; the root cgroup is refused.
        #[arg(long)]
        cgroup: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// Detach the programs and remove everything pinned (needs root).
    Disable {
        #[command(flatten)]
        common: Common,
    },
    /// Where the programs are attached, the sockets tracked and the counters.
    Status {
        /// Also list the tracked sockets (local and remote address of each).
        #[arg(long)]
        sockets: bool,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Args)]
struct Common {
    /// Directory on the BPF filesystem holding the pinned programs and maps.
    #[arg(long, default_value = DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: BypassArgs) -> anyhow::Result<()> {
    match args.command {
        BypassCommand::Enable { cgroup, common } => {
            let status = trellis_bypass::enable(&cgroup, &common.pin_dir)?;
            print(&status, common.json, "enabled")
        }
        BypassCommand::Disable { common } => {
            let status = trellis_bypass::disable(&common.pin_dir)?;
            print(&status, common.json, "disabled")
        }
        BypassCommand::Status { sockets, common } => {
            match trellis_bypass::status(&common.pin_dir) {
                Ok(status) => {
                    print(&status, common.json, "enabled")?;
                    if sockets {
                        let list = trellis_bypass::tracked_sockets(&common.pin_dir)?;
                        if common.json {
                            println!("{}", serde_json::to_string(&list)?);
                        } else {
                            for s in list {
                                println!("  {} -> {}", s.local, s.remote);
                            }
                        }
                    }
                    Ok(())
                }
                Err(trellis_bypass::BypassError::NotEnabled(dir)) => {
                    if common.json {
                        let out = serde_json::json!({ "enabled": false, "pin_dir": dir });
                        println!("{out}");
                    } else {
                        println!(
                            "trellis bypass: not enabled (nothing pinned under {})",
                            dir.display()
                        );
                    }
                    Ok(())
                }
                Err(e) => Err(e.into()),
            }
        }
    }
}

fn print(status: &Status, json: bool, state: &str) -> anyhow::Result<()> {
    if json {
        let mut value = serde_json::to_value(status)?;
        value["enabled"] = (state == "enabled").into();
        println!("{value}");
        return Ok(());
    }
    let c = &status.counters;
    println!("trellis bypass: {state} on {}", status.cgroup);
    println!("  pinned under     {}", status.pin_dir.display());
    println!(
        "  sockops          {}",
        if status.attached {
            "attached"
        } else {
            "not attached"
        }
    );
    println!(
        "  sockets tracked  {} (added {}, connections closed {}, not added {})",
        status.sockets_tracked, c.sockets_added, c.sockets_closed, c.sockets_add_failed
    );
    println!(
        "  redirected       {} messages, {}",
        c.msgs_redirected,
        human_bytes(c.bytes_redirected)
    );
    println!(
        "  normal path      {} messages, {}",
        c.msgs_passed,
        human_bytes(c.bytes_passed)
    );
    Ok(())
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
