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
    pub timestamp: Timestamp,
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
    pub response_flags: std::borrow::Cow<'static, str>,
    pub downstream_remote: String,
}

/// An RFC 3339 UTC time with milliseconds (`2026-12-07T23:59:59.123Z`), made without a
/// date library or an allocation.
#[derive(Clone, Copy)]
pub struct Timestamp([u8; 24]);

impl Timestamp {
    pub fn at(time: std::time::SystemTime) -> Self {
        let since = time
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let secs = since.as_secs();
        let (days, rem) = (secs / 86400, secs % 86400);
        let (y, m, d) = civil_from_days(days as i64);
        let mut out = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut n: u64| {
            for i in (at..at + width).rev() {
                out[i] = b'0' + (n % 10) as u8;
                n /= 10;
            }
        };
        put(0, 4, y.clamp(0, 9999) as u64);
        put(5, 2, m.into());
        put(8, 2, d.into());
        put(11, 2, rem / 3600);
        put(14, 2, rem % 3600 / 60);
        put(17, 2, rem % 60);
        put(20, 3, since.subsec_millis().into());
        Timestamp(out)
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII digits and separators are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Values kept in place for a format's first few headers; more go to a `Vec`.
const KEPT_INLINE: usize = 6;

/// The values of the headers a log format reads, kept as a request or response passes:
/// by the position of their names in the format's (short) list, without a map, and
/// without copying the values (a `HeaderValue` clone shares its bytes).
#[derive(Default)]
pub struct KeptValues {
    inline: [Option<http::HeaderValue>; KEPT_INLINE],
    more: Vec<Option<http::HeaderValue>>,
}

impl KeptValues {
    pub fn keep(names: &[http::HeaderName], headers: &http::HeaderMap) -> Self {
        let mut kept = KeptValues::default();
        for (i, name) in names.iter().enumerate() {
            let value = headers.get(name).cloned();
            match kept.inline.get_mut(i) {
                Some(slot) => *slot = value,
                None => kept.more.push(value),
            }
        }
        kept
    }

    fn get(&self, i: usize) -> Option<&http::HeaderValue> {
        match self.inline.get(i) {
            Some(v) => v.as_ref(),
            None => self.more.get(i - KEPT_INLINE)?.as_ref(),
        }
    }
}

/// Kept values with the names they were kept for.
#[derive(Clone, Copy)]
pub struct KeptHeaders<'a> {
    pub names: &'a [http::HeaderName],
    pub values: &'a KeptValues,
}

impl<'a> KeptHeaders<'a> {
    pub fn get(&self, name: &http::HeaderName) -> Option<&'a http::HeaderValue> {
        let i = self.names.iter().position(|n| n == name)?;
        self.values.get(i)
    }
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
        self.headers(false)
    }

    /// The response headers the format reads.
    pub fn response_headers(&self) -> Vec<http::HeaderName> {
        self.headers(true)
    }

    fn headers(&self, response: bool) -> Vec<http::HeaderName> {
        let mut names: Vec<http::HeaderName> = match self {
            LogFormat::Entry => Vec::new(),
            LogFormat::Text(f) => f.headers(response),
            LogFormat::Json(fields) => fields
                .iter()
                .flat_map(|(_, f)| f.headers(response))
                .collect(),
        };
        names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        names.dedup();
        names
    }
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
    fn timestamps_are_rfc3339_with_milliseconds() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_796_601_600_007);
        assert_eq!(super::Timestamp::at(t).as_str(), "2026-12-07T00:00:00.007Z");
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(951_868_799_999);
        assert_eq!(super::Timestamp::at(t).as_str(), "2000-02-29T23:59:59.999Z");
    }

    #[test]
    fn kept_headers_are_found_by_name_past_the_inline_ones() {
        let names: Vec<http::HeaderName> = (0..9)
            .map(|i| http::HeaderName::try_from(format!("x-h{i}")).unwrap())
            .collect();
        let mut headers = http::HeaderMap::new();
        headers.insert("x-h1", "one".parse().unwrap());
        headers.insert("x-h8", "eight".parse().unwrap());
        let values = super::KeptValues::keep(&names, &headers);
        let kept = super::KeptHeaders {
            names: &names,
            values: &values,
        };
        assert_eq!(kept.get(&names[1]).unwrap(), "one");
        assert_eq!(kept.get(&names[8]).unwrap(), "eight");
        assert!(kept.get(&names[0]).is_none());
        assert!(kept
            .get(&http::HeaderName::from_static("x-other"))
            .is_none());
    }

    #[test]
    fn civil_dates() {
        assert_eq!(super::civil_from_days(0), (1970, 1, 1));
        assert_eq!(super::civil_from_days(20_781), (2026, 11, 24));
        assert_eq!(super::civil_from_days(11_016), (2000, 2, 29));
    }
}
