//! Chain frames come from other nodes: decoding a stream of them must
//! never panic, never take more than the limit, and what decodes must
//! re-encode to the same bytes (REFUSE messages aside: they are decoded
//! lossily). The stream reader must agree with the slice decoder.

#![no_main]

use drover_agent::chain::frame::{decode, read_frame, Frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the limit, so both small and chunk-sized
    // limits are explored.
    let Some((&l, data)) = data.split_first() else {
        return;
    };
    let limit = usize::from(l) * 64;
    let mut rest = data;
    let mut reader = data;
    while let Ok(Some((frame, used))) = decode(rest, limit) {
        assert!(used >= 5 && used <= limit + 4 && used <= rest.len());
        if !matches!(frame, Frame::Refuse(_)) {
            assert_eq!(frame.encode(), &rest[..used]);
        }
        assert_eq!(read_frame(&mut reader, limit).ok().as_ref(), Some(&frame));
        rest = &rest[used..];
    }
});
