use crate::harness::BIN;
use std::process::Command;

/// The README's first command ends in `trellis demo`; it must work unattended.
#[test]
fn demo_runs_and_shows_routing_and_retries() {
    let out = Command::new(BIN)
        .args([
            "demo",
            "--duration",
            "3s",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--rps",
            "100",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "served by reviews-v1",
        "served by reviews-v2",
        "served by ratings",
        "proxy: retries",
        "demo finished:",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("demo finished:"))
        .unwrap();
    // "demo finished: N requests, M answered below 500, E transport errors" → [N, M, 500, E]
    let nums: Vec<u64> = summary
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse().ok())
        .collect();
    assert!(nums[0] >= 150, "{summary}");
    assert_eq!(nums[3], 0, "{summary}");
    // Retries hide reviews-v2's failures; only injected aborts (5% of a third) remain.
    assert!(nums[1] as f64 >= nums[0] as f64 * 0.95, "{summary}");
}
