//! Message encryption: the RFC 8291 and RFC 8188 vectors, round trips
//! through the receiver side, batches, lengths and refusals.

use super::testing::*;
use super::*;
use crate::{b64url_decode, b64url_encode, keys::parse_receiver_keys};

fn d(s: &str) -> Vec<u8> {
    b64url_decode(s).unwrap()
}
fn arr<const N: usize>(s: &str) -> [u8; N] {
    d(s).try_into().unwrap()
}

// RFC 8291 Appendix A.
const PLAINTEXT: &[u8] = b"When I grow up, I want to be a watermelon";
const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";
const UA_PRIVATE: &str = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94";
const UA_PUBLIC: &str =
    "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
const AS_PRIVATE: &str = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw";
const AS_PUBLIC: &str =
    "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8";
const SALT: &str = "DGv6ra1nlYgDCS1FRnbzlw";
const ECDH_SECRET: &str = "kyrL1jIIOHEzg3sM2ZWRHDRB62YACZhhSlknJ672kSs";
const PRK_KEY: &str = "Snr3JMxaHVDXHWJn5wdC52WjpCtd2EIEGBykDcZW32k";
const KEY_INFO: &str = "V2ViUHVzaDogaW5mbwAEJXGyvs3942BVGq8e0PTNNmwRzr5VX4m8t7GGpTM5FzFo7OLr4BhZe9MEebhuPI-OztV3ylkYfpJGmQ22ggCLDgT-M_SrDepxkU21WCP3O1SUj0EwbZIHMtu5pZpTKGSCIA5Zent7wmC6HCJ5mFgJkuk5cwAvMBKiiujwa7t45ewP";
const IKM: &str = "S4lYMb_L0FxCeq0WhDx813KgSYqU26kOyzWUdsXYyrg";
const PRK: &str = "09_eUZGrsvxChDCGRCdkLiDXrReGOEVeSCdCcPBSJSc";
const CEK_INFO_B64: &str = "Q29udGVudC1FbmNvZGluZzogYWVzMTI4Z2NtAA";
const CEK: &str = "oIhVW04MRdy2XN9CiKLxTg";
const NONCE_INFO_B64: &str = "Q29udGVudC1FbmNvZGluZzogbm9uY2UA";
const NONCE: &str = "4h_95klXJ5E_qnoN";
const HEADER: &str = "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8";
const CIPHERTEXT_AND_TAG: &str =
    "8pfeW0KbunFT06SuDKoJH9Ql87S1QUrdirN6GcG7sFz1y1sqLgVi1VhjVkHsUoEsbI_0LpXMuGvnzQ";
const BODY: &str = concat!(
    "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27ml",
    "mlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPT",
    "pK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN",
);

fn rfc_keys() -> ReceiverKeys {
    parse_receiver_keys(UA_PUBLIC, AUTH).unwrap()
}

fn rfc_body() -> Vec<u8> {
    encrypt_with(
        PLAINTEXT,
        &rfc_keys(),
        &arr(AS_PRIVATE),
        &arr(SALT),
        MAX_PLAINTEXT_OCTETS,
    )
    .unwrap()
}

#[test]
fn rfc8291_appendix_a_body_byte_for_byte() {
    let body = rfc_body();
    assert_eq!(body.len(), 144);
    assert_eq!(body, d(BODY));
    assert_eq!(encrypted_len(PLAINTEXT.len()), 144);
    assert_eq!(&body[..HEADER_OCTETS], d(HEADER).as_slice());
    assert_eq!(&body[HEADER_OCTETS..], d(CIPHERTEXT_AND_TAG).as_slice());
}

#[test]
fn rfc8291_appendix_a_intermediate_values() {
    let as_key = SecretScalar::from_bytes(&arr::<32>(AS_PRIVATE)).unwrap();
    let as_public = as_key.public_key().to_uncompressed();
    let keys = rfc_keys();
    let shared = crate::ecdh::shared_secret(&as_key, keys.public_key()).unwrap();
    let got = derive(&shared, keys.auth(), keys.p256dh(), &as_public, &arr(SALT)).unwrap();
    let ki = key_info(keys.p256dh(), &as_public);
    let table: [(&str, &[u8], &str); 10] = [
        ("as_public", &as_public, AS_PUBLIC),
        ("ecdh_secret", &got.ecdh_secret, ECDH_SECRET),
        ("PRK_key", &got.prk_key, PRK_KEY),
        ("key_info", &ki, KEY_INFO),
        ("IKM", &got.ikm, IKM),
        ("PRK", &got.prk, PRK),
        ("cek_info", CEK_INFO, CEK_INFO_B64),
        ("CEK", &got.cek, CEK),
        ("nonce_info", NONCE_INFO, NONCE_INFO_B64),
        ("NONCE", &got.nonce, NONCE),
    ];
    for (name, value, want) in table {
        assert_eq!(b64url_encode(value), want, "{name}");
    }
    let mut header = Vec::new();
    write_header(&mut header, &arr(SALT), &as_public);
    assert_eq!(b64url_encode(&header), HEADER);
    // Padded plaintext.
    let mut padded = PLAINTEXT.to_vec();
    padded.push(LAST_RECORD_DELIMITER);
    assert_eq!(
        b64url_encode(&padded),
        "V2hlbiBJIGdyb3cgdXAsIEkgd2FudCB0byBiZSBhIHdhdGVybWVsb24C"
    );
}

#[test]
fn rfc8291_body_decrypts_with_test_receiver() {
    let pt = webpush_decrypt(&arr(UA_PRIVATE), &arr(AUTH), &d(BODY)).unwrap();
    assert_eq!(pt, PLAINTEXT);
    // Through the RFC 8188 core with the RFC's IKM.
    let (pt, keyid) = decrypt_records(&d(IKM), &d(BODY)).unwrap();
    assert_eq!(pt, PLAINTEXT);
    assert_eq!(keyid, d(AS_PUBLIC));
}

#[test]
fn rfc8188_section_3_1_single_record() {
    let body = d("I1BsxtFttlv3u_Oo94xnmwAAEAAA-NAVub2qFgBEuQKRapoZu-IxkIva3MEB1PD-ly8Thjg");
    assert_eq!(body.len(), 53);
    let ikm = d("yqdlZ-tYemfogSmv7Ws5PQ");
    let h = parse_header(&body).unwrap();
    assert_eq!(h.rs, 4096);
    assert!(h.keyid.is_empty());
    let (prk, cek, nonce) = derive_content_keys(&ikm, h.salt).unwrap();
    assert_eq!(
        b64url_encode(&prk),
        "zyeH5phsIsgUyd4oiSEIy35x-gIi4aM7y0hCF8mwn9g"
    );
    assert_eq!(b64url_encode(&cek), "_wniytB-ofscZDh4tbSjHw");
    assert_eq!(b64url_encode(&nonce), "Bcs8gkIRKLI8GeI8");
    let (pt, keyid) = decrypt_records(&ikm, &body).unwrap();
    assert_eq!(pt, b"I am the walrus");
    assert!(keyid.is_empty());
}

#[test]
fn rfc8188_section_3_2_multiple_records() {
    let body = d("uNCkWiNYzKTnBN9ji3-qWAAAABkCYTHOG8chz_gnvgOqdGYovxyjuqRyJFjEDyoF1Fvkj6hQPdPHI51OEUKEpgz3SsLWIqS_uA");
    assert_eq!(body.len(), 73);
    let ikm = d("BO3ZVPxUlnLORbVGMpbT1Q");
    let h = parse_header(&body).unwrap();
    assert_eq!(h.rs, 25);
    assert_eq!(h.keyid, b"a1");
    let (prk, cek, nonce) = derive_content_keys(&ikm, h.salt).unwrap();
    assert_eq!(
        b64url_encode(&prk),
        "mNHRBFh-eOCdAdmmuVtym8Hf44ov7FPsQZ3f4knYjHE"
    );
    assert_eq!(b64url_encode(&cek), "u_eEOTjjVWUVrH82pQNwpw");
    assert_eq!(b64url_encode(&nonce), "VqylG1rdt-mJrNgP");
    let (pt, keyid) = decrypt_records(&ikm, &body).unwrap();
    assert_eq!(pt, b"I am the walrus");
    assert_eq!(keyid, b"a1");
    // Dropping the last record is detected as truncation.
    let cut = &body[..body.len() - 25];
    assert_eq!(decrypt_records(&ikm, cut), Err(DecryptError::Truncated));
    // Swapping the records breaks authentication (nonces differ per record).
    let mut swapped = body[..23].to_vec();
    swapped.extend_from_slice(&body[48..]);
    swapped.extend_from_slice(&body[23..48]);
    assert_eq!(
        decrypt_records(&ikm, &swapped),
        Err(DecryptError::Authentication { record: 0 })
    );
}

/// The UA key pair used for random round trips (the RFC's).
fn ua() -> ([u8; 32], ReceiverKeys) {
    (arr(UA_PRIVATE), rfc_keys())
}

#[test]
fn round_trip_random() {
    let (ua_private, keys) = ua();
    for len in [0usize, 1, 2, 100, 3992, MAX_PLAINTEXT_OCTETS] {
        let pt: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        let body = encrypt(&pt, &keys, MAX_PLAINTEXT_OCTETS).unwrap();
        assert_eq!(body.len(), encrypted_len(len));
        assert!(body.len() <= 4096);
        check_b7_shape(&body).unwrap();
        let h = parse_header(&body).unwrap();
        assert_eq!(h.keyid[0], 4);
        assert_eq!(
            webpush_decrypt(&ua_private, keys.auth(), &body).unwrap(),
            pt
        );
    }
    // A fresh receiver key pair, too.
    let sk = crate::random_secret_key().unwrap();
    let auth: [u8; 16] = crate::random_array().unwrap();
    let keys = ReceiverKeys::from_bytes(&sk.public_key().to_uncompressed(), &auth).unwrap();
    let body = encrypt(b"{\"@type\":\"StateChange\"}", &keys, 4096).unwrap();
    let sk_bytes: [u8; 32] = sk.to_bytes();
    assert_eq!(
        webpush_decrypt(&sk_bytes, &auth, &body).unwrap(),
        b"{\"@type\":\"StateChange\"}"
    );
    // Wrong auth secret fails.
    assert_eq!(
        webpush_decrypt(&sk_bytes, &[0u8; 16], &body),
        Err(DecryptError::Authentication { record: 0 })
    );
}

#[test]
fn fresh_salt_and_key_per_message() {
    let (_, keys) = ua();
    let a = encrypt(PLAINTEXT, &keys, MAX_PLAINTEXT_OCTETS).unwrap();
    let b = encrypt(PLAINTEXT, &keys, MAX_PLAINTEXT_OCTETS).unwrap();
    assert_ne!(a, b);
    assert_ne!(a[..16], b[..16], "salt reused");
    assert_ne!(a[21..86], b[21..86], "ephemeral key reused");
    assert_ne!(a[86..], b[86..]);
}

#[test]
fn plaintext_limits() {
    let (_, keys) = ua();
    let big = vec![b'x'; MAX_PLAINTEXT_OCTETS + 1];
    assert_eq!(
        encrypt(&big, &keys, MAX_PLAINTEXT_OCTETS),
        Err(EceError::PlaintextTooLong {
            len: 3994,
            max: 3993
        })
    );
    // A larger caller limit is capped at the RFC maximum.
    assert_eq!(
        encrypt(&big, &keys, usize::MAX),
        Err(EceError::PlaintextTooLong {
            len: 3994,
            max: 3993
        })
    );
    assert!(encrypt(&big[..3993], &keys, usize::MAX).is_ok());
    // A configurable lower limit.
    assert_eq!(
        encrypt(&big[..101], &keys, 100),
        Err(EceError::PlaintextTooLong { len: 101, max: 100 })
    );
    assert!(encrypt(&big[..100], &keys, 100).is_ok());
    assert_eq!(
        encrypt(b"x", &keys, 0),
        Err(EceError::PlaintextTooLong { len: 1, max: 0 })
    );
    assert!(encrypt(b"", &keys, 0).is_ok());
    assert!(EceError::PlaintextTooLong { len: 1, max: 0 }
        .to_string()
        .contains("1 octets"));
    // The injection path applies the same limit and rejects bad scalars.
    assert!(matches!(
        encrypt_with(&big, &keys, &arr(AS_PRIVATE), &arr(SALT), 5000),
        Err(EceError::PlaintextTooLong { .. })
    ));
    assert_eq!(
        encrypt_with(b"x", &keys, &[0u8; 32], &arr(SALT), 100),
        Err(EceError::InvalidEphemeralKey)
    );
    assert_eq!(
        encrypt_with(b"x", &keys, &[0xff; 32], &arr(SALT), 100),
        Err(EceError::InvalidEphemeralKey)
    );
}

#[test]
fn every_bit_flip_is_detected() {
    let body = d(BODY);
    let ua_private = arr(UA_PRIVATE);
    let auth = arr(AUTH);
    assert!(webpush_decrypt(&ua_private, &auth, &body).is_ok());
    check_b7_shape(&body).unwrap();
    let mut caught_by_receiver = 0usize;
    let mut caught_by_shape_only = 0usize;
    for i in 0..body.len() {
        for bit in 0..8 {
            let mut t = body.clone();
            t[i] ^= 1 << bit;
            let r = webpush_decrypt(&ua_private, &auth, &t);
            if (16..20).contains(&i) {
                // rs is not authenticated by RFC 8188: an RFC receiver only
                // notices values that move the record boundary (here: rs = 0,
                // from flipping bit 12); the B7 shape check catches all.
                let rs = u32::from_be_bytes(t[16..20].try_into().unwrap());
                assert_eq!(r.is_err(), rs < 18, "rs {rs}");
                assert!(check_b7_shape(&t).is_err(), "rs {rs}");
                if r.is_err() {
                    caught_by_receiver += 1;
                } else {
                    caught_by_shape_only += 1;
                }
            } else {
                assert!(r.is_err(), "flip of bit {bit} in octet {i} went unnoticed");
                caught_by_receiver += 1;
            }
        }
    }
    assert_eq!(caught_by_receiver, 144 * 8 - 31);
    assert_eq!(caught_by_shape_only, 31);
    // Truncation and extension are detected too.
    for cut in 0..body.len() {
        assert!(webpush_decrypt(&ua_private, &auth, &body[..cut]).is_err());
    }
    let mut longer = body.clone();
    longer.push(0);
    assert!(webpush_decrypt(&ua_private, &auth, &longer).is_err());
}

#[test]
fn decryptor_padding_rules() {
    // Build single records by hand with the RFC 8188 §3.1 keys.
    let ikm = d("yqdlZ-tYemfogSmv7Ws5PQ");
    let salt = d("I1BsxtFttlv3u_Oo94xnmw");
    let (_, cek, nonce) = derive_content_keys(&ikm, &salt).unwrap();
    let seal = |record: &[u8]| {
        let mut body = salt.clone();
        body.extend_from_slice(&4096u32.to_be_bytes());
        body.push(0);
        let mut buf = record.to_vec();
        let tag = Aes128Gcm::new(&cek.into())
            .encrypt_inout_detached(&nonce.into(), &[], buf.as_mut_slice().into())
            .unwrap();
        body.extend_from_slice(&buf);
        body.extend_from_slice(&tag);
        body
    };
    assert_eq!(
        decrypt_records(&ikm, &seal(b"abc\x02\0\0\0")).unwrap().0,
        b"abc"
    );
    assert_eq!(
        decrypt_records(&ikm, &seal(b"\0\0")),
        Err(DecryptError::NoDelimiter { record: 0 })
    );
    assert_eq!(
        decrypt_records(&ikm, &seal(b"abc\x03")),
        Err(DecryptError::WrongDelimiter {
            record: 0,
            delimiter: 3
        })
    );
    assert_eq!(
        decrypt_records(&ikm, &seal(b"abc\x01")),
        Err(DecryptError::Truncated)
    );
}

/// A batch encrypts every message with its own injected key and salt:
/// the RFC 8291 example comes out byte for byte among other receivers,
/// every other body carries its salt and key id (checked against
/// `p256`) and opens with its receiver's key through the one-message
/// ECDH (a separate code path from the batch's); a message too long or
/// with an invalid scalar fails alone.
#[test]
fn a_batch_encrypts_each_message_for_its_own_receiver() {
    use p256::elliptic_curve::sec1::ToSec1Point as _;
    let receivers: Vec<([u8; 32], ReceiverKeys)> = (0..5)
        .map(|i| {
            if i == 2 {
                (arr(UA_PRIVATE), rfc_keys())
            } else {
                let sk = crate::random_secret_key().unwrap();
                let auth: [u8; 16] = crate::random_array().unwrap();
                let pk = sk.public_key().to_uncompressed();
                (sk.to_bytes(), ReceiverKeys::from_bytes(&pk, &auth).unwrap())
            }
        })
        .collect();
    let too_long = vec![b'x'; 200];
    let plaintexts: [&[u8]; 5] = [b"", b"{\"a\":1}", PLAINTEXT, &too_long, b"last"];
    let mut secrets: Vec<([u8; 32], [u8; SALT_OCTETS])> = (0..5)
        .map(|_| {
            (
                crate::random_secret_key().unwrap().to_bytes(),
                crate::random_array().unwrap(),
            )
        })
        .collect();
    secrets[2] = (arr(AS_PRIVATE), arr(SALT));
    secrets[4].0 = [0u8; 32]; // not a valid scalar
    let messages: Vec<(&[u8], &ReceiverKeys)> = plaintexts
        .iter()
        .zip(&receivers)
        .map(|(pt, (_, keys))| (*pt, keys))
        .collect();
    let batch = encrypt_batch_with(&messages, &secrets, 100);
    assert_eq!(batch.len(), 5);
    assert_eq!(batch[2].as_deref(), Ok(d(BODY).as_slice()));
    assert_eq!(
        batch[3],
        Err(EceError::PlaintextTooLong { len: 200, max: 100 })
    );
    assert_eq!(batch[4], Err(EceError::InvalidEphemeralKey));
    for i in [0, 1, 2] {
        let (sk, keys) = &receivers[i];
        let body = batch[i].as_ref().unwrap();
        let h = parse_header(body).unwrap();
        assert_eq!(h.salt, secrets[i].1, "salt of message {i}");
        let expected = p256::SecretKey::from_bytes(&secrets[i].0.into())
            .unwrap()
            .public_key()
            .to_sec1_point(false);
        assert_eq!(h.keyid, expected.as_bytes(), "key id of message {i}");
        assert_eq!(
            webpush_decrypt(sk, keys.auth(), body).unwrap(),
            plaintexts[i],
            "message {i}"
        );
    }
    assert!(encrypt_batch_with(&[], &[], 100).is_empty());
}

/// [`encrypt_batch`] draws a fresh key and salt per message, and
/// Mozilla's `ece` crate opens every body.
#[test]
fn a_random_batch_decrypts_with_mozilla_ece_and_never_repeats_key_or_salt() {
    let (ua_private, keys) = ua();
    let components = ::ece::EcKeyComponents::new(ua_private.to_vec(), keys.p256dh().to_vec());
    let too_long = vec![0xa5u8; MAX_PLAINTEXT_OCTETS + 1];
    let full = vec![0x5au8; MAX_PLAINTEXT_OCTETS];
    let mut plaintexts: Vec<&[u8]> = vec![PLAINTEXT; 16];
    plaintexts[5] = &too_long;
    plaintexts[9] = &full;
    let messages: Vec<(&[u8], &ReceiverKeys)> = plaintexts.iter().map(|pt| (*pt, &keys)).collect();
    let batch = encrypt_batch(&messages, MAX_PLAINTEXT_OCTETS);
    let mut salts = std::collections::HashSet::new();
    let mut ephemerals = std::collections::HashSet::new();
    for (i, got) in batch.iter().enumerate() {
        if i == 5 {
            assert_eq!(
                got,
                &Err(EceError::PlaintextTooLong {
                    len: 3994,
                    max: 3993
                })
            );
            continue;
        }
        let body = got.as_ref().unwrap();
        assert_eq!(body.len(), encrypted_len(plaintexts[i].len()));
        check_b7_shape(body).unwrap();
        assert!(salts.insert(body[..16].to_vec()), "salt repeated");
        assert!(
            ephemerals.insert(body[21..86].to_vec()),
            "ephemeral key repeated"
        );
        assert_eq!(
            ::ece::decrypt(&components, keys.auth(), body).unwrap(),
            plaintexts[i]
        );
    }
    assert_eq!(salts.len(), 15);
}

/// Mozilla's `ece` crate (OpenSSL backend) opens what we encrypt.
#[test]
fn interop_mozilla_ece_decrypts_our_output() {
    let (ua_private, keys) = ua();
    let components = ::ece::EcKeyComponents::new(ua_private.to_vec(), keys.p256dh().to_vec());
    for pt in [&b""[..], PLAINTEXT, &vec![0xa5u8; MAX_PLAINTEXT_OCTETS][..]] {
        let body = encrypt(pt, &keys, MAX_PLAINTEXT_OCTETS).unwrap();
        let got = ::ece::decrypt(&components, keys.auth(), &body).unwrap();
        assert_eq!(got, pt);
    }
    // And the RFC body, to pin the vector against an independent implementation.
    assert_eq!(
        ::ece::decrypt(&components, keys.auth(), &rfc_body()).unwrap(),
        PLAINTEXT
    );
    // And the other direction: our test receiver opens ece's output.
    let body = ::ece::encrypt(keys.p256dh(), keys.auth(), PLAINTEXT).unwrap();
    assert_eq!(
        webpush_decrypt(&ua_private, keys.auth(), &body).unwrap(),
        PLAINTEXT
    );
}
