//! JSON access log lines, written by a background task so that a slow disk never
//! stalls a request. Lines that cannot be queued are dropped and counted.

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use std::io::Write;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};

#[derive(Serialize)]
pub struct Entry<'a> {
    pub timestamp: String,
    pub method: &'a str,
    pub authority: &'a str,
    pub path: &'a str,
    pub protocol: &'a str,
    pub status: u16,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration_ms: f64,
    pub upstream_host: Option<String>,
    pub listener: &'a str,
    pub virtual_host: &'a str,
    pub route: &'a str,
    pub response_flags: String,
    pub downstream_remote: String,
}

#[derive(Clone)]
pub struct AccessLog {
    tx: SyncSender<String>,
    dropped: Counter,
}

impl AccessLog {
    /// Opens (appends to) `path`, or writes to stdout for `stdout`.
    pub fn open(path: &str, dropped: Counter) -> std::io::Result<Self> {
        let mut out: Box<dyn Write + Send> = if path == "stdout" {
            Box::new(std::io::stdout())
        } else {
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )
        };
        let (tx, rx) = sync_channel::<String>(8192);
        std::thread::Builder::new()
            .name("trellis-access-log".into())
            .spawn(move || {
                while let Ok(line) = rx.recv() {
                    let _ = out.write_all(line.as_bytes());
                    // Flush when the queue is drained so a tail -f sees lines promptly.
                    if let Ok(more) = rx.try_recv() {
                        let _ = out.write_all(more.as_bytes());
                    } else {
                        let _ = out.flush();
                    }
                }
            })?;
        Ok(AccessLog { tx, dropped })
    }

    pub fn write(&self, entry: &Entry<'_>) {
        let Ok(mut line) = serde_json::to_string(entry) else {
            return;
        };
        line.push('\n');
        if let Err(TrySendError::Full(_)) = self.tx.try_send(line) {
            self.dropped.inc();
        }
    }
}

/// RFC 3339 UTC timestamp with milliseconds, without a date library.
pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86400, secs % 86400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_millis()
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_dates() {
        assert_eq!(super::civil_from_days(0), (1970, 1, 1));
        assert_eq!(super::civil_from_days(20_781), (2026, 11, 24));
        assert_eq!(super::civil_from_days(11_016), (2000, 2, 29));
    }
}
