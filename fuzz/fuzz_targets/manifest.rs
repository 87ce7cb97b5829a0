//! `manifest.json` bytes → `Manifest::parse`: never panics, errors are one
//! line, and whatever parses serializes to bytes that parse back equal.
//! Also feeds the same bytes to `sign::verify` (which must not panic on
//! any key, signature length or message).

#![no_main]

use drover_agent::image::{manifest::MAX_MANIFEST_BYTES, sign, Manifest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let (Some(key), Some(sig)) = (data.get(..32), data.get(32..96)) {
        let mut k = [0u8; 32];
        k.copy_from_slice(key);
        let _ = sign::verify(data, sig, &kernel_cmdline::PublicKey(k));
    }

    match Manifest::parse(data) {
        Ok(m) => {
            let bytes = m.to_bytes();
            // Pretty printing can outgrow a compact input near the limit.
            if bytes.len() <= MAX_MANIFEST_BYTES {
                let again = Manifest::parse(&bytes).expect("to_bytes output must parse");
                assert_eq!(
                    again,
                    m,
                    "round trip of {:?}",
                    String::from_utf8_lossy(data)
                );
                assert_eq!(again.to_bytes(), bytes, "to_bytes must be deterministic");
            }
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains(['\n', '\r']), "multi-line error {msg:?}");
        }
    }
});
