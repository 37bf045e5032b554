//! Running `iptables-save` / `iptables-restore` (and the ip6tables pair) in the current
//! network namespace: conflicts found before anything changes, each family installed
//! in one atomic restore, the first family taken back when the second fails.

use crate::rules::{render, CHAINS, JUMPS};
use crate::{Error, Family, Options};
use std::io::Write;
use std::process::{Command, Stdio};

/// Which iptables the rules go through: the host's default (`iptables`, Debian's
/// alternative, nf_tables since Debian 10) or one backend by name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    #[default]
    Default,
    Nft,
    Legacy,
}

impl Backend {
    fn command(self, family: Family, verb: &str) -> String {
        let base = match family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        };
        match self {
            Backend::Default => format!("{base}-{verb}"),
            Backend::Nft => format!("{base}-nft-{verb}"),
            Backend::Legacy => format!("{base}-legacy-{verb}"),
        }
    }
}

/// The nat tables of one backend and the families to capture.
#[derive(Clone, Debug)]
pub struct Tables {
    pub backend: Backend,
    pub families: Vec<Family>,
}

/// What `install` put in place, per family: the rule lines.
#[derive(Debug)]
pub struct Installed {
    pub families: Vec<(Family, usize)>,
}

fn run(command: &str, args: &[&str], input: Option<&str>) -> Result<String, Error> {
    let full = format!("{command} {}", args.join(" "));
    let mut child = Command::new(command)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Command {
            command: full.clone(),
            message: if e.kind() == std::io::ErrorKind::NotFound {
                "not found: install Debian's iptables package".into()
            } else {
                e.to_string()
            },
        })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| Error::Command {
                command: full.clone(),
                message: e.to_string(),
            })?;
    }
    let out = child.wait_with_output().map_err(|e| Error::Command {
        command: full.clone(),
        message: e.to_string(),
    })?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let message = if stderr.contains("Permission denied") || stderr.contains("must be root") {
        format!("needs root (CAP_NET_ADMIN) in the workload's network namespace: {stderr}")
    } else {
        stderr
    };
    Err(Error::Command {
        command: full,
        message,
    })
}

/// The nat table's rules as `iptables-save` prints them.
pub fn save(backend: Backend, family: Family) -> Result<String, Error> {
    run(&backend.command(family, "save"), &["-t", "nat"], None)
}

/// Rules in the nat table that already capture TCP: ours from an earlier run, Istio's,
/// or REDIRECT / DNAT / TPROXY rules in PREROUTING or OUTPUT.
fn conflicts(saved: &str) -> Vec<String> {
    saved
        .lines()
        .filter(|l| {
            let ours = l.starts_with(":TRELLIS_");
            let istio = l.starts_with(":ISTIO_");
            let builtin = l.starts_with("-A PREROUTING ") || l.starts_with("-A OUTPUT ");
            let captures = [
                "-j REDIRECT",
                "-j DNAT",
                "-j TPROXY",
                "-j ISTIO_",
                "-j TRELLIS_",
            ]
            .iter()
            .any(|t| l.contains(t));
            ours || istio || (builtin && captures)
        })
        .map(str::to_string)
        .collect()
}

/// Installs capture in every family of `tables`, or nothing: a conflict in any family
/// refuses before a rule is written, and a family whose restore fails takes back the
/// families installed before it.
pub fn install(o: &Options, tables: &Tables) -> Result<Installed, Error> {
    for &family in &tables.families {
        let found = conflicts(&save(tables.backend, family)?);
        if !found.is_empty() {
            return Err(Error::Conflict {
                family,
                rules: found,
            });
        }
    }
    let mut done = Vec::new();
    for &family in &tables.families {
        let rules = render(o, family);
        let restore = tables.backend.command(family, "restore");
        if let Err(e) = run(&restore, &["--noflush"], Some(&rules)) {
            for &(installed, _) in &done {
                let _ = remove(tables.backend, installed);
            }
            return Err(e);
        }
        done.push((
            family,
            rules.lines().filter(|l| l.starts_with("-A")).count(),
        ));
    }
    Ok(Installed { families: done })
}

/// Removes what `install` put in place, from every family of `tables` (nothing else:
/// other rules in those chains' tables stay). Returns the families that had it.
pub fn cleanup(tables: &Tables) -> Result<Vec<Family>, Error> {
    let mut removed = Vec::new();
    for &family in &tables.families {
        if remove(tables.backend, family)? {
            removed.push(family);
        }
    }
    Ok(removed)
}

fn remove(backend: Backend, family: Family) -> Result<bool, Error> {
    let saved = save(backend, family)?;
    let mut script = vec!["*nat".to_string()];
    for (_, rule) in JUMPS {
        // Every copy, should an earlier run have added it twice.
        for _ in saved.lines().filter(|l| *l == rule) {
            script.push(rule.replacen("-A", "-D", 1));
        }
    }
    let present: Vec<&str> = CHAINS
        .iter()
        .copied()
        .filter(|c| saved.lines().any(|l| l.starts_with(&format!(":{c} "))))
        .collect();
    for c in &present {
        script.push(format!("-F {c}"));
    }
    for c in &present {
        script.push(format!("-X {c}"));
    }
    if script.len() == 1 {
        return Ok(false);
    }
    script.push("COMMIT".into());
    let restore = backend.command(family, "restore");
    run(&restore, &["--noflush"], Some(&(script.join("\n") + "\n")))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_are_capture_rules_not_others() {
        let saved = "*nat\n:PREROUTING ACCEPT [0:0]\n:ISTIO_INBOUND - [0:0]\n-A PREROUTING -p tcp -j ISTIO_INBOUND\n-A OUTPUT -d 10.0.0.1/32 -j ACCEPT\n-A POSTROUTING -j MASQUERADE\nCOMMIT\n";
        assert_eq!(
            conflicts(saved),
            vec![
                ":ISTIO_INBOUND - [0:0]",
                "-A PREROUTING -p tcp -j ISTIO_INBOUND"
            ]
        );
    }
}
