//! ECDSA over P-256 with SHA-256 (JWS `ES256`, RFC 7518 §3.4), the
//! signature of a VAPID token (RFC 8292 §2).
//!
//! The nonce is derived deterministically as RFC 6979 §3.2 specifies
//! (HMAC-SHA-256, no extra entropy), so a signature does not depend on the
//! random source and equals what `p256`'s `SigningKey` produces for the same
//! key and message (the tests compare them). `s` is not normalised (P-256
//! verifiers accept both `s` and `n - s`).
//!
//! Constant time in the private key and the nonce: `k·G` is
//! [`super::ecdh::public_key_uncompressed`], arithmetic modulo n is
//! Montgomery multiplication with a masked final subtraction, and the
//! inversion is Fermat's `k^(n-2)`, whose exponent is public.

use hkdf::hmac::{Mac as _, SimpleHmac};
use sha2::{Digest as _, Sha256};

use super::ecdh::{
    add_below, be_bytes, limbs_be, public_key_uncompressed, reduce_below, sub4, wipe, SecretScalar,
};

/// n, little-endian limbs.
const N: [u64; 4] = [
    0xf3b9_cac2_fc63_2551,
    0xbce6_faad_a717_9e84,
    0xffff_ffff_ffff_ffff,
    0xffff_ffff_0000_0000,
];

/// `-n^-1 mod 2^64`.
const N0: u64 = 0xccd1_c8aa_ee00_bc4f;

/// `R^2 mod n` with `R = 2^256`.
const RR: [u64; 4] = [
    0x8324_4c95_be79_eea2,
    0x4699_799c_49bd_6fa6,
    0x2845_b239_2b6b_ec59,
    0x66e1_2d94_f3d9_5620,
];

/// 1 in Montgomery form (`R mod n`).
const ONE: Scalar = Scalar([
    0x0c46_353d_039c_daaf,
    0x4319_0552_58e8_617b,
    0x0000_0000_0000_0000,
    0x0000_0000_ffff_ffff,
]);

/// An integer modulo n in Montgomery form (`a·R mod n`), fully reduced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Scalar([u64; 4]);

/// `t + hi·2^256` (below 2n) reduced into `[0, n)` without branching.
fn reduce_once(t: [u64; 4], hi: u64) -> [u64; 4] {
    reduce_below(t, hi, &N)
}

impl Scalar {
    /// Montgomery multiplication (CIOS): `a·b·R^-1 mod n`. Not inlined:
    /// signing is rare (VAPID tokens are cached), size matters more.
    #[inline(never)]
    fn mul(&self, rhs: &Scalar) -> Scalar {
        let (a, b) = (&self.0, &rhs.0);
        let mut t = [0u64; 6];
        for &bi in b {
            let mut c = 0u128;
            for j in 0..4 {
                let uv = t[j] as u128 + (a[j] as u128) * (bi as u128) + c;
                t[j] = uv as u64;
                c = uv >> 64;
            }
            let s = t[4] as u128 + c;
            t[4] = s as u64;
            t[5] = (s >> 64) as u64;
            let m = t[0].wrapping_mul(N0);
            let uv = t[0] as u128 + (m as u128) * (N[0] as u128);
            let mut c = uv >> 64;
            for j in 1..4 {
                let uv = t[j] as u128 + (m as u128) * (N[j] as u128) + c;
                t[j - 1] = uv as u64;
                c = uv >> 64;
            }
            let s = t[4] as u128 + c;
            t[3] = s as u64;
            t[4] = t[5] + (s >> 64) as u64;
        }
        Scalar(reduce_once([t[0], t[1], t[2], t[3]], t[4]))
    }

    fn add(&self, rhs: &Scalar) -> Scalar {
        Scalar(add_below(&self.0, &rhs.0, &N))
    }

    /// A 256-bit big-endian integer reduced modulo n (it is below 2n, as
    /// every 256-bit integer is), in Montgomery form.
    fn from_be_reduced(bytes: &[u8; 32]) -> Scalar {
        Scalar(reduce_once(limbs_be(bytes), 0)).mul(&Scalar(RR))
    }

    /// The canonical big-endian octets.
    fn to_be_bytes(self) -> [u8; 32] {
        be_bytes(&self.mul(&Scalar([1, 0, 0, 0])).0)
    }

    fn is_zero(&self) -> bool {
        self.0 == [0; 4]
    }

    /// `self^(n-2)`, the inverse for non-zero `self` (square and multiply
    /// over the public exponent's bits).
    #[inline(never)]
    fn invert(&self) -> Scalar {
        let (exp, _) = sub4(&N, &[2, 0, 0, 0]);
        let mut r = ONE;
        for i in (0..256).rev() {
            r = r.mul(&r);
            if (exp[i / 64] >> (i % 64)) & 1 == 1 {
                r = r.mul(self);
            }
        }
        r
    }
}

/// HMAC-SHA-256 of the concatenated `parts` under `key`.
fn hmac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    // A 32-octet key is always a valid HMAC key.
    let mut mac = <SimpleHmac<Sha256> as hkdf::hmac::KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Signs `message` (hashed with SHA-256) with `key`: the 64-octet `r || s`
/// of JWS `ES256`.
#[must_use]
pub fn sign(key: &SecretScalar, message: &[u8]) -> [u8; 64] {
    let digest: [u8; 32] = Sha256::digest(message).into();
    let z = Scalar::from_be_reduced(&digest);
    // bits2octets(h1) of RFC 6979 §2.3.4: h1 reduced modulo n.
    let h1 = z.to_be_bytes();
    let mut x = key.to_bytes();
    let d = Scalar::from_be_reduced(&x);
    // RFC 6979 §3.2 steps b-f.
    let mut v = [0x01u8; 32];
    let mut k = [0x00u8; 32];
    k = hmac(&k, &[&v, &[0x00], &x, &h1]);
    v = hmac(&k, &[&v]);
    k = hmac(&k, &[&v, &[0x01], &x, &h1]);
    v = hmac(&k, &[&v]);
    wipe(&mut x);
    let signature = loop {
        // Step h: with qlen = hlen = 256, one HMAC output is a candidate.
        v = hmac(&k, &[&v]);
        let candidate = SecretScalar::from_bytes(&v);
        if let Some(nonce) = candidate {
            let point = public_key_uncompressed(&nonce);
            let mut rx = [0u8; 32];
            rx.copy_from_slice(&point[1..33]);
            let r = Scalar::from_be_reduced(&rx);
            let kn = Scalar::from_be_reduced(&nonce.to_bytes());
            let s = kn.invert().mul(&z.add(&r.mul(&d)));
            if !r.is_zero() && !s.is_zero() {
                let mut out = [0u8; 64];
                out[..32].copy_from_slice(&r.to_be_bytes());
                out[32..].copy_from_slice(&s.to_be_bytes());
                break out;
            }
        }
        k = hmac(&k, &[&v, &[0x00]]);
        v = hmac(&k, &[&v]);
    };
    wipe(&mut k);
    wipe(&mut v);
    signature
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::ecdh::N_BE;
    use crate::crypto::random_array;
    use p256::ecdsa::signature::{Signer as _, Verifier as _};

    fn hex32(hex: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    fn scalar(bytes: &[u8; 32]) -> Scalar {
        Scalar::from_be_reduced(bytes)
    }

    #[test]
    fn constants_are_consistent() {
        assert_eq!(N[0].wrapping_mul(N0), u64::MAX, "N0 = -n^-1 mod 2^64");
        assert_eq!(be_bytes(&N), N_BE);
        // n reduces to 0, n - 1 stays.
        assert!(scalar(&N_BE).is_zero());
        let mut n1 = N_BE;
        n1[31] -= 1;
        assert_eq!(scalar(&n1).to_be_bytes(), n1);
    }

    #[test]
    fn arithmetic_matches_p256_scalars() {
        use p256::elliptic_curve::ff::PrimeField as _;
        let reference = |b: &[u8; 32]| {
            p256::Scalar::from_repr((*b).into())
                .into_option()
                .unwrap_or_else(|| {
                    // 256-bit values of n and above: reduce once.
                    let (l, _) = sub4(&limbs_be(b), &N);
                    p256::Scalar::from_repr(be_bytes(&l).into()).unwrap()
                })
        };
        let mut edge = vec![[0u8; 32], [0xffu8; 32], N_BE];
        let mut one = [0u8; 32];
        one[31] = 1;
        edge.push(one);
        let mut n1 = N_BE;
        n1[31] -= 1;
        edge.push(n1);
        for _ in 0..200 {
            edge.push(random_array().unwrap());
        }
        for a in &edge {
            for b in edge.iter().take(8) {
                let (x, y) = (scalar(a), scalar(b));
                let (rx, ry) = (reference(a), reference(b));
                assert_eq!(
                    x.mul(&y).to_be_bytes(),
                    <[u8; 32]>::from((rx * ry).to_repr())
                );
                assert_eq!(
                    x.add(&y).to_be_bytes(),
                    <[u8; 32]>::from((rx + ry).to_repr())
                );
            }
            let x = scalar(a);
            if !x.is_zero() {
                let inv: [u8; 32] = reference(a).invert().unwrap().to_repr().into();
                assert_eq!(x.invert().to_be_bytes(), inv);
            }
        }
    }

    #[test]
    fn signatures_equal_p256_rfc6979_and_verify() {
        for i in 0..64u32 {
            let secret = loop {
                if let Some(s) = SecretScalar::from_bytes(&random_array().unwrap()) {
                    break s;
                }
            };
            let message = format!("header.claims-{i}").repeat(i as usize % 5 + 1);
            let ours = sign(&secret, message.as_bytes());
            let key = p256::ecdsa::SigningKey::from_bytes(&secret.to_bytes().into()).unwrap();
            let theirs: p256::ecdsa::Signature = key.sign(message.as_bytes());
            assert_eq!(ours.as_slice(), theirs.to_bytes().as_slice());
            let parsed = p256::ecdsa::Signature::from_slice(&ours).unwrap();
            assert!(key
                .verifying_key()
                .verify(message.as_bytes(), &parsed)
                .is_ok());
        }
    }

    #[test]
    fn rfc6979_a_2_5_vector() {
        // RFC 6979 A.2.5, P-256 with SHA-256, message "sample".
        let x = hex32("c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721");
        let key = SecretScalar::from_bytes(&x).unwrap();
        let sig = sign(&key, b"sample");
        assert_eq!(
            sig[..32],
            hex32("efd48b2aacb6a8fd1140dd9cd45e81d69d2c877b56aaf991c34d0ea84eaf3716")
        );
        assert_eq!(
            sig[32..],
            hex32("f7cb1c942d657c41d436c7a1b6e29f65f3e900dbb9aff4064dc4ab2f843acda8")
        );
        let sig = sign(&key, b"test");
        assert_eq!(
            sig[..32],
            hex32("f1abb023518351cd71d881567b1ea663ed3efcf6c5132b354f28d3b0b7d38367")
        );
        assert_eq!(
            sig[32..],
            hex32("019f4113742a2b14bd25926b49c649155f267e60d3814b4c0cc84250e46f0083")
        );
    }
}
