//! The Trusted Certificate Service: certificate authorities whose keys live in PKCS#11
//! tokens (an SGX enclave's module in production, SoftHSM2 in tests), served to a
//! Kubernetes cluster two ways, as Intel's TCS did:
//!
//! - as the **signer** of `certificates.k8s.io/v1` CertificateSigningRequests named
//!   `trellis.io/<namespace>.<issuer>` (a [`TrellisIssuer`](names::IssuerRef)) or
//!   `clusterissuers.trellis.io/<issuer>` (a TrellisClusterIssuer): approved requests
//!   are signed, denied ones never, bad ones fail with a reason (`csr.rs`);
//! - as a **cert-manager external issuer**: `cert-manager.io/v1` CertificateRequests whose
//!   `issuerRef` names group `trellis.io` and one of the two kinds, under cert-manager's
//!   approval and `Ready` condition contract (`certificate_request.rs`).
//!
//! Each issuer resource is one CA (`issuers.rs`, `ca.rs`): its key is found or generated
//! in a token the signer was started with, and accepted only after [`attestation`]; its
//! certificate (a self-signed root, or an intermediate signed by a parent issuer) is kept
//! in the token beside the key. Requests are held to the issuer's policy (`policy.rs`):
//! allowed usages, the longest lifetime, keys of a size worth signing.
//!
//! Every write of a certificate carries the resourceVersion it was decided on, so two
//! signers, or one restarted mid-way, never sign a request twice into its status.

pub mod attestation;
mod ca;
mod certificate_request;
mod conditions;
mod csr;
mod issuers;
pub mod names;
mod policy;
mod run;
mod sign;
mod spec;

pub use ca::Tokens;
pub use run::{run, Options};
