//! `.torrent` bytes → `Metainfo::parse`: never panics, errors are one
//! line, the info-hash is the SHA-1 of the bytes it came from, and a
//! parsed torrent re-encodes (as drover writes it) to one that parses to
//! the same pieces. `with_announce` keeps the info-hash.

#![no_main]

use drover_agent::torrent::metainfo::{with_announce, Metainfo};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match Metainfo::parse(data) {
        Ok(m) => {
            let again = Metainfo::parse(&m.to_bytes()).expect("to_bytes output must parse");
            assert_eq!(again.info, m.info);
            assert_eq!(again.announce, m.announce);
            // An announce longer than the one there could push a torrent
            // at the size limit over it.
            if data.len() > (8 << 20) - 64 {
                return;
            }
            let moved = with_announce(data, "http://10.0.0.1:8080/announce").expect("valid input");
            let moved = Metainfo::parse(&moved).expect("with_announce output must parse");
            assert_eq!(moved.info_hash, m.info_hash);
            assert_eq!(
                moved.announce.as_deref(),
                Some("http://10.0.0.1:8080/announce")
            );
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains(['\n', '\r']), "multi-line error {msg:?}");
        }
    }
});
