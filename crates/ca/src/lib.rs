//! The Trellis certificate authority.
//!
//! It speaks Istio's certificate protocol
//! (`istio.v1.auth.IstioCertificateService/CreateCertificate`) over gRPC and TLS, so
//! Trellis sidecars, Istio's agents and ztunnel can all use it. It issues SPIFFE
//! workload certificates (`spiffe://<trust-domain>/ns/<ns>/sa/<sa>`) whose identity comes
//! from how the caller authenticated: a bootstrap token, a Kubernetes ServiceAccount
//! token (TokenReview), or the certificate it is renewing.

pub mod authority;
mod ca;
mod der;
mod error;
pub mod kube;
pub mod ra;
pub mod request;
pub mod server;
pub mod service;
pub mod signer;
pub mod tenancy;
pub mod token;
pub mod workload_attestation;

pub use authority::Authority;
pub use ca::{Ca, CaConfig, KubeReview, Signing, TenancyHandle};
pub use error::SignError;
pub use service::{CaCounters, CaService};
pub use signer::Signer;
pub use token::TokenIssuer;
pub use trellis_ca_client::{proto, CaClient, Credential};
