//! Reads a TLS ClientHello without terminating TLS (Envoy's `tls_inspector`): the
//! server name and ALPN protocols a client asks for, so that a passthrough listener can
//! route the still-encrypted stream by SNI. The bytes read are handed back to be
//! replayed to the upstream. A handshake message split across records is reassembled.

use tokio::io::{AsyncRead, AsyncReadExt};

/// What the ClientHello asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// The `host_name` of the server_name extension, lowercase, without a trailing dot.
    pub server_name: Option<String>,
    pub alpn: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HelloError {
    /// The first bytes are not a TLS handshake record.
    NotTls,
    /// A handshake that is not a well-formed ClientHello.
    Malformed(&'static str),
    /// The client closed (or failed) before its ClientHello was complete.
    Closed,
}

impl std::fmt::Display for HelloError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HelloError::NotTls => f.write_str("not a TLS handshake"),
            HelloError::Malformed(what) => write!(f, "malformed ClientHello: {what}"),
            HelloError::Closed => f.write_str("closed before the ClientHello was complete"),
        }
    }
}

/// A ClientHello larger than this is refused (real ones, post-quantum key shares
/// included, are a few KiB; Envoy's inspector reads at most 64 KiB).
const MAX_HELLO: usize = 64 * 1024;
const MAX_RECORD: usize = 16 * 1024 + 2048;

/// Reads from `stream` until its ClientHello is complete. Returns every byte read,
/// whatever the outcome, so the caller can replay them.
pub async fn read_client_hello<S>(stream: &mut S) -> (Vec<u8>, Result<ClientHello, HelloError>)
where
    S: AsyncRead + Unpin,
{
    let mut buf = Vec::with_capacity(2048);
    loop {
        match parse(&buf) {
            Ok(Some(hello)) => return (buf, Ok(hello)),
            Ok(None) => {}
            Err(e) => return (buf, Err(e)),
        }
        if buf.len() >= MAX_HELLO + 5 * 8 {
            return (buf, Err(HelloError::Malformed("larger than 64 KiB")));
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return (buf, Err(HelloError::Closed)),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The ClientHello in `buf`, `None` while more bytes are needed.
pub fn parse(buf: &[u8]) -> Result<Option<ClientHello>, HelloError> {
    let mut handshake = Vec::new();
    let mut at = 0;
    loop {
        let Some(header) = buf.get(at..at + 5) else {
            // Tell a plaintext client apart as soon as its first byte is in.
            if buf.get(at).is_some_and(|b| *b != 0x16) {
                return Err(HelloError::NotTls);
            }
            return Ok(None);
        };
        if header[0] != 0x16 || header[1] != 3 {
            return Err(if at == 0 {
                HelloError::NotTls
            } else {
                HelloError::Malformed("a record other than handshake before the hello ends")
            });
        }
        let len = u16::from_be_bytes([header[3], header[4]]) as usize;
        if len == 0 || len > MAX_RECORD {
            return Err(HelloError::Malformed("record length"));
        }
        let Some(body) = buf.get(at + 5..at + 5 + len) else {
            return Ok(None);
        };
        handshake.extend_from_slice(body);
        at += 5 + len;
        if handshake.len() >= 4 {
            if handshake[0] != 1 {
                return Err(HelloError::Malformed(
                    "the first handshake message is not a ClientHello",
                ));
            }
            let hello_len =
                u32::from_be_bytes([0, handshake[1], handshake[2], handshake[3]]) as usize;
            if hello_len > MAX_HELLO {
                return Err(HelloError::Malformed("larger than 64 KiB"));
            }
            if let Some(hello) = handshake.get(4..4 + hello_len) {
                return hello_fields(hello).map(Some);
            }
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], HelloError> {
        if n > self.0.len() {
            return Err(HelloError::Malformed("a length runs past its end"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<usize, HelloError> {
        Ok(self.take(1)?[0] as usize)
    }

    fn u16(&mut self) -> Result<usize, HelloError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]) as usize)
    }

    /// A vector with a `width`-byte length prefix, as its own reader.
    fn vector(&mut self, width: usize) -> Result<Reader<'a>, HelloError> {
        let n = if width == 1 { self.u8()? } else { self.u16()? };
        Ok(Reader(self.take(n)?))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

const SERVER_NAME: usize = 0;
const ALPN: usize = 16;

fn hello_fields(hello: &[u8]) -> Result<ClientHello, HelloError> {
    let mut r = Reader(hello);
    r.take(2 + 32)?; // legacy_version, random
    r.vector(1)?; // legacy_session_id
    r.vector(2)?; // cipher_suites
    r.vector(1)?; // legacy_compression_methods
    let mut out = ClientHello::default();
    if r.is_empty() {
        return Ok(out); // no extensions at all
    }
    let mut extensions = r.vector(2)?;
    while !extensions.is_empty() {
        let kind = extensions.u16()?;
        let mut data = extensions.vector(2)?;
        match kind {
            SERVER_NAME => {
                let mut names = data.vector(2)?;
                while !names.is_empty() {
                    let name_type = names.u8()?;
                    let name = names.vector(2)?.0;
                    if name_type == 0 && out.server_name.is_none() {
                        out.server_name = Some(host_name(name)?);
                    }
                }
            }
            ALPN => {
                let mut protocols = data.vector(2)?;
                while !protocols.is_empty() {
                    let p = protocols.vector(1)?.0;
                    out.alpn.push(String::from_utf8_lossy(p).into_owned());
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// RFC 6066: a DNS host name in ASCII, no trailing dot; a trailing dot is dropped here
/// rather than refused, as clients that send one mean the same name.
fn host_name(raw: &[u8]) -> Result<String, HelloError> {
    let ok = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'*');
    if raw.is_empty() || raw.len() > 255 || !raw.iter().all(ok) {
        return Err(HelloError::Malformed("server name is not a host name"));
    }
    let name = std::str::from_utf8(raw).map_err(|_| HelloError::Malformed("server name"))?;
    Ok(name.trim_end_matches('.').to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello record with the given extensions (type, data).
    fn hello(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend([7u8; 32]);
        body.push(0); // session id
        body.extend([0, 2, 0x13, 0x01]); // one cipher suite
        body.extend([1, 0]); // null compression
        let mut ext = Vec::new();
        for (t, d) in extensions {
            ext.extend(t.to_be_bytes());
            ext.extend((d.len() as u16).to_be_bytes());
            ext.extend(d);
        }
        body.extend((ext.len() as u16).to_be_bytes());
        body.extend(ext);
        let mut hs = vec![1];
        hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend(body);
        record(&hs)
    }

    fn record(payload: &[u8]) -> Vec<u8> {
        let mut r = vec![0x16, 3, 1];
        r.extend((payload.len() as u16).to_be_bytes());
        r.extend(payload);
        r
    }

    fn sni(name: &str) -> (u16, Vec<u8>) {
        let mut entry = vec![0];
        entry.extend((name.len() as u16).to_be_bytes());
        entry.extend(name.as_bytes());
        let mut d = (entry.len() as u16).to_be_bytes().to_vec();
        d.extend(entry);
        (0, d)
    }

    fn alpn(protocols: &[&str]) -> (u16, Vec<u8>) {
        let mut list = Vec::new();
        for p in protocols {
            list.push(p.len() as u8);
            list.extend(p.as_bytes());
        }
        let mut d = (list.len() as u16).to_be_bytes().to_vec();
        d.extend(list);
        (16, d)
    }

    #[test]
    fn reads_server_name_and_alpn() {
        let h = hello(&[
            (10, vec![0, 2, 0, 29]),
            sni("API.Example.com."),
            alpn(&["h2", "http/1.1"]),
        ]);
        let got = parse(&h).unwrap().unwrap();
        assert_eq!(got.server_name.as_deref(), Some("api.example.com"));
        assert_eq!(got.alpn, ["h2", "http/1.1"]);
        // Every prefix is "need more", never an error or a wrong answer.
        for n in 0..h.len() {
            assert_eq!(parse(&h[..n]), Ok(None), "prefix {n}");
        }
    }

    #[test]
    fn no_extensions_means_no_name() {
        let mut h = hello(&[]);
        // Drop the empty extensions block entirely (an old client).
        h.truncate(h.len() - 2);
        let payload_len = h.len() - 5;
        h[3..5].copy_from_slice(&(payload_len as u16).to_be_bytes());
        let hs_len = payload_len - 4;
        h[6..9].copy_from_slice(&(hs_len as u32).to_be_bytes()[1..]);
        assert_eq!(parse(&h).unwrap().unwrap(), ClientHello::default());
    }

    #[test]
    fn a_hello_split_across_records_is_reassembled() {
        let whole = hello(&[sni("a.example.com")]);
        let hs = &whole[5..];
        let mut split = record(&hs[..10]);
        split.extend(record(&hs[10..]));
        assert_eq!(
            parse(&split).unwrap().unwrap().server_name.as_deref(),
            Some("a.example.com")
        );
    }

    #[test]
    fn plaintext_and_garbage_are_refused() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(HelloError::NotTls));
        assert_eq!(parse(b"G"), Err(HelloError::NotTls));
        // A length that runs past the hello's end.
        let mut h = hello(&[sni("a.example.com")]);
        let n = h.len();
        h[n - 3] = 0xff;
        assert!(matches!(parse(&h), Err(HelloError::Malformed(_))));
        // A server name that is not a host name.
        let h = hello(&[sni("a b")]);
        assert!(matches!(parse(&h), Err(HelloError::Malformed(_))));
        // Not a ClientHello (a ServerHello).
        let mut h = hello(&[]);
        h[5] = 2;
        assert!(matches!(parse(&h), Err(HelloError::Malformed(_))));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A small deterministic fuzz: every mutation of one byte of a real-shaped hello.
        let h = hello(&[sni("a.example.com"), alpn(&["h2"])]);
        for i in 0..h.len() {
            for v in [0u8, 1, 0x7f, 0xff] {
                let mut m = h.clone();
                m[i] = v;
                let _ = parse(&m);
                let _ = parse(&m[..i]);
            }
        }
    }

    #[tokio::test]
    async fn the_reader_hands_back_every_byte() {
        let h = hello(&[sni("b.example.com")]);
        let mut input = h.clone();
        input.extend(b"rest");
        let mut stream = &input[..];
        let (read, got) = read_client_hello(&mut stream).await;
        assert_eq!(got.unwrap().server_name.as_deref(), Some("b.example.com"));
        assert!(input.starts_with(&read) && read.len() >= h.len());
        let mut closed = &h[..20];
        let (read, got) = read_client_hello(&mut closed).await;
        assert_eq!((read.len(), got), (20, Err(HelloError::Closed)));
    }
}
