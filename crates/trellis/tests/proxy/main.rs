//! End-to-end tests of `trellis proxy`: real processes, real sockets, real clients.

mod harness;
mod pki;

mod admin;
mod agent;
mod ca;
mod control;
mod cryptomb;
mod demo;
mod egress;
mod envoy_conformance;
mod gateway;
mod hostile;
mod identity;
mod issuer;
mod istio_authz;
mod kube;
mod lifecycle;
mod local_user;
mod matching;
mod pkcs11;
mod policy;
mod protocols;
mod resilience;
mod routing;
mod telemetry;
mod tenancy;
mod tls;
mod tracing;
mod up;
mod xds;
