//! Signature encodings that turn a message into the integer the raw RSA operation
//! signs: PKCS#1 v1.5 (`EMSA-PKCS1-v1_5`) and PSS (`EMSA-PSS`, salt as long as the
//! hash), RFC 8017. TLS 1.3 signs with PSS; TLS 1.2 also with PKCS#1 v1.5.

use boring::hash::{hash, MessageDigest};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn digest(self) -> MessageDigest {
        match self {
            Hash::Sha256 => MessageDigest::sha256(),
            Hash::Sha384 => MessageDigest::sha384(),
            Hash::Sha512 => MessageDigest::sha512(),
        }
    }

    fn len(self) -> usize {
        match self {
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
            Hash::Sha512 => 64,
        }
    }

    /// DER of `DigestInfo` up to the digest bytes (RFC 8017 section 9.2, note 1).
    fn digest_info_prefix(self) -> &'static [u8] {
        match self {
            Hash::Sha256 => &[
                0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x01, 0x05, 0x00, 0x04, 0x20,
            ],
            Hash::Sha384 => &[
                0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x02, 0x05, 0x00, 0x04, 0x30,
            ],
            Hash::Sha512 => &[
                0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x03, 0x05, 0x00, 0x04, 0x40,
            ],
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        hash(self.digest(), data)
            .expect("hashing cannot fail")
            .to_vec()
    }
}

/// `EM` for PKCS#1 v1.5 signing: `00 01 FF..FF 00 DigestInfo`, `k` bytes.
pub fn pkcs1_v15(h: Hash, message: &[u8], k: usize) -> Option<Vec<u8>> {
    let prefix = h.digest_info_prefix();
    let t_len = prefix.len() + h.len();
    if k < t_len + 11 {
        return None;
    }
    let mut em = vec![0xffu8; k];
    em[0] = 0x00;
    em[1] = 0x01;
    em[k - t_len - 1] = 0x00;
    em[k - t_len..k - h.len()].copy_from_slice(prefix);
    em[k - h.len()..].copy_from_slice(&h.hash(message));
    Some(em)
}

/// MGF1 with the given hash (RFC 8017 appendix B.2.1).
fn mgf1(h: Hash, seed: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + h.len());
    let mut counter = 0u32;
    while out.len() < len {
        let mut block = seed.to_vec();
        block.extend_from_slice(&counter.to_be_bytes());
        out.extend_from_slice(&h.hash(&block));
        counter += 1;
    }
    out.truncate(len);
    out
}

/// `EM` for PSS signing with a random salt of the hash's length, left-padded to the
/// modulus length `k` (`mod_bits` is the modulus's bit length).
pub fn pss(h: Hash, message: &[u8], mod_bits: usize, k: usize) -> Option<Vec<u8>> {
    let em_bits = mod_bits - 1;
    let em_len = em_bits.div_ceil(8);
    let (h_len, s_len) = (h.len(), h.len());
    if em_len < h_len + s_len + 2 {
        return None;
    }
    let m_hash = h.hash(message);
    let mut salt = vec![0u8; s_len];
    boring::rand::rand_bytes(&mut salt).ok()?;
    let mut m_prime = vec![0u8; 8];
    m_prime.extend_from_slice(&m_hash);
    m_prime.extend_from_slice(&salt);
    let hh = h.hash(&m_prime);
    let db_len = em_len - h_len - 1;
    let mut db = vec![0u8; db_len];
    db[db_len - s_len - 1] = 0x01;
    db[db_len - s_len..].copy_from_slice(&salt);
    for (d, m) in db.iter_mut().zip(mgf1(h, &hh, db_len)) {
        *d ^= m;
    }
    db[0] &= 0xff >> (8 * em_len - em_bits);
    let mut em = vec![0u8; k - em_len];
    em.extend_from_slice(&db);
    em.extend_from_slice(&hh);
    em.push(0xbc);
    Some(em)
}

#[cfg(test)]
mod tests {
    use super::*;
    use boring::pkey::PKey;
    use boring::rsa::{Padding, Rsa};
    use boring::sign::{RsaPssSaltlen, Verifier};

    /// Encode here, sign raw with BoringSSL, verify with BoringSSL's own padding code.
    #[test]
    fn encodings_verify_with_boringssl() {
        let rsa = Rsa::generate(2048).unwrap();
        let k = rsa.size() as usize;
        let pkey = PKey::from_rsa(rsa.clone()).unwrap();
        for h in [Hash::Sha256, Hash::Sha384, Hash::Sha512] {
            for pss_mode in [false, true] {
                let msg = b"TLS 1.3, server CertificateVerify";
                let em = if pss_mode {
                    pss(h, msg, 2048, k).unwrap()
                } else {
                    pkcs1_v15(h, msg, k).unwrap()
                };
                let mut sig = vec![0u8; k];
                rsa.private_encrypt(&em, &mut sig, Padding::NONE).unwrap();
                let mut v = Verifier::new(h.digest(), &pkey).unwrap();
                if pss_mode {
                    v.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
                    v.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH).unwrap();
                }
                v.update(msg).unwrap();
                assert!(v.verify(&sig).unwrap(), "{h:?} pss={pss_mode}");
            }
        }
    }
}
