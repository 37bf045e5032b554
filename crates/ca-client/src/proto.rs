//! The wire messages of `istio.v1.auth.IstioCertificateService` (istio/api
//! security/v1alpha1/ca.proto), so that Istio's agents and ztunnel can use this CA.

/// `IstioCertificateRequest`: a PEM CSR, the requested lifetime in seconds, and
/// metadata (`CertSigner` selects a signer in multi-CA setups).
#[derive(Clone, PartialEq, prost::Message)]
pub struct IstioCertificateRequest {
    #[prost(string, tag = "1")]
    pub csr: String,
    #[prost(int64, tag = "3")]
    pub validity_duration: i64,
    #[prost(message, optional, tag = "4")]
    pub metadata: Option<prost_types::Struct>,
}

/// `IstioCertificateResponse`: PEM certificates, leaf first, root last.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IstioCertificateResponse {
    #[prost(string, repeated, tag = "1")]
    pub cert_chain: Vec<String>,
}

include!(concat!(
    env!("OUT_DIR"),
    "/istio.v1.auth.IstioCertificateService.rs"
));
