use proptest::prelude::*;

use super::*;

/// 10 pieces of 32 KiB, the last 1000 bytes: a 2-byte bitfield with 6
/// spare bits.
const L: Limits = Limits {
    piece_count: 10,
    piece_length: 32 << 10,
    length: 9 * (32 << 10) + 1000,
    max_block: MAX_BLOCK,
};

fn one(bytes: &[u8]) -> Result<Option<(Message<'_>, usize)>, WireError> {
    decode(bytes, &L)
}

#[test]
fn captured_bytes() {
    let block = [0xabu8; 3];
    let cases: Vec<(Message, Vec<u8>)> = vec![
        (Message::KeepAlive, vec![0, 0, 0, 0]),
        (Message::Choke, vec![0, 0, 0, 1, 0]),
        (Message::Unchoke, vec![0, 0, 0, 1, 1]),
        (Message::Interested, vec![0, 0, 0, 1, 2]),
        (Message::NotInterested, vec![0, 0, 0, 1, 3]),
        (Message::Have(9), vec![0, 0, 0, 5, 4, 0, 0, 0, 9]),
        (
            Message::Bitfield(&[0b1010_0000, 0b1100_0000]),
            vec![0, 0, 0, 3, 5, 0b1010_0000, 0b1100_0000],
        ),
        (
            Message::Request(BlockRef {
                index: 1,
                begin: 0x4000,
                length: 0x4000,
            }),
            vec![0, 0, 0, 13, 6, 0, 0, 0, 1, 0, 0, 0x40, 0, 0, 0, 0x40, 0],
        ),
        (
            Message::Piece {
                index: 9,
                begin: 997,
                block: &block,
            },
            vec![0, 0, 0, 12, 7, 0, 0, 0, 9, 0, 0, 3, 0xe5, 0xab, 0xab, 0xab],
        ),
        (
            Message::Cancel(BlockRef {
                index: 2,
                begin: 0,
                length: 1,
            }),
            vec![0, 0, 0, 13, 8, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1],
        ),
        // BEP 5's port and BEP 10's extended messages are skipped whole.
        (
            Message::Unknown {
                id: 9,
                payload: &[0x1a, 0xe1],
            },
            vec![0, 0, 0, 3, 9, 0x1a, 0xe1],
        ),
        (
            Message::Unknown {
                id: 20,
                payload: b"\x00d1:mdee",
            },
            [&[0, 0, 0, 9, 20][..], b"\x00d1:mdee"].concat(),
        ),
    ];
    for (msg, bytes) in &cases {
        assert_eq!(&msg.to_bytes(), bytes, "{msg:?}");
        let (got, used) = one(bytes).unwrap().unwrap();
        assert_eq!((&got, used), (msg, bytes.len()));
        // Every proper prefix is "not yet".
        for cut in 0..bytes.len() {
            assert_eq!(one(&bytes[..cut]), Ok(None), "{msg:?} cut at {cut}");
        }
    }
    // A stream of all of them, fed one byte at a time.
    let stream: Vec<u8> = cases.iter().flat_map(|(_, b)| b.clone()).collect();
    let mut fb = FrameBuffer::new(L);
    let mut reader = OneByte(&stream);
    let mut got = Vec::new();
    loop {
        if let Some(m) = fb.message().unwrap() {
            got.push(m.to_bytes());
        } else if fb.read_from(&mut reader).unwrap() == 0 {
            break;
        }
    }
    let want: Vec<Vec<u8>> = cases.iter().map(|(_, b)| b.clone()).collect();
    assert_eq!(got, want);
}

/// A reader that returns one byte per read.
struct OneByte<'a>(&'a [u8]);

impl Read for OneByte<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match (self.0.split_first(), buf.first_mut()) {
            (Some((&b, rest)), Some(out)) => {
                *out = b;
                self.0 = rest;
                Ok(1)
            }
            _ => Ok(0),
        }
    }
}

#[test]
fn handshake() {
    let h = Handshake::new(InfoHash([0x11; 20]), PeerId(*b"-DR0100-abcdefghijkl"));
    let bytes = h.encode();
    assert_eq!(bytes[0], 19);
    assert_eq!(&bytes[1..20], b"BitTorrent protocol");
    assert_eq!(&bytes[20..28], &[0; 8]);
    assert_eq!(Handshake::decode(&bytes), Ok(Some(h)));
    for cut in 0..HANDSHAKE_LEN {
        assert_eq!(Handshake::decode(&bytes[..cut]), Ok(None), "cut at {cut}");
    }
    // Wrong from the first byte: an HTTP request on the peer port.
    let e = Handshake::decode(b"GET / HTTP/1.1\r\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "not a BitTorrent handshake: starts \"GET / HTTP/1.1\\\\r\\\\n\"; expected 19 \"BitTorrent protocol\""
    );
    assert!(Handshake::decode(b"\x13BitTorrent protocoX").is_err());
    assert!(Handshake::decode(b"\x14").is_err());
    // Reserved bits of other clients are kept (and ignored).
    let mut other = bytes;
    other[25] = 0x10;
    assert_eq!(
        Handshake::decode(&other).unwrap().unwrap().reserved[5],
        0x10
    );

    let mut fb = FrameBuffer::new(L);
    let mut stream = bytes.to_vec();
    stream.extend_from_slice(&[0, 0, 0, 1, 2]);
    let mut r = OneByte(&stream);
    let got = loop {
        if let Some(h) = fb.handshake().unwrap() {
            break h;
        }
        fb.read_from(&mut r).unwrap();
    };
    assert_eq!(got, h);
    while fb.buffered() < 5 {
        fb.read_from(&mut r).unwrap();
    }
    assert_eq!(fb.message(), Ok(Some(Message::Interested)));
}

#[test]
fn hostile_messages_are_errors_saying_what() {
    let cases: &[(&[u8], &str)] = &[
        (
            &[0xff, 0xff, 0xff, 0xff],
            "message of 4294967295 bytes; at most 16393 accepted",
        ),
        (&[0, 0, 0x40, 0x0a], "message of 16394 bytes; at most 16393"),
        (
            &[0, 0, 0, 2, 0],
            "choke message of 2 bytes; expected 1 (no payload)",
        ),
        (
            &[0, 0, 0, 2, 3],
            "not interested message of 2 bytes; expected 1",
        ),
        (&[0, 0, 0, 4, 4], "have message of 4 bytes; expected 5"),
        (
            &[0, 0, 0, 5, 4, 0, 0, 0, 10],
            "have message for piece 10; the torrent has 10 pieces (0 to 9)",
        ),
        // The bitfield's size is wrong as soon as its length is known.
        (
            &[0, 0, 0, 4, 5],
            "bitfield message of 4 bytes; expected 3 (one bit for each of the torrent's 10 pieces)",
        ),
        (&[0, 0, 0, 2, 5], "bitfield message of 2 bytes; expected 3"),
        (
            &[0, 0, 0, 3, 5, 0xff, 0xc0 | 0x20],
            "bitfield has bits set past the torrent's 10 pieces",
        ),
        (&[0, 0, 0, 3, 5, 0xff, 0x01], "bitfield has bits set past"),
        (
            &[0, 0, 0, 12, 6],
            "request message of 12 bytes; expected 13",
        ),
        (&[0, 0, 0, 14, 8], "cancel message of 14 bytes; expected 13"),
        (
            &[0, 0, 0, 13, 6, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0x40, 0],
            "request message for piece 10; the torrent has 10 pieces",
        ),
        (
            &[0, 0, 0, 13, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 1],
            "request message for 16385 bytes; accepted: 1 to 16384",
        ),
        (
            &[0, 0, 0, 13, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            "request message for 0 bytes; accepted: 1 to 16384",
        ),
        // Past the end of a whole piece, of the short last one, and a
        // begin that would wrap a u32.
        (
            &[0, 0, 0, 13, 6, 0, 0, 0, 0, 0, 0, 0x40, 1, 0, 0, 0x40, 0],
            "request message for bytes 16385+16384 of piece 0, which has 32768 bytes",
        ),
        (
            &[0, 0, 0, 13, 8, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0x03, 0xe9],
            "cancel message for bytes 0+1001 of piece 9, which has 1000 bytes",
        ),
        (
            &[
                0, 0, 0, 13, 6, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 2,
            ],
            "request message for bytes 4294967295+2 of piece 1",
        ),
        (
            &[0, 0, 0, 9, 7],
            "piece message of 9 bytes; expected 10 to 16393",
        ),
        (
            &[0, 0, 0, 11, 7, 0, 0, 0, 9, 0, 0, 0x03, 0xe7, 1, 2],
            "piece message for bytes 999+2 of piece 9, which has 1000 bytes",
        ),
    ];
    for (bytes, want) in cases {
        let e = one(bytes).unwrap_err().to_string();
        assert!(e.starts_with(want), "{bytes:?}: {e}");
    }
}

#[test]
fn frame_buffer_refuses_a_huge_prefix_before_reading_the_body() {
    let mut fb = FrameBuffer::new(L);
    let capacity = fb.capacity();
    assert_eq!(capacity, 4 + 9 + 16384);
    // A peer announcing a 4 GiB message and then sending forever.
    let mut r = io::repeat(0xff);
    fb.read_from(&mut r).unwrap();
    assert!(matches!(fb.message(), Err(WireError::TooLong { .. })));
    assert_eq!(fb.capacity(), capacity);

    // The largest legal piece fits exactly, after a partial message.
    let block = vec![7u8; MAX_BLOCK as usize];
    let mut stream = vec![0, 0, 0, 1, 2];
    let piece = Message::Piece {
        index: 3,
        begin: 0x4000,
        block: &block,
    };
    piece.encode(&mut stream);
    let mut fb = FrameBuffer::new(L);
    let mut r = &stream[..];
    let mut got = Vec::new();
    while got.len() < 2 {
        if let Some(m) = fb.message().unwrap() {
            got.push(m.to_bytes());
        } else {
            assert!(fb.read_from(&mut r).unwrap() > 0);
        }
    }
    assert_eq!(got[1], piece.to_bytes());
}

#[test]
fn limits_of_a_torrent() {
    assert_eq!(L.bitfield_len(), 2);
    assert_eq!(L.piece_size(0), 32 << 10);
    assert_eq!(L.piece_size(9), 1000);
    let big = Limits {
        piece_count: 200_000,
        ..L
    };
    assert_eq!(big.max_body(), 1 + 25_000);
}

fn limits() -> impl Strategy<Value = Limits> {
    (1u32..40, 0u32..3, 1u64..=(32 << 10)).prop_map(|(count, shift, last)| {
        let piece_length = (16 << 10) << shift;
        Limits {
            piece_count: count,
            piece_length,
            length: u64::from(count - 1) * u64::from(piece_length) + last.min(piece_length.into()),
            max_block: MAX_BLOCK,
        }
    })
}

/// A valid message for `l`, owned.
fn message(l: Limits) -> impl Strategy<Value = (u8, Vec<u8>, BlockRef)> {
    let index = 0..l.piece_count;
    (0u8..12, index, any::<u32>(), any::<u32>(), any::<Vec<u8>>()).prop_map(
        move |(kind, index, a, b, bytes)| {
            let size = l.piece_size(index) as u32;
            let begin = a % size;
            let length = 1 + b % (size - begin).min(l.max_block);
            let mut bits = vec![0u8; l.bitfield_len() as usize];
            for i in 0..l.piece_count {
                if bytes.get(i as usize).is_some_and(|x| x & 1 == 1) {
                    bits[(i / 8) as usize] |= 0x80 >> (i % 8);
                }
            }
            let payload = match kind {
                5 => bits,
                7 => vec![0x5a; length as usize],
                10 => bytes.into_iter().take(64).collect(),
                _ => Vec::new(),
            };
            (
                kind,
                payload,
                BlockRef {
                    index,
                    begin,
                    length,
                },
            )
        },
    )
}

fn build(kind: u8, payload: &[u8], b: BlockRef) -> Message<'_> {
    match kind {
        0 => Message::KeepAlive,
        1 => Message::Choke,
        2 => Message::Unchoke,
        3 => Message::Interested,
        4 => Message::NotInterested,
        5 => Message::Bitfield(payload),
        6 => Message::Have(b.index),
        7 => Message::Piece {
            index: b.index,
            begin: b.begin,
            block: payload,
        },
        8 => Message::Request(b),
        9 => Message::Cancel(b),
        10 => Message::Unknown { id: 20, payload },
        _ => Message::Unknown {
            id: 9,
            payload: &[0x1a, 0xe1],
        },
    }
}

proptest! {
    #[test]
    fn valid_messages_round_trip(
        (l, msgs) in limits().prop_flat_map(|l| (Just(l), proptest::collection::vec(message(l), 1..8)))
    ) {
        let msgs: Vec<Message> = msgs.iter().map(|(k, p, b)| build(*k, p, *b)).collect();
        let mut stream = Vec::new();
        for m in &msgs {
            m.encode(&mut stream);
        }
        let mut rest = &stream[..];
        for m in &msgs {
            let (got, used) = decode(rest, &l).unwrap().unwrap();
            prop_assert_eq!(&got, m);
            rest = &rest[used..];
        }
        prop_assert!(rest.is_empty());
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        l in limits(),
        bytes in proptest::collection::vec(
            prop_oneof![Just(0u8), Just(1u8), 0u8..10, any::<u8>()], 0..80),
    ) {
        let mut rest = &bytes[..];
        while let Ok(Some((m, used))) = decode(rest, &l) {
            prop_assert!(used >= 4 && used <= rest.len());
            prop_assert!(used <= 4 + l.max_body() as usize);
            prop_assert_eq!(m.to_bytes(), &rest[..used]);
            rest = &rest[used..];
        }
    }
}
