//! The little DER the CA reads itself: BoringSSL reads no subjectAltName out of a
//! certificate request, so the CA finds it among the request's extensions.

/// subjectAltName, OID 2.5.29.17, as its DER encoding starts.
const SAN_OID: &[u8] = &[0x06, 0x03, 0x55, 0x1d, 0x11];

/// One DER TLV: (tag, contents, the rest).
pub(crate) fn tlv(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *der.first()?;
    let first = *der.get(1)?;
    let (len, header) = if first & 0x80 == 0 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let len = der
            .get(2..2 + n)?
            .iter()
            .fold(0usize, |l, b| (l << 8) | usize::from(*b));
        (len, 2 + n)
    };
    let body = der.get(header..header.checked_add(len)?)?;
    Some((tag, body, &der[header + len..]))
}

/// An extension's contents after its OID, when it is a subjectAltName.
fn after_san_oid(extension: &[u8]) -> Option<&[u8]> {
    match tlv(extension) {
        Some((0x30, body, _)) => body.strip_prefix(SAN_OID),
        _ => None,
    }
}

/// Whether a DER extension is a subjectAltName.
pub(crate) fn is_subject_alt_name(extension: &[u8]) -> bool {
    after_san_oid(extension).is_some()
}

/// Names as (GeneralName tag, value).
pub(crate) type Names = Vec<(u8, Vec<u8>)>;

/// The names of a DER extension that is a subjectAltName; None for another extension;
/// Err when it is not DER.
pub(crate) fn general_names(extension: &[u8]) -> Result<Option<Names>, ()> {
    let Some((0x30, _, _)) = tlv(extension) else {
        return Err(());
    };
    let Some(mut rest) = after_san_oid(extension) else {
        return Ok(None);
    };
    if let Some((0x01, _, after)) = tlv(rest) {
        rest = after; // critical
    }
    let Some((0x04, value, _)) = tlv(rest) else {
        return Err(());
    };
    let Some((0x30, mut names, _)) = tlv(value) else {
        return Err(());
    };
    let mut out = Vec::new();
    while !names.is_empty() {
        let (tag, value, after) = tlv(names).ok_or(())?;
        out.push((tag, value.to_vec()));
        names = after;
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths_short_and_long() {
        assert_eq!(
            tlv(&[0x04, 0x02, 1, 2, 9]),
            Some((0x04, &[1u8, 2][..], &[9u8][..]))
        );
        let long = [&[0x04, 0x81, 0x80][..], &[7u8; 128]].concat();
        assert_eq!(
            tlv(&long).map(|(_, b, r)| (b.len(), r.len())),
            Some((128, 0))
        );
        assert_eq!(tlv(&[0x04, 0x05, 1]), None, "shorter than its length");
    }
}
