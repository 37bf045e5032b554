//! Access log lines, written by a background task so that a slow disk never stalls a
//! request. Lines that cannot be queued are dropped and counted. A listener's lines are
//! Envoy's formats (`format.rs`: text or JSON of command operators, Istio's defaults
//! by name), or Trellis's own JSON entry.

pub mod format;

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

/// How often a busy writer drains its queue (how late a line may appear).
const DRAIN_EVERY: std::time::Duration = std::time::Duration::from_millis(10);

#[derive(Clone)]
pub struct AccessLog {
    tx: SyncSender<String>,
    dropped: Counter,
}

impl AccessLog {
    /// Opens (appends to) `path`, or writes to stdout for `stdout`.
    pub fn open(path: &str, dropped: Counter) -> std::io::Result<Self> {
        let out: Box<dyn Write + Send> = if path == "stdout" {
            Box::new(std::io::stdout())
        } else {
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )
        };
        // Lines queued together go out in one write.
        let mut out = std::io::BufWriter::with_capacity(64 << 10, out);
        let (tx, rx) = sync_channel::<String>(8192);
        std::thread::Builder::new()
            .name("trellis-access-log".into())
            .spawn(move || {
                // Parked only while nothing comes: under load the writer drains the
                // queue every few milliseconds, so a request's line is a queue push, not
                // a thread wake-up (a futex call per line cost more than formatting it).
                while let Ok(line) = rx.recv() {
                    let _ = out.write_all(line.as_bytes());
                    loop {
                        let mut wrote = false;
                        while let Ok(more) = rx.try_recv() {
                            let _ = out.write_all(more.as_bytes());
                            wrote = true;
                        }
                        let _ = out.flush();
                        if !wrote {
                            break;
                        }
                        std::thread::sleep(DRAIN_EVERY);
                    }
                }
            })?;
        Ok(AccessLog { tx, dropped })
    }

    /// The log of `path` that `logs` holds (listeners writing one file share its
    /// writer), opened and kept there when it has none yet.
    pub fn shared(
        path: &str,
        logs: &mut std::collections::HashMap<String, AccessLog>,
        dropped: &Counter,
    ) -> Result<AccessLog, String> {
        if let Some(log) = logs.get(path) {
            return Ok(log.clone());
        }
        let log = AccessLog::open(path, dropped.clone())
            .map_err(|e| format!("access_log.path {path:?}: {e}"))?;
        logs.insert(path.to_string(), log.clone());
        Ok(log)
    }

    pub fn write(&self, entry: &Entry<'_>) {
        let Ok(mut line) = serde_json::to_string(entry) else {
            return;
        };
        line.push('\n');
        self.write_line(line);
    }

    /// Queues a whole line (with its newline).
    pub fn write_line(&self, line: String) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(line) {
            self.dropped.inc();
        }
    }
}

/// How a listener's access log lines are made.
pub enum LogFormat {
    /// Trellis's own JSON entry.
    Entry,
    Text(format::Format),
    Json(Vec<(String, format::Format)>),
}

impl LogFormat {
    /// The format a listener's `access_log` asks for; the error names the field.
    pub fn of(a: &trellis_config::AccessLog) -> Result<LogFormat, String> {
        use trellis_config::JsonFormat;
        match (&a.text_format, &a.json_format) {
            (Some(_), Some(_)) => Err("access_log: text_format or json_format, not both".into()),
            (Some(t), None) => {
                let t = if t == "istio" {
                    format::ISTIO_TEXT
                } else {
                    t.as_str()
                };
                format::Format::parse(t)
                    .map(LogFormat::Text)
                    .map_err(|e| format!("access_log.text_format: {e}"))
            }
            (None, Some(JsonFormat::Named(n))) if n == "istio" => Ok(LogFormat::Json(
                format::ISTIO_JSON
                    .iter()
                    .map(|(k, f)| Ok((k.to_string(), format::Format::parse(f)?)))
                    .collect::<Result<_, String>>()?,
            )),
            (None, Some(JsonFormat::Named(n))) => Err(format!(
                "access_log.json_format: {n:?}: only istio, or an object of formats"
            )),
            (None, Some(JsonFormat::Fields(fields))) => fields
                .iter()
                .map(|(k, f)| {
                    format::Format::parse(f)
                        .map(|f| (k.clone(), f))
                        .map_err(|e| format!("access_log.json_format.{k}: {e}"))
                })
                .collect::<Result<_, _>>()
                .map(LogFormat::Json),
            (None, None) => Ok(LogFormat::Entry),
        }
    }

    /// The request headers the format reads, beyond the request line.
    pub fn request_headers(&self) -> Vec<http::HeaderName> {
        let mut names: Vec<http::HeaderName> = match self {
            LogFormat::Entry => Vec::new(),
            LogFormat::Text(f) => f.request_headers(),
            LogFormat::Json(fields) => fields
                .iter()
                .flat_map(|(_, f)| f.request_headers())
                .collect(),
        };
        names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        names.dedup();
        names
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
