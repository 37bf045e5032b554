//! End-to-end tests of `trellis proxy`: real processes, real sockets, real clients.

mod harness;
mod pki;

mod admin;
mod ca;
mod control;
mod cryptomb;
mod demo;
mod hostile;
mod identity;
mod kube;
mod lifecycle;
mod matching;
mod protocols;
mod resilience;
mod routing;
mod tls;
mod up;
mod xds;
