//! Trace context propagation: W3C Trace Context (`traceparent`, `tracestate`) and B3
//! (Zipkin's `x-b3-*` headers and the single `b3` header), as Envoy's OpenTelemetry and
//! Zipkin tracers read and write them.
//!
//! A request may carry either form: W3C wins when both are present and valid. The
//! proxy's own span is written back in W3C and in B3's multi-header form (and in the
//! single `b3` header when the request used it), so that applications propagating
//! either set of headers keep the trace together. `tracestate` is vendor data and goes
//! through unchanged.

use http::{HeaderMap, HeaderName, HeaderValue};

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
pub const B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
pub const B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
pub const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
pub const B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");
pub const B3_SINGLE: HeaderName = HeaderName::from_static("b3");

pub type TraceId = [u8; 16];
pub type SpanId = [u8; 8];

/// A span as it crosses a process boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub sampled: bool,
}

/// What a request carried from its caller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Incoming {
    /// The caller's span, when the request named one.
    pub parent: Option<(TraceId, SpanId)>,
    /// The caller's sampling decision, when it made one (B3 may defer it).
    pub sampled: Option<bool>,
    /// The request used B3's single `b3` header.
    pub b3_single: bool,
}

/// The trace context of `headers` (W3C first, then B3's headers, then `b3`).
pub fn extract(headers: &HeaderMap) -> Incoming {
    if let Some(ctx) = headers
        .get(&TRACEPARENT)
        .and_then(|v| parse_traceparent(v.as_bytes()))
    {
        return Incoming {
            parent: Some((ctx.trace_id, ctx.span_id)),
            sampled: Some(ctx.sampled),
            b3_single: headers.contains_key(&B3_SINGLE),
        };
    }
    if let Some(found) = b3_multi(headers) {
        return found;
    }
    match headers.get(&B3_SINGLE).and_then(|v| parse_b3(v.as_bytes())) {
        Some(mut found) => {
            found.b3_single = true;
            found
        }
        None => Incoming::default(),
    }
}

/// Writes `ctx` (the proxy's span) into `headers` for the next hop; `parent` is the span
/// it is a child of (B3's `x-b3-parentspanid`). Every request that a tracing listener
/// takes goes through here, sampled or not: the values are made on the stack.
pub fn inject(headers: &mut HeaderMap, ctx: &SpanContext, parent: Option<SpanId>, b3_single: bool) {
    let mut trace = [0u8; 32];
    let mut span = [0u8; 16];
    hex_into(&ctx.trace_id, &mut trace);
    hex_into(&ctx.span_id, &mut span);
    let sampled = if ctx.sampled { b'1' } else { b'0' };
    // 00-<trace>-<span>-0<sampled>
    let mut traceparent = [0u8; 55];
    traceparent[..3].copy_from_slice(b"00-");
    traceparent[3..35].copy_from_slice(&trace);
    traceparent[35] = b'-';
    traceparent[36..52].copy_from_slice(&span);
    traceparent[52..54].copy_from_slice(b"-0");
    traceparent[54] = sampled;
    headers.insert(TRACEPARENT, value(&traceparent));
    headers.insert(B3_TRACE_ID, value(&trace));
    headers.insert(B3_SPAN_ID, value(&span));
    headers.insert(
        B3_SAMPLED,
        HeaderValue::from_static(if ctx.sampled { "1" } else { "0" }),
    );
    headers.remove(&B3_FLAGS);
    let mut parent_hex = [0u8; 16];
    match parent {
        Some(p) => {
            hex_into(&p, &mut parent_hex);
            headers.insert(B3_PARENT_SPAN_ID, value(&parent_hex));
        }
        None => {
            headers.remove(&B3_PARENT_SPAN_ID);
        }
    }
    if b3_single {
        // <trace>-<span>-<sampled>[-<parent>]
        let mut single = [0u8; 68];
        single[..32].copy_from_slice(&trace);
        single[32] = b'-';
        single[33..49].copy_from_slice(&span);
        single[49] = b'-';
        single[50] = sampled;
        let len = match parent {
            Some(_) => {
                single[51] = b'-';
                single[52..68].copy_from_slice(&parent_hex);
                68
            }
            None => 51,
        };
        headers.insert(B3_SINGLE, value(&single[..len]));
    }
}

fn value(bytes: &[u8]) -> HeaderValue {
    HeaderValue::from_bytes(bytes).expect("hex and dashes are a valid header value")
}

/// Lower-case hex of `bytes` into `out` (twice as long), without allocating.
pub fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[(b >> 4) as usize];
        out[2 * i + 1] = DIGITS[(b & 15) as usize];
    }
}

/// `version-traceid-parentid-flags`: version `ff` and all-zero ids are invalid; a
/// later version may append fields after the flags (W3C Trace Context, 3.2).
fn parse_traceparent(v: &[u8]) -> Option<SpanContext> {
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let version = unhex::<1>(&v[..2])?[0];
    if version == 0xff || (version == 0 && v.len() != 55) || (v.len() > 55 && v[55] != b'-') {
        return None;
    }
    let trace_id = unhex::<16>(&v[3..35])?;
    let span_id = unhex::<8>(&v[36..52])?;
    let flags = unhex::<1>(&v[53..55])?[0];
    valid(&trace_id, &span_id).then_some(SpanContext {
        trace_id,
        span_id,
        sampled: flags & 1 == 1,
    })
}

fn b3_multi(headers: &HeaderMap) -> Option<Incoming> {
    let trace = headers.get(&B3_TRACE_ID)?.as_bytes();
    let span = headers.get(&B3_SPAN_ID)?.as_bytes();
    let trace_id = b3_trace_id(trace)?;
    let span_id = unhex::<8>(span)?;
    if !valid(&trace_id, &span_id) {
        return None;
    }
    let debug = headers.get(&B3_FLAGS).is_some_and(|f| f.as_bytes() == b"1");
    let sampled = match headers.get(&B3_SAMPLED).map(HeaderValue::as_bytes) {
        _ if debug => Some(true),
        Some(b"1") | Some(b"true") => Some(true),
        Some(b"0") | Some(b"false") => Some(false),
        _ => None,
    };
    Some(Incoming {
        parent: Some((trace_id, span_id)),
        sampled,
        b3_single: false,
    })
}

/// `traceid-spanid[-sampled[-parentspanid]]`, or the decision alone (`0`, `1`, `d`).
fn parse_b3(v: &[u8]) -> Option<Incoming> {
    let decision = |s: &[u8]| match s {
        b"1" | b"d" => Some(Some(true)),
        b"0" => Some(Some(false)),
        _ => None,
    };
    let mut parts = v.split(|b| *b == b'-');
    let first = parts.next()?;
    let Some(span) = parts.next() else {
        return Some(Incoming {
            sampled: decision(first)?,
            ..Incoming::default()
        });
    };
    let trace_id = b3_trace_id(first)?;
    let span_id = unhex::<8>(span)?;
    if !valid(&trace_id, &span_id) {
        return None;
    }
    let sampled = match parts.next() {
        Some(s) => decision(s)?,
        None => None,
    };
    if let Some(p) = parts.next() {
        unhex::<8>(p)?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Incoming {
        parent: Some((trace_id, span_id)),
        sampled,
        b3_single: true,
    })
}

/// B3 trace ids are 64 or 128 bits; a 64-bit one is the low half.
fn b3_trace_id(v: &[u8]) -> Option<TraceId> {
    match v.len() {
        32 => unhex::<16>(v),
        16 => {
            let low = unhex::<8>(v)?;
            let mut id = [0; 16];
            id[8..].copy_from_slice(&low);
            Some(id)
        }
        _ => None,
    }
}

fn valid(trace_id: &TraceId, span_id: &SpanId) -> bool {
    trace_id.iter().any(|b| *b != 0) && span_id.iter().any(|b| *b != 0)
}

/// Exactly `N` bytes of hex digits (W3C requires lower case; B3 implementations write
/// lower case too, and upper case is taken as well).
fn unhex<const N: usize>(v: &[u8]) -> Option<[u8; N]> {
    if v.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = [0; N];
    for (i, pair) in v.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        let mut out = vec![0u8; bytes.len() * 2];
        hex_into(bytes, &mut out);
        String::from_utf8(out).expect("hex digits")
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    // The examples of W3C Trace Context, section 3.2.
    const W3C: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn reads_w3c_traceparent() {
        let got = extract(&headers(&[("traceparent", W3C)]));
        let (trace, span) = got.parent.unwrap();
        assert_eq!(hex(&trace), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&span), "00f067aa0ba902b7");
        assert_eq!(got.sampled, Some(true));
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert_eq!(
            extract(&headers(&[("traceparent", unsampled)])).sampled,
            Some(false)
        );
    }

    #[test]
    fn refuses_invalid_traceparents() {
        for bad in [
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01",
            "",
        ] {
            assert_eq!(
                extract(&headers(&[("traceparent", bad)])),
                Incoming::default(),
                "{bad}"
            );
        }
        // A later version may add fields.
        let later = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds";
        assert!(extract(&headers(&[("traceparent", later)]))
            .parent
            .is_some());
    }

    #[test]
    fn reads_b3_headers_and_the_single_header() {
        let multi = headers(&[
            ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
            ("x-b3-parentspanid", "05e3ac9a4f6e3b90"),
            ("x-b3-sampled", "1"),
        ]);
        let got = extract(&multi);
        assert_eq!(hex(&got.parent.unwrap().1), "e457b5a2e4d86bd1");
        assert_eq!(got.sampled, Some(true));
        assert!(!got.b3_single);
        // A 64-bit trace id is the low half; no decision is a deferred one.
        let short = headers(&[
            ("x-b3-traceid", "64fe8b2a57d3eff7"),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
        ]);
        let got = extract(&short);
        assert_eq!(
            hex(&got.parent.unwrap().0),
            "000000000000000064fe8b2a57d3eff7"
        );
        assert_eq!(got.sampled, None);
        // The single header (openzipkin/b3-propagation's examples).
        let single = headers(&[(
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
        )]);
        let got = extract(&single);
        assert!(got.b3_single);
        assert_eq!(got.sampled, Some(true));
        assert_eq!(hex(&got.parent.unwrap().1), "e457b5a2e4d86bd1");
        assert_eq!(extract(&headers(&[("b3", "0")])).sampled, Some(false));
        assert_eq!(extract(&headers(&[("b3", "d")])).sampled, Some(true));
        assert_eq!(extract(&headers(&[("b3", "x-y-z")])), Incoming::default());
    }

    #[test]
    fn w3c_wins_over_b3() {
        let both = headers(&[
            ("traceparent", W3C),
            ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
        ]);
        assert_eq!(hex(&extract(&both).parent.unwrap().1), "00f067aa0ba902b7");
    }

    #[test]
    fn writes_both_forms_and_reads_them_back() {
        let ctx = SpanContext {
            trace_id: [7; 16],
            span_id: [9; 8],
            sampled: true,
        };
        let mut h = headers(&[("x-b3-flags", "1"), ("tracestate", "congo=t61rcWkgMzE")]);
        inject(&mut h, &ctx, Some([1; 8]), true);
        assert_eq!(
            h["traceparent"],
            "00-07070707070707070707070707070707-0909090909090909-01"
        );
        assert_eq!(h["x-b3-parentspanid"], "0101010101010101");
        assert_eq!(h["x-b3-sampled"], "1");
        assert_eq!(
            h["b3"],
            "07070707070707070707070707070707-0909090909090909-1-0101010101010101"
        );
        assert!(!h.contains_key("x-b3-flags"));
        assert_eq!(h["tracestate"], "congo=t61rcWkgMzE");
        let back = extract(&h);
        assert_eq!(back.parent, Some((ctx.trace_id, ctx.span_id)));
        h.remove("traceparent");
        assert_eq!(extract(&h).parent, Some((ctx.trace_id, ctx.span_id)));
        h.remove("x-b3-traceid");
        assert_eq!(extract(&h).parent, Some((ctx.trace_id, ctx.span_id)));
    }
}
