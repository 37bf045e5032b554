//! Trellis config → Envoy resources.

use std::collections::HashMap;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3 as cl;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3 as ep;
use envoy_types::pb::envoy::config::listener::v3 as lis;
use envoy_types::pb::envoy::config::route::v3 as rt;
use envoy_types::pb::envoy::extensions::filters::common::fault::v3 as cfault;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3 as cors;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3 as fault;
use envoy_types::pb::envoy::extensions::filters::http::router::v3 as router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3 as tcp;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::envoy::extensions::upstreams::http::v3 as uhttp;
use envoy_types::pb::envoy::r#type::matcher::v3 as m;
use envoy_types::pb::envoy::r#type::v3 as ty;
use envoy_types::pb::google::protobuf::{Any, BoolValue, Duration as PDuration, UInt32Value};
use trellis_config::{self as tc, Config};

use crate::{any, structs, types};

/// The Envoy resources of one proxy's config.
#[derive(Clone, Default, PartialEq)]
pub struct Resources {
    pub listeners: Vec<lis::Listener>,
    pub routes: Vec<rt::RouteConfiguration>,
    pub clusters: Vec<cl::Cluster>,
    pub endpoints: Vec<ep::ClusterLoadAssignment>,
    /// SDS secrets (a gateway's credentials), key material inline.
    pub secrets: Vec<tls::Secret>,
}

/// Never prints key material: the secrets by name only.
impl std::fmt::Debug for Resources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resources")
            .field("listeners", &self.listeners)
            .field("routes", &self.routes)
            .field("clusters", &self.clusters)
            .field("endpoints", &self.endpoints)
            .field(
                "secrets",
                &self.secrets.iter().map(|s| &s.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct EncodeError {
    pub path: String,
    pub message: String,
}

fn err(path: impl Into<String>, message: impl Into<String>) -> EncodeError {
    EncodeError {
        path: path.into(),
        message: message.into(),
    }
}

/// Encodes the listeners and clusters of `config` (admin, limits and identity stay
/// with the proxy's bootstrap file).
pub fn encode(config: &Config) -> Result<Resources, EncodeError> {
    let mut out = Resources::default();
    for (i, l) in config.listeners.iter().enumerate() {
        let path = format!("listeners[{i}] ({})", l.name);
        out.listeners.push(listener(l, &path)?);
        if let Some(h) = &l.http {
            out.routes.push(route_configuration(&l.name, h, &path)?);
        }
    }
    for (i, c) in config.clusters.iter().enumerate() {
        let path = format!("clusters[{i}] ({})", c.name);
        let (cluster, endpoints) = cluster(c, &path)?;
        out.clusters.push(cluster);
        out.endpoints.extend(endpoints);
    }
    out.secrets = config.secrets.iter().map(secret).collect();
    Ok(out)
}

pub(crate) fn ads() -> core::ConfigSource {
    core::ConfigSource {
        resource_api_version: core::ApiVersion::V3 as i32,
        config_source_specifier: Some(core::config_source::ConfigSourceSpecifier::Ads(
            core::AggregatedConfigSource {},
        )),
        ..Default::default()
    }
}

pub(crate) fn duration(d: Duration) -> PDuration {
    PDuration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

fn u32v(v: u32) -> Option<UInt32Value> {
    Some(UInt32Value { value: v })
}

/// `percent` (0..=100, fractional) as parts per million.
fn fraction(percent: f64) -> ty::FractionalPercent {
    ty::FractionalPercent {
        numerator: (percent * 10_000.0).round() as u32,
        denominator: ty::fractional_percent::DenominatorType::Million as i32,
    }
}

pub(crate) fn socket_address(addr: &str, path: &str) -> Result<core::Address, EncodeError> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| err(path, format!("{addr:?} is not host:port")))?;
    let port: u32 = port
        .parse()
        .map_err(|_| err(path, format!("{addr:?}: bad port")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok(core::Address {
        address: Some(core::address::Address::SocketAddress(core::SocketAddress {
            address: host.to_string(),
            port_specifier: Some(core::socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    })
}

fn typed_struct(type_url: &str, json: serde_json::Value) -> Any {
    structs::typed_struct(type_url, &json)
}

/// One listener alone (an HTTP listener's routes are its RouteConfiguration, encoded
/// separately by [`encode_routes`]).
pub fn encode_listener(l: &tc::Listener) -> Result<lis::Listener, EncodeError> {
    listener(l, &format!("listener {}", l.name))
}

/// The RouteConfiguration of an HTTP listener.
pub fn encode_routes(l: &tc::Listener) -> Result<Option<rt::RouteConfiguration>, EncodeError> {
    l.http
        .as_ref()
        .map(|h| route_configuration(&l.name, h, &format!("listener {}", l.name)))
        .transpose()
}

fn listener(l: &tc::Listener, path: &str) -> Result<lis::Listener, EncodeError> {
    let mut addresses = l.all_addresses();
    let first = addresses.next().ok_or_else(|| err(path, "no address"))?;
    let mut out = lis::Listener {
        name: l.name.clone(),
        address: Some(socket_address(first, path)?),
        additional_addresses: addresses
            .map(|a| {
                Ok(lis::AdditionalAddress {
                    address: Some(socket_address(a, path)?),
                    ..Default::default()
                })
            })
            .collect::<Result<_, EncodeError>>()?,
        use_original_dst: l.use_original_dst.then_some(BoolValue { value: true }),
        bind_to_port: (!l.bind_to_port).then_some(BoolValue { value: false }),
        metadata: l.istio_stats.as_ref().and_then(crate::metadata::stats),
        ..Default::default()
    };
    let authz_path = || format!("{path}.authorization");
    let (http_rbac, network_rbac) = match &l.authorization {
        Some(a) => (
            crate::rbac::http_filters(a).map_err(|e| err(authz_path(), e))?,
            crate::rbac::network_filters(a, &l.name).map_err(|e| err(authz_path(), e))?,
        ),
        None => Default::default(),
    };
    // A TCP proxy's chain: the L4 authorization first, then tcp_proxy.
    let tcp_chain = |t: &tc::TcpProxy| {
        let mut filters: Vec<lis::Filter> = network_rbac
            .iter()
            .map(|a| lis::Filter {
                name: crate::rbac::NETWORK_RBAC.into(),
                config_type: Some(lis::filter::ConfigType::TypedConfig(a.clone())),
            })
            .collect();
        filters.push(lis::Filter {
            name: crate::TCP_PROXY.into(),
            config_type: Some(lis::filter::ConfigType::TypedConfig(any(
                types::TCP_PROXY,
                &tcp_proxy(&l.name, t)?,
            ))),
        });
        Ok::<_, EncodeError>(filters)
    };
    if !l.sni_routes.is_empty() {
        sni_chains(l, &mut out, tcp_chain)?;
        return Ok(out);
    }
    let mut tcp_filters = l
        .tcp
        .as_ref()
        .map(tcp_chain)
        .transpose()?
        .unwrap_or_default();
    let mut http_filters_chain = Vec::new();
    // The exchange comes first on every chain, as istiod places it: it takes the
    // client's frame off the stream before anything reads it.
    let exchange = l.tls.as_ref().is_some_and(|t| t.metadata_exchange);
    if exchange {
        let mx = lis::Filter {
            name: crate::metadata_exchange::FILTER.into(),
            config_type: Some(lis::filter::ConfigType::TypedConfig(
                crate::metadata_exchange::config(),
            )),
        };
        if !tcp_filters.is_empty() {
            tcp_filters.insert(0, mx.clone());
        }
        http_filters_chain.push(mx);
    }
    if let Some(h) = &l.http {
        let filters = &mut http_filters_chain;
        let access_log = match &h.access_log {
            Some(a) => vec![crate::access_log::encode(a)
                .map_err(|e| err(format!("{path}.http.access_log"), e))?],
            None => Vec::new(),
        };
        let mut http_filters = Vec::new();
        if let Some(j) = &l.jwt {
            http_filters.push(hcm::HttpFilter {
                name: crate::JWT_AUTHN.into(),
                config_type: Some(hcm::http_filter::ConfigType::TypedConfig(typed_struct(
                    types::JWT_AUTHN,
                    serde_json::to_value(j).unwrap_or_default(),
                ))),
                ..Default::default()
            });
        }
        for a in http_rbac {
            http_filters.push(hcm::HttpFilter {
                name: crate::rbac::HTTP_RBAC.into(),
                config_type: Some(hcm::http_filter::ConfigType::TypedConfig(a)),
                ..Default::default()
            });
        }
        http_filters.push(hcm::HttpFilter {
            name: crate::CORS.into(),
            config_type: Some(hcm::http_filter::ConfigType::TypedConfig(any(
                types::CORS,
                &cors::Cors::default(),
            ))),
            ..Default::default()
        });
        http_filters.push(hcm::HttpFilter {
            name: crate::FAULT.into(),
            config_type: Some(hcm::http_filter::ConfigType::TypedConfig(any(
                types::FAULT,
                &fault::HttpFault::default(),
            ))),
            ..Default::default()
        });
        http_filters.push(hcm::HttpFilter {
            name: crate::ROUTER.into(),
            config_type: Some(hcm::http_filter::ConfigType::TypedConfig(any(
                types::ROUTER,
                &router::Router::default(),
            ))),
            ..Default::default()
        });
        use hcm::http_connection_manager::CodecType;
        let manager = hcm::HttpConnectionManager {
            codec_type: match h.codec {
                tc::Codec::Auto => CodecType::Auto,
                tc::Codec::Http1 => CodecType::Http1,
                tc::Codec::Http2 => CodecType::Http2,
            } as i32,
            stat_prefix: l.name.clone(),
            route_specifier: Some(hcm::http_connection_manager::RouteSpecifier::Rds(
                hcm::Rds {
                    config_source: Some(ads()),
                    route_config_name: l.name.clone(),
                },
            )),
            http_filters,
            access_log,
            tracing: h.tracing.as_ref().map(crate::trace::encode),
            ..Default::default()
        };
        if let Some(t) = &h.tracing {
            out.traffic_direction = crate::trace::direction(t.span_kind);
        }
        filters.push(lis::Filter {
            name: crate::HCM.into(),
            config_type: Some(lis::filter::ConfigType::TypedConfig(any(
                types::HCM,
                &manager,
            ))),
        });
    }
    // Protocol detection: http_inspector tells HTTP apart, and the chains are matched by
    // the application protocol it reports (Istio's shape for undeclared protocols).
    let kinds: Vec<(Vec<String>, Vec<lis::Filter>)> = match (l.http.is_some(), l.tcp.is_some()) {
        (true, true) => {
            out.listener_filters.push(lis::ListenerFilter {
                name: "envoy.filters.listener.http_inspector".into(),
                config_type: Some(lis::listener_filter::ConfigType::TypedConfig(any(
                    types::HTTP_INSPECTOR,
                    &envoy_types::pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector::default(),
                ))),
                ..Default::default()
            });
            vec![
                (
                    ["http/1.0", "http/1.1", "h2c"].map(String::from).to_vec(),
                    http_filters_chain,
                ),
                (Vec::new(), tcp_filters),
            ]
        }
        (true, false) => vec![(Vec::new(), http_filters_chain)],
        (false, true) => vec![(Vec::new(), tcp_filters)],
        (false, false) => return Err(err(path, "neither tcp nor http")),
    };
    let chain = |transport_socket,
                 transport_protocol: &str,
                 protocols: &[String],
                 filters: &[lis::Filter]| lis::FilterChain {
        filter_chain_match: (!transport_protocol.is_empty() || !protocols.is_empty()).then(|| {
            lis::FilterChainMatch {
                transport_protocol: transport_protocol.to_string(),
                application_protocols: protocols.to_vec(),
                ..Default::default()
            }
        }),
        filters: filters.to_vec(),
        transport_socket,
        transport_socket_connect_timeout: l
            .tls
            .as_ref()
            .map(|t| duration(t.handshake_timeout.get())),
        ..Default::default()
    };
    // Certificates chosen by SNI: a chain per certificate matched by its server names
    // (the default one matches the rest), the same filters on each, as Envoy and Istio
    // serve several hosts' certificates on one port.
    if let Some(t) = l.tls.as_ref().filter(|t| {
        t.certificates.len() > 1 || t.certificates.iter().any(|c| !c.server_names.is_empty())
    }) {
        if t.mode == tc::TlsMode::Permissive || kinds.len() > 1 {
            return Err(err(
                format!("{path}.tls"),
                "certificates by SNI go with STRICT TLS and one kind of traffic",
            ));
        }
        out.listener_filters.push(tls_inspector());
        for c in &t.certificates {
            let mut one = t.clone();
            one.certificates = vec![tc::TlsCertificate {
                server_names: Vec::new(),
                ..c.clone()
            }];
            let socket = core::TransportSocket {
                name: crate::TLS_SOCKET.into(),
                config_type: Some(core::transport_socket::ConfigType::TypedConfig(any(
                    types::DOWNSTREAM_TLS,
                    &downstream_tls(&one, &format!("{path}.tls"))?,
                ))),
            };
            let mut chain = chain(Some(socket), "", &kinds[0].0, &kinds[0].1);
            chain.filter_chain_match = Some(lis::FilterChainMatch {
                server_names: c.server_names.clone(),
                transport_protocol: "tls".into(),
                ..Default::default()
            });
            out.filter_chains.push(chain);
        }
        return Ok(out);
    }
    let socket = match &l.tls {
        None => None,
        Some(t) => Some(core::TransportSocket {
            name: crate::TLS_SOCKET.into(),
            config_type: Some(core::transport_socket::ConfigType::TypedConfig(any(
                types::DOWNSTREAM_TLS,
                &downstream_tls(t, &format!("{path}.tls"))?,
            ))),
        }),
    };
    for (protocols, filters) in &kinds {
        match l.tls.as_ref().map(|t| t.mode) {
            None | Some(tc::TlsMode::Strict) => {
                out.filter_chains
                    .push(chain(socket.clone(), "", protocols, filters))
            }
            Some(tc::TlsMode::Permissive) => {
                out.filter_chains
                    .push(chain(socket.clone(), "tls", protocols, filters));
                out.filter_chains
                    .push(chain(None, "raw_buffer", protocols, filters));
            }
        }
    }
    Ok(out)
}

fn tcp_proxy(stat_prefix: &str, t: &tc::TcpProxy) -> Result<tcp::TcpProxy, EncodeError> {
    use tcp::tcp_proxy::{weighted_cluster::ClusterWeight, ClusterSpecifier, WeightedCluster};
    let cluster_specifier = if t.weighted_clusters.is_empty() {
        ClusterSpecifier::Cluster(t.cluster.clone())
    } else {
        ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: t
                .weighted_clusters
                .iter()
                .map(|w| ClusterWeight {
                    name: w.name.clone(),
                    weight: w.weight,
                    ..Default::default()
                })
                .collect(),
        })
    };
    let access_log = match &t.access_log {
        Some(a) => vec![crate::access_log::encode(a)
            .map_err(|e| err(format!("listener {stat_prefix}.tcp.access_log"), e))?],
        None => Vec::new(),
    };
    Ok(tcp::TcpProxy {
        stat_prefix: stat_prefix.to_string(),
        cluster_specifier: Some(cluster_specifier),
        access_log,
        ..Default::default()
    })
}

/// Envoy's `tls_inspector` listener filter: it reads the ClientHello's SNI (and ALPN) that
/// filter chains are matched by.
fn tls_inspector() -> lis::ListenerFilter {
    lis::ListenerFilter {
        name: crate::TLS_INSPECTOR.into(),
        config_type: Some(lis::listener_filter::ConfigType::TypedConfig(any(
            types::TLS_INSPECTOR,
            &envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector::default(),
        ))),
        ..Default::default()
    }
}

/// TLS passthrough as Envoy has it: `tls_inspector` reads the SNI, one filter chain per
/// route matched by `server_names` (a route for `*` matches any TLS connection), and
/// the listener's `tcp` as the default chain.
fn sni_chains(
    l: &tc::Listener,
    out: &mut lis::Listener,
    tcp_chain: impl Fn(&tc::TcpProxy) -> Result<Vec<lis::Filter>, EncodeError>,
) -> Result<(), EncodeError> {
    out.listener_filters.push(tls_inspector());
    for r in &l.sni_routes {
        let named: Vec<String> = r
            .server_names
            .iter()
            .filter(|n| *n != "*")
            .cloned()
            .collect();
        let any_name = named.len() < r.server_names.len();
        for server_names in [named]
            .into_iter()
            .filter(|n| !n.is_empty())
            .chain(any_name.then(Vec::new))
        {
            out.filter_chains.push(lis::FilterChain {
                filter_chain_match: Some(lis::FilterChainMatch {
                    server_names,
                    transport_protocol: "tls".into(),
                    ..Default::default()
                }),
                filters: tcp_chain(&r.tcp)?,
                ..Default::default()
            });
        }
    }
    out.default_filter_chain = match &l.tcp {
        Some(t) => Some(lis::FilterChain {
            filters: tcp_chain(t)?,
            ..Default::default()
        }),
        None => None,
    };
    Ok(())
}

fn tls_version(v: tc::TlsVersion) -> i32 {
    use tls::tls_parameters::TlsProtocol;
    match v {
        tc::TlsVersion::V1_2 => TlsProtocol::TlSv12 as i32,
        tc::TlsVersion::V1_3 => TlsProtocol::TlSv13 as i32,
    }
}

fn file(path: &str) -> Option<core::DataSource> {
    Some(core::DataSource {
        specifier: Some(core::data_source::Specifier::Filename(path.to_string())),
        ..Default::default()
    })
}

/// Where a secret comes from: the identity agent's two from the node agent's socket
/// (the bootstrap's [`SDS_CLUSTER`](crate::SDS_CLUSTER)), the rest from the control
/// plane over ADS.
fn sds(name: &str) -> tls::SdsSecretConfig {
    let sds_config = match crate::from_node_agent(name) {
        true => node_agent(),
        false => ads(),
    };
    tls::SdsSecretConfig {
        name: name.to_string(),
        sds_config: Some(sds_config),
    }
}

fn node_agent() -> core::ConfigSource {
    use core::api_config_source::ApiType;
    core::ConfigSource {
        resource_api_version: core::ApiVersion::V3 as i32,
        // No timeout (Istio's): what names the secret warms when it arrives.
        initial_fetch_timeout: Some(PDuration::default()),
        config_source_specifier: Some(core::config_source::ConfigSourceSpecifier::ApiConfigSource(
            core::ApiConfigSource {
                api_type: ApiType::Grpc as i32,
                transport_api_version: core::ApiVersion::V3 as i32,
                set_node_on_first_message_only: true,
                grpc_services: vec![core::GrpcService {
                    target_specifier: Some(core::grpc_service::TargetSpecifier::EnvoyGrpc(
                        core::grpc_service::EnvoyGrpc {
                            cluster_name: crate::SDS_CLUSTER.into(),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                }],
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

fn certificates(
    certs: &[tc::TlsCertificate],
    common: &mut tls::CommonTlsContext,
    path: &str,
) -> Result<(), EncodeError> {
    if certs.len() > 1 || certs.iter().any(|c| !c.server_names.is_empty()) {
        return Err(err(
            path,
            "certificates by SNI are a filter chain each (on listeners only)",
        ));
    }
    for c in certs {
        // The workload certificate is SDS `default`; a gateway's credential its own name.
        if let Some(name) = tc::sds_name(&c.certificate_chain) {
            common.tls_certificate_sds_secret_configs.push(sds(name));
            continue;
        }
        let private_key_provider = match &c.private_key_provider {
            tc::PrivateKeyProvider::Memory => None,
            tc::PrivateKeyProvider::Cryptomb(mb) => Some(tls::PrivateKeyProvider {
                provider_name: "cryptomb".into(),
                config_type: Some(tls::private_key_provider::ConfigType::TypedConfig(typed_struct(
                    "type.googleapis.com/envoy.extensions.private_key_providers.cryptomb.v3alpha.CryptoMbPrivateKeyMethodConfig",
                    serde_json::json!({
                        "private_key": { "filename": c.private_key },
                        "poll_delay": format!("{}s", mb.poll_delay.get().as_secs_f64()),
                        "fallback": mb.fallback,
                        "inline": mb.inline,
                    }),
                ))),
                fallback: mb.fallback,
            }),
            tc::PrivateKeyProvider::Pkcs11(_) => {
                return Err(err(
                    path,
                    "the pkcs11 provider is the identity agent's; a certificate names its token key in private_key",
                ))
            }
        };
        common.tls_certificates.push(tls::TlsCertificate {
            certificate_chain: file(&c.certificate_chain),
            private_key: if private_key_provider.is_some() {
                None
            } else {
                c.private_key.as_deref().and_then(file)
            },
            private_key_provider,
            ..Default::default()
        });
    }
    Ok(())
}

fn san_matcher(
    san_type: tls::subject_alt_name_matcher::SanType,
    pattern: m::string_matcher::MatchPattern,
) -> tls::SubjectAltNameMatcher {
    tls::SubjectAltNameMatcher {
        san_type: san_type as i32,
        matcher: Some(m::StringMatcher {
            match_pattern: Some(pattern),
            ignore_case: false,
        }),
        ..Default::default()
    }
}

pub(crate) const SPIFFE_VALIDATOR: &str = "envoy.tls.cert_validator.spiffe";
pub(crate) const SPIFFE_VALIDATOR_TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig";

/// Roots from a file or the `ROOTCA` secret, or per trust domain (Envoy's SPIFFE
/// certificate validator), with SAN matchers.
fn validation(
    trusted_ca: &str,
    bundles: &[tc::TrustBundle],
    sans: Vec<tls::SubjectAltNameMatcher>,
    common: &mut tls::CommonTlsContext,
) {
    use prost::Message as _;
    use tls::common_tls_context::ValidationContextType;
    if !bundles.is_empty() {
        let config = tls::SpiffeCertValidatorConfig {
            trust_domains: bundles
                .iter()
                .map(|b| tls::spiffe_cert_validator_config::TrustDomain {
                    name: b.trust_domain.clone(),
                    trust_bundle: Some(core::DataSource {
                        specifier: Some(if b.is_inline() {
                            core::data_source::Specifier::InlineString(b.roots.clone())
                        } else {
                            core::data_source::Specifier::Filename(b.roots.clone())
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
            trust_bundles: None,
        };
        common.validation_context_type = Some(ValidationContextType::ValidationContext(
            tls::CertificateValidationContext {
                custom_validator_config: Some(core::TypedExtensionConfig {
                    name: SPIFFE_VALIDATOR.into(),
                    typed_config: Some(Any {
                        type_url: SPIFFE_VALIDATOR_TYPE.into(),
                        value: config.encode_to_vec(),
                    }),
                }),
                match_typed_subject_alt_names: sans,
                ..Default::default()
            },
        ));
        return;
    }
    common.validation_context_type = Some(if let Some(name) = tc::sds_name(trusted_ca) {
        ValidationContextType::CombinedValidationContext(
            tls::common_tls_context::CombinedCertificateValidationContext {
                default_validation_context: Some(tls::CertificateValidationContext {
                    match_typed_subject_alt_names: sans,
                    ..Default::default()
                }),
                validation_context_sds_secret_config: Some(sds(name)),
                ..Default::default()
            },
        )
    } else {
        ValidationContextType::ValidationContext(tls::CertificateValidationContext {
            trusted_ca: file(trusted_ca),
            match_typed_subject_alt_names: sans,
            ..Default::default()
        })
    });
}

fn downstream_tls(
    t: &tc::DownstreamTls,
    path: &str,
) -> Result<tls::DownstreamTlsContext, EncodeError> {
    let mut common = tls::CommonTlsContext {
        tls_params: Some(tls::TlsParameters {
            tls_minimum_protocol_version: tls_version(t.min_version),
            tls_maximum_protocol_version: tls_version(t.max_version),
            cipher_suites: t.cipher_suites.clone(),
            ..Default::default()
        }),
        alpn_protocols: match t.metadata_exchange {
            true => std::iter::once(crate::metadata_exchange::ALPN.to_string())
                .chain(t.alpn.iter().flatten().cloned())
                .collect(),
            false => t.alpn.clone().unwrap_or_default(),
        },
        ..Default::default()
    };
    certificates(
        &t.certificates,
        &mut common,
        &format!("{path}.certificates"),
    )?;
    // Client names as Istio writes a Gateway's subjectAltNames: each exact, as a URI and
    // as a DNS SAN. Envoy accepts a certificate that any matcher matches, so names and
    // trust domains together (both required) have no Envoy form.
    use tls::subject_alt_name_matcher::SanType;
    let names: Vec<_> = (t.client_sans.iter())
        .flat_map(|n| {
            [SanType::Uri, SanType::Dns]
                .map(|ty| san_matcher(ty, m::string_matcher::MatchPattern::Exact(n.clone())))
        })
        .collect();
    let domains = t.trust_domains.iter().any(|d| d.as_str() != "*");
    if !names.is_empty() && (domains && t.trust_bundles.is_empty()) {
        return Err(err(
            format!("{path}.client_sans"),
            "client names beside trust domains have no Envoy form (Envoy accepts either)",
        ));
    }
    if !t.trust_bundles.is_empty() {
        validation("", &t.trust_bundles, names, &mut common);
    } else if let Some(ca) = &t.trusted_ca {
        // Trust domains as Istio writes them: a URI SAN prefix per domain.
        let mut sans: Vec<_> = t
            .trust_domains
            .iter()
            .filter(|d| d.as_str() != "*")
            .map(|d| {
                san_matcher(
                    SanType::Uri,
                    m::string_matcher::MatchPattern::Prefix(format!("spiffe://{d}/")),
                )
            })
            .collect();
        sans.extend(names);
        validation(ca, &[], sans, &mut common);
    }
    let mutual = t.trusted_ca.is_some() || !t.trust_bundles.is_empty();
    Ok(tls::DownstreamTlsContext {
        common_tls_context: Some(common),
        require_client_certificate: Some(BoolValue {
            value: mutual && t.require_client_certificate,
        }),
        session_ticket_keys_type: (!t.session_resumption).then_some(
            tls::downstream_tls_context::SessionTicketKeysType::DisableStatelessSessionResumption(
                true,
            ),
        ),
        disable_stateful_session_resumption: !t.session_resumption,
        ..Default::default()
    })
}

fn upstream_tls(
    t: &tc::UpstreamTls,
    http2: bool,
    path: &str,
) -> Result<tls::UpstreamTlsContext, EncodeError> {
    let mut common = tls::CommonTlsContext {
        tls_params: Some(tls::TlsParameters {
            tls_minimum_protocol_version: tls_version(t.min_version),
            tls_maximum_protocol_version: tls_version(t.max_version),
            ..Default::default()
        }),
        alpn_protocols: match t.metadata_exchange {
            true => crate::metadata_exchange::upstream_alpn(http2),
            false => Vec::new(),
        },
        ..Default::default()
    };
    certificates(
        t.certificate.as_slice(),
        &mut common,
        &format!("{path}.certificate"),
    )?;
    let sans = t
        .match_identities
        .iter()
        .map(|id| {
            let kind = if id.contains("://") {
                tls::subject_alt_name_matcher::SanType::Uri
            } else {
                tls::subject_alt_name_matcher::SanType::Dns
            };
            san_matcher(kind, m::string_matcher::MatchPattern::Exact(id.clone()))
        })
        .collect();
    validation(&t.trusted_ca, &t.trust_bundles, sans, &mut common);
    Ok(tls::UpstreamTlsContext {
        common_tls_context: Some(common),
        sni: t.sni.clone().unwrap_or_default(),
        ..Default::default()
    })
}

fn route_configuration(
    name: &str,
    h: &tc::HttpManager,
    path: &str,
) -> Result<rt::RouteConfiguration, EncodeError> {
    let virtual_hosts = h
        .virtual_hosts
        .iter()
        .enumerate()
        .map(|(i, v)| virtual_host(v, &format!("{path}.http.virtual_hosts[{i}]")))
        .collect::<Result<_, _>>()?;
    // Our proxy falls back to the host without its port when no domain matches the
    // authority as sent. Envoy does so only when told to, and then always; telling it is
    // the same behaviour as long as no domain names a port.
    let ignore_port_in_host_matching = !h
        .virtual_hosts
        .iter()
        .flat_map(|v| &v.domains)
        .any(|d| names_port(d));
    Ok(rt::RouteConfiguration {
        name: name.to_string(),
        virtual_hosts,
        ignore_port_in_host_matching,
        ..Default::default()
    })
}

/// `api:8080`, `[::1]:80`, `api:*` name a port; `api`, `[::1]`, `*` do not. An IPv6
/// address without brackets counts as naming one, which only keeps Envoy strict.
fn names_port(domain: &str) -> bool {
    let after_host = match domain.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map_or("", |(_, tail)| tail),
        None => domain,
    };
    after_host.contains(':')
}

fn header_values(values: &[tc::HeaderValue]) -> Vec<core::HeaderValueOption> {
    use core::header_value_option::HeaderAppendAction;
    values
        .iter()
        .map(|h| core::HeaderValueOption {
            header: Some(core::HeaderValue {
                key: h.name.clone(),
                value: h.value.clone(),
                ..Default::default()
            }),
            append_action: if h.append {
                HeaderAppendAction::AppendIfExistsOrAdd
            } else {
                HeaderAppendAction::OverwriteIfExistsOrAdd
            } as i32,
            ..Default::default()
        })
        .collect()
}

fn virtual_host(v: &tc::VirtualHost, path: &str) -> Result<rt::VirtualHost, EncodeError> {
    Ok(rt::VirtualHost {
        name: v.name.clone(),
        domains: v.domains.clone(),
        routes: v
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| route(r, &format!("{path}.routes[{i}]")))
            .collect::<Result<_, _>>()?,
        request_headers_to_add: header_values(&v.request_headers_to_add),
        request_headers_to_remove: v.request_headers_to_remove.clone(),
        response_headers_to_add: header_values(&v.response_headers_to_add),
        response_headers_to_remove: v.response_headers_to_remove.clone(),
        ..Default::default()
    })
}

fn string_matcher(h: &tc::HeaderMatcher) -> Option<m::StringMatcher> {
    use m::string_matcher::MatchPattern;
    let pattern = if let Some(v) = &h.exact {
        MatchPattern::Exact(v.clone())
    } else if let Some(v) = &h.prefix {
        MatchPattern::Prefix(v.clone())
    } else if let Some(v) = &h.suffix {
        MatchPattern::Suffix(v.clone())
    } else if let Some(v) = &h.regex {
        MatchPattern::SafeRegex(m::RegexMatcher {
            regex: v.clone(),
            ..Default::default()
        })
    } else {
        return None;
    };
    Some(m::StringMatcher {
        match_pattern: Some(pattern),
        ignore_case: false,
    })
}

fn header_matcher(h: &tc::HeaderMatcher) -> rt::HeaderMatcher {
    use rt::header_matcher::HeaderMatchSpecifier;
    let (spec, invert) = match (string_matcher(h), h.present) {
        (Some(s), _) => (HeaderMatchSpecifier::StringMatch(s), h.invert),
        // Absent is "present" inverted, as Envoy spells it.
        (None, Some(false)) => (HeaderMatchSpecifier::PresentMatch(true), !h.invert),
        (None, _) => (HeaderMatchSpecifier::PresentMatch(true), h.invert),
    };
    rt::HeaderMatcher {
        name: h.name.clone(),
        header_match_specifier: Some(spec),
        invert_match: invert,
        ..Default::default()
    }
}

fn route(r: &tc::Route, path: &str) -> Result<rt::Route, EncodeError> {
    let mm = &r.matches;
    use rt::route_match::PathSpecifier;
    let path_specifier = if let Some(p) = &mm.path {
        PathSpecifier::Path(p.clone())
    } else if let Some(re) = &mm.regex {
        PathSpecifier::SafeRegex(m::RegexMatcher {
            regex: re.clone(),
            ..Default::default()
        })
    } else {
        PathSpecifier::Prefix(mm.prefix.clone().unwrap_or_else(|| "/".into()))
    };
    let mut headers: Vec<rt::HeaderMatcher> = mm.headers.iter().map(header_matcher).collect();
    if !mm.methods.is_empty() {
        // Methods as Envoy matches them: the :method pseudo-header.
        headers.push(header_matcher(&tc::HeaderMatcher {
            name: ":method".into(),
            regex: Some(mm.methods.join("|")),
            ..Default::default()
        }));
    }
    let query_parameters = mm
        .query_params
        .iter()
        .enumerate()
        .map(|(i, q)| {
            use rt::query_parameter_matcher::QueryParameterMatchSpecifier;
            if q.invert || q.present == Some(false) {
                return Err(err(
                    format!("{path}.match.query_params[{i}]"),
                    "Envoy query parameter matchers cannot be inverted or require absence",
                ));
            }
            Ok(rt::QueryParameterMatcher {
                name: q.name.clone(),
                query_parameter_match_specifier: Some(match string_matcher(q) {
                    Some(s) => QueryParameterMatchSpecifier::StringMatch(s),
                    None => QueryParameterMatchSpecifier::PresentMatch(true),
                }),
            })
        })
        .collect::<Result<_, _>>()?;
    let matcher = rt::RouteMatch {
        path_specifier: Some(path_specifier),
        case_sensitive: mm.ignore_case.then_some(BoolValue { value: false }),
        headers,
        query_parameters,
        ..Default::default()
    };
    let action = if let Some(a) = &r.route {
        rt::route::Action::Route(route_action(a))
    } else if let Some(d) = &r.redirect {
        use rt::redirect_action::{
            PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier,
        };
        let code = match d.response_code {
            301 => RedirectResponseCode::MovedPermanently,
            302 => RedirectResponseCode::Found,
            303 => RedirectResponseCode::SeeOther,
            307 => RedirectResponseCode::TemporaryRedirect,
            308 => RedirectResponseCode::PermanentRedirect,
            other => {
                return Err(err(
                    format!("{path}.redirect.response_code"),
                    format!("{other} is not a redirect code Envoy has"),
                ))
            }
        };
        rt::route::Action::Redirect(rt::RedirectAction {
            host_redirect: d.host.clone().unwrap_or_default(),
            port_redirect: d.port.map(u32::from).unwrap_or(0),
            response_code: code as i32,
            strip_query: d.strip_query,
            scheme_rewrite_specifier: d.scheme.clone().map(SchemeRewriteSpecifier::SchemeRedirect),
            path_rewrite_specifier: d
                .path
                .clone()
                .map(PathRewriteSpecifier::PathRedirect)
                .or_else(|| {
                    d.prefix_rewrite
                        .clone()
                        .map(PathRewriteSpecifier::PrefixRewrite)
                }),
        })
    } else if let Some(d) = &r.direct_response {
        rt::route::Action::DirectResponse(rt::DirectResponseAction {
            status: u32::from(d.status),
            body: Some(core::DataSource {
                specifier: Some(core::data_source::Specifier::InlineString(d.body.clone())),
                ..Default::default()
            }),
            ..Default::default()
        })
    } else {
        return Err(err(path, "no route, redirect or direct_response"));
    };
    let mut typed_per_filter_config = HashMap::new();
    if let Some(f) = &r.fault {
        let config = fault::HttpFault {
            delay: f.delay.as_ref().map(|d| cfault::FaultDelay {
                fault_delay_secifier: Some(cfault::fault_delay::FaultDelaySecifier::FixedDelay(
                    duration(d.fixed.get()),
                )),
                percentage: Some(fraction(d.percent)),
            }),
            abort: f.abort.as_ref().map(|a| fault::FaultAbort {
                error_type: Some(fault::fault_abort::ErrorType::HttpStatus(u32::from(
                    a.status,
                ))),
                percentage: Some(fraction(a.percent)),
                ..Default::default()
            }),
            ..Default::default()
        };
        typed_per_filter_config.insert(crate::FAULT.to_string(), any(types::FAULT, &config));
    }
    if let Some(c) = &r.cors {
        let policy = cors::CorsPolicy {
            allow_origin_string_match: c
                .allow_origins
                .iter()
                .filter_map(|o| string_matcher(&o.on_header("origin")))
                .collect(),
            allow_methods: c.allow_methods.join(","),
            allow_headers: c.allow_headers.join(","),
            expose_headers: c.expose_headers.join(","),
            max_age: c
                .max_age
                .map(|d| d.get().as_secs().to_string())
                .unwrap_or_default(),
            allow_credentials: c.allow_credentials.then_some(BoolValue { value: true }),
            forward_not_matching_preflights: Some(BoolValue {
                value: c.forward_unmatched_preflights,
            }),
            ..Default::default()
        };
        typed_per_filter_config.insert(crate::CORS.to_string(), any(types::CORS_POLICY, &policy));
    }
    Ok(rt::Route {
        name: r.name.clone().unwrap_or_default(),
        r#match: Some(matcher),
        action: Some(action),
        typed_per_filter_config,
        request_headers_to_add: header_values(&r.request_headers_to_add),
        request_headers_to_remove: r.request_headers_to_remove.clone(),
        response_headers_to_add: header_values(&r.response_headers_to_add),
        response_headers_to_remove: r.response_headers_to_remove.clone(),
        decorator: r.operation.as_ref().map(|o| rt::Decorator {
            operation: o.clone(),
            propagate: None,
        }),
        ..Default::default()
    })
}

fn route_action(a: &tc::RouteAction) -> rt::RouteAction {
    use rt::route_action::{ClusterSpecifier, HostRewriteSpecifier};
    let cluster_specifier = if let Some(c) = &a.cluster {
        Some(ClusterSpecifier::Cluster(c.clone()))
    } else {
        Some(ClusterSpecifier::WeightedClusters(rt::WeightedCluster {
            clusters: a
                .weighted_clusters
                .iter()
                .map(|w| rt::weighted_cluster::ClusterWeight {
                    name: w.name.clone(),
                    weight: u32v(w.weight),
                    request_headers_to_add: header_values(&w.request_headers_to_add),
                    request_headers_to_remove: w.request_headers_to_remove.clone(),
                    response_headers_to_add: header_values(&w.response_headers_to_add),
                    response_headers_to_remove: w.response_headers_to_remove.clone(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }))
    };
    rt::RouteAction {
        cluster_specifier,
        prefix_rewrite: a.prefix_rewrite.clone().unwrap_or_default(),
        regex_rewrite: a
            .regex_rewrite
            .as_ref()
            .map(|r| m::RegexMatchAndSubstitute {
                pattern: Some(m::RegexMatcher {
                    regex: r.pattern.clone(),
                    ..Default::default()
                }),
                substitution: r.substitution.clone(),
            }),
        host_rewrite_specifier: a
            .host_rewrite
            .clone()
            .map(HostRewriteSpecifier::HostRewriteLiteral),
        timeout: Some(duration(a.timeout.get())),
        retry_policy: a.retry_policy.as_ref().map(|p| rt::RetryPolicy {
            retry_on: p.retry_on.clone(),
            num_retries: u32v(p.num_retries),
            per_try_timeout: p.per_try_timeout.map(|d| duration(d.get())),
            retriable_status_codes: p
                .retriable_status_codes
                .iter()
                .map(|&c| u32::from(c))
                .collect(),
            ..Default::default()
        }),
        request_mirror_policies: a
            .request_mirror
            .iter()
            .map(|mirror| rt::route_action::RequestMirrorPolicy {
                cluster: mirror.cluster.clone(),
                runtime_fraction: Some(core::RuntimeFractionalPercent {
                    default_value: Some(fraction(mirror.percent)),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect(),
        hash_policy: a
            .hash_policy
            .iter()
            .map(|h| {
                use rt::route_action::hash_policy::{
                    ConnectionProperties, Header, PolicySpecifier,
                };
                rt::route_action::HashPolicy {
                    policy_specifier: Some(match &h.header {
                        Some(name) => PolicySpecifier::Header(Header {
                            header_name: name.clone(),
                            ..Default::default()
                        }),
                        None => PolicySpecifier::ConnectionProperties(ConnectionProperties {
                            source_ip: h.source_ip,
                        }),
                    }),
                    ..Default::default()
                }
            })
            .collect(),
        ..Default::default()
    }
}

fn cluster(
    c: &tc::Cluster,
    path: &str,
) -> Result<(cl::Cluster, Option<ep::ClusterLoadAssignment>), EncodeError> {
    use cl::cluster::{ClusterDiscoveryType, DiscoveryType, LbPolicy};
    let assignment = ep::ClusterLoadAssignment {
        cluster_name: c.name.clone(),
        endpoints: vec![ep::LocalityLbEndpoints {
            lb_endpoints: c
                .endpoints
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    Ok(ep::LbEndpoint {
                        host_identifier: Some(ep::lb_endpoint::HostIdentifier::Endpoint(
                            ep::Endpoint {
                                address: Some(socket_address(
                                    e.address(),
                                    &format!("{path}.endpoints[{i}]"),
                                )?),
                                additional_addresses: e
                                    .additional_addresses()
                                    .iter()
                                    .map(|a| {
                                        Ok(ep::endpoint::AdditionalAddress {
                                            address: Some(socket_address(
                                                a,
                                                &format!("{path}.endpoints[{i}]"),
                                            )?),
                                        })
                                    })
                                    .collect::<Result<_, EncodeError>>()?,
                                ..Default::default()
                            },
                        )),
                        // 1 is the default (Envoy, gRPC); written out it would be 4 of
                        // an endpoint's ~30 bytes.
                        load_balancing_weight: (e.weight() != 1)
                            .then(|| UInt32Value { value: e.weight() }),
                        metadata: e.plaintext().then(crate::socket_match::plaintext_metadata),
                        ..Default::default()
                    })
                })
                .collect::<Result<_, EncodeError>>()?,
            // gRPC's xDS client needs a locality and skips those without a weight.
            locality: Some(core::Locality::default()),
            load_balancing_weight: u32v(1),
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut out = cl::Cluster {
        name: c.name.clone(),
        metadata: c.service.as_ref().and_then(crate::metadata::service),
        lb_policy: match c.lb_policy {
            tc::LbPolicy::RoundRobin => LbPolicy::RoundRobin,
            tc::LbPolicy::LeastRequest => LbPolicy::LeastRequest,
            tc::LbPolicy::Random => LbPolicy::Random,
            tc::LbPolicy::RingHash => LbPolicy::RingHash,
            tc::LbPolicy::Maglev => LbPolicy::Maglev,
        } as i32,
        connect_timeout: Some(duration(c.connect_timeout.get())),
        circuit_breakers: Some(cl::CircuitBreakers {
            thresholds: vec![cl::circuit_breakers::Thresholds {
                max_connections: u32v(c.circuit_breakers.max_connections),
                max_pending_requests: u32v(c.circuit_breakers.max_pending_requests),
                max_requests: u32v(c.circuit_breakers.max_requests),
                max_retries: u32v(c.circuit_breakers.max_retries),
                ..Default::default()
            }],
            ..Default::default()
        }),
        outlier_detection: c.outlier_detection.as_ref().map(|o| cl::OutlierDetection {
            consecutive_5xx: u32v(o.consecutive_5xx),
            consecutive_gateway_failure: u32v(o.consecutive_gateway_failure),
            enforcing_consecutive_gateway_failure: u32v(if o.consecutive_gateway_failure > 0 {
                100
            } else {
                0
            }),
            interval: Some(duration(o.interval.get())),
            base_ejection_time: Some(duration(o.base_ejection_time.get())),
            max_ejection_time: Some(duration(o.max_ejection_time.get())),
            max_ejection_percent: u32v(o.max_ejection_percent),
            ..Default::default()
        }),
        ..Default::default()
    };
    if c.http2 {
        let options = uhttp::HttpProtocolOptions {
            upstream_protocol_options: Some(
                uhttp::http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                    uhttp::http_protocol_options::ExplicitHttpConfig {
                        protocol_config: Some(
                            uhttp::http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                                Default::default(),
                            ),
                        ),
                    },
                ),
            ),
            ..Default::default()
        };
        out.typed_extension_protocol_options.insert(
            crate::HTTP_OPTIONS.into(),
            any(types::HTTP_OPTIONS, &options),
        );
    }
    if let Some(t) = &c.tls {
        out.transport_socket = Some(core::TransportSocket {
            name: crate::TLS_SOCKET.into(),
            config_type: Some(core::transport_socket::ConfigType::TypedConfig(any(
                types::UPSTREAM_TLS,
                &upstream_tls(t, c.http2, &format!("{path}.tls"))?,
            ))),
        });
        if t.metadata_exchange {
            out.filters.push(cl::Filter {
                name: crate::metadata_exchange::FILTER.into(),
                typed_config: Some(crate::metadata_exchange::config()),
                ..Default::default()
            });
        }
        if c.endpoints.iter().any(tc::Endpoint::plaintext) {
            out.transport_socket_matches = vec![crate::socket_match::plaintext_match()];
        }
    }
    match c.discovery {
        tc::DiscoveryType::Static => {
            out.cluster_discovery_type =
                Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32));
            out.eds_cluster_config = Some(cl::cluster::EdsClusterConfig {
                eds_config: Some(ads()),
                service_name: String::new(),
            });
            Ok((out, Some(assignment)))
        }
        tc::DiscoveryType::Dns => {
            out.cluster_discovery_type =
                Some(ClusterDiscoveryType::Type(DiscoveryType::StrictDns as i32));
            #[allow(deprecated)] // Still what Envoy's STRICT_DNS clusters read.
            {
                out.dns_refresh_rate = Some(duration(c.dns_refresh_rate.get()));
            }
            out.load_assignment = Some(assignment);
            Ok((out, None))
        }
        tc::DiscoveryType::OriginalDst => {
            out.cluster_discovery_type = Some(ClusterDiscoveryType::Type(
                DiscoveryType::OriginalDst as i32,
            ));
            out.lb_policy = LbPolicy::ClusterProvided as i32;
            Ok((out, None))
        }
    }
}

/// The view of a proxyless gRPC client (`xds:///<host>:<port>`): for each virtual host
/// of the HTTP listeners, one API listener per `host:port` name with its own route
/// configuration, and the clusters. A cluster of the mesh's mutual TLS gets it in gRPC's
/// form (xDS credentials, gRPC A29): the certificate and roots of the client's
/// certificate provider instance `default` (a `file_watcher` in its bootstrap), as
/// Istio's proxyless view does; its endpoints without a sidecar are left out, as the
/// per-endpoint plaintext exception has no gRPC form. A client without xDS credentials
/// connects in plaintext, which a STRICT workload refuses.
///
/// A gRPC client looks a listener up by the target as written and does not strip its
/// port, so a domain without a port is given the port of its virtual host, which a
/// generated view names `host:port`.
pub fn encode_proxyless(config: &Config) -> Result<Resources, EncodeError> {
    let mut out = Resources::default();
    let mut named = std::collections::HashSet::new();
    for l in &config.listeners {
        let Some(h) = &l.http else { continue };
        for (i, v) in h.virtual_hosts.iter().enumerate() {
            let path = format!("listeners {}: virtual_hosts[{i}]", l.name);
            let port = v
                .name
                .rsplit_once(':')
                .map(|(_, p)| p)
                .filter(|p| p.parse::<u16>().is_ok());
            let targets = v
                .domains
                .iter()
                .filter_map(|d| match (names_port(d), port) {
                    (true, _) => Some(d.clone()),
                    (false, Some(p)) if !d.contains('*') => Some(format!("{d}:{p}")),
                    (false, _) => None,
                });
            for d in targets.filter(|d| named.insert(d.clone())) {
                let mut vh = virtual_host(v, &path)?;
                vh.domains = vec![d.clone()];
                out.routes.push(rt::RouteConfiguration {
                    name: d.clone(),
                    virtual_hosts: vec![vh],
                    ..Default::default()
                });
                let manager = hcm::HttpConnectionManager {
                    stat_prefix: d.clone(),
                    route_specifier: Some(hcm::http_connection_manager::RouteSpecifier::Rds(
                        hcm::Rds {
                            config_source: Some(ads()),
                            route_config_name: d.clone(),
                        },
                    )),
                    http_filters: vec![hcm::HttpFilter {
                        name: crate::ROUTER.into(),
                        config_type: Some(hcm::http_filter::ConfigType::TypedConfig(any(
                            types::ROUTER,
                            &router::Router::default(),
                        ))),
                        ..Default::default()
                    }],
                    ..Default::default()
                };
                out.listeners.push(lis::Listener {
                    name: d.clone(),
                    api_listener: Some(lis::ApiListener {
                        api_listener: Some(any(types::HCM, &manager)),
                    }),
                    ..Default::default()
                });
            }
        }
    }
    for (i, c) in config.clusters.iter().enumerate() {
        let mut c = c.clone();
        // The mesh's mutual TLS: the workload's own certificate, which the client's
        // certificate provider stands in for.
        let mesh_tls = c.tls.take().filter(|t| {
            t.certificate
                .as_ref()
                .is_some_and(|c| c.certificate_chain == tc::SDS_WORKLOAD_CERT)
        });
        if mesh_tls.is_some() {
            c.endpoints.retain(|e| !e.plaintext());
        }
        let path = format!("clusters[{i}] ({})", c.name);
        let (mut cluster, endpoints) = cluster(&c, &path)?;
        if let Some(t) = &mesh_tls {
            cluster.transport_socket = Some(core::TransportSocket {
                name: crate::TLS_SOCKET.into(),
                config_type: Some(core::transport_socket::ConfigType::TypedConfig(any(
                    types::UPSTREAM_TLS,
                    &grpc_mesh_tls(t),
                ))),
            });
        }
        out.clusters.push(cluster);
        out.endpoints.extend(endpoints);
    }
    Ok(out)
}

/// The mesh's mutual TLS as gRPC's xDS credentials read it: certificate provider
/// instances for the certificate and the roots, the peers' identities as exact SANs.
fn grpc_mesh_tls(t: &tc::UpstreamTls) -> tls::UpstreamTlsContext {
    use tls::common_tls_context::ValidationContextType;
    let instance = |name: &str| tls::CertificateProviderPluginInstance {
        instance_name: "default".into(),
        certificate_name: name.into(),
    };
    #[allow(deprecated)]
    let validation = tls::CertificateValidationContext {
        ca_certificate_provider_instance: Some(instance("ROOTCA")),
        match_subject_alt_names: t
            .match_identities
            .iter()
            .map(|id| m::StringMatcher {
                match_pattern: Some(m::string_matcher::MatchPattern::Exact(id.clone())),
                ignore_case: false,
            })
            .collect(),
        ..Default::default()
    };
    tls::UpstreamTlsContext {
        common_tls_context: Some(tls::CommonTlsContext {
            tls_certificate_provider_instance: Some(instance("default")),
            validation_context_type: Some(ValidationContextType::ValidationContext(validation)),
            ..Default::default()
        }),
        sni: t.sni.clone().unwrap_or_default(),
        ..Default::default()
    }
}

fn inline(pem: &str) -> Option<core::DataSource> {
    Some(core::DataSource {
        specifier: Some(core::data_source::Specifier::InlineString(pem.to_string())),
        ..Default::default()
    })
}

/// An SDS secret as Envoy's `Secret` resource.
fn secret(s: &tc::Secret) -> tls::Secret {
    use tls::secret::Type;
    let kind = match (&s.tls_certificate, &s.validation_context) {
        (Some(t), _) => Type::TlsCertificate(tls::TlsCertificate {
            certificate_chain: inline(&t.certificate_chain),
            private_key: inline(&t.private_key),
            ..Default::default()
        }),
        (None, Some(v)) => Type::ValidationContext(tls::CertificateValidationContext {
            trusted_ca: inline(&v.trusted_ca),
            ..Default::default()
        }),
        (None, None) => Type::GenericSecret(Default::default()),
    };
    tls::Secret {
        name: s.name.clone(),
        r#type: Some(kind),
    }
}
