//! Differential run of the plugin's P-256 key agreement against `p256`:
//! `cargo run --release -p jmap-web-push-crypto --example ecdh_differential -- COUNT [THREADS]`.
//!
//! Each block draws a random receiver key `R = r·G`, a random scalar `k0`
//! and a random step `s`, and checks the block's scalars `k_i = k0 + i·s`
//! (full-width, pseudo-random, all in `[1, n-1]`) through the fan-out's
//! batched path ([`key_agreements`], groups of 16, as `encrypt_batch` uses
//! it): the ephemeral public key `k_i·G` and the shared secret `x(k_i·R)`.
//! The reference walks the same points with `p256`'s own arithmetic, one
//! point addition per message (`k_{i+1}·R = k_i·R + s·R`), so that a
//! reference value costs a few microseconds instead of a full scalar
//! multiplication; every 64th message is also checked against `p256`'s
//! `diffie_hellman` and `public_key` from scratch, and so is every
//! message's one-message path ([`shared_secret`]) once per block.
//!
//! Prints the count checked and any mismatch (then exits non-zero).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use jmap_web_push_crypto::ecdh::{key_agreements, shared_secret};
use jmap_web_push_crypto::{random_array, PublicPoint, SecretScalar};
use p256::elliptic_curve::ff::Field as _;
use p256::elliptic_curve::group::Curve as _;
use p256::elliptic_curve::sec1::ToSec1Point as _;
use p256::elliptic_curve::PrimeField as _;
use p256::{AffinePoint, ProjectivePoint, Scalar};

const BLOCK: usize = 1024;
const GROUP: usize = 16;

fn random_scalar() -> Scalar {
    loop {
        let bytes: [u8; 32] = random_array().expect("random source");
        if let Some(s) = Option::<Scalar>::from(Scalar::from_repr(bytes.into())) {
            if !bool::from(s.is_zero()) {
                return s;
            }
        }
    }
}

fn encode(p: &AffinePoint) -> [u8; 65] {
    p.to_sec1_point(false)
        .as_bytes()
        .try_into()
        .expect("65 octets")
}

/// Checks one block; returns the number of messages checked.
fn block() -> Result<usize, String> {
    let r = random_scalar();
    let receiver = ProjectivePoint::GENERATOR * r;
    let receiver_point =
        PublicPoint::from_uncompressed(&encode(&receiver.to_affine())).ok_or("receiver")?;
    let (k0, step) = (random_scalar(), random_scalar());
    let mut scalars = Vec::with_capacity(BLOCK);
    let mut shared_ref = Vec::with_capacity(BLOCK);
    let mut public_ref = Vec::with_capacity(BLOCK);
    let (mut k, mut kr, mut kg) = (k0, receiver * k0, ProjectivePoint::GENERATOR * k0);
    let (sr, sg) = (receiver * step, ProjectivePoint::GENERATOR * step);
    for _ in 0..BLOCK {
        if bool::from(k.is_zero()) {
            break; // probability 2^-256 per draw
        }
        scalars.push(SecretScalar::from_bytes(&k.to_repr().into()).ok_or("scalar")?);
        shared_ref.push(kr);
        public_ref.push(kg);
        k += step;
        kr += sr;
        kg += sg;
    }
    let mut shared_aff = vec![AffinePoint::IDENTITY; shared_ref.len()];
    ProjectivePoint::batch_normalize(&shared_ref, &mut shared_aff);
    let mut public_aff = vec![AffinePoint::IDENTITY; public_ref.len()];
    ProjectivePoint::batch_normalize(&public_ref, &mut public_aff);
    for (g, chunk) in scalars.chunks(GROUP).enumerate() {
        let pairs: Vec<_> = chunk.iter().map(|k| (k, &receiver_point)).collect();
        let got = key_agreements(&pairs).map_err(|e| e.to_string())?;
        for (j, (public, shared)) in got.iter().enumerate() {
            let i = g * GROUP + j;
            let want_public = encode(&public_aff[i]);
            let want_shared: [u8; 32] = want_public_x(&shared_aff[i]);
            if *public != want_public || *shared != want_shared {
                return Err(format!(
                    "mismatch: k = {:02x?}, r = {:02x?}",
                    scalars[i].to_bytes(),
                    r.to_repr()
                ));
            }
            if i.is_multiple_of(64) {
                let sk = p256::SecretKey::from_bytes(&scalars[i].to_bytes().into())
                    .map_err(|e| e.to_string())?;
                let pk = p256::PublicKey::from_affine(receiver.to_affine())
                    .map_err(|e| e.to_string())?;
                let dh: [u8; 32] = (*sk.diffie_hellman(&pk).raw_secret_bytes()).into();
                let single =
                    shared_secret(&scalars[i], &receiver_point).map_err(|e| e.to_string())?;
                if dh != *shared || single != dh || encode(sk.public_key().as_affine()) != *public {
                    return Err(format!(
                        "mismatch from scratch: k = {:02x?}",
                        scalars[i].to_bytes()
                    ));
                }
            }
        }
    }
    Ok(scalars.len())
}

fn want_public_x(p: &AffinePoint) -> [u8; 32] {
    let encoded = encode(p);
    encoded[1..33].try_into().expect("32 octets")
}

fn main() {
    let mut args = std::env::args().skip(1);
    let count: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let threads: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let report_every = (count / 20).max(BLOCK as u64);
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (done, failed) = (done.clone(), failed.clone());
            std::thread::spawn(move || {
                while done.load(Ordering::Relaxed) < count && failed.load(Ordering::Relaxed) == 0 {
                    match block() {
                        Ok(n) => {
                            let before = done.fetch_add(n as u64, Ordering::Relaxed);
                            if (before + n as u64) / report_every != before / report_every {
                                eprintln!(
                                    "{} checked, {:.0} s",
                                    before + n as u64,
                                    start.elapsed().as_secs_f64()
                                );
                            }
                        }
                        Err(e) => {
                            eprintln!("{e}");
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    let secs = start.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    println!(
        "ecdh differential: {n} key agreements (k·G and x(k·R), batched path) checked against p256 \
         in {secs:.0} s on {threads} thread(s), {:.0}/s; mismatches: {}",
        n as f64 / secs,
        failed.load(Ordering::Relaxed)
    );
    if failed.load(Ordering::Relaxed) != 0 {
        std::process::exit(1);
    }
}
