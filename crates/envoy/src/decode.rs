//! Envoy resources → Trellis config, refusing what Trellis cannot honour with the
//! resource, the field and the reason.

use std::collections::BTreeMap;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3 as cl;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3 as ep;
use envoy_types::pb::envoy::config::listener::v3 as lis;
use envoy_types::pb::envoy::config::route::v3 as rt;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3 as cors;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3 as fault;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3 as tcp;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::envoy::extensions::upstreams::http::v3 as uhttp;
use envoy_types::pb::envoy::r#type::matcher::v3 as m;
use envoy_types::pb::envoy::r#type::v3 as ty;
use envoy_types::pb::google::protobuf::{Any, Duration as PDuration};
use prost::bytes::Bytes;
use prost::Message;
use trellis_config::{self as tc, Dur, SDS_ROOT_CA, SDS_WORKLOAD_CERT};

use crate::socket_match;
use crate::structs::{from_struct, TypedStruct};
use crate::types;

/// The listeners and clusters of a complete set of resources.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decoded {
    pub listeners: Vec<tc::Listener>,
    pub clusters: Vec<tc::Cluster>,
    /// The SDS secrets the listeners and clusters name (besides the identity agent's).
    pub secrets: Vec<tc::Secret>,
    /// Route configurations and endpoint assignments referred to but not received yet
    /// (`RouteConfiguration/<name>`); apply nothing until this is empty.
    pub waiting_for: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{resource}: {path}: {message}")]
pub struct DecodeError {
    /// `Listener outbound`, `Cluster reviews`...
    pub resource: String,
    pub path: String,
    pub message: String,
}

struct Ctx<'a> {
    resource: String,
    /// Where route configurations, endpoint assignments and secrets are looked up.
    named: &'a dyn Lookup,
    /// What was looked up, found or not: the resource decodes the same while these do.
    deps: &'a mut Vec<Dep>,
    waiting: &'a mut Vec<String>,
    /// SDS secrets named so far.
    secrets_named: &'a mut std::collections::BTreeSet<String>,
}

/// The resources a listener or cluster names, by type URL and name: route
/// configurations, endpoint assignments and secrets, as their encoded bodies.
pub trait Lookup {
    fn body(&self, type_url: &'static str, name: &str) -> Option<Bytes>;
    /// Every resource of `type_url` (name, body), in the byte order of the names.
    fn for_each(&self, type_url: &'static str, f: &mut dyn FnMut(&Bytes, &Bytes));
}

/// A lookup made while decoding a resource (found or not).
#[derive(Clone, Debug)]
pub(crate) struct Dep {
    pub type_url: &'static str,
    pub name: String,
}

impl Ctx<'_> {
    fn err(&self, path: &str, message: impl Into<String>) -> DecodeError {
        DecodeError {
            resource: self.resource.clone(),
            path: path.to_string(),
            message: message.into(),
        }
    }

    fn decode<M: Message + Default>(
        &self,
        any: &Any,
        want: &str,
        path: &str,
    ) -> Result<M, DecodeError> {
        if any.type_url != want {
            return Err(self.err(path, format!("expected {want}, got {}", any.type_url)));
        }
        self.decode_body(&any.value, path)
    }

    fn decode_body<M: Message + Default>(&self, body: &[u8], path: &str) -> Result<M, DecodeError> {
        M::decode(body).map_err(|e| self.err(path, format!("cannot decode: {e}")))
    }

    /// A named resource, recorded as something this resource depends on.
    fn lookup(&mut self, type_url: &'static str, name: &str) -> Option<Bytes> {
        self.deps.push(Dep {
            type_url,
            name: name.to_string(),
        });
        self.named.body(type_url, name)
    }
}

/// What decoding one listener or cluster gave, with what it looked up on the way.
pub(crate) struct One<T> {
    /// None: waiting for something it names (or nothing to apply).
    pub out: Option<T>,
    pub deps: Vec<Dep>,
    pub waiting: Vec<String>,
    pub secrets: std::collections::BTreeSet<String>,
}

fn one<T>(
    resource: String,
    named: &dyn Lookup,
    decode: impl FnOnce(&mut Ctx) -> Result<Option<T>, DecodeError>,
) -> Result<One<T>, DecodeError> {
    let (mut deps, mut waiting, mut secrets) = (Vec::new(), Vec::new(), Default::default());
    let mut ctx = Ctx {
        resource,
        named,
        deps: &mut deps,
        waiting: &mut waiting,
        secrets_named: &mut secrets,
    };
    let out = decode(&mut ctx)?;
    Ok(One {
        out,
        deps,
        waiting,
        secrets,
    })
}

/// Decodes one listener (its route configuration looked up in `named`).
pub(crate) fn decode_listener(
    name: &str,
    body: &[u8],
    named: &dyn Lookup,
) -> Result<One<tc::Listener>, DecodeError> {
    one(format!("Listener {name}"), named, |ctx| {
        let l: lis::Listener = ctx.decode_body(body, "")?;
        let direction = l.traffic_direction;
        let mut l = listener(ctx, l)?;
        if let Some(t) = l
            .as_mut()
            .and_then(|l| l.http.as_mut())
            .and_then(|h| h.tracing.as_mut())
        {
            t.span_kind = crate::trace::span_kind(direction);
        }
        Ok(l)
    })
}

/// Decodes one cluster (its endpoint assignment looked up in `named`).
pub(crate) fn decode_cluster(
    name: &str,
    body: &[u8],
    named: &dyn Lookup,
) -> Result<One<tc::Cluster>, DecodeError> {
    one(format!("Cluster {name}"), named, |ctx| {
        let c: cl::Cluster = ctx.decode_body(body, "")?;
        cluster(ctx, c)
    })
}

/// Resources as maps of `Any` by type, each checked to be of its map's type.
struct Maps<'a>(BTreeMap<&'static str, &'a BTreeMap<String, Any>>);

impl Lookup for Maps<'_> {
    fn body(&self, type_url: &'static str, name: &str) -> Option<Bytes> {
        let any = self.0.get(type_url)?.get(name)?;
        Some(Bytes::copy_from_slice(&any.value))
    }

    fn for_each(&self, type_url: &'static str, f: &mut dyn FnMut(&Bytes, &Bytes)) {
        for (name, any) in self.0.get(type_url).into_iter().flat_map(|m| m.iter()) {
            f(
                &Bytes::copy_from_slice(name.as_bytes()),
                &Bytes::copy_from_slice(&any.value),
            );
        }
    }
}

/// Decodes the listeners and clusters in `listeners`/`clusters`, looking up their route
/// configurations, endpoint assignments and SDS secrets by name. (A proxy that decodes
/// update after update keeps a [`crate::Decoder`], which decodes only what changed.)
pub fn decode(
    listeners: &BTreeMap<String, Any>,
    routes: &BTreeMap<String, Any>,
    clusters: &BTreeMap<String, Any>,
    endpoints: &BTreeMap<String, Any>,
    secrets: &BTreeMap<String, Any>,
) -> Result<Decoded, DecodeError> {
    for (kind, want, map) in [
        ("Listener", crate::LISTENER, listeners),
        ("RouteConfiguration", crate::ROUTE, routes),
        ("Cluster", crate::CLUSTER, clusters),
        ("ClusterLoadAssignment", crate::ENDPOINT, endpoints),
        ("Secret", crate::SECRET, secrets),
    ] {
        if let Some((name, any)) = map.iter().find(|(_, a)| a.type_url != want) {
            return Err(DecodeError {
                resource: format!("{kind} {name}"),
                path: String::new(),
                message: format!("expected {want}, got {}", any.type_url),
            });
        }
    }
    let held = Maps(BTreeMap::from([
        (crate::LISTENER, listeners),
        (crate::ROUTE, routes),
        (crate::CLUSTER, clusters),
        (crate::ENDPOINT, endpoints),
        (crate::SECRET, secrets),
    ]));
    let shared = crate::Decoder::default().decode(&held)?;
    Ok(Decoded {
        listeners: shared
            .listeners
            .into_iter()
            .map(std::sync::Arc::unwrap_or_clone)
            .collect(),
        clusters: shared
            .clusters
            .into_iter()
            .map(std::sync::Arc::unwrap_or_clone)
            .collect(),
        secrets: shared.secrets,
        waiting_for: shared.waiting_for,
    })
}

/// An SDS `Secret`: a certificate with its key, or a validation context, inline PEM
/// (errors name the secret, never its content).
pub(crate) fn decode_secret(name: &str, body: &[u8]) -> Result<tc::Secret, DecodeError> {
    use tls::secret::Type;
    let err = |path: &str, message: &str| DecodeError {
        resource: format!("Secret {name}"),
        path: path.to_string(),
        message: message.to_string(),
    };
    let s = tls::Secret::decode(body).map_err(|_| err("", "cannot decode"))?;
    let pem = |d: &Option<core::DataSource>, path: &str| -> Result<String, DecodeError> {
        use core::data_source::Specifier;
        match d.as_ref().and_then(|d| d.specifier.as_ref()) {
            Some(Specifier::InlineString(s)) => Ok(s.clone()),
            Some(Specifier::InlineBytes(b)) => {
                String::from_utf8(b.clone()).map_err(|_| err(path, "not PEM text"))
            }
            _ => Err(err(
                path,
                "inline PEM is required (a file on the control plane's machine means nothing here)",
            )),
        }
    };
    let mut out = tc::Secret {
        name: name.to_string(),
        tls_certificate: None,
        validation_context: None,
    };
    match &s.r#type {
        Some(Type::TlsCertificate(t)) => {
            if t.private_key_provider.is_some() {
                return Err(err(
                    "tls_certificate.private_key_provider",
                    "not supported in a secret",
                ));
            }
            out.tls_certificate = Some(tc::SecretCertificate {
                certificate_chain: pem(&t.certificate_chain, "tls_certificate.certificate_chain")?,
                private_key: pem(&t.private_key, "tls_certificate.private_key")?,
            });
        }
        Some(Type::ValidationContext(v)) => {
            out.validation_context = Some(tc::SecretValidation {
                trusted_ca: pem(&v.trusted_ca, "validation_context.trusted_ca")?,
            });
        }
        _ => {
            return Err(err(
                "",
                "only tls_certificate and validation_context secrets are supported",
            ))
        }
    }
    Ok(out)
}

impl Ctx<'_> {
    /// An SDS name other than the identity agent's: waited for until it arrives.
    fn sds_secret(&mut self, name: &str) -> String {
        if self.lookup(crate::SECRET, name).is_none() {
            self.waiting.push(format!("Secret/{name}"));
        }
        self.secrets_named.insert(name.to_string());
        format!("sds://{name}")
    }
}

fn dur(d: Option<PDuration>) -> Option<Dur> {
    d.map(|d| {
        Dur(Duration::new(
            d.seconds.max(0) as u64,
            d.nanos.max(0) as u32,
        ))
    })
}

fn percent(f: Option<ty::FractionalPercent>) -> f64 {
    use ty::fractional_percent::DenominatorType;
    match f {
        None => 100.0,
        Some(f) => {
            let denominator = match DenominatorType::try_from(f.denominator) {
                Ok(DenominatorType::Hundred) => 100.0,
                Ok(DenominatorType::TenThousand) => 10_000.0,
                _ => 1_000_000.0,
            };
            f64::from(f.numerator) * 100.0 / denominator
        }
    }
}

fn address(ctx: &Ctx, a: Option<&core::Address>, path: &str) -> Result<String, DecodeError> {
    match a.and_then(|a| a.address.as_ref()) {
        Some(core::address::Address::SocketAddress(s)) => {
            let port = match s.port_specifier {
                Some(core::socket_address::PortSpecifier::PortValue(p)) => p,
                _ => return Err(ctx.err(path, "named ports are not supported")),
            };
            Ok(if s.address.contains(':') {
                format!("[{}]:{port}", s.address)
            } else {
                format!("{}:{port}", s.address)
            })
        }
        Some(_) => Err(ctx.err(
            path,
            "only socket addresses are supported (not pipes or internal addresses)",
        )),
        None => Err(ctx.err(path, "missing address")),
    }
}

fn typed_struct(
    ctx: &Ctx,
    any: &Any,
    want: &str,
    path: &str,
) -> Result<serde_json::Value, DecodeError> {
    let t: TypedStruct = ctx.decode(any, types::TYPED_STRUCT, path)?;
    if t.type_url != want {
        return Err(ctx.err(
            path,
            format!("expected a TypedStruct of {want}, got {}", t.type_url),
        ));
    }
    Ok(t.value.as_ref().map(from_struct).unwrap_or_default())
}

fn listener(ctx: &mut Ctx, l: lis::Listener) -> Result<Option<tc::Listener>, DecodeError> {
    if l.api_listener.is_some() {
        return Err(ctx.err(
            "api_listener",
            "API listeners are for proxyless clients, not the proxy",
        ));
    }
    if l.transparent.is_some_and(|v| v.value) {
        // IP_TRANSPARENT is TPROXY capture; Trellis captures with REDIRECT.
        return Err(ctx.err(
            "transparent",
            "TPROXY capture (IP_TRANSPARENT) is not supported: Trellis captures with REDIRECT (use_original_dst)",
        ));
    }
    for (i, f) in l.listener_filters.iter().enumerate() {
        // The proxy tells TLS from plaintext by itself; other listener filters change behaviour.
        if !matches!(
            f.name.as_str(),
            "envoy.filters.listener.tls_inspector" | "envoy.filters.listener.http_inspector"
        ) {
            return Err(ctx.err(
                &format!("listener_filters[{i}]"),
                format!("{} is not supported", f.name),
            ));
        }
    }
    let mut addresses = vec![address(ctx, l.address.as_ref(), "address")?];
    for (i, a) in l.additional_addresses.iter().enumerate() {
        addresses.push(address(
            ctx,
            a.address.as_ref(),
            &format!("additional_addresses[{i}].address"),
        )?);
    }
    // TLS passthrough: chains matched by server name (or all of them TLS without a
    // transport socket), and the default chain for the rest.
    // Certificates by SNI: chains that differ by server names and certificate only,
    // each with its TLS transport socket.
    let by_name = |c: &lis::FilterChain| {
        c.filter_chain_match
            .as_ref()
            .is_some_and(|m| !m.server_names.is_empty())
    };
    let certificate_table = l.default_filter_chain.is_none()
        && l.filter_chains.iter().any(by_name)
        && l.filter_chains.iter().all(|c| c.transport_socket.is_some());
    let passthrough = !certificate_table
        && (l.default_filter_chain.is_some() || l.filter_chains.iter().any(by_name))
        || (!l.filter_chains.is_empty()
            && l.filter_chains.iter().all(|c| {
                c.transport_socket.is_none()
                    && c.filter_chain_match
                        .as_ref()
                        .is_some_and(|m| m.transport_protocol == "tls")
            }));
    let mut out = tc::Listener {
        name: l.name.clone(),
        address: None,
        addresses,
        tcp: None,
        http: None,
        tls: None,
        authorization: None,
        jwt: None,
        use_original_dst: l.use_original_dst.is_some_and(|v| v.value),
        bind_to_port: l.bind_to_port.is_none_or(|v| v.value),
        istio_stats: crate::metadata::read_stats(l.metadata.as_ref())
            .map_err(|e| ctx.err("", e))?,
        sni_routes: Vec::new(),
    };
    if passthrough {
        sni_routes(ctx, &l, &mut out)?;
        return Ok(Some(out));
    }
    if certificate_table {
        return certificates_by_name(ctx, &l, out);
    }
    // Protocol detection (Istio's ports without a declared protocol): the chains that
    // match HTTP application protocols (set by http_inspector) hold the HTTP manager,
    // the others the TCP proxy.
    let mut http_chains = Vec::new();
    let mut rest = Vec::new();
    for (i, c) in l.filter_chains.iter().enumerate() {
        let protocols = c
            .filter_chain_match
            .as_ref()
            .map(|m| m.application_protocols.as_slice())
            .unwrap_or_default();
        if protocols.is_empty() {
            rest.push((i, c));
        } else if protocols
            .iter()
            .all(|p| HTTP_DETECTED.contains(&p.as_str()))
            && protocols.iter().any(|p| p == "http/1.1")
        {
            http_chains.push((i, c));
        } else {
            return Err(ctx.err(
                &format!("filter_chains[{i}].filter_chain_match.application_protocols"),
                format!(
                    "{protocols:?}: only HTTP detection (http/1.0, http/1.1, h2c) is supported"
                ),
            ));
        }
    }
    if !http_chains.is_empty() && rest.is_empty() {
        return Err(ctx.err(
            "filter_chains",
            "chains for detected HTTP need chains for everything else",
        ));
    }
    let (chain, permissive) = transport_pair(ctx, &rest)?;
    let detected = match http_chains.is_empty() {
        true => None,
        false => Some(transport_pair(ctx, &http_chains)?),
    };
    if chain_filters(ctx, chain, permissive, &mut out)?.is_none() {
        return Ok(None);
    }
    if let Some((http, http_permissive)) = detected {
        let mut h = out.clone();
        h.tcp = None;
        h.tls = None;
        h.authorization = None;
        if chain_filters(ctx, http, http_permissive, &mut h)?.is_none() {
            return Ok(None);
        }
        let path = format!("filter_chains[{}]", http.0);
        if out.tcp.is_none() || h.http.is_none() {
            return Err(ctx.err(&path, "with HTTP detection the HTTP chains hold an http_connection_manager and the others a tcp_proxy"));
        }
        // The TCP chains hold the policies as they read on a connection.
        let on_tcp = h.authorization.as_ref().map(crate::rbac::tcp_reading);
        if h.tls != out.tls || on_tcp != out.authorization {
            return Err(ctx.err(
                &path,
                "with HTTP detection both kinds of chain must have the same TLS and authorization",
            ));
        }
        out.http = h.http;
        out.authorization = h.authorization;
        out.jwt = h.jwt;
    }
    Ok(Some(out))
}

/// Reads a chain's network filters (authorization, then tcp_proxy or
/// http_connection_manager) and its transport socket into `out`; `None` while a route
/// configuration it names has not arrived.
fn chain_filters(
    ctx: &mut Ctx,
    chain: (usize, &lis::FilterChain),
    permissive: bool,
    out: &mut tc::Listener,
) -> Result<Option<()>, DecodeError> {
    let (index, chain) = chain;
    let mut filters = chain.filters.iter().enumerate().peekable();
    let mut exchange = false;
    if let Some((i, f)) = filters.next_if(|(_, f)| f.name == crate::metadata_exchange::FILTER) {
        let path = format!("filter_chains[{index}].filters[{i}]");
        metadata_exchange(ctx, filter_config(ctx, f, &path)?, &path)?;
        exchange = true;
    }
    let mut rbac = crate::rbac::Reader::default();
    while let Some((i, f)) = filters.next_if(|(_, f)| f.name == crate::rbac::NETWORK_RBAC) {
        let path = format!("filter_chains[{index}].filters[{i}]");
        rbac.network(filter_config(ctx, f, &path)?)
            .map_err(|e| ctx.err(&path, e))?;
    }
    out.authorization = rbac.finish();
    let Some((i, f)) = filters.next() else {
        return Err(ctx.err(
            &format!("filter_chains[{index}].filters"),
            "no network filter",
        ));
    };
    let path = format!("filter_chains[{index}].filters[{i}]");
    let config = filter_config(ctx, f, &path)?;
    match config.type_url.as_str() {
        types::TCP_PROXY => {
            let t: tcp::TcpProxy = ctx.decode(config, types::TCP_PROXY, &path)?;
            use tcp::tcp_proxy::ClusterSpecifier;
            let access_log = one_access_log(ctx, &t.access_log, path.as_str(), "tcp_proxy")?;
            let mut proxy = match t.cluster_specifier {
                Some(ClusterSpecifier::Cluster(c)) => tc::TcpProxy::to(c),
                Some(ClusterSpecifier::WeightedClusters(w)) if !w.clusters.is_empty() => {
                    tc::TcpProxy {
                        cluster: String::new(),
                        weighted_clusters: w
                            .clusters
                            .into_iter()
                            .map(|c| tc::ClusterWeight {
                                name: c.name,
                                weight: c.weight,
                            })
                            .collect(),
                        access_log: None,
                    }
                }
                _ => return Err(ctx.err(&path, "tcp_proxy: a cluster or weighted clusters")),
            };
            proxy.access_log = access_log;
            out.tcp = Some(proxy);
        }
        types::HCM => {
            if out.authorization.is_some() {
                // The proxy applies one set of policies per request: HTTP's.
                return Err(ctx.err(
                    &path,
                    "network RBAC before an http_connection_manager is not supported (use the HTTP RBAC filter)",
                ));
            }
            let h: hcm::HttpConnectionManager = ctx.decode(config, types::HCM, &path)?;
            match http_manager(ctx, h, &path, out)? {
                Some(h) => out.http = Some(h),
                None => return Ok(None),
            }
        }
        other => {
            return Err(ctx.err(
                &path,
                format!(
                    "{} ({other}) is not supported (tcp_proxy and http_connection_manager are)",
                    f.name
                ),
            ))
        }
    }
    if let Some((i, f)) = filters.next() {
        return Err(ctx.err(
            &format!("filter_chains[{index}].filters[{i}]"),
            format!("{}: nothing may follow the terminal filter", f.name),
        ));
    }
    if let Some(socket) = &chain.transport_socket {
        let path = &format!("filter_chains[{index}].transport_socket");
        let any = match &socket.config_type {
            Some(core::transport_socket::ConfigType::TypedConfig(a)) => a,
            None => return Err(ctx.err(path, "missing typed_config")),
        };
        let d: tls::DownstreamTlsContext = ctx.decode(any, types::DOWNSTREAM_TLS, path)?;
        let mut t = downstream_tls(ctx, d, path)?;
        // The proxy takes the exchange's frame off whenever ALPN chose it; Envoy only
        // with the filter. Both or neither.
        let alpn = t.alpn.take().unwrap_or_default();
        let (offered, rest): (Vec<String>, Vec<String>) = alpn
            .into_iter()
            .partition(|a| a == crate::metadata_exchange::ALPN);
        if !offered.is_empty() && !exchange {
            return Err(ctx.err(
                &format!("{path}.common_tls_context.alpn_protocols"),
                format!(
                    "{} is offered without the {} filter",
                    crate::metadata_exchange::ALPN,
                    crate::metadata_exchange::FILTER
                ),
            ));
        }
        t.alpn = (!rest.is_empty()).then_some(rest);
        t.metadata_exchange = exchange;
        t.mode = if permissive {
            tc::TlsMode::Permissive
        } else {
            tc::TlsMode::Strict
        };
        if let Some(d) = dur(chain.transport_socket_connect_timeout) {
            t.handshake_timeout = d;
        }
        out.tls = Some(t);
    } else if permissive {
        return Err(ctx.err("filter_chains", "the tls chain has no transport socket"));
    }
    Ok(Some(()))
}

/// A chain's match, which may say only server names (and that the transport is TLS):
/// the form of chains by server name, for `what`.
fn by_server_name(
    ctx: &Ctx,
    c: &lis::FilterChain,
    path: &str,
    what: &str,
) -> Result<lis::FilterChainMatch, DecodeError> {
    let m = c.filter_chain_match.clone().unwrap_or_default();
    let mut other = m.clone();
    other.server_names.clear();
    other.transport_protocol.clear();
    if other != lis::FilterChainMatch::default()
        || !matches!(m.transport_protocol.as_str(), "" | "tls")
    {
        return Err(ctx.err(
            &format!("{path}.filter_chain_match"),
            format!("with {what} only server_names (and transport_protocol \"tls\") are supported"),
        ));
    }
    Ok(m)
}

/// A listener whose chains differ only by server names and certificate: one listener
/// whose TLS picks the certificate by SNI (the chain without names is the default).
fn certificates_by_name(
    ctx: &mut Ctx,
    l: &lis::Listener,
    base: tc::Listener,
) -> Result<Option<tc::Listener>, DecodeError> {
    let mut out: Option<tc::Listener> = None;
    for (i, c) in l.filter_chains.iter().enumerate() {
        let path = format!("filter_chains[{i}]");
        let m = by_server_name(ctx, c, &path, "certificates by SNI")?;
        let mut one = base.clone();
        if chain_filters(ctx, (i, c), false, &mut one)?.is_none() {
            return Ok(None);
        }
        let Some(mut tls) = one.tls.take() else {
            return Err(ctx.err(&path, "a chain by server name terminates TLS"));
        };
        let [mut cert] = <[tc::TlsCertificate; 1]>::try_from(std::mem::take(&mut tls.certificates))
            .map_err(|_| ctx.err(&path, "one certificate per chain"))?;
        cert.server_names = m.server_names.clone();
        match out.as_mut() {
            None => {
                tls.certificates = vec![cert];
                one.tls = Some(tls);
                out = Some(one);
            }
            Some(first) => {
                let mut same = first.clone();
                let shared = same.tls.as_mut().expect("set with the first chain");
                let kept = std::mem::take(&mut shared.certificates);
                if *shared != tls
                    || same.http != one.http
                    || same.tcp != one.tcp
                    || same.authorization != one.authorization
                {
                    return Err(ctx.err(
                        &path,
                        "chains by server name must differ only by their certificate",
                    ));
                }
                shared.certificates = kept;
                shared.certificates.push(cert);
                *first = same;
            }
        }
    }
    Ok(out)
}

/// A passthrough listener's chains: each matched by server names (none: any TLS
/// connection) holds a TCP proxy, without a transport socket; the default chain is the
/// listener's `tcp`. Every chain has the same authorization.
fn sni_routes(ctx: &mut Ctx, l: &lis::Listener, out: &mut tc::Listener) -> Result<(), DecodeError> {
    let mut authorization: Option<Option<tc::Authorization>> = None;
    let base = out.clone();
    let mut chain_tcp = |ctx: &mut Ctx, index: usize, chain: &lis::FilterChain, path: &str| {
        let mut scratch = base.clone();
        chain_filters(ctx, (index, chain), false, &mut scratch)?;
        if scratch.http.is_some() || scratch.tls.is_some() {
            return Err(ctx.err(
                path,
                "a TLS passthrough chain holds a tcp_proxy and no transport socket",
            ));
        }
        match &authorization {
            Some(a) if *a != scratch.authorization => {
                return Err(ctx.err(
                    path,
                    "every passthrough chain must have the same authorization",
                ))
            }
            _ => authorization = Some(scratch.authorization.clone()),
        }
        scratch
            .tcp
            .ok_or_else(|| ctx.err(path, "a TLS passthrough chain holds a tcp_proxy"))
    };
    for (i, c) in l.filter_chains.iter().enumerate() {
        let path = format!("filter_chains[{i}]");
        let m = by_server_name(ctx, c, &path, "TLS passthrough")?;
        let tcp = chain_tcp(ctx, i, c, &path)?;
        let server_names = match m.server_names.is_empty() {
            true => vec!["*".to_string()],
            false => m.server_names,
        };
        out.sni_routes.push(tc::SniRoute { server_names, tcp });
    }
    if let Some(d) = &l.default_filter_chain {
        if d.filter_chain_match.is_some() {
            return Err(ctx.err(
                "default_filter_chain.filter_chain_match",
                "a default chain matches nothing",
            ));
        }
        out.tcp = Some(chain_tcp(
            ctx,
            l.filter_chains.len(),
            d,
            "default_filter_chain",
        )?);
    }
    out.authorization = authorization.flatten();
    Ok(())
}

/// The application protocols http_inspector reports for HTTP.
const HTTP_DETECTED: [&str; 3] = ["http/1.0", "http/1.1", "h2c"];

/// One chain, or PERMISSIVE's pair told apart by transport protocol (application
/// protocols aside, which the caller has sorted by).
fn transport_pair<'a>(
    ctx: &Ctx,
    chains: &[(usize, &'a lis::FilterChain)],
) -> Result<((usize, &'a lis::FilterChain), bool), DecodeError> {
    let transport_only = |c: &lis::FilterChain| {
        let mut m = c.filter_chain_match.clone().unwrap_or_default();
        m.application_protocols.clear();
        m
    };
    Ok(match chains {
        [one] => {
            if transport_only(one.1) != lis::FilterChainMatch::default() {
                return Err(ctx.err(
                    &format!("filter_chains[{}].filter_chain_match", one.0),
                    "filter chain matching is supported only as PERMISSIVE's tls/raw_buffer pair",
                ));
            }
            (*one, false)
        }
        [a, b] => {
            let proto = |c: &(usize, &lis::FilterChain)| transport_only(c.1).transport_protocol;
            let (tls_chain, plain) =
                match (proto(a).as_str(), proto(b).as_str()) {
                    ("tls", "raw_buffer") => (a, b),
                    ("raw_buffer", "tls") => (b, a),
                    _ => return Err(ctx.err(
                        "filter_chains",
                        "two filter chains are supported only as PERMISSIVE's tls/raw_buffer pair",
                    )),
                };
            if tls_chain.1.filters != plain.1.filters || plain.1.transport_socket.is_some() {
                return Err(ctx.err("filter_chains", "PERMISSIVE's two chains must have the same filters, and only the tls one a transport socket"));
            }
            (*tls_chain, true)
        }
        [] => return Err(ctx.err("filter_chains", "no filter chain")),
        _ => {
            return Err(ctx.err(
                "filter_chains",
                "more than two filter chains per kind (detected HTTP, the rest) are not supported",
            ))
        }
    })
}

/// The access log of a connection manager or a tcp_proxy (`what`): at most one.
fn one_access_log(
    ctx: &Ctx,
    logs: &[envoy_types::pb::envoy::config::accesslog::v3::AccessLog],
    path: &str,
    what: &str,
) -> Result<Option<tc::AccessLog>, DecodeError> {
    match logs {
        [] => Ok(None),
        [a] => crate::access_log::decode(a)
            .map(Some)
            .map_err(|(field, why)| ctx.err(&format!("{path}.access_log[0].{field}"), why)),
        _ => Err(ctx.err(
            &format!("{path}.access_log"),
            format!("one access log per {what} is supported"),
        )),
    }
}

/// An `istio.metadata_exchange` filter's config (listener or cluster).
fn metadata_exchange(ctx: &Ctx, any: &Any, path: &str) -> Result<(), DecodeError> {
    let json = typed_struct(ctx, any, crate::metadata_exchange::CONFIG_TYPE, path)?;
    crate::metadata_exchange::check(&json).map_err(|e| ctx.err(path, e))
}

fn filter_config<'a>(ctx: &Ctx, f: &'a lis::Filter, path: &str) -> Result<&'a Any, DecodeError> {
    match &f.config_type {
        Some(lis::filter::ConfigType::TypedConfig(a)) => Ok(a),
        _ => Err(ctx.err(path, format!("{}: only typed_config is supported", f.name))),
    }
}

fn http_manager(
    ctx: &mut Ctx,
    h: hcm::HttpConnectionManager,
    path: &str,
    out: &mut tc::Listener,
) -> Result<Option<tc::HttpManager>, DecodeError> {
    use hcm::http_connection_manager::{CodecType, RouteSpecifier};
    let codec = match CodecType::try_from(h.codec_type) {
        Ok(CodecType::Auto) => tc::Codec::Auto,
        Ok(CodecType::Http1) => tc::Codec::Http1,
        Ok(CodecType::Http2) => tc::Codec::Http2,
        _ => return Err(ctx.err(path, "codec_type: only AUTO, HTTP1 and HTTP2 are supported")),
    };
    let mut rbac = crate::rbac::Reader::default();
    for (i, f) in h.http_filters.iter().enumerate() {
        let fpath = format!("{path}.http_filters[{i}]");
        match f.name.as_str() {
            crate::ROUTER | crate::FAULT | crate::CORS => {}
            crate::rbac::HTTP_RBAC => {
                let any = match &f.config_type {
                    Some(hcm::http_filter::ConfigType::TypedConfig(a)) => a,
                    _ => return Err(ctx.err(&fpath, "missing typed_config")),
                };
                rbac.http(any).map_err(|e| ctx.err(&fpath, e))?;
            }
            crate::JWT_AUTHN => {
                let any = match &f.config_type {
                    Some(hcm::http_filter::ConfigType::TypedConfig(a)) => a,
                    _ => return Err(ctx.err(&fpath, "missing typed_config")),
                };
                let json = typed_struct(ctx, any, types::JWT_AUTHN, &fpath)?;
                out.jwt = Some(
                    serde_json::from_value(json)
                        .map_err(|e| ctx.err(&fpath, format!("jwt_authn: {e}")))?,
                );
            }
            other if f.is_optional => {
                let _ = other; // Optional filters may be skipped, as Envoy does.
            }
            other => return Err(ctx.err(&fpath, format!("HTTP filter {other} is not supported"))),
        }
    }
    out.authorization = rbac.finish();
    let config = match h.route_specifier {
        Some(RouteSpecifier::Rds(rds)) => {
            let Some(body) = ctx.lookup(crate::ROUTE, &rds.route_config_name) else {
                ctx.waiting
                    .push(format!("RouteConfiguration/{}", rds.route_config_name));
                return Ok(None);
            };
            let mut inner = Ctx {
                resource: format!("RouteConfiguration {}", rds.route_config_name),
                named: ctx.named,
                deps: ctx.deps,
                waiting: ctx.waiting,
                secrets_named: ctx.secrets_named,
            };
            let r: rt::RouteConfiguration = inner.decode_body(&body, "")?;
            route_configuration(&mut inner, r)?
        }
        Some(RouteSpecifier::RouteConfig(r)) => route_configuration(ctx, r)?,
        _ => return Err(ctx.err(path, "route_specifier: rds or route_config is required")),
    };
    let tracing = match &h.tracing {
        Some(t) => Some(
            crate::trace::decode(t)
                .map_err(|(field, why)| ctx.err(&format!("{path}.{field}"), why))?,
        ),
        None => None,
    };
    let access_log = one_access_log(ctx, &h.access_log, path, "connection manager")?;
    Ok(Some(tc::HttpManager {
        codec,
        virtual_hosts: config,
        access_log,
        tracing,
    }))
}

fn route_configuration(
    ctx: &mut Ctx,
    r: rt::RouteConfiguration,
) -> Result<Vec<tc::VirtualHost>, DecodeError> {
    r.virtual_hosts
        .into_iter()
        .enumerate()
        .map(|(i, v)| virtual_host(ctx, v, &format!("virtual_hosts[{i}]")))
        .collect()
}

fn header_values(
    ctx: &Ctx,
    values: &[core::HeaderValueOption],
    path: &str,
) -> Result<Vec<tc::HeaderValue>, DecodeError> {
    use core::header_value_option::HeaderAppendAction;
    values
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let header = h
                .header
                .as_ref()
                .ok_or_else(|| ctx.err(&format!("{path}[{i}]"), "missing header"))?;
            #[allow(deprecated)]
            let legacy_append = h.append.map(|v| v.value);
            let append = match legacy_append {
                Some(a) => a,
                None => !matches!(
                    HeaderAppendAction::try_from(h.append_action),
                    Ok(HeaderAppendAction::OverwriteIfExistsOrAdd)
                ),
            };
            Ok(tc::HeaderValue {
                name: header.key.clone(),
                value: header.value.clone(),
                append,
            })
        })
        .collect()
}

fn virtual_host(
    ctx: &mut Ctx,
    v: rt::VirtualHost,
    path: &str,
) -> Result<tc::VirtualHost, DecodeError> {
    let routes = v
        .routes
        .into_iter()
        .enumerate()
        .map(|(i, r)| route(ctx, r, &format!("{path}.routes[{i}]")))
        .collect::<Result<_, _>>()?;
    Ok(tc::VirtualHost {
        name: v.name,
        domains: v.domains,
        routes,
        request_headers_to_add: header_values(
            ctx,
            &v.request_headers_to_add,
            &format!("{path}.request_headers_to_add"),
        )?,
        request_headers_to_remove: v.request_headers_to_remove,
        response_headers_to_add: header_values(
            ctx,
            &v.response_headers_to_add,
            &format!("{path}.response_headers_to_add"),
        )?,
        response_headers_to_remove: v.response_headers_to_remove,
    })
}

fn string_match(
    ctx: &Ctx,
    s: &m::StringMatcher,
    name: &str,
    path: &str,
) -> Result<tc::HeaderMatcher, DecodeError> {
    use m::string_matcher::MatchPattern;
    if s.ignore_case {
        return Err(ctx.err(path, "ignore_case string matchers are not supported"));
    }
    let mut h = tc::HeaderMatcher {
        name: name.to_string(),
        ..Default::default()
    };
    match &s.match_pattern {
        Some(MatchPattern::Exact(v)) => h.exact = Some(v.clone()),
        Some(MatchPattern::Prefix(v)) => h.prefix = Some(v.clone()),
        Some(MatchPattern::Suffix(v)) => h.suffix = Some(v.clone()),
        Some(MatchPattern::SafeRegex(r)) => h.regex = Some(r.regex.clone()),
        _ => {
            return Err(ctx.err(
                path,
                "only exact, prefix, suffix and safe_regex string matchers are supported",
            ))
        }
    }
    Ok(h)
}

#[allow(deprecated)] // Older control planes still send the pre-StringMatcher forms.
fn header_matcher(
    ctx: &Ctx,
    h: &rt::HeaderMatcher,
    path: &str,
) -> Result<tc::HeaderMatcher, DecodeError> {
    use rt::header_matcher::HeaderMatchSpecifier;
    let mut out = match &h.header_match_specifier {
        Some(HeaderMatchSpecifier::StringMatch(s)) => string_match(ctx, s, &h.name, path)?,
        Some(HeaderMatchSpecifier::PresentMatch(present)) => tc::HeaderMatcher {
            name: h.name.clone(),
            present: Some(*present),
            ..Default::default()
        },
        Some(HeaderMatchSpecifier::ExactMatch(v)) => tc::HeaderMatcher {
            name: h.name.clone(),
            exact: Some(v.clone()),
            ..Default::default()
        },
        Some(HeaderMatchSpecifier::PrefixMatch(v)) => tc::HeaderMatcher {
            name: h.name.clone(),
            prefix: Some(v.clone()),
            ..Default::default()
        },
        Some(HeaderMatchSpecifier::SuffixMatch(v)) => tc::HeaderMatcher {
            name: h.name.clone(),
            suffix: Some(v.clone()),
            ..Default::default()
        },
        Some(HeaderMatchSpecifier::SafeRegexMatch(r)) => tc::HeaderMatcher {
            name: h.name.clone(),
            regex: Some(r.regex.clone()),
            ..Default::default()
        },
        None => tc::HeaderMatcher {
            name: h.name.clone(),
            present: Some(true),
            ..Default::default()
        },
        _ => return Err(ctx.err(path, "this header match form is not supported")),
    };
    out.invert = h.invert_match;
    // "Present, inverted" is how Envoy says "absent".
    if out.present == Some(true) && out.invert {
        out.present = Some(false);
        out.invert = false;
    }
    Ok(out)
}

fn route(ctx: &mut Ctx, r: rt::Route, path: &str) -> Result<tc::Route, DecodeError> {
    use rt::route_match::PathSpecifier;
    let mm = r.r#match.ok_or_else(|| ctx.err(path, "missing match"))?;
    let mut matches = tc::RouteMatch::default();
    match mm.path_specifier {
        Some(PathSpecifier::Prefix(p)) => matches.prefix = Some(p),
        Some(PathSpecifier::Path(p)) => matches.path = Some(p),
        Some(PathSpecifier::SafeRegex(re)) => matches.regex = Some(re.regex),
        _ => {
            return Err(ctx.err(
                &format!("{path}.match"),
                "only prefix, path and safe_regex are supported",
            ))
        }
    }
    matches.ignore_case = mm.case_sensitive.is_some_and(|c| !c.value);
    if mm.runtime_fraction.is_some()
        || mm.grpc.is_some()
        || mm.tls_context.is_some()
        || !mm.dynamic_metadata.is_empty()
    {
        return Err(ctx.err(
            &format!("{path}.match"),
            "runtime_fraction, grpc, tls_context and dynamic_metadata matches are not supported",
        ));
    }
    for (i, h) in mm.headers.iter().enumerate() {
        let hpath = format!("{path}.match.headers[{i}]");
        let decoded = header_matcher(ctx, h, &hpath)?;
        // An exact method, or an alternation of plain method names, is a method list;
        // any other :method matcher stays a header matcher on the pseudo-header.
        let methods = (h.name == ":method" && !decoded.invert && decoded.prefix.is_none())
            .then(|| decoded.exact.clone().or(decoded.regex.clone()))
            .flatten()
            .filter(|v| {
                v.split('|')
                    .all(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase()))
            });
        match methods {
            Some(v) if matches.methods.is_empty() => {
                matches.methods.extend(v.split('|').map(str::to_string))
            }
            _ => matches.headers.push(decoded),
        }
    }
    for (i, q) in mm.query_parameters.iter().enumerate() {
        use rt::query_parameter_matcher::QueryParameterMatchSpecifier;
        let qpath = format!("{path}.match.query_parameters[{i}]");
        matches
            .query_params
            .push(match &q.query_parameter_match_specifier {
                Some(QueryParameterMatchSpecifier::StringMatch(s)) => {
                    string_match(ctx, s, &q.name, &qpath)?
                }
                Some(QueryParameterMatchSpecifier::PresentMatch(p)) => tc::HeaderMatcher {
                    name: q.name.clone(),
                    present: Some(*p),
                    ..Default::default()
                },
                None => tc::HeaderMatcher {
                    name: q.name.clone(),
                    present: Some(true),
                    ..Default::default()
                },
            });
    }
    let mut out = tc::Route {
        name: (!r.name.is_empty()).then_some(r.name),
        matches,
        operation: r.decorator.map(|d| d.operation).filter(|o| !o.is_empty()),
        route: None,
        redirect: None,
        direct_response: None,
        fault: None,
        cors: None,
        request_headers_to_add: header_values(
            ctx,
            &r.request_headers_to_add,
            &format!("{path}.request_headers_to_add"),
        )?,
        request_headers_to_remove: r.request_headers_to_remove,
        response_headers_to_add: header_values(
            ctx,
            &r.response_headers_to_add,
            &format!("{path}.response_headers_to_add"),
        )?,
        response_headers_to_remove: r.response_headers_to_remove,
    };
    match r.action {
        Some(rt::route::Action::Route(a)) => {
            out.route = Some(route_action(ctx, a, &format!("{path}.route"))?)
        }
        Some(rt::route::Action::Redirect(d)) => {
            use rt::redirect_action::{
                PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier,
            };
            let code = match RedirectResponseCode::try_from(d.response_code) {
                Ok(RedirectResponseCode::Found) => 302,
                Ok(RedirectResponseCode::SeeOther) => 303,
                Ok(RedirectResponseCode::TemporaryRedirect) => 307,
                Ok(RedirectResponseCode::PermanentRedirect) => 308,
                _ => 301,
            };
            let (mut path_redirect, mut prefix_rewrite) = (None, None);
            match d.path_rewrite_specifier {
                Some(PathRewriteSpecifier::PathRedirect(p)) => path_redirect = Some(p),
                Some(PathRewriteSpecifier::PrefixRewrite(p)) => prefix_rewrite = Some(p),
                None => {}
                Some(_) => {
                    return Err(ctx.err(
                        &format!("{path}.redirect"),
                        "regex_rewrite is not supported",
                    ))
                }
            }
            out.redirect = Some(tc::Redirect {
                scheme: match d.scheme_rewrite_specifier {
                    Some(SchemeRewriteSpecifier::SchemeRedirect(s)) => Some(s),
                    Some(SchemeRewriteSpecifier::HttpsRedirect(true)) => Some("https".into()),
                    _ => None,
                },
                host: (!d.host_redirect.is_empty()).then_some(d.host_redirect),
                port: u16::try_from(d.port_redirect).ok().filter(|&p| p != 0),
                path: path_redirect,
                prefix_rewrite,
                response_code: code,
                strip_query: d.strip_query,
            });
        }
        Some(rt::route::Action::DirectResponse(d)) => {
            let body = match d.body.and_then(|b| b.specifier) {
                None => String::new(),
                Some(core::data_source::Specifier::InlineString(s)) => s,
                Some(core::data_source::Specifier::InlineBytes(b)) => {
                    String::from_utf8_lossy(&b).into_owned()
                }
                Some(_) => {
                    return Err(ctx.err(
                        &format!("{path}.direct_response.body"),
                        "only inline bodies are supported",
                    ))
                }
            };
            let status = u16::try_from(d.status).map_err(|_| {
                ctx.err(
                    &format!("{path}.direct_response.status"),
                    format!("{} is not an HTTP status", d.status),
                )
            })?;
            out.direct_response = Some(tc::DirectResponse { status, body });
        }
        _ => {
            return Err(ctx.err(
                path,
                "only route, redirect and direct_response actions are supported",
            ))
        }
    }
    for (name, any) in &r.typed_per_filter_config {
        let fpath = format!("{path}.typed_per_filter_config[{name}]");
        match name.as_str() {
            crate::FAULT => {
                let f: fault::HttpFault = ctx.decode(any, types::FAULT, &fpath)?;
                out.fault = Some(fault_config(ctx, f, &fpath)?);
            }
            crate::CORS => {
                let c: cors::CorsPolicy = ctx.decode(any, types::CORS_POLICY, &fpath)?;
                out.cors = Some(cors_policy(ctx, c, &fpath)?);
            }
            _ => {
                return Err(ctx.err(
                    &fpath,
                    "only the fault and cors filters take per-route config",
                ))
            }
        }
    }
    Ok(out)
}

fn cors_policy(ctx: &Ctx, c: cors::CorsPolicy, path: &str) -> Result<tc::Cors, DecodeError> {
    if c.filter_enabled.is_some() || c.shadow_enabled.is_some() {
        return Err(ctx.err(path, "filter_enabled and shadow_enabled are not supported"));
    }
    let list = |s: &str| -> Vec<String> {
        s.split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .collect()
    };
    let mut allow_origins = Vec::new();
    for (i, m) in c.allow_origin_string_match.iter().enumerate() {
        let h = string_match(
            ctx,
            m,
            "origin",
            &format!("{path}.allow_origin_string_match[{i}]"),
        )?;
        allow_origins.push(tc::StringMatcher {
            exact: h.exact,
            prefix: h.prefix,
            suffix: h.suffix,
            regex: h.regex,
        });
    }
    let max_age = match c.max_age.trim() {
        "" => None,
        s => Some(tc::Dur::secs(s.parse().map_err(|_| {
            ctx.err(
                &format!("{path}.max_age"),
                format!("{s:?} is not a number of seconds"),
            )
        })?)),
    };
    Ok(tc::Cors {
        allow_origins,
        allow_methods: list(&c.allow_methods),
        allow_headers: list(&c.allow_headers),
        expose_headers: list(&c.expose_headers),
        max_age,
        allow_credentials: c.allow_credentials.is_some_and(|b| b.value),
        forward_unmatched_preflights: c.forward_not_matching_preflights.is_none_or(|b| b.value),
    })
}

fn fault_config(ctx: &Ctx, f: fault::HttpFault, path: &str) -> Result<tc::Fault, DecodeError> {
    use envoy_types::pb::envoy::extensions::filters::common::fault::v3::fault_delay::FaultDelaySecifier;
    let delay = match f.delay {
        None => None,
        Some(d) => match d.fault_delay_secifier {
            Some(FaultDelaySecifier::FixedDelay(fixed)) => Some(tc::FaultDelay {
                fixed: dur(Some(fixed)).unwrap_or_default(),
                percent: percent(d.percentage),
            }),
            _ => return Err(ctx.err(&format!("{path}.delay"), "only fixed delays are supported")),
        },
    };
    let abort = match f.abort {
        None => None,
        Some(a) => match a.error_type {
            Some(fault::fault_abort::ErrorType::HttpStatus(s)) => Some(tc::FaultAbort {
                status: u16::try_from(s)
                    .map_err(|_| ctx.err(&format!("{path}.abort"), "bad status"))?,
                percent: percent(a.percentage),
            }),
            _ => {
                return Err(ctx.err(
                    &format!("{path}.abort"),
                    "only http_status aborts are supported",
                ))
            }
        },
    };
    Ok(tc::Fault { delay, abort })
}

fn route_action(ctx: &Ctx, a: rt::RouteAction, path: &str) -> Result<tc::RouteAction, DecodeError> {
    use rt::route_action::{ClusterSpecifier, HostRewriteSpecifier};
    let (mut cluster, mut weighted_clusters) = (None, Vec::new());
    match a.cluster_specifier {
        Some(ClusterSpecifier::Cluster(c)) => cluster = Some(c),
        Some(ClusterSpecifier::WeightedClusters(w)) => {
            for (i, c) in w.clusters.into_iter().enumerate() {
                let cp = format!("{path}.weighted_clusters.clusters[{i}]");
                weighted_clusters.push(tc::WeightedCluster {
                    request_headers_to_add: header_values(
                        ctx,
                        &c.request_headers_to_add,
                        &format!("{cp}.request_headers_to_add"),
                    )?,
                    request_headers_to_remove: c.request_headers_to_remove,
                    response_headers_to_add: header_values(
                        ctx,
                        &c.response_headers_to_add,
                        &format!("{cp}.response_headers_to_add"),
                    )?,
                    response_headers_to_remove: c.response_headers_to_remove,
                    name: c.name,
                    weight: c.weight.map(|w| w.value).unwrap_or(0),
                });
            }
        }
        _ => return Err(ctx.err(path, "only cluster and weighted_clusters are supported")),
    }
    let host_rewrite = match a.host_rewrite_specifier {
        None => None,
        Some(HostRewriteSpecifier::HostRewriteLiteral(h)) => Some(h),
        Some(_) => return Err(ctx.err(path, "only host_rewrite_literal is supported")),
    };
    let regex_rewrite = a.regex_rewrite.as_ref().map(|r| tc::RegexRewrite {
        pattern: r
            .pattern
            .as_ref()
            .map(|p| p.regex.clone())
            .unwrap_or_default(),
        substitution: r.substitution.clone(),
    });
    if a.request_mirror_policies.len() > 1 {
        return Err(ctx.err(
            &format!("{path}.request_mirror_policies"),
            "one mirror per route is supported",
        ));
    }
    let hash_policy = a
        .hash_policy
        .iter()
        .enumerate()
        .map(|(i, h)| {
            use rt::route_action::hash_policy::PolicySpecifier;
            match &h.policy_specifier {
                Some(PolicySpecifier::Header(header)) => Ok(tc::HashPolicy {
                    header: Some(header.header_name.clone()),
                    source_ip: false,
                }),
                Some(PolicySpecifier::ConnectionProperties(c)) => Ok(tc::HashPolicy {
                    header: None,
                    source_ip: c.source_ip,
                }),
                _ => Err(ctx.err(
                    &format!("{path}.hash_policy[{i}]"),
                    "only header and source_ip hashing are supported",
                )),
            }
        })
        .collect::<Result<_, _>>()?;
    Ok(tc::RouteAction {
        cluster,
        weighted_clusters,
        prefix_rewrite: (!a.prefix_rewrite.is_empty()).then_some(a.prefix_rewrite),
        regex_rewrite,
        host_rewrite,
        // Envoy's default route timeout is 15 s; an explicit 0 disables it.
        timeout: dur(a.timeout).unwrap_or(Dur::secs(15)),
        retry_policy: a.retry_policy.map(|p| tc::RetryPolicy {
            retry_on: p.retry_on,
            num_retries: p.num_retries.map(|n| n.value).unwrap_or(1),
            per_try_timeout: dur(p.per_try_timeout),
            retriable_status_codes: p
                .retriable_status_codes
                .iter()
                .filter_map(|&c| u16::try_from(c).ok())
                .collect(),
        }),
        request_mirror: a
            .request_mirror_policies
            .into_iter()
            .next()
            .map(|mp| tc::Mirror {
                cluster: mp.cluster,
                percent: percent(mp.runtime_fraction.and_then(|r| r.default_value)),
            }),
        hash_policy,
    })
}

fn cluster(ctx: &mut Ctx, c: cl::Cluster) -> Result<Option<tc::Cluster>, DecodeError> {
    use cl::cluster::{ClusterDiscoveryType, DiscoveryType, LbPolicy};
    let discovery = match c.cluster_discovery_type {
        None => DiscoveryType::Static,
        Some(ClusterDiscoveryType::Type(t)) => {
            DiscoveryType::try_from(t).unwrap_or(DiscoveryType::Static)
        }
        Some(_) => return Err(ctx.err("cluster_type", "custom cluster types are not supported")),
    };
    let (discovery, assignment) = match discovery {
        DiscoveryType::Eds => {
            let name = c
                .eds_cluster_config
                .as_ref()
                .map(|e| e.service_name.clone())
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| c.name.clone());
            let Some(body) = ctx.lookup(crate::ENDPOINT, &name) else {
                ctx.waiting.push(format!("ClusterLoadAssignment/{name}"));
                return Ok(None);
            };
            let cla: ep::ClusterLoadAssignment = ctx.decode_body(&body, "endpoints")?;
            (tc::DiscoveryType::Static, cla)
        }
        DiscoveryType::Static => (
            tc::DiscoveryType::Static,
            c.load_assignment.clone().unwrap_or_default(),
        ),
        DiscoveryType::StrictDns | DiscoveryType::LogicalDns => (
            tc::DiscoveryType::Dns,
            c.load_assignment.clone().unwrap_or_default(),
        ),
        DiscoveryType::OriginalDst => {
            // Where the connection was going decides; a header or a port override
            // would route otherwise.
            if let Some(cl::cluster::LbConfig::OriginalDstLbConfig(o)) = &c.lb_config {
                if o.use_http_header
                    || !o.http_header_name.is_empty()
                    || o.upstream_port_override.is_some()
                    || o.metadata_key.is_some()
                {
                    return Err(ctx.err(
                        "original_dst_lb_config",
                        "only the connection's original destination is supported (use_http_header, http_header_name, upstream_port_override and metadata_key are not)",
                    ));
                }
            }
            (
                tc::DiscoveryType::OriginalDst,
                ep::ClusterLoadAssignment::default(),
            )
        }
    };
    let lb_policy = match LbPolicy::try_from(c.lb_policy) {
        Ok(LbPolicy::ClusterProvided) if discovery == tc::DiscoveryType::OriginalDst => {
            tc::LbPolicy::RoundRobin
        }
        Ok(LbPolicy::RoundRobin) => tc::LbPolicy::RoundRobin,
        Ok(LbPolicy::LeastRequest) => tc::LbPolicy::LeastRequest,
        Ok(LbPolicy::Random) => tc::LbPolicy::Random,
        Ok(LbPolicy::RingHash) => tc::LbPolicy::RingHash,
        Ok(LbPolicy::Maglev) => tc::LbPolicy::Maglev,
        _ => {
            return Err(ctx.err(
                "lb_policy",
                "only ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH and MAGLEV are supported",
            ))
        }
    };
    // Each endpoint's TLS comes from the cluster's transport socket and its matches.
    let default_tls = match &c.transport_socket {
        None => None,
        Some(socket) => transport_socket(ctx, socket, "transport_socket")?,
    };
    let mut matches = Vec::new();
    for (i, m) in c.transport_socket_matches.iter().enumerate() {
        let path = format!("transport_socket_matches[{i}]");
        let Some(socket) = &m.transport_socket else {
            return Err(ctx.err(&path, "missing transport_socket"));
        };
        matches.push(socket_match::Match {
            criteria: m.r#match.clone().unwrap_or_default(),
            tls: transport_socket(ctx, socket, &format!("{path}.transport_socket"))?,
        });
    }
    let mut endpoints = Vec::new();
    let mut picked = Vec::new();
    for (l, locality) in assignment.endpoints.iter().enumerate() {
        for (i, e) in locality.lb_endpoints.iter().enumerate() {
            let path = format!("endpoints[{l}].lb_endpoints[{i}]");
            // Endpoints marked unhealthy or draining by the control plane get no traffic.
            if matches!(
                core::HealthStatus::try_from(e.health_status),
                Ok(core::HealthStatus::Unhealthy | core::HealthStatus::Draining)
            ) {
                continue;
            }
            let (address, additional) = match &e.host_identifier {
                Some(ep::lb_endpoint::HostIdentifier::Endpoint(ep)) => {
                    let main = address(
                        ctx,
                        ep.address.as_ref(),
                        &format!("{path}.endpoint.address"),
                    )?;
                    let mut more = Vec::new();
                    for (j, a) in ep.additional_addresses.iter().enumerate() {
                        more.push(address(
                            ctx,
                            a.address.as_ref(),
                            &format!("{path}.endpoint.additional_addresses[{j}].address"),
                        )?);
                    }
                    (main, more)
                }
                _ => return Err(ctx.err(&path, "only inline endpoints are supported")),
            };
            let weight = e.load_balancing_weight.map(|w| w.value).unwrap_or(1);
            endpoints.push((address, weight, additional));
            picked.push(socket_match::pick(
                &matches,
                &default_tls,
                e.metadata.as_ref(),
            ));
        }
    }
    // One TLS configuration per cluster, which some endpoints may go without.
    let mut with_tls = picked.iter().filter_map(|t| t.as_ref());
    let tls = with_tls.next().cloned();
    if with_tls.any(|t| Some(t) != tls.as_ref()) {
        return Err(ctx.err(
            "transport_socket_matches",
            "endpoints of one cluster with different TLS settings are not supported",
        ));
    }
    let mut tls = tls;
    for (i, f) in c.filters.iter().enumerate() {
        let path = format!("filters[{i}]");
        if f.name != crate::metadata_exchange::FILTER {
            return Err(ctx.err(
                &path,
                format!(
                    "{}: upstream network filters other than {} are not supported",
                    f.name,
                    crate::metadata_exchange::FILTER
                ),
            ));
        }
        let any = f
            .typed_config
            .as_ref()
            .ok_or_else(|| ctx.err(&path, "missing typed_config"))?;
        metadata_exchange(ctx, any, &path)?;
        // Without TLS there is no ALPN to offer the exchange in (Envoy's filter then
        // passes the stream through).
        if let Some(t) = tls.as_mut() {
            t.metadata_exchange = true;
        }
    }
    let mixed = tls.is_some() && picked.iter().any(|t| t.is_none());
    if mixed && discovery == tc::DiscoveryType::Dns {
        return Err(ctx.err(
            "transport_socket_matches",
            "DNS clusters with endpoints both with and without TLS are not supported",
        ));
    }
    let endpoints = endpoints
        .into_iter()
        .zip(&picked)
        .map(|((address, weight, additional), t)| {
            tc::Endpoint::with_additional(address, weight, mixed && t.is_none(), additional)
        })
        .collect();
    let defaults = tc::CircuitBreakers::default();
    let circuit_breakers = match c.circuit_breakers.as_ref().and_then(|b| {
        b.thresholds
            .iter()
            .find(|t| t.priority == core::RoutingPriority::Default as i32)
    }) {
        None => defaults,
        Some(t) => tc::CircuitBreakers {
            max_connections: t
                .max_connections
                .map(|v| v.value)
                .unwrap_or(defaults.max_connections),
            max_pending_requests: t
                .max_pending_requests
                .map(|v| v.value)
                .unwrap_or(defaults.max_pending_requests),
            max_requests: t
                .max_requests
                .map(|v| v.value)
                .unwrap_or(defaults.max_requests),
            max_retries: t
                .max_retries
                .map(|v| v.value)
                .unwrap_or(defaults.max_retries),
        },
    };
    let outlier_detection = c.outlier_detection.as_ref().map(|o| {
        let d = tc::OutlierDetection::default();
        tc::OutlierDetection {
            consecutive_5xx: o
                .consecutive_5xx
                .map(|v| v.value)
                .unwrap_or(d.consecutive_5xx),
            consecutive_gateway_failure: match o
                .enforcing_consecutive_gateway_failure
                .map(|v| v.value)
            {
                Some(0) | None => 0,
                Some(_) => o.consecutive_gateway_failure.map(|v| v.value).unwrap_or(5),
            },
            interval: dur(o.interval).unwrap_or(d.interval),
            base_ejection_time: dur(o.base_ejection_time).unwrap_or(d.base_ejection_time),
            max_ejection_time: dur(o.max_ejection_time).unwrap_or(d.max_ejection_time),
            max_ejection_percent: o
                .max_ejection_percent
                .map(|v| v.value)
                .unwrap_or(d.max_ejection_percent),
        }
    });
    #[allow(deprecated)]
    let mut http2 = c.http2_protocol_options.is_some();
    if let Some(any) = c.typed_extension_protocol_options.get(crate::HTTP_OPTIONS) {
        use uhttp::http_protocol_options::{
            explicit_http_config::ProtocolConfig, UpstreamProtocolOptions,
        };
        let o: uhttp::HttpProtocolOptions =
            ctx.decode(any, types::HTTP_OPTIONS, "typed_extension_protocol_options")?;
        http2 = matches!(
            o.upstream_protocol_options,
            Some(UpstreamProtocolOptions::ExplicitHttpConfig(e)) if matches!(e.protocol_config, Some(ProtocolConfig::Http2ProtocolOptions(_)))
        );
    }
    #[allow(deprecated)]
    let dns_refresh_rate = dur(c.dns_refresh_rate).unwrap_or(Dur::secs(5));
    let service = crate::metadata::read_service(c.metadata.as_ref()).map_err(|e| ctx.err("", e))?;
    Ok(Some(tc::Cluster {
        name: c.name,
        discovery,
        endpoints,
        lb_policy,
        connect_timeout: dur(c.connect_timeout).unwrap_or(Dur::secs(5)),
        http2,
        dns_refresh_rate,
        circuit_breakers,
        outlier_detection,
        tls,
        service,
    }))
}

/// A cluster's (or a match's) transport socket: TLS, or none for `raw_buffer`.
fn transport_socket(
    ctx: &mut Ctx,
    socket: &core::TransportSocket,
    path: &str,
) -> Result<Option<tc::UpstreamTls>, DecodeError> {
    let any = match &socket.config_type {
        Some(core::transport_socket::ConfigType::TypedConfig(a)) => a,
        None => return Err(ctx.err(path, "missing typed_config")),
    };
    if any.type_url == socket_match::RAW_BUFFER_TYPE {
        return Ok(None);
    }
    let u: tls::UpstreamTlsContext = ctx.decode(any, types::UPSTREAM_TLS, path)?;
    Ok(Some(upstream_tls(ctx, u, path)?))
}

fn version(
    ctx: &Ctx,
    v: i32,
    default: tc::TlsVersion,
    path: &str,
) -> Result<tc::TlsVersion, DecodeError> {
    use tls::tls_parameters::TlsProtocol;
    match TlsProtocol::try_from(v) {
        Ok(TlsProtocol::TlsAuto) => Ok(default),
        Ok(TlsProtocol::TlSv12) => Ok(tc::TlsVersion::V1_2),
        Ok(TlsProtocol::TlSv13) => Ok(tc::TlsVersion::V1_3),
        _ => Err(ctx.err(path, "TLS versions below 1.2 are refused")),
    }
}

fn file_name(
    ctx: &Ctx,
    d: &Option<core::DataSource>,
    path: &str,
) -> Result<Option<String>, DecodeError> {
    match d.as_ref().and_then(|d| d.specifier.as_ref()) {
        None => Ok(None),
        Some(core::data_source::Specifier::Filename(f)) => Ok(Some(f.clone())),
        Some(_) => Err(ctx.err(
            path,
            "inline key material is not accepted over xDS; use a file or SDS",
        )),
    }
}

struct CommonTls {
    certificates: Vec<tc::TlsCertificate>,
    trusted_ca: Option<String>,
    trust_bundles: Vec<tc::TrustBundle>,
    sans: Vec<(i32, m::string_matcher::MatchPattern)>,
    min: tc::TlsVersion,
    max: tc::TlsVersion,
    alpn: Vec<String>,
    cipher_suites: Vec<String>,
}

fn common_tls(
    ctx: &mut Ctx,
    c: Option<tls::CommonTlsContext>,
    path: &str,
) -> Result<CommonTls, DecodeError> {
    use tls::common_tls_context::ValidationContextType;
    let c = c.unwrap_or_default();
    let params = c.tls_params.clone().unwrap_or_default();
    // Narrowing what is negotiated and then not doing it would offer more than asked.
    for (field, set) in [
        ("ecdh_curves", !params.ecdh_curves.is_empty()),
        (
            "signature_algorithms",
            !params.signature_algorithms.is_empty(),
        ),
        (
            "compliance_policies",
            !params.compliance_policies.is_empty(),
        ),
    ] {
        if set {
            return Err(ctx.err(
                &format!("{path}.tls_params.{field}"),
                "is not supported by Trellis; refused rather than ignored",
            ));
        }
    }
    let mut out = CommonTls {
        certificates: Vec::new(),
        trusted_ca: None,
        trust_bundles: Vec::new(),
        sans: Vec::new(),
        min: version(
            ctx,
            params.tls_minimum_protocol_version,
            tc::TlsVersion::V1_2,
            &format!("{path}.tls_params"),
        )?,
        max: version(
            ctx,
            params.tls_maximum_protocol_version,
            tc::TlsVersion::V1_3,
            &format!("{path}.tls_params"),
        )?,
        alpn: c.alpn_protocols.clone(),
        cipher_suites: params.cipher_suites.clone(),
    };
    for s in &c.tls_certificate_sds_secret_configs {
        let chain = match s.name.as_str() {
            "default" => SDS_WORKLOAD_CERT.to_string(),
            other => ctx.sds_secret(other),
        };
        out.certificates.push(tc::TlsCertificate {
            certificate_chain: chain,
            private_key: None,
            private_key_provider: tc::PrivateKeyProvider::Memory,
            server_names: Vec::new(),
        });
    }
    for (i, t) in c.tls_certificates.iter().enumerate() {
        let cpath = format!("{path}.tls_certificates[{i}]");
        let chain = file_name(ctx, &t.certificate_chain, &cpath)?
            .ok_or_else(|| ctx.err(&cpath, "missing certificate_chain"))?;
        let mut key = file_name(ctx, &t.private_key, &cpath)?;
        let mut provider = tc::PrivateKeyProvider::Memory;
        if let Some(p) = &t.private_key_provider {
            let any = match &p.config_type {
                Some(tls::private_key_provider::ConfigType::TypedConfig(a)) => a,
                None => return Err(ctx.err(&cpath, "private_key_provider: missing typed_config")),
            };
            if p.provider_name != "cryptomb" {
                return Err(ctx.err(
                    &cpath,
                    format!(
                        "private key provider {:?} is not supported (cryptomb is)",
                        p.provider_name
                    ),
                ));
            }
            let json = typed_struct(ctx, any, "type.googleapis.com/envoy.extensions.private_key_providers.cryptomb.v3alpha.CryptoMbPrivateKeyMethodConfig", &cpath)?;
            key = json["private_key"]["filename"].as_str().map(str::to_string);
            let poll_delay = json["poll_delay"]
                .as_str()
                .and_then(|s| s.strip_suffix('s'))
                .and_then(|s| s.parse::<f64>().ok())
                .map(|s| Dur(Duration::from_secs_f64(s)))
                .unwrap_or(Dur::millis(1));
            provider = tc::PrivateKeyProvider::Cryptomb(tc::CryptoMb {
                poll_delay,
                fallback: json["fallback"].as_bool().unwrap_or(p.fallback),
                inline: json["inline"].as_bool().unwrap_or(true),
            });
        }
        out.certificates.push(tc::TlsCertificate {
            certificate_chain: chain,
            private_key: key,
            private_key_provider: provider,
            server_names: Vec::new(),
        });
    }
    let (validation, sds) = match c.validation_context_type {
        None => (None, None),
        Some(ValidationContextType::ValidationContext(v)) => (Some(v), None),
        Some(ValidationContextType::ValidationContextSdsSecretConfig(s)) => (None, Some(s)),
        Some(ValidationContextType::CombinedValidationContext(c)) => (
            c.default_validation_context,
            c.validation_context_sds_secret_config,
        ),
        Some(_) => return Err(ctx.err(path, "this validation context form is not supported")),
    };
    if let Some(s) = sds {
        out.trusted_ca = Some(match s.name.as_str() {
            "ROOTCA" => SDS_ROOT_CA.to_string(),
            other => ctx.sds_secret(other),
        });
    }
    if let Some(v) = validation {
        if let Some(ca) = file_name(
            ctx,
            &v.trusted_ca,
            &format!("{path}.validation_context.trusted_ca"),
        )? {
            out.trusted_ca = Some(ca);
        }
        if let Some(custom) = &v.custom_validator_config {
            let vpath = format!("{path}.validation_context.custom_validator_config");
            out.trust_bundles = spiffe_validator(ctx, custom, &vpath)?;
            if out.trusted_ca.is_some() {
                return Err(ctx.err(
                    &vpath,
                    "the SPIFFE validator takes its roots from its trust domains, not trusted_ca",
                ));
            }
        }
        // Checks a peer's certificate must also pass: ignored, they would accept
        // certificates the config refuses.
        for (field, set) in [
            (
                "verify_certificate_spki",
                !v.verify_certificate_spki.is_empty(),
            ),
            (
                "verify_certificate_hash",
                !v.verify_certificate_hash.is_empty(),
            ),
            ("crl", v.crl.is_some()),
            (
                "require_signed_certificate_timestamp",
                v.require_signed_certificate_timestamp
                    .is_some_and(|b| b.value),
            ),
            ("max_verify_depth", v.max_verify_depth.is_some()),
            (
                "ca_certificate_provider_instance",
                v.ca_certificate_provider_instance.is_some(),
            ),
        ] {
            if set {
                return Err(ctx.err(
                    &format!("{path}.validation_context.{field}"),
                    "is not supported by Trellis; refused rather than ignored",
                ));
            }
        }
        for s in v.match_typed_subject_alt_names {
            if let Some(p) = s.matcher.and_then(|m| m.match_pattern) {
                out.sans.push((s.san_type, p));
            }
        }
        // The untyped form Istio still writes (a Gateway's and a DestinationRule's
        // subjectAltNames): any SAN type. Deprecated in Envoy, but it is what arrives.
        #[allow(deprecated)]
        let untyped = v.match_subject_alt_names;
        for m in untyped {
            if let Some(p) = m.match_pattern {
                out.sans.push((0, p));
            }
        }
    }
    Ok(out)
}

/// Envoy's SPIFFE certificate validator: a trust bundle per trust domain. Any other
/// validator is refused (ignoring it would accept peers it refuses).
fn spiffe_validator(
    ctx: &Ctx,
    custom: &core::TypedExtensionConfig,
    path: &str,
) -> Result<Vec<tc::TrustBundle>, DecodeError> {
    use crate::encode::{SPIFFE_VALIDATOR, SPIFFE_VALIDATOR_TYPE};
    let any = custom
        .typed_config
        .as_ref()
        .ok_or_else(|| ctx.err(path, "missing typed_config"))?;
    if any.type_url != SPIFFE_VALIDATOR_TYPE {
        return Err(ctx.err(
            path,
            format!(
                "certificate validator {:?} ({}) is not supported ({SPIFFE_VALIDATOR} is)",
                custom.name, any.type_url
            ),
        ));
    }
    let config: tls::SpiffeCertValidatorConfig =
        ctx.decode(any, SPIFFE_VALIDATOR_TYPE, &format!("{path}.typed_config"))?;
    if config.trust_bundles.is_some() {
        return Err(ctx.err(
            &format!("{path}.typed_config.trust_bundles"),
            "a SPIFFE trust bundle map is not supported; give trust_domains",
        ));
    }
    let mut out = Vec::new();
    for (i, d) in config.trust_domains.into_iter().enumerate() {
        let dpath = format!("{path}.typed_config.trust_domains[{i}]");
        if !d.workload_trust_domain.is_empty() {
            return Err(ctx.err(
                &format!("{dpath}.workload_trust_domain"),
                "selecting trust domains by workload is not supported",
            ));
        }
        use core::data_source::Specifier;
        let roots = match d.trust_bundle.and_then(|b| b.specifier) {
            Some(Specifier::Filename(f)) => f,
            Some(Specifier::InlineString(s)) => s,
            Some(Specifier::InlineBytes(b)) => String::from_utf8(b).map_err(|_| {
                ctx.err(
                    &format!("{dpath}.trust_bundle"),
                    "inline_bytes: not UTF-8 PEM",
                )
            })?,
            _ => return Err(ctx.err(&format!("{dpath}.trust_bundle"), "missing")),
        };
        out.push(tc::TrustBundle {
            trust_domain: d.name,
            roots,
        });
    }
    if out.is_empty() {
        return Err(ctx.err(path, "the SPIFFE validator names no trust domain"));
    }
    Ok(out)
}

fn downstream_tls(
    ctx: &mut Ctx,
    d: tls::DownstreamTlsContext,
    path: &str,
) -> Result<tc::DownstreamTls, DecodeError> {
    // Ignored, it would let clients in without the SNI the config requires.
    if d.require_sni.is_some_and(|b| b.value) {
        return Err(ctx.err(
            &format!("{path}.require_sni"),
            "is not supported by Trellis; refused rather than ignored",
        ));
    }
    let c = common_tls(
        ctx,
        d.common_tls_context,
        &format!("{path}.common_tls_context"),
    )?;
    let (mut trust_domains, mut client_sans) = (Vec::new(), Vec::<String>::new());
    for (_, p) in &c.sans {
        match p {
            m::string_matcher::MatchPattern::Prefix(p) if p.starts_with("spiffe://") && p.ends_with('/') => {
                trust_domains.push(p["spiffe://".len()..p.len() - 1].to_string());
            }
            m::string_matcher::MatchPattern::Exact(name) => {
                if !client_sans.contains(name) {
                    client_sans.push(name.clone());
                }
            }
            _ => return Err(ctx.err(path, "client SAN matching is supported as SPIFFE trust-domain prefixes (spiffe://<domain>/) or exact names")),
        }
    }
    // Envoy accepts a certificate that any matcher matches; Trellis requires both.
    if !trust_domains.is_empty() && !client_sans.is_empty() {
        return Err(ctx.err(
            path,
            "client SAN matchers mix trust-domain prefixes and exact names; Trellis cannot accept either one alone",
        ));
    }
    let mtls_off = c.trusted_ca.is_none() && c.trust_bundles.is_empty();
    if mtls_off {
        // Without client verification these settings are unused; keep the defaults.
        trust_domains = vec!["cluster.local".into()];
    } else if !c.trust_bundles.is_empty() {
        // The bundles name the trust domains; the field keeps its default.
        if !trust_domains.is_empty() {
            return Err(ctx.err(
                path,
                "with the SPIFFE validator the trust domains are its own; no client SAN matching",
            ));
        }
        trust_domains = vec!["cluster.local".into()];
    } else if trust_domains.is_empty() {
        trust_domains.push("*".into());
    }
    let stateless_off = matches!(
        d.session_ticket_keys_type,
        Some(
            tls::downstream_tls_context::SessionTicketKeysType::DisableStatelessSessionResumption(
                true
            )
        )
    );
    Ok(tc::DownstreamTls {
        mode: tc::TlsMode::Strict,
        certificates: c.certificates,
        alpn: (!c.alpn.is_empty()).then_some(c.alpn),
        min_version: c.min,
        max_version: c.max,
        trusted_ca: c.trusted_ca,
        trust_bundles: c.trust_bundles,
        require_client_certificate: mtls_off
            || d.require_client_certificate
                .map(|v| v.value)
                .unwrap_or(false),
        trust_domains,
        session_resumption: !(stateless_off && d.disable_stateful_session_resumption),
        handshake_timeout: Dur::secs(10),
        cipher_suites: c.cipher_suites,
        client_sans,
        // Set by the chain's `istio.metadata_exchange` filter.
        metadata_exchange: false,
    })
}

fn upstream_tls(
    ctx: &mut Ctx,
    u: tls::UpstreamTlsContext,
    path: &str,
) -> Result<tc::UpstreamTls, DecodeError> {
    let c = common_tls(
        ctx,
        u.common_tls_context,
        &format!("{path}.common_tls_context"),
    )?;
    let match_identities = c
        .sans
        .iter()
        .map(|(_, p)| match p {
            m::string_matcher::MatchPattern::Exact(v) => Ok(v.clone()),
            _ => Err(ctx.err(path, "server SAN matching is supported as exact identities")),
        })
        .collect::<Result<_, _>>()?;
    if !c.cipher_suites.is_empty() {
        return Err(ctx.err(
            &format!("{path}.common_tls_context.tls_params.cipher_suites"),
            "restricting an upstream's cipher suites is not supported by Trellis; refused rather than ignored",
        ));
    }
    if c.certificates.len() > 1 {
        return Err(ctx.err(path, "one client certificate per cluster"));
    }
    if c.trusted_ca.is_none() && c.trust_bundles.is_empty() {
        return Err(ctx.err(
            path,
            "upstream TLS needs trusted roots (a file, the ROOTCA secret or the SPIFFE validator)",
        ));
    }
    Ok(tc::UpstreamTls {
        trusted_ca: c.trusted_ca.unwrap_or_default(),
        trust_bundles: c.trust_bundles,
        certificate: c.certificates.into_iter().next(),
        sni: (!u.sni.is_empty()).then_some(u.sni),
        match_identities,
        min_version: c.min,
        max_version: c.max,
        // Set by the cluster's `istio.metadata_exchange` filter.
        metadata_exchange: false,
    })
}
