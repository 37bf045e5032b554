//! The workload certificate and the mesh roots as the SDS secrets Envoy's TLS contexts
//! name (`default`, `ROOTCA`, as Istio's agent serves them).

use envoy_types::pb::envoy::config::core::v3::{data_source::Specifier, DataSource};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    secret::Type, CertificateValidationContext, Secret, TlsCertificate,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use trellis_proxy::identity::WorkloadCert;
use trellis_xds::Snapshot;

pub const CERTIFICATE: &str = "default";
pub const ROOTS: &str = "ROOTCA";

fn inline(bytes: Vec<u8>) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(Specifier::InlineBytes(bytes)),
        ..Default::default()
    })
}

fn any(s: &Secret) -> Any {
    Any {
        type_url: trellis_envoy::SECRET.into(),
        value: s.encode_to_vec(),
    }
}

/// The two secrets of `cert`, as one node's snapshot.
pub fn snapshot(cert: &WorkloadCert) -> Result<Snapshot, String> {
    let key = cert
        .private_key_pem
        .clone()
        .ok_or("the workload certificate's key is not exportable")?;
    let mut chain = Vec::new();
    for c in &cert.key.chain {
        chain.extend(c.to_pem().map_err(|e| e.to_string())?);
    }
    let mut roots = Vec::new();
    for r in &cert.roots {
        roots.extend(r.to_pem().map_err(|e| e.to_string())?);
    }
    let certificate = Secret {
        name: CERTIFICATE.into(),
        r#type: Some(Type::TlsCertificate(TlsCertificate {
            certificate_chain: inline(chain),
            private_key: inline(key),
            ..Default::default()
        })),
    };
    let validation = Secret {
        name: ROOTS.into(),
        r#type: Some(Type::ValidationContext(CertificateValidationContext {
            trusted_ca: inline(roots),
            ..Default::default()
        })),
    };
    let mut s = Snapshot::new();
    s.insert(CERTIFICATE, any(&certificate))
        .insert(ROOTS, any(&validation));
    Ok(s)
}
