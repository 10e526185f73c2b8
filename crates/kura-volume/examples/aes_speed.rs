//! Raw speed of the volume's block cipher on this CPU, one core: AES-256-GCM sealing and
//! opening 4 KiB blocks with their 24-byte authenticated data, exactly as the volume does
//! (`kura_crypto::volume::VolumeCipher`). The ceiling for the volume's data path.
//!
//!   cargo run --release -p kura-volume --example aes_speed [GiB]

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use kura_crypto::volume::{BLOCK_OVERHEAD, BLOCK_SIZE, STORED_BLOCK_SIZE, VolumeCipher};

fn main() {
    let gib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    let key = kura_crypto::random_secret(32).unwrap();
    let cipher = VolumeCipher::new(&key).unwrap();
    let id = [7u8; 16];
    // A 1 MiB working set (256 blocks), reused: the volume encrypts data that is in cache.
    const RING: usize = 256;
    let plain = vec![0x5au8; BLOCK_SIZE * RING];
    let mut stored = vec![0u8; STORED_BLOCK_SIZE * RING];
    let blocks = gib * (1 << 30) / BLOCK_SIZE;

    let t = Instant::now();
    for round in 0..blocks / RING {
        let mut nonces = cipher.reserve_nonces(RING).unwrap();
        for i in 0..RING {
            let b = (round * RING + i) as u64;
            cipher
                .seal_block(
                    &mut nonces,
                    &id,
                    b % RING as u64,
                    &plain[i * BLOCK_SIZE..(i + 1) * BLOCK_SIZE],
                    &mut stored[i * STORED_BLOCK_SIZE..(i + 1) * STORED_BLOCK_SIZE],
                )
                .unwrap();
        }
    }
    let seal = t.elapsed().as_secs_f64();

    let mut out = vec![0u8; BLOCK_SIZE * RING];
    let t = Instant::now();
    for _ in 0..blocks / RING {
        for i in 0..RING {
            cipher
                .open_block(
                    &id,
                    i as u64,
                    &stored[i * STORED_BLOCK_SIZE..(i + 1) * STORED_BLOCK_SIZE],
                    &mut out[i * BLOCK_SIZE..(i + 1) * BLOCK_SIZE],
                )
                .expect("authentic");
        }
    }
    let open = t.elapsed().as_secs_f64();
    assert_eq!(out, plain);
    let bytes = (blocks * BLOCK_SIZE) as f64;
    println!(
        "{{\"bytes\":{},\"seal_MBps\":{:.0},\"open_MBps\":{:.0},\"seal_us_per_block\":{:.3},\"open_us_per_block\":{:.3},\"overhead_bytes_per_block\":{}}}",
        blocks * BLOCK_SIZE,
        bytes / seal / 1e6,
        bytes / open / 1e6,
        seal / blocks as f64 * 1e6,
        open / blocks as f64 * 1e6,
        BLOCK_OVERHEAD
    );
}
