//! Project Wycheproof's ECDH secp256r1 vectors with raw SEC1 public points
//! (`tests/vectors/wycheproof_ecdh_secp256r1_ecpoint_test.json`, from
//! github.com/C2SP/wycheproof `testvectors_v1/`, Apache-2.0), run through
//! the plugin's own entry points: receiver-key validation
//! ([`ReceiverKeys::from_bytes`]) and both key-agreement paths (one message
//! and the batch of a fan-out).
//!
//! - every `valid` case is accepted and gives the expected shared secret;
//! - every `invalid` case (off the curve, wrong encoding, wrong length,
//!   coordinates out of range, ...) is refused at validation;
//! - the `acceptable` compressed point is refused as a compressed point:
//!   Web Push keys are uncompressed (`PushManager.subscribe()`), so the
//!   plugin asks for that form instead of decompressing.

use jmap_web_push_crypto::ecdh::{key_agreements, shared_secret};
use jmap_web_push_crypto::{KeyError, ReceiverKeys, SecretScalar};
use serde_json::Value;

const VECTORS: &str = include_str!("vectors/wycheproof_ecdh_secp256r1_ecpoint_test.json");

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex {s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// The private key as a 32-octet scalar (Wycheproof writes it as an ASN.1
/// integer: a leading zero octet when the top bit is set).
fn private_key(s: &str) -> SecretScalar {
    let raw = hex(s);
    let raw = raw
        .strip_prefix(&[0u8][..])
        .filter(|r| r.len() == 32)
        .unwrap_or(&raw);
    let mut k = [0u8; 32];
    k[32 - raw.len()..].copy_from_slice(raw);
    SecretScalar::from_bytes(&k).expect("Wycheproof private keys are in [1, n-1]")
}

struct Case {
    id: u64,
    comment: String,
    public: Vec<u8>,
    private: SecretScalar,
    shared: Vec<u8>,
    result: String,
}

fn cases() -> Vec<Case> {
    let doc: Value = serde_json::from_str(VECTORS).expect("vector file");
    assert_eq!(doc["algorithm"], "ECDH");
    let mut out = Vec::new();
    for group in doc["testGroups"].as_array().expect("groups") {
        assert_eq!(group["curve"], "secp256r1");
        for t in group["tests"].as_array().expect("tests") {
            out.push(Case {
                id: t["tcId"].as_u64().expect("tcId"),
                comment: t["comment"].as_str().unwrap_or_default().to_owned(),
                public: hex(t["public"].as_str().expect("public")),
                private: private_key(t["private"].as_str().expect("private")),
                shared: hex(t["shared"].as_str().expect("shared")),
                result: t["result"].as_str().expect("result").to_owned(),
            });
        }
    }
    assert_eq!(
        out.len() as u64,
        doc["numberOfTests"].as_u64().expect("numberOfTests")
    );
    out
}

#[test]
fn wycheproof_ecdh_secp256r1_ecpoint_vectors_pass() {
    let auth = [7u8; 16];
    let (mut valid, mut invalid, mut compressed) = (0, 0, 0);
    let mut batch: Vec<(SecretScalar, ReceiverKeys, Vec<u8>)> = Vec::new();
    for case in cases() {
        let what = format!("tcId {} ({})", case.id, case.comment);
        let keys = ReceiverKeys::from_bytes(&case.public, &auth);
        match case.result.as_str() {
            "valid" => {
                let keys = keys.unwrap_or_else(|e| panic!("{what}: refused: {e}"));
                let shared = shared_secret(&case.private, keys.public_key())
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(shared.to_vec(), case.shared, "{what}");
                batch.push((case.private, keys, case.shared));
                valid += 1;
            }
            "invalid" => {
                assert!(keys.is_err(), "{what}: accepted an invalid public key");
                invalid += 1;
            }
            "acceptable" => {
                assert_eq!(case.public.len(), 33, "{what}");
                assert_eq!(keys.err(), Some(KeyError::CompressedPoint), "{what}");
                compressed += 1;
            }
            other => panic!("{what}: unknown result {other}"),
        }
    }
    assert_eq!((valid, invalid, compressed), (330, 24, 1));
    // The fan-out's batched path, in groups as `encrypt_batch` uses them
    // and as one batch of all 330.
    for size in [16, batch.len()] {
        for chunk in batch.chunks(size) {
            let pairs: Vec<_> = chunk.iter().map(|(k, r, _)| (k, r.public_key())).collect();
            let results = key_agreements(&pairs).expect("valid keys");
            for ((k, _, expected), (public, shared)) in chunk.iter().zip(results) {
                assert_eq!(shared.to_vec(), *expected);
                assert_eq!(public, k.public_key().to_uncompressed());
            }
        }
    }
}
