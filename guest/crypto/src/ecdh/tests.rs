//! The key agreement against `p256`: the field operations, the digits,
//! random and edge scalars, batches, the RFC 8291 vector, and refusals.

use super::field::*;
use super::point::*;
use super::*;
// This module's own implementations, also under `--all-features`
// (where the public functions are `p256`'s).
use super::{own_key_agreements as key_agreements, own_shared_secret as shared_secret};
use crate::random_array;
use p256::elliptic_curve::ff::PrimeField as _;
use p256::elliptic_curve::hazmat::FieldArithmetic;
use p256::elliptic_curve::sec1::ToSec1Point as _;

/// `p256`'s field element, the reference for ours.
type P256Fe = <p256::NistP256 as FieldArithmetic>::FieldElement;

/// p256's field element from our canonical octets.
fn theirs(bytes: &[u8; 32]) -> P256Fe {
    P256Fe::from_repr((*bytes).into()).unwrap()
}

fn bytes_of(f: P256Fe) -> [u8; 32] {
    f.to_repr().into()
}

/// Canonical field octets: random below p, plus the edges.
fn field_samples() -> Vec<[u8; 32]> {
    let p_minus = |k: u8| bytes_of(P256Fe::ZERO - P256Fe::from(u64::from(k)));
    let mut v = vec![
        [0u8; 32],
        bytes_of(P256Fe::ONE),
        bytes_of(P256Fe::from(2u64)),
        p_minus(1),
        p_minus(2),
        bytes_of(P256Fe::from(u64::MAX)),
    ];
    for _ in 0..2000 {
        let r: [u8; 32] = random_array().unwrap();
        v.push(bytes_of(P256Fe::from_repr(r.into()).unwrap_or(P256Fe::ONE)));
        // And values with long runs of ones / zeros (carry chains).
        let mut w = [0u8; 32];
        w[(r[0] % 32) as usize..].fill(0xff);
        if let Some(f) = Option::<P256Fe>::from(P256Fe::from_repr(w.into())) {
            v.push(bytes_of(f));
        }
    }
    v
}

/// Our wrapper of `fiat-crypto` (byte order, Montgomery conversions,
/// selects, the inversion chain) against `p256`'s field.
#[test]
fn field_operations_match_p256() {
    let samples = field_samples();
    for pair in samples.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let (fa, fb) = (Fe::from_be_bytes(a), Fe::from_be_bytes(b));
        let (ta, tb) = (theirs(a), theirs(b));
        assert_eq!(fa.to_be_bytes(), *a, "round trip");
        assert_eq!(fa.mul(&fb).to_be_bytes(), bytes_of(ta * tb), "mul");
        assert_eq!(fa.square().to_be_bytes(), bytes_of(ta.square()), "square");
        assert_eq!(fa.add(&fb).to_be_bytes(), bytes_of(ta + tb), "add");
        assert_eq!(fa.sub(&fb).to_be_bytes(), bytes_of(ta - tb), "sub");
        assert_eq!(fa.neg().to_be_bytes(), bytes_of(-ta), "neg");
        assert_eq!(fa.double().to_be_bytes(), bytes_of(ta.double()), "double");
        let inv: Option<P256Fe> = ta.invert().into();
        assert_eq!(
            fa.invert().to_be_bytes(),
            bytes_of(inv.unwrap_or(P256Fe::ZERO)),
            "invert"
        );
        assert_eq!(fa.is_zero_mask() == u64::MAX, *a == [0u8; 32]);
        assert_eq!(Fe::select(u64::MAX, &fa, &fb), fa);
        assert_eq!(Fe::select(0, &fa, &fb), fb);
    }
    assert_eq!(Fe::ONE.to_be_bytes(), bytes_of(P256Fe::ONE));
    assert_eq!(Fe::ZERO.to_be_bytes(), [0u8; 32]);
}

#[test]
fn radix16_digits_recompose_the_scalar() {
    for _ in 0..500 {
        let k: [u8; 32] = random_array().unwrap();
        let d = radix16(&k);
        assert!(d.iter().all(|&x| (-8..=8).contains(&x)), "{d:?}");
        // Recompose with big-integer arithmetic on 64-bit limbs.
        let mut acc = [0i128; 5];
        for (i, &digit) in d.iter().enumerate() {
            let limb = i / 16;
            let shift = 4 * (i % 16);
            acc[limb] += i128::from(digit) << shift;
        }
        // Normalise into unsigned 64-bit limbs.
        let mut out = [0u64; 5];
        let mut carry = 0i128;
        for i in 0..5 {
            let v = acc[i] + carry;
            out[i] = v as u64;
            carry = v >> 64;
        }
        let mut be = [0u8; 32];
        for i in 0..4 {
            be[32 - 8 * (i + 1)..32 - 8 * i].copy_from_slice(&out[i].to_be_bytes());
        }
        assert_eq!(be, k);
        assert_eq!(out[4], 0);
    }
}

fn p256_secret(secret: &SecretScalar) -> p256::SecretKey {
    p256::SecretKey::from_bytes(&secret.to_bytes().into()).unwrap()
}

fn reference(secret: &SecretScalar, public: &PublicPoint) -> [u8; 32] {
    let public = p256::PublicKey::from_sec1_bytes(&public.to_uncompressed()).unwrap();
    (*p256_secret(secret)
        .diffie_hellman(&public)
        .raw_secret_bytes())
    .into()
}

fn scalar(bytes: [u8; 32]) -> SecretScalar {
    SecretScalar::from_bytes(&bytes).unwrap()
}

/// n - k for small k, big-endian.
fn n_minus(k: u64) -> [u8; 32] {
    use p256::elliptic_curve::ff::PrimeField;
    (-p256::Scalar::from(k)).to_repr().into()
}

fn small(k: u64) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[24..].copy_from_slice(&k.to_be_bytes());
    b
}

/// Scalars at the edges: 1..=40, n-1..=n-40, all ones (below n) and
/// alternating 0x88 digits.
fn edge_scalars() -> Vec<[u8; 32]> {
    let mut scalars: Vec<[u8; 32]> = (1..=40).map(small).collect();
    scalars.extend((1..=40).map(n_minus));
    let mut ones = [0xffu8; 32];
    ones[0] = 0x7f;
    scalars.push(ones);
    let mut alternating = [0x88u8; 32];
    alternating[0] = 0x08;
    scalars.push(alternating);
    scalars
}

#[test]
fn shared_secret_matches_p256_for_random_keys() {
    for _ in 0..300 {
        let a = crate::random_secret_key().unwrap();
        let b = crate::random_secret_key().unwrap().public_key();
        assert_eq!(shared_secret(&a, &b).unwrap(), reference(&a, &b));
    }
}

/// [`edge_scalars`] plus scalars whose last digit makes `k ≡ 2d (mod
/// n)` reachable, and digit patterns with long runs.
fn ecdh_edge_scalars() -> Vec<[u8; 32]> {
    let mut scalars = edge_scalars();
    for k in [8u64, 16, 15, 17, 0x88, 0x7777, 0x8888_8888, u64::MAX] {
        scalars.push(small(k));
        scalars.push(n_minus(k));
    }
    let mut sevens = [0x77u8; 32];
    sevens[0] = 0x07;
    scalars.push(sevens);
    scalars
}

#[test]
fn shared_secret_matches_p256_for_edge_scalars() {
    let public = crate::random_secret_key().unwrap().public_key();
    let generator = scalar(small(1)).public_key();
    for k in ecdh_edge_scalars() {
        let s = scalar(k);
        for point in [&public, &generator] {
            assert_eq!(
                shared_secret(&s, point).unwrap(),
                reference(&s, point),
                "k = {k:02x?}"
            );
        }
    }
}

fn reference_public(secret: &SecretScalar) -> [u8; 65] {
    let point = p256_secret(secret).public_key().to_sec1_point(false);
    point.as_bytes().try_into().unwrap()
}

#[test]
fn public_key_matches_p256_for_random_and_edge_scalars() {
    for _ in 0..300 {
        let k = crate::random_secret_key().unwrap();
        assert_eq!(public_key_uncompressed(&k), reference_public(&k));
    }
    let mut scalars = edge_scalars();
    for shift in 0..64 {
        // 16^shift and its neighbours: single-digit and carry patterns.
        let mut b = [0u8; 32];
        b[31 - shift / 2] = if shift % 2 == 0 { 1 } else { 0x10 };
        scalars.push(b);
        let mut nines = b;
        nines[31 - shift / 2] = if shift % 2 == 0 { 8 } else { 0x80 };
        scalars.push(nines);
    }
    for k in scalars {
        let s = scalar(k);
        assert_eq!(
            public_key_uncompressed(&s),
            reference_public(&s),
            "k = {k:02x?}"
        );
    }
}

#[test]
fn key_agreements_equal_the_one_message_functions() {
    for n in [0usize, 1, 2, 3, 17] {
        let secrets: Vec<SecretScalar> = (0..n)
            .map(|i| match i {
                // Edge scalars among random ones.
                0 => scalar(small(1)),
                1 => scalar(n_minus(1)),
                _ => crate::random_secret_key().unwrap(),
            })
            .collect();
        let publics: Vec<PublicPoint> = (0..n)
            .map(|i| {
                if i == 2 {
                    // The generator itself, and a point equal to k·G.
                    scalar(small(1)).public_key()
                } else {
                    crate::random_secret_key().unwrap().public_key()
                }
            })
            .collect();
        let pairs: Vec<(&SecretScalar, &PublicPoint)> =
            secrets.iter().zip(publics.iter()).collect();
        let batch = key_agreements(&pairs).unwrap();
        assert_eq!(batch.len(), n);
        for ((k, r), (public, shared)) in pairs.iter().zip(&batch) {
            assert_eq!(*public, reference_public(k));
            assert_eq!(*shared, reference(k, r));
            assert_eq!(*public, public_key_uncompressed(k));
            assert_eq!(*shared, shared_secret(k, r).unwrap());
        }
    }
}

/// The batched path (affine tables, mixed additions) on the edge
/// scalars, against a random point and the generator (where `k·R`
/// meets the exceptional cases), in one batch.
#[test]
fn key_agreements_match_p256_for_edge_scalars() {
    let public = crate::random_secret_key().unwrap().public_key();
    let generator = scalar(small(1)).public_key();
    let secrets: Vec<SecretScalar> = ecdh_edge_scalars().into_iter().map(scalar).collect();
    let pairs: Vec<(&SecretScalar, &PublicPoint)> = secrets
        .iter()
        .flat_map(|k| [(k, &public), (k, &generator)])
        .collect();
    for ((k, r), (public_key, shared)) in pairs.iter().zip(key_agreements(&pairs).unwrap()) {
        assert_eq!(shared, reference(k, r), "k = {:02x?}", k.to_bytes());
        assert_eq!(public_key, reference_public(k), "k = {:02x?}", k.to_bytes());
    }
}

#[test]
fn rfc8291_appendix_a_ecdh_secret() {
    use crate::b64url_decode;
    let as_private: [u8; 32] = b64url_decode("yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw")
        .unwrap()
        .try_into()
        .unwrap();
    let ua_public = b64url_decode(
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
    )
    .unwrap();
    let ua = PublicPoint::from_uncompressed(&ua_public).unwrap();
    let expected = b64url_decode("kyrL1jIIOHEzg3sM2ZWRHDRB62YACZhhSlknJ672kSs").unwrap();
    assert_eq!(
        shared_secret(&scalar(as_private), &ua).unwrap().to_vec(),
        expected
    );
}

#[test]
fn secret_scalars_are_exactly_1_to_n_minus_1() {
    use p256::elliptic_curve::ff::PrimeField;
    let n_plus = |k: u64| {
        // n + k as big-endian octets: n - 1 is the largest scalar, so
        // (n - 1) + (k + 1) with a carry-free add on the low octets.
        let mut b: [u8; 32] = (-p256::Scalar::ONE).to_repr().into();
        let low = u64::from_be_bytes(b[24..].try_into().unwrap()) + k + 1;
        b[24..].copy_from_slice(&low.to_be_bytes());
        b
    };
    let mut cases = edge_scalars();
    cases.push([0u8; 32]);
    cases.push([0xff; 32]);
    for k in 0..40u64 {
        cases.push(n_plus(k));
    }
    for _ in 0..100 {
        cases.push(random_array().unwrap());
    }
    for k in cases {
        let ours = SecretScalar::from_bytes(&k).is_some();
        let theirs = p256::SecretKey::from_bytes(&k.into()).is_ok();
        assert_eq!(ours, theirs, "k = {k:02x?}");
    }
    assert_eq!(format!("{:?}", scalar(small(7))), "SecretScalar(..)");
}

/// A point at infinity anywhere in a batch refuses the whole batch: the
/// off-curve point (0, 0) (never a validated key) doubles to `Z = 0` in
/// its table. Without the check the batch would come back with
/// all-zero keys and secrets for every message.
#[test]
fn a_point_at_infinity_refuses_the_whole_batch() {
    let bogus = PublicPoint {
        x: [0u8; 32],
        y: [0u8; 32],
    };
    let good = crate::random_secret_key().unwrap().public_key();
    let k1 = crate::random_secret_key().unwrap();
    let k2 = crate::random_secret_key().unwrap();
    assert_eq!(
        key_agreements(&[(&k1, &good), (&k2, &bogus)]),
        Err(EcdhError::IdentityInBatch)
    );
    assert_eq!(
        key_agreements(&[(&k2, &bogus), (&k1, &good)]),
        Err(EcdhError::IdentityInBatch)
    );
    assert_eq!(key_agreements(&[(&k1, &good)]).map(|v| v.len()), Ok(1));
    assert_eq!(shared_secret(&k1, &bogus), Err(EcdhError::IdentityInBatch));
    let identity = Jacobian {
        x: Fe::ONE,
        y: Fe::ONE,
        z: Fe::ZERO,
    };
    let g = base_mul(&k1);
    assert!(z_inverses(&[g, identity, g]).is_err());
    assert!(z_inverses(&[g, g]).is_ok());
}

#[test]
fn public_points_are_validated_like_p256() {
    let mut cases: Vec<Vec<u8>> = Vec::new();
    for _ in 0..50 {
        let good = crate::random_secret_key()
            .unwrap()
            .public_key()
            .to_uncompressed();
        cases.push(good.to_vec());
        // One bit flipped anywhere: off the curve (or not 0x04).
        for bit in [0usize, 8, 9, 100, 263, 519] {
            let mut bad = good;
            bad[bit / 8] ^= 1 << (bit % 8);
            cases.push(bad.to_vec());
        }
        // y replaced by p - y is the negated point: still on the curve.
        let y = Fe::from_be_bytes(good[33..].try_into().unwrap());
        let mut neg = good;
        neg[33..].copy_from_slice(&y.neg().to_be_bytes());
        cases.push(neg.to_vec());
        cases.push(good[..64].to_vec());
    }
    // Coordinates at or above p: x = p.
    const P_BE: [u8; 32] =
        be_hex(b"ffffffff00000001000000000000000000000000ffffffffffffffffffffffff");
    let mut at_p = [0u8; 65];
    at_p[0] = 4;
    at_p[1..33].copy_from_slice(&P_BE);
    cases.push(at_p.to_vec());
    let mut identity = [0u8; 65];
    identity[0] = 4;
    cases.push(identity.to_vec());
    let g = scalar(small(1)).public_key().to_uncompressed();
    assert_eq!(&g[1..33], &GX_BE);
    assert_eq!(&g[33..], &GY_BE);
    for c in cases {
        let ours = PublicPoint::from_uncompressed(&c);
        let theirs = p256::PublicKey::from_sec1_bytes(&c).ok();
        assert_eq!(
            ours.is_some(),
            theirs.is_some() && c.len() == 65,
            "{c:02x?}"
        );
        if let Some(p) = ours {
            assert_eq!(p.to_uncompressed().as_slice(), c.as_slice());
        }
    }
}
