//! The client side of Istio's certificate protocol
//! (`istio.v1.auth.IstioCertificateService/CreateCertificate`): the wire messages, a
//! client over gRPC on BoringSSL TLS (a bootstrap or ServiceAccount token, or the
//! certificate being renewed, as the credential), and certificate time helpers. The
//! proxy's identity agent needs only this; the CA (`trellis-ca`) takes the generated
//! server stub with the `server` feature.

mod client;
pub mod proto;
pub mod time;

pub use client::{CaClient, Credential};
