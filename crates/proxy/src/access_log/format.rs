//! Envoy's access log formats: a format string of command operators
//! (`%RESPONSE_CODE%`, `%REQ(:AUTHORITY)%`, `%REQ(X-ENVOY-ORIGINAL-PATH?:PATH):64%`...),
//! as a line of text or as the values of a JSON object (`json_format`), compiled once
//! and rendered per request into a reused buffer. An operator Trellis does not know
//! refuses the config, naming it.

use std::fmt::Write;

use http::header::HeaderName;

use super::KeptHeaders;

pub use trellis_config::log_formats::{ISTIO_JSON, ISTIO_TEXT};

/// A header to read, with Envoy's alternative (`X?Y`).
#[derive(Clone, Debug, PartialEq)]
pub struct Header {
    pub name: HeaderRef,
    pub alternative: Option<HeaderRef>,
}

/// A header, or one of the request's pseudo-headers.
#[derive(Clone, Debug, PartialEq)]
pub enum HeaderRef {
    Method,
    Path,
    Authority,
    Scheme,
    Named(HeaderName),
}

#[derive(Clone, Debug, PartialEq)]
enum Op {
    Text(String),
    StartTime,
    Req(Header, Option<usize>),
    Resp(Header, Option<usize>),
    Protocol,
    ResponseCode,
    ResponseFlags,
    ResponseCodeDetails,
    BytesReceived,
    BytesSent,
    Duration,
    UpstreamHost,
    UpstreamCluster,
    DownstreamLocalAddress,
    DownstreamRemoteAddress,
    DownstreamPeerUriSan,
    RequestedServerName,
    RouteName,
    /// Operators with nothing to say in this proxy (always `-`).
    Unset,
}

/// A compiled format string.
#[derive(Clone, Debug, PartialEq)]
pub struct Format(Vec<Op>);

fn header(arg: &str, op: &str) -> Result<Header, String> {
    let parse = |h: &str| match h.to_ascii_lowercase().as_str() {
        ":method" => Ok(HeaderRef::Method),
        ":path" => Ok(HeaderRef::Path),
        ":authority" => Ok(HeaderRef::Authority),
        ":scheme" => Ok(HeaderRef::Scheme),
        lower => HeaderName::from_bytes(lower.as_bytes())
            .map(HeaderRef::Named)
            .map_err(|_| format!("%{op}({arg})%: {h:?} is not a header name")),
    };
    let (name, alternative) = match arg.split_once('?') {
        Some((a, b)) => (parse(a)?, Some(parse(b)?)),
        None => (parse(arg)?, None),
    };
    Ok(Header { name, alternative })
}

impl Format {
    pub fn parse(s: &str) -> Result<Format, String> {
        let mut ops = Vec::new();
        let mut text = String::new();
        let mut rest = s;
        while let Some(i) = rest.find('%') {
            text.push_str(&rest[..i]);
            rest = &rest[i + 1..];
            if let Some(after) = rest.strip_prefix('%') {
                text.push('%');
                rest = after;
                continue;
            }
            let end = rest
                .find('%')
                .ok_or_else(|| format!("an operator is not closed: %{rest}"))?;
            let body = &rest[..end];
            rest = &rest[end + 1..];
            // `NAME`, `NAME(arg)`, `NAME(arg):max`
            let (call, max) =
                match body.rsplit_once("):") {
                    Some((c, m)) => (
                        format!("{c})"),
                        Some(m.parse::<usize>().map_err(|_| {
                            format!("%{body}%: the length after ':' is not a number")
                        })?),
                    ),
                    None => (body.to_string(), None),
                };
            let (name, arg) = match call.split_once('(') {
                Some((n, a)) => (
                    n,
                    Some(
                        a.strip_suffix(')')
                            .ok_or_else(|| format!("%{body}%: the argument is not closed"))?,
                    ),
                ),
                None => (call.as_str(), None),
            };
            if !text.is_empty() {
                ops.push(Op::Text(std::mem::take(&mut text)));
            }
            let no_arg = |op: Op| match arg {
                None => Ok(op),
                Some(a) => Err(format!("%{name}%: no argument is supported, got {a:?}")),
            };
            ops.push(match name {
                "REQ" | "RESP" => {
                    let a = arg.ok_or_else(|| format!("%{name}%: needs a header, %{name}(X)%"))?;
                    let h = header(a, name)?;
                    if name == "REQ" {
                        Op::Req(h, max)
                    } else {
                        Op::Resp(h, max)
                    }
                }
                "START_TIME" => no_arg(Op::StartTime)?,
                "PROTOCOL" => no_arg(Op::Protocol)?,
                "RESPONSE_CODE" => no_arg(Op::ResponseCode)?,
                "RESPONSE_FLAGS" => no_arg(Op::ResponseFlags)?,
                "RESPONSE_CODE_DETAILS" => no_arg(Op::ResponseCodeDetails)?,
                "BYTES_RECEIVED" => no_arg(Op::BytesReceived)?,
                "BYTES_SENT" => no_arg(Op::BytesSent)?,
                "DURATION" => no_arg(Op::Duration)?,
                "UPSTREAM_HOST" => no_arg(Op::UpstreamHost)?,
                "UPSTREAM_CLUSTER" => no_arg(Op::UpstreamCluster)?,
                "DOWNSTREAM_LOCAL_ADDRESS" => no_arg(Op::DownstreamLocalAddress)?,
                "DOWNSTREAM_REMOTE_ADDRESS" | "DOWNSTREAM_DIRECT_REMOTE_ADDRESS" => {
                    no_arg(Op::DownstreamRemoteAddress)?
                }
                "DOWNSTREAM_PEER_URI_SAN" => no_arg(Op::DownstreamPeerUriSan)?,
                "REQUESTED_SERVER_NAME" => no_arg(Op::RequestedServerName)?,
                "ROUTE_NAME" => no_arg(Op::RouteName)?,
                "CONNECTION_TERMINATION_DETAILS"
                | "UPSTREAM_TRANSPORT_FAILURE_REASON"
                | "UPSTREAM_LOCAL_ADDRESS" => no_arg(Op::Unset)?,
                other => {
                    return Err(format!(
                        "%{other}% is not a command operator Trellis supports"
                    ))
                }
            });
        }
        text.push_str(rest);
        if !text.is_empty() {
            ops.push(Op::Text(text));
        }
        Ok(Format(ops))
    }

    /// The request (or response) headers the format reads (the proxy keeps them for
    /// the log).
    pub fn headers(&self, response: bool) -> Vec<HeaderName> {
        let mut out = Vec::new();
        for op in &self.0 {
            let h = match (op, response) {
                (Op::Req(h, _), false) | (Op::Resp(h, _), true) => Some(h),
                _ => None,
            };
            if let Some(h) = h {
                for r in std::iter::once(&h.name).chain(h.alternative.as_ref()) {
                    if let HeaderRef::Named(n) = r {
                        out.push(n.clone());
                    }
                }
            }
        }
        out
    }
}

/// What a request's log line is made of.
pub struct Record<'a> {
    pub start_time: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub authority: &'a str,
    pub scheme: &'a str,
    /// The request headers the formats read, kept from the request; the response's.
    pub request_headers: KeptHeaders<'a>,
    pub response_headers: KeptHeaders<'a>,
    pub protocol: &'a str,
    pub status: u16,
    pub flags: &'a str,
    /// The upstream answered (`via_upstream`), or the proxy did.
    pub via_upstream: bool,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration_ms: u64,
    pub upstream_host: Option<std::net::SocketAddr>,
    pub upstream_cluster: Option<&'a str>,
    pub downstream_local: std::net::SocketAddr,
    pub downstream_remote: std::net::SocketAddr,
    pub peer_uri_san: Option<&'a str>,
    pub server_name: Option<&'a str>,
    pub route: Option<&'a str>,
}

/// A value an operator renders: text, an address, a number, or nothing (`-`, JSON
/// `null`). Borrowed from the record and the format: a line costs its own `String`
/// and nothing per operator.
enum Value<'a> {
    Str(&'a str),
    Addr(std::net::SocketAddr),
    Num(u64),
    None,
}

impl Value<'_> {
    /// The text of a `Str` or `Addr` (written into `buf` for an address).
    fn text<'b>(&'b self, buf: &'b mut String) -> Option<&'b str> {
        match self {
            Value::Str(s) => Some(s),
            Value::Addr(a) => {
                push_addr(buf, *a);
                Some(buf)
            }
            _ => None,
        }
    }
}

impl Record<'_> {
    fn header(&self, h: &Header, response: bool) -> Option<&str> {
        let map = if response {
            self.response_headers
        } else {
            self.request_headers
        };
        let one = |name: &HeaderRef| -> Option<&str> {
            match (name, response) {
                (HeaderRef::Named(n), _) => map.get(n).and_then(|v| v.to_str().ok()),
                (_, true) => None,
                (HeaderRef::Method, false) => Some(self.method),
                (HeaderRef::Path, false) => Some(self.path),
                (HeaderRef::Authority, false) => Some(self.authority),
                (HeaderRef::Scheme, false) => Some(self.scheme),
            }
        };
        one(&h.name).or_else(|| h.alternative.as_ref().and_then(one))
    }

    fn value<'s>(&'s self, op: &'s Op) -> Value<'s> {
        let opt = |v: Option<&'s str>| match v {
            Some(v) if !v.is_empty() => Value::Str(v),
            _ => Value::None,
        };
        let cut = |v: Option<&'s str>, max: &Option<usize>| match (v, max) {
            (Some(v), Some(m)) => {
                let mut end = (*m).min(v.len());
                while !v.is_char_boundary(end) {
                    end -= 1;
                }
                opt(Some(&v[..end]))
            }
            (v, _) => opt(v),
        };
        match op {
            Op::Text(t) => Value::Str(t),
            Op::StartTime => Value::Str(self.start_time),
            Op::Req(h, max) => cut(self.header(h, false), max),
            Op::Resp(h, max) => cut(self.header(h, true), max),
            Op::Protocol => opt(Some(self.protocol)),
            Op::ResponseCode => Value::Num(self.status.into()),
            Op::ResponseFlags => Value::Str(self.flags),
            // A TCP connection has no response (status 0): Envoy writes `-`.
            Op::ResponseCodeDetails if self.status == 0 => Value::None,
            Op::ResponseCodeDetails => match self.via_upstream {
                true => Value::Str("via_upstream"),
                false => Value::Str("local_reply"),
            },
            Op::BytesReceived => Value::Num(self.bytes_received),
            Op::BytesSent => Value::Num(self.bytes_sent),
            Op::Duration => Value::Num(self.duration_ms),
            Op::UpstreamHost => self.upstream_host.map_or(Value::None, Value::Addr),
            Op::UpstreamCluster => opt(self.upstream_cluster),
            Op::DownstreamLocalAddress => Value::Addr(self.downstream_local),
            Op::DownstreamRemoteAddress => Value::Addr(self.downstream_remote),
            Op::DownstreamPeerUriSan => opt(self.peer_uri_san),
            Op::RequestedServerName => opt(self.server_name),
            Op::RouteName => opt(self.route),
            Op::Unset => Value::None,
        }
    }

    /// The line of a text format (it ends with what the format ends with).
    pub fn text(&self, f: &Format, out: &mut String) {
        for op in &f.0 {
            match self.value(op) {
                Value::Str(v) => out.push_str(v),
                Value::Addr(a) => push_addr(out, a),
                Value::Num(n) => push_num(out, n),
                Value::None => out.push('-'),
            }
        }
    }

    /// A JSON object of `fields` (key → format), one line. A field of one operator
    /// keeps its type (numbers stay numbers, nothing is `null`); others are strings.
    pub fn json(&self, fields: &[(String, Format)], out: &mut String) {
        out.push('{');
        for (i, (key, f)) in fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            json_string(key, out);
            out.push(':');
            match f.0.as_slice() {
                [op] if !matches!(op, Op::Text(_)) => match self.value(op) {
                    Value::Num(n) => push_num(out, n),
                    Value::None => out.push_str("null"),
                    v => {
                        let mut buf = String::new();
                        json_string(v.text(&mut buf).unwrap_or_default(), out);
                    }
                },
                _ => {
                    let mut s = String::new();
                    self.text(f, &mut s);
                    json_string(&s, out);
                }
            }
        }
        out.push_str("}\n");
    }
}

/// Numbers and addresses without `core::fmt`'s machinery: a line has several, and
/// formatting them was most of a line's cost.
fn push_num(out: &mut String, n: u64) {
    out.push_str(itoa::Buffer::new().format(n));
}

fn push_addr(out: &mut String, a: std::net::SocketAddr) {
    match a {
        std::net::SocketAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(digits.format(octet));
            }
            out.push(':');
            out.push_str(digits.format(v4.port()));
        }
        std::net::SocketAddr::V6(_) => {
            let _ = write!(out, "{a}");
        }
    }
}

fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_addresses_are_written_as_display_writes_them() {
        for a in [
            "10.0.0.1:80",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "127.0.0.1:15006",
            "[2001:db8::1]:443",
            "[::ffff:10.0.0.1]:8080",
        ] {
            let addr: std::net::SocketAddr = a.parse().unwrap();
            let mut out = String::new();
            push_addr(&mut out, addr);
            assert_eq!(out, addr.to_string());
        }
        for n in [0u64, 7, 10, 1024, u64::MAX] {
            let mut out = String::new();
            push_num(&mut out, n);
            assert_eq!(out, n.to_string());
        }
    }

    #[test]
    fn istios_formats_parse_and_unknown_operators_are_refused() {
        Format::parse(ISTIO_TEXT).unwrap();
        for (_, f) in ISTIO_JSON {
            Format::parse(f).unwrap();
        }
        for (bad, why) in [
            ("%NOPE%", "NOPE"),
            ("%REQ%", "needs a header"),
            ("%REQ(bad header)%", "not a header name"),
            ("%START_TIME(%s)%", "closed"),
            ("%DURATION(x)%", "no argument"),
            ("%REQ(A):x%", "not a number"),
            ("50% off", "not closed"),
        ] {
            let e = Format::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert_eq!(
            Format::parse("100%% %PROTOCOL%").unwrap(),
            Format(vec![Op::Text("100% ".into()), Op::Protocol])
        );
    }
}
