//! RFC 7512 `pkcs11:` URIs: which module, which token, which object, and where the
//! PIN comes from.
//!
//! `pkcs11:token=mesh;object=workload?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/secrets/pin`
//!
//! Path attributes (`;`-separated): `token`, `object`, `id` (bytes, percent-encoded),
//! `serial`, `manufacturer`, `model`, `slot-id`, `type`. Query attributes (`&`-separated):
//! `module-path`, `pin-source` (`file:/path`, a bare path, or Trellis's `env:NAME`). A
//! `pin-value` is refused: a URI is written on command lines and in files, a PIN must
//! not be. The URI prints without its query's PIN source.

use std::fmt;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pkcs11Uri {
    pub token: Option<String>,
    pub serial: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub slot_id: Option<u64>,
    pub object: Option<String>,
    pub id: Option<Vec<u8>>,
    /// `private`, `public`, `cert`, `secret-key`, `data`.
    pub object_type: Option<String>,
    pub module_path: Option<String>,
    pub pin_source: Option<PinSource>,
}

/// Where the PIN comes from. Never the URI itself.
#[derive(Clone, PartialEq, Eq)]
pub enum PinSource {
    File(String),
    Env(String),
}

impl fmt::Debug for PinSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinSource::File(p) => write!(f, "file:{p}"),
            PinSource::Env(v) => write!(f, "env:{v}"),
        }
    }
}

impl PinSource {
    /// Reads the PIN (trailing newline removed).
    pub fn read(&self) -> Result<String, String> {
        let pin = match self {
            PinSource::File(p) => {
                std::fs::read_to_string(p).map_err(|e| format!("pin-source file:{p}: {e}"))?
            }
            PinSource::Env(v) => std::env::var(v)
                .map_err(|_| format!("pin-source env:{v}: not set (or not UTF-8)"))?,
        };
        Ok(pin.trim_end_matches(['\n', '\r']).to_string())
    }
}

impl Pkcs11Uri {
    /// Whether `s` is meant as a PKCS#11 URI (and not as a file path).
    pub fn is_uri(s: &str) -> bool {
        s.starts_with("pkcs11:")
    }

    pub fn parse(s: &str) -> Result<Pkcs11Uri, String> {
        let rest = s
            .strip_prefix("pkcs11:")
            .ok_or_else(|| format!("{:?}: a PKCS#11 URI starts with pkcs11:", redact(s)))?;
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let mut uri = Pkcs11Uri::default();
        let err = |what: String| format!("{}: {what}", redact(s));
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (name, value) = attr
                .split_once('=')
                .ok_or_else(|| err(format!("{attr:?} is not name=value")))?;
            let bytes = decode(value).map_err(|e| err(format!("{name}: {e}")))?;
            let text =
                || String::from_utf8(bytes.clone()).map_err(|_| err(format!("{name}: not UTF-8")));
            let slot = match name {
                "token" => &mut uri.token,
                "serial" => &mut uri.serial,
                "manufacturer" => &mut uri.manufacturer,
                "model" => &mut uri.model,
                "object" => &mut uri.object,
                "type" => &mut uri.object_type,
                "id" => {
                    set_once(&mut uri.id, bytes.clone(), name).map_err(err)?;
                    continue;
                }
                "slot-id" => {
                    let n = text()?
                        .parse::<u64>()
                        .map_err(|_| err("slot-id: not a number".into()))?;
                    set_once(&mut uri.slot_id, n, name).map_err(err)?;
                    continue;
                }
                // Attributes of the library or slot that do not pick a key; kept out.
                "library-manufacturer"
                | "library-description"
                | "library-version"
                | "slot-manufacturer"
                | "slot-description" => continue,
                other => return Err(err(format!("unknown path attribute {other:?}"))),
            };
            set_once(slot, text()?, name).map_err(err)?;
        }
        for attr in query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter(|a| !a.is_empty())
        {
            let (name, value) = attr
                .split_once('=')
                .ok_or_else(|| err(format!("{:?} is not name=value", attr.split('=').next())))?;
            let value = String::from_utf8(decode(value).map_err(|e| err(format!("{name}: {e}")))?)
                .map_err(|_| err(format!("{name}: not UTF-8")))?;
            match name {
                "module-path" => set_once(&mut uri.module_path, value, name).map_err(err)?,
                "pin-source" => {
                    let source = if let Some(v) = value.strip_prefix("env:") {
                        PinSource::Env(v.to_string())
                    } else if let Some(p) = value.strip_prefix("file:") {
                        PinSource::File(p.trim_start_matches("//").to_string())
                    } else if value.starts_with('/') {
                        PinSource::File(value)
                    } else {
                        return Err(err(
                            "pin-source: a file (file:/path or /path) or env:NAME".into(),
                        ));
                    };
                    set_once(&mut uri.pin_source, source, name).map_err(err)?;
                }
                "pin-value" => {
                    return Err(err(
                        "pin-value is refused: a PIN does not go into a URI; use pin-source=file:/path or env:NAME"
                            .into(),
                    ))
                }
                "module-name" => {
                    return Err(err("module-name: name the module with module-path".into()))
                }
                other => return Err(err(format!("unknown query attribute {other:?}"))),
            }
        }
        Ok(uri)
    }

    /// The module to load: `module-path`, else `default`.
    pub fn module<'a>(&'a self, default: Option<&'a str>) -> Result<&'a str, String> {
        self.module_path
            .as_deref()
            .or(default)
            .ok_or_else(|| format!("{self}: no module-path"))
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T, name: &str) -> Result<(), String> {
    if slot.is_some() {
        return Err(format!("{name} appears twice"));
    }
    *slot = Some(value);
    Ok(())
}

/// RFC 3986 percent-decoding.
fn decode(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex: Vec<u8> = bytes.by_ref().take(2).collect();
            let v = std::str::from_utf8(&hex)
                .ok()
                .filter(|h| h.len() == 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a % is not followed by two hex digits")?;
            out.push(v);
        } else {
            out.push(b);
        }
    }
    Ok(out)
}

fn encode(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The URI with any `pin-value` blanked, for messages about a URI that failed to parse.
fn redact(s: &str) -> String {
    let Some((head, query)) = s.split_once('?') else {
        return s.to_string();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|a| {
            if a.starts_with("pin-value=") {
                "pin-value=(redacted)".to_string()
            } else {
                a.to_string()
            }
        })
        .collect();
    format!("{head}?{}", query.join("&"))
}

impl fmt::Display for Pkcs11Uri {
    /// The path attributes and the module: what identifies the key, nothing secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut path = Vec::new();
        for (name, v) in [
            ("token", &self.token),
            ("manufacturer", &self.manufacturer),
            ("model", &self.model),
            ("serial", &self.serial),
            ("object", &self.object),
            ("type", &self.object_type),
        ] {
            if let Some(v) = v {
                path.push(format!("{name}={}", encode(v.as_bytes())));
            }
        }
        if let Some(id) = &self.id {
            path.push(format!(
                "id={}",
                id.iter().map(|b| format!("%{b:02X}")).collect::<String>()
            ));
        }
        if let Some(s) = self.slot_id {
            path.push(format!("slot-id={s}"));
        }
        write!(f, "pkcs11:{}", path.join(";"))?;
        if let Some(m) = &self.module_path {
            write!(
                f,
                "?module-path={}",
                encode(m.as_bytes()).replace("%2F", "/")
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rfc_7512_examples_and_ours() {
        let u = Pkcs11Uri::parse(
            "pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;manufacturer=Snake%20Oil,%20Inc.;model=1.0;object=my-certificate;type=cert;id=%69%95%3E%5C%F4%BD%EC%91",
        )
        .unwrap();
        assert_eq!(u.token.as_deref(), Some("The Software PKCS#11 Softtoken"));
        assert_eq!(u.manufacturer.as_deref(), Some("Snake Oil, Inc."));
        assert_eq!(u.object.as_deref(), Some("my-certificate"));
        assert_eq!(u.object_type.as_deref(), Some("cert"));
        assert_eq!(
            u.id.as_deref(),
            Some(&[0x69, 0x95, 0x3e, 0x5c, 0xf4, 0xbd, 0xec, 0x91][..])
        );
        let u = Pkcs11Uri::parse(
            "pkcs11:token=mesh;object=ca?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/pin",
        )
        .unwrap();
        assert_eq!(
            u.module_path.as_deref(),
            Some("/usr/lib/softhsm/libsofthsm2.so")
        );
        assert_eq!(u.pin_source, Some(PinSource::File("/run/pin".into())));
        assert_eq!(
            u.to_string(),
            "pkcs11:token=mesh;object=ca?module-path=/usr/lib/softhsm/libsofthsm2.so"
        );
        assert_eq!(
            Pkcs11Uri::parse("pkcs11:token=t?pin-source=env:TRELLIS_PIN")
                .unwrap()
                .pin_source,
            Some(PinSource::Env("TRELLIS_PIN".into()))
        );
        assert_eq!(
            Pkcs11Uri::parse("pkcs11:slot-id=3").unwrap().slot_id,
            Some(3)
        );
    }

    #[test]
    fn refuses_pins_in_the_uri_and_bad_forms_without_echoing_the_pin() {
        let e = Pkcs11Uri::parse("pkcs11:token=t?pin-value=123456").unwrap_err();
        assert!(e.contains("pin-value is refused"), "{e}");
        assert!(!e.contains("123456"), "{e}");
        for (bad, needle) in [
            ("file:/x", "starts with pkcs11:"),
            ("pkcs11:token", "is not name=value"),
            ("pkcs11:token=a;token=b", "token appears twice"),
            ("pkcs11:id=%G1", "two hex digits"),
            ("pkcs11:colour=blue", "unknown path attribute"),
            ("pkcs11:token=t?pin-source=relative/pin", "pin-source"),
            ("pkcs11:slot-id=x", "slot-id"),
        ] {
            let e = Pkcs11Uri::parse(bad).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn pin_sources_read_files_and_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pin");
        std::fs::write(&file, "4321\n").unwrap();
        assert_eq!(
            PinSource::File(file.display().to_string()).read().unwrap(),
            "4321"
        );
        let e = PinSource::Env("TRELLIS_TEST_UNSET_PIN".into())
            .read()
            .unwrap_err();
        assert!(e.contains("not set"), "{e}");
    }
}
