//! Bencode comes from `.torrent` files and tracker answers: decoding must
//! never panic or exceed its limits, only the canonical form decodes (so
//! re-encoding gives the input back, which the info-hash relies on), and
//! errors point inside the input.

#![no_main]

use drover_agent::torrent::bencode::{decode, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks sorted keys or not and a small depth, so the
    // limits themselves are explored too.
    let Some((&b, data)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        max_len: 1 << 16,
        max_depth: usize::from(b & 0x1f),
        max_values: 4096,
        sorted_keys: b & 0x80 != 0,
    };
    match decode(data, &limits) {
        Ok(v) => assert_eq!(v.to_bytes(), data),
        Err(e) => {
            assert!(e.offset <= data.len(), "{e} (input {} bytes)", data.len());
            assert!(!e.to_string().contains('\n'));
        }
    }
});
