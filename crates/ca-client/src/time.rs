//! Time as certificates and the CA count it: seconds since the Unix epoch.

use std::time::{SystemTime, UNIX_EPOCH};

use boring::asn1::Asn1Time;

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Seconds since the epoch of an ASN.1 time.
pub fn asn1_unix(t: &boring::asn1::Asn1TimeRef) -> i64 {
    let epoch = Asn1Time::from_unix(0).expect("epoch");
    match epoch.diff(t) {
        Ok(d) => d.days as i64 * 86400 + d.secs as i64,
        Err(_) => 0,
    }
}
