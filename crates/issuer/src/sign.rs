//! Signing on the token's time: the CA key's operation blocks, so it runs off the
//! controllers' tasks.

use std::sync::Arc;
use std::time::Duration;

use trellis_ca::request::{Requested, Usage};

use crate::ca::{Failure, IssuerCa};
use crate::policy;

pub struct Issued {
    pub certificate_pem: String,
    pub intermediates_pem: String,
    pub root_pem: String,
}

pub enum Error {
    /// The request cannot be signed as it is.
    Refused(Failure),
    /// Worth another try (the token did not answer).
    Retry(String),
}

fn pem(c: &boring::x509::X509) -> String {
    String::from_utf8(c.to_pem().unwrap_or_default()).unwrap_or_default()
}

pub async fn sign(
    ca: Arc<IssuerCa>,
    csr_pem: Vec<u8>,
    usages: Vec<Usage>,
    ttl: Duration,
) -> Result<Issued, Error> {
    let result = tokio::task::spawn_blocking(move || {
        ca.authority.sign_requested(&Requested {
            csr: &csr_pem,
            usages: &usages,
            ttl,
            is_ca: false,
        })
    })
    .await
    .map_err(|e| Error::Retry(e.to_string()))?;
    match result {
        Ok(issued) => Ok(Issued {
            certificate_pem: pem(&issued.certificate),
            intermediates_pem: issued.intermediates.iter().map(pem).collect(),
            root_pem: pem(&issued.root),
        }),
        Err(e) => match policy::failure(&e) {
            Some(f) => Err(Error::Refused(f)),
            None => Err(Error::Retry(e.to_string())),
        },
    }
}
