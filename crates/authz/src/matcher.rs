//! Istio's value forms and IP blocks.

use std::net::IpAddr;

pub enum StrMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    /// `*`: any non-empty value.
    Present,
    /// A path template (`/books/{*}/pages/{**}`), as the regular expression it
    /// stands for (matched whole).
    Template(String, regex::Regex),
}

/// A character a path segment may hold (RFC 3986 pchar, as Envoy's URI templates).
const PCHAR: &str = "[a-zA-Z0-9\\-._~%!$&'()+,;:@=]";

impl StrMatch {
    /// A path value: a template when it holds `{*}` or `{**}`, else as [`parse`](Self::parse).
    pub fn parse_path(v: &str) -> Self {
        match template_regex(v) {
            Some(re) => {
                let compiled = regex::Regex::new(&format!("^(?:{re})$"))
                    .expect("a template's regular expression is built from escaped literals");
                StrMatch::Template(re, compiled)
            }
            None => Self::parse(v),
        }
    }

    pub fn parse(v: &str) -> Self {
        if v == "*" {
            StrMatch::Present
        } else if let Some(p) = v.strip_suffix('*') {
            StrMatch::Prefix(p.to_string())
        } else if let Some(s) = v.strip_prefix('*') {
            StrMatch::Suffix(s.to_string())
        } else {
            StrMatch::Exact(v.to_string())
        }
    }

    pub fn is(&self, v: &str) -> bool {
        match self {
            StrMatch::Exact(e) => v == e,
            StrMatch::Prefix(p) => v.starts_with(p.as_str()),
            StrMatch::Suffix(s) => v.ends_with(s.as_str()),
            StrMatch::Present => !v.is_empty(),
            StrMatch::Template(_, re) => re.is_match(v),
        }
    }
}

/// Istio's path templates: `{*}` is one path segment, `{**}` any number of
/// characters of segments and slashes (only last); other segments are literal.
/// None when `v` holds no template (the control plane checks their placement).
pub fn template_regex(v: &str) -> Option<String> {
    if !v.contains("{*}") && !v.contains("{**}") {
        return None;
    }
    let mut re = String::new();
    for (i, segment) in v.split('/').enumerate() {
        if i > 0 {
            re.push('/');
        }
        match segment {
            "{*}" => re.push_str(&format!("{PCHAR}+")),
            "{**}" => re.push_str(&format!("(?:{PCHAR}|/)*")),
            literal => re.push_str(&regex::escape(literal)),
        }
    }
    Some(re)
}

/// An address or CIDR; IPv4-mapped IPv6 sources match IPv4 blocks.
pub struct IpBlock {
    net: IpAddr,
    prefix: u8,
}

impl IpBlock {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (net, prefix) = trellis_config::parse_ip_block(s)?;
        Ok(IpBlock { net, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(n) & mask == u32::from(i) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(n) & mask == u128::from(i) & mask
            }
            _ => false,
        }
    }
}
