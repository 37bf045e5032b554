//! Durations written the way operators write them in YAML: `15s`, `250ms`, `1.5s`, `2m`,
//! `0`, and as Go writes them (what Istio's resources accept): `1m30s`, `100us`, `1h2m`.

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::time::Duration;

/// A duration that deserializes from a human string and serializes back to one,
/// so `/config_dump` shows what the operator wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn secs(s: u64) -> Self {
        Dur(Duration::from_secs(s))
    }
    pub const fn millis(ms: u64) -> Self {
        Dur(Duration::from_millis(ms))
    }
    pub fn get(self) -> Duration {
        self.0
    }
    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

/// Parses one or more `<number><unit>` parts, as Go's `time.ParseDuration` does: units
/// `ns`, `us` (`µs`), `ms`, `s`, `m`, `h`, fractions allowed (`1.5s`, `1m30s`); a bare `0`
/// is zero. Negative durations are refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    if t.is_empty() {
        return Err("an empty duration (use ms, s, m or h)".into());
    }
    if t.starts_with('-') {
        return Err(format!("duration {text:?} is negative"));
    }
    let mut rest = t.strip_prefix('+').unwrap_or(t);
    let mut secs = 0f64;
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("duration {text:?} has no unit (use ms, s, m or h)"))?;
        let (num, tail) = rest.split_at(split);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(format!("duration {text:?} does not start with a number"));
        }
        let value: f64 = num
            .parse()
            .map_err(|_| format!("duration {text:?} does not start with a number"))?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => {
                return Err(format!(
                    "duration {text:?} has unknown unit {unit:?} (use ns, us, ms, s, m or h)"
                ))
            }
        };
        secs += value * scale;
        rest = next;
    }
    if !secs.is_finite() || !(0.0..=1.0e9).contains(&secs) {
        return Err(format!("duration {text:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod go_tests {
    use super::*;

    #[test]
    fn reads_go_durations() {
        for (text, want) in [
            ("1m30s", Duration::from_secs(90)),
            ("100us", Duration::from_micros(100)),
            ("100µs", Duration::from_micros(100)),
            ("1h2m3s", Duration::from_secs(3723)),
            ("1.5s", Duration::from_millis(1500)),
            ("2h45m", Duration::from_secs(9900)),
            ("300ms", Duration::from_millis(300)),
            ("10ns", Duration::from_nanos(10)),
            ("+5s", Duration::from_secs(5)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
        ] {
            assert_eq!(parse_duration(text).unwrap(), want, "{text}");
        }
        for bad in ["", "5", "-1s", "1d", "1..2s", ".s", "1s2", "s", "1.2.3s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        let sub_ms = self.0.as_nanos() % 1_000_000;
        if sub_ms != 0 {
            // Sub-millisecond settings (a cryptomb poll delay) must survive a round trip.
            let text = format!("{:.6}", self.0.as_nanos() as f64 / 1e6);
            write!(f, "{}ms", text.trim_end_matches('0').trim_end_matches('.'))
        } else if ms == 0 {
            write!(f, "0")
        } else if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"250ms\", \"15s\" or \"2m\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
                parse_duration(v).map(Dur).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dur, E> {
                if v == 0 {
                    Ok(Dur(Duration::ZERO))
                } else {
                    Err(E::custom(format!(
                        "duration {v} has no unit (write \"{v}s\" or \"{v}ms\")"
                    )))
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("15").unwrap_err().contains("no unit"));
        assert!(parse_duration("5d").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("s").is_err());
        for text in ["0.2ms", "1.5ms", "250ms", "2s"] {
            let d = Dur(parse_duration(text).unwrap());
            assert_eq!(d.to_string(), text);
        }
    }

    #[test]
    fn displays_round_trip() {
        for s in ["250ms", "15s", "0"] {
            assert_eq!(Dur(parse_duration(s).unwrap()).to_string(), s);
        }
    }
}
