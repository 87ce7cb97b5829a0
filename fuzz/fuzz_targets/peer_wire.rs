//! Peer wire bytes come from any peer: the handshake and message decoders
//! must never panic, never take more than the torrent's bound, and what
//! decodes re-encodes to the same bytes. The frame buffer, fed the same
//! bytes in uneven reads, must agree with the slice decoder.

#![no_main]

use std::io::Read;

use drover_agent::torrent::wire::{decode, FrameBuffer, Handshake, Limits, MAX_BLOCK};
use libfuzzer_sys::fuzz_target;

/// Reads of 1 to 256 bytes, sizes taken from `steps` in turn.
struct Uneven<'a> {
    data: &'a [u8],
    steps: &'a [u8],
    i: usize,
}

impl Read for Uneven<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let step = 1 + usize::from(
            self.steps
                .get(self.i % self.steps.len().max(1))
                .copied()
                .unwrap_or(0),
        );
        self.i += 1;
        let n = self.data.len().min(buf.len()).min(step);
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fuzz_target!(|data: &[u8]| {
    // The first 4 bytes shape the torrent: piece count, piece length
    // (16 KiB << 0..3), the last piece's size.
    let Some((head, data)) = data.split_first_chunk::<4>() else {
        return;
    };
    let piece_count = 1 + u32::from(u16::from_be_bytes([head[0], head[1]]));
    let piece_length = (16u32 << 10) << (head[2] & 3);
    let last = 1 + u64::from(head[3]) * 97 % u64::from(piece_length);
    let limits = Limits {
        piece_count,
        piece_length,
        length: u64::from(piece_count - 1) * u64::from(piece_length) + last,
        max_block: MAX_BLOCK,
    };

    if let Ok(Some(h)) = Handshake::decode(data) {
        assert_eq!(&h.encode()[..], &data[..68]);
    }

    let mut decoded = Vec::new();
    let mut rest = data;
    while let Ok(Some((msg, used))) = decode(rest, &limits) {
        assert!(used >= 4 && used <= 4 + limits.max_body() as usize && used <= rest.len());
        let bytes = msg.to_bytes();
        assert_eq!(bytes, &rest[..used]);
        decoded.push(bytes);
        rest = &rest[used..];
    }

    let mut fb = FrameBuffer::new(limits);
    let capacity = fb.capacity();
    let mut reader = Uneven {
        data,
        steps: head,
        i: 0,
    };
    let mut again = Vec::new();
    loop {
        match fb.message() {
            Ok(Some(msg)) => {
                again.push(msg.to_bytes());
                continue;
            }
            Err(_) => break,
            Ok(None) => {}
        }
        if fb.read_from(&mut reader).unwrap() == 0 {
            break;
        }
    }
    assert_eq!(fb.capacity(), capacity);
    assert_eq!(again, decoded);
});
