//! Builds the TLS contexts a config asks for, reading certificate and key files, with
//! errors that name the field and the file.

use crate::identity::WorkloadCert;
use crate::stats::{KeyOpLabels, Metrics};
use std::sync::Arc;
use trellis_config::{
    Codec, DownstreamTls, TlsCertificate, TlsVersion, UpstreamTls, SDS_ROOT_CA, SDS_WORKLOAD_CERT,
};
use trellis_tls::{
    CertifiedKey, ClientTls, ClientTlsConfig, KeyOpHook, ServerCertificate, ServerTls,
    ServerTlsConfig,
};

fn version(v: TlsVersion) -> trellis_tls::TlsVersion {
    match v {
        TlsVersion::V1_2 => trellis_tls::TlsVersion::Tls12,
        TlsVersion::V1_3 => trellis_tls::TlsVersion::Tls13,
    }
}

fn key_op_hook(metrics: &Arc<Metrics>) -> KeyOpHook {
    let metrics = metrics.clone();
    Arc::new(move |provider, op, ok| {
        metrics
            .private_key_ops
            .get_or_create(&KeyOpLabels {
                provider,
                op,
                result: if ok { "success" } else { "failure" },
            })
            .inc();
    })
}

/// What `sds://` names refer to: the identity agent's current certificate (`default`,
/// `ROOTCA`) and the config's secrets (a gateway's credentials).
#[derive(Clone, Copy)]
pub struct Workload<'a> {
    pub cert: Option<&'a WorkloadCert>,
    pub secrets: &'a [trellis_config::Secret],
}

fn workload<'a>(field: &str, w: Workload<'a>) -> Result<&'a WorkloadCert, String> {
    w.cert
        .ok_or_else(|| format!("{field}: no workload certificate from the CA yet"))
}

fn secret<'a>(w: Workload<'a>, name: &str) -> Option<&'a trellis_config::Secret> {
    w.secrets.iter().find(|s| s.name == name)
}

fn roots(field: &str, path: &str, w: Workload) -> Result<Vec<boring::x509::X509>, String> {
    if path == SDS_ROOT_CA {
        return Ok(workload(field, w)?.roots.clone());
    }
    if let Some(name) = trellis_config::sds_name(path) {
        let v = secret(w, name)
            .and_then(|s| s.validation_context.as_ref())
            .ok_or_else(|| format!("{field}: no secret {name:?} with a validation context"))?;
        return trellis_tls::parse_certificate_chain(
            v.trusted_ca.as_bytes(),
            &format!("secret {name}"),
        )
        .map_err(|e| format!("{field}: {e}"));
    }
    trellis_tls::load_trust_bundle(path).map_err(|e| format!("{field}: {e}"))
}

fn certified_key(
    field: &str,
    c: &TlsCertificate,
    w: Workload,
    metrics: &Arc<Metrics>,
) -> Result<CertifiedKey, String> {
    if c.certificate_chain == SDS_WORKLOAD_CERT {
        return Ok(workload(field, w)?.key.clone());
    }
    if let Some(name) = trellis_config::sds_name(&c.certificate_chain) {
        // A gateway's credential, from the control plane: chain and key in memory.
        let t = secret(w, name)
            .and_then(|s| s.tls_certificate.as_ref())
            .ok_or_else(|| format!("{field}: no secret {name:?} with a certificate"))?;
        let what = format!("secret {name}");
        let chain = trellis_tls::parse_certificate_chain(t.certificate_chain.as_bytes(), &what)
            .map_err(|e| format!("{field}: {e}"))?;
        let key = trellis_tls::parse_private_key(t.private_key.as_bytes(), &what, &chain[0])
            .map_err(|e| format!("{field}: {e}"))?;
        let provider = crate::keys::key_provider(&c.private_key_provider, key, metrics)
            .map_err(|(f, e)| format!("{field}.{f}: {e}"))?;
        return Ok(CertifiedKey { chain, provider });
    }
    let chain = trellis_tls::load_certificate_chain(&c.certificate_chain)
        .map_err(|e| format!("{field}.certificate_chain: {e}"))?;
    let path = c.private_key.as_deref().unwrap_or_default();
    if trellis_pkcs11::Pkcs11Uri::is_uri(path) {
        let key = crate::keys::token_key(path).map_err(|e| format!("{field}.private_key: {e}"))?;
        let leaf_key = chain[0]
            .public_key()
            .map_err(|e| format!("{field}.certificate_chain: {e}"))?;
        if !leaf_key.public_eq(key.public_key()) {
            return Err(format!(
                "{field}.private_key: {} is not the key of the certificate in {}",
                key.name(),
                c.certificate_chain
            ));
        }
        return Ok(CertifiedKey {
            chain,
            provider: Arc::new(trellis_pkcs11::Pkcs11Key(key)),
        });
    }
    let key = trellis_tls::load_private_key(path, &chain[0])
        .map_err(|e| format!("{field}.private_key: {e}"))?;
    let provider =
        crate::keys::key_provider(&c.private_key_provider, key, metrics).map_err(|(f, e)| {
            if f == "private_key" {
                format!("{field}.private_key: {path}: {e}")
            } else {
                format!("{field}.{f}: {e}")
            }
        })?;
    Ok(CertifiedKey { chain, provider })
}

/// The downstream context for a listener. HTTP listeners offer `h2` and `http/1.1` as
/// their codec allows; TCP listeners offer no ALPN unless configured.
pub fn server(
    t: &DownstreamTls,
    codec: Option<Codec>,
    metrics: &Arc<Metrics>,
    w: Workload,
) -> Result<ServerTls, String> {
    let mut certificates = Vec::new();
    for (i, c) in t.certificates.iter().enumerate() {
        certificates.push(ServerCertificate {
            key: certified_key(&format!("tls.certificates[{i}]"), c, w, metrics)?,
            server_names: c.server_names.clone(),
        });
    }
    let mut alpn = match (&t.alpn, codec) {
        (Some(a), _) => a.clone(),
        (None, Some(Codec::Auto)) => vec!["h2".into(), "http/1.1".into()],
        (None, Some(Codec::Http2)) => vec!["h2".into()],
        (None, Some(Codec::Http1)) => vec!["http/1.1".into()],
        (None, None) => Vec::new(),
    };
    // First, so that a sidecar offering it takes it over the HTTP protocols (Istio's
    // `istio-peer-exchange, h2, http/1.1`); an HTTP client does not offer it.
    if t.metadata_exchange && !alpn.iter().any(|a| a == crate::peer_exchange::ALPN) {
        alpn.insert(0, crate::peer_exchange::ALPN.into());
    }
    let client_roots = match &t.trusted_ca {
        Some(path) => Some(roots("tls.trusted_ca", path, w)?),
        None => None,
    };
    let client_bundles = crate::trust::bundles("tls", &t.trust_bundles)?;
    ServerTls::new(ServerTlsConfig {
        client_bundles,
        certificates,
        alpn,
        min_version: version(t.min_version),
        max_version: version(t.max_version),
        cipher_suites: t.cipher_suites.clone(),
        client_sans: t.client_sans.clone(),
        client_roots,
        require_client_certificate: t.require_client_certificate,
        session_resumption: t.session_resumption,
        client_trust_domains: if t.trust_domains.iter().any(|d| d == "*") {
            Vec::new()
        } else {
            t.trust_domains.clone()
        },
        key_op_hook: Some(key_op_hook(metrics)),
    })
    .map_err(|e| format!("tls: {e}"))
}

/// The upstream context for a cluster; ALPN follows the cluster's protocol.
pub fn client(
    t: &UpstreamTls,
    http2: bool,
    metrics: &Arc<Metrics>,
    w: Workload,
) -> Result<ClientTls, String> {
    let bundles = crate::trust::bundles("tls", &t.trust_bundles)?;
    let roots = if bundles.is_empty() {
        roots("tls.trusted_ca", &t.trusted_ca, w)?
    } else {
        Vec::new()
    };
    let certificate = match &t.certificate {
        Some(c) => Some(certified_key("tls.certificate", c, w, metrics)?),
        None => None,
    };
    ClientTls::new(ClientTlsConfig {
        bundles,
        roots,
        certificate,
        sni: t.sni.clone(),
        alpn: vec![if http2 { "h2" } else { "http/1.1" }.into()],
        // Istio's in-mesh ALPN for TCP.
        stream_alpn: if t.metadata_exchange {
            vec![crate::peer_exchange::ALPN.into(), "istio".into()]
        } else {
            Vec::new()
        },
        min_version: version(t.min_version),
        max_version: version(t.max_version),
        expected_identities: t.match_identities.clone(),
        key_op_hook: Some(key_op_hook(metrics)),
    })
    .map_err(|e| format!("tls: {e}"))
}
