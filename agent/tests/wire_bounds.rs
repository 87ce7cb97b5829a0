//! A hostile peer cannot make the wire decoder allocate: a connection's
//! [`FrameBuffer`] is allocated once at the torrent's bound, and reading
//! and decoding a hostile stream through it allocates nothing more. The
//! allocator counts bytes per thread (tests run on several), so this is
//! its own test binary.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{self, Read};

use drover_agent::torrent::wire::{FrameBuffer, Limits, Message, WireError, MAX_BLOCK};

struct Counting;

thread_local! {
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; the counter is a thread-local
// `Cell` with a const initializer, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.with(|a| a.set(a.get() + layout.size()));
        // SAFETY: the caller's contract is `System.alloc`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above, i.e. from `System`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn allocated() -> usize {
    ALLOCATED.with(Cell::get)
}

/// 2000 pieces of 32 KiB: a 250-byte bitfield.
const L: Limits = Limits {
    piece_count: 2000,
    piece_length: 32 << 10,
    length: 2000 * (32 << 10),
    max_block: MAX_BLOCK,
};

/// `prefix`, then `fill` forever.
struct Hostile {
    prefix: Vec<u8>,
    fill: u8,
}

impl Read for Hostile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(if self.prefix.is_empty() {
            buf.len()
        } else {
            self.prefix.len()
        });
        if self.prefix.is_empty() {
            buf[..n].fill(self.fill);
        } else {
            buf[..n].copy_from_slice(&self.prefix[..n]);
            self.prefix.drain(..n);
        }
        Ok(n)
    }
}

/// Feed `stream` to a fresh buffer until the decoder errors (or 10 MB
/// went by); returns the error and the bytes allocated meanwhile, the
/// buffer itself included.
fn drive(mut stream: Hostile) -> (Option<WireError>, usize) {
    let before = allocated();
    let mut fb = FrameBuffer::new(L);
    let mut read = 0usize;
    let error = loop {
        match fb.message() {
            Err(e) => break Some(e),
            Ok(Some(Message::Unknown { .. } | Message::KeepAlive)) => continue,
            Ok(Some(_)) => continue,
            Ok(None) => {}
        }
        if read > 10 << 20 {
            break None;
        }
        read += fb.read_from(&mut stream).unwrap();
    };
    let used = allocated() - before;
    // Deallocating the buffer after counting.
    drop(fb);
    (error, used)
}

#[test]
fn hostile_streams_cost_one_bounded_buffer() {
    // The buffer, plus a few hundred bytes for an error's text.
    let bound = 4 + 9 + MAX_BLOCK as usize + 256;
    let piece_header = |index: u32, begin: u32, len: u32| {
        let mut h = (9 + len).to_be_bytes().to_vec();
        h.push(7);
        h.extend_from_slice(&index.to_be_bytes());
        h.extend_from_slice(&begin.to_be_bytes());
        h
    };
    let cases: Vec<(&str, Vec<u8>, u8)> = vec![
        ("a 4 GiB length prefix", vec![0xff, 0xff, 0xff, 0xf0], 0),
        ("a 1 MiB piece", piece_header(0, 0, 1 << 20), 0xaa),
        (
            "a bitfield for 2^20 pieces",
            [&(1u32 + (1 << 17)).to_be_bytes()[..], &[5]].concat(),
            0xff,
        ),
        (
            "a bitfield one byte too long",
            [&252u32.to_be_bytes()[..], &[5]].concat(),
            0,
        ),
        (
            "a request past the piece",
            [
                &13u32.to_be_bytes()[..],
                &[6, 0, 0, 0, 1, 0, 0, 0x7f, 0xff, 0, 0, 0x40, 0],
            ]
            .concat(),
            0,
        ),
        (
            "a have past the last piece",
            [&5u32.to_be_bytes()[..], &[4], &2000u32.to_be_bytes()].concat(),
            0,
        ),
        ("a piece of piece 5000", piece_header(5000, 0, 16), 0),
    ];
    for (what, prefix, fill) in cases {
        let (error, used) = drive(Hostile { prefix, fill });
        let e = error.unwrap_or_else(|| panic!("{what}: no error after 10 MB"));
        assert!(
            used <= bound,
            "{what}: {used} bytes allocated (bound {bound}); error {e}"
        );
        eprintln!("{what}: {e} ({used} bytes allocated)");
    }

    // Endless unknown messages and keep-alives are skipped without
    // allocating either.
    let mut unknown = 1000u32.to_be_bytes().to_vec();
    unknown.push(20);
    unknown.extend(std::iter::repeat_n(0u8, 999));
    let mut stream = Vec::new();
    for _ in 0..1000 {
        stream.extend_from_slice(&unknown);
        stream.extend_from_slice(&[0, 0, 0, 0]);
    }
    let (error, used) = drive(Hostile {
        prefix: stream,
        fill: 0xff,
    });
    assert!(
        matches!(error, Some(WireError::TooLong { .. })),
        "{error:?}"
    );
    assert!(used <= bound, "{used} bytes allocated");
}
