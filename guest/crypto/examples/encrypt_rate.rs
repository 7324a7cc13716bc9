//! Native rate of one RFC 8291 encryption (191-octet payload), for
//! comparing backends: build it once as is and once with the RustCrypto
//! software backends forced, e.g.
//! `RUSTFLAGS='--cfg aes_backend="soft" --cfg polyval_backend="soft" --cfg sha2_backend="soft"'`.
use std::time::Instant;

use jmap_web_push_crypto::ece;
use jmap_web_push_crypto::keys::ReceiverKeys;

fn main() {
    use p256::elliptic_curve::sec1::ToSec1Point;
    let public = p256::SecretKey::from_slice(&[7u8; 32])
        .expect("key")
        .public_key()
        .to_sec1_point(false);
    let keys = ReceiverKeys::from_bytes(public.as_bytes(), &[9u8; 16]).expect("receiver keys");
    let payload = vec![b'x'; 191];
    let mut best = f64::MAX;
    for _ in 0..7 {
        let n = 2000;
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(
                ece::encrypt(std::hint::black_box(&payload), &keys, 3993).expect("encrypt"),
            );
        }
        best = best.min(t.elapsed().as_secs_f64() / n as f64);
    }
    println!("{:.1} us per message ({:.0}/s)", best * 1e6, 1.0 / best);
}
