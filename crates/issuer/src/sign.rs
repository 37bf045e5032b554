//! Signing on the token's time: the CA key's operation blocks, so it runs off the
//! controllers' tasks.

use std::sync::Arc;
use std::time::Duration;

use trellis_ca::authority::pem;
use trellis_ca::request::{Requested, Usage};
use trellis_ca::SignError;

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
    let refused = |e: SignError| match policy::failure(&e) {
        Some(f) => Error::Refused(f),
        None => Error::Retry(e.to_string()),
    };
    let issued = result.map_err(refused)?;
    let pems = || -> Result<Issued, SignError> {
        Ok(Issued {
            certificate_pem: pem(&issued.certificate)?,
            intermediates_pem: issued
                .intermediates
                .iter()
                .map(pem)
                .collect::<Result<String, _>>()?,
            root_pem: pem(&issued.root)?,
        })
    };
    pems().map_err(refused)
}
