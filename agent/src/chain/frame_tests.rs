use proptest::prelude::*;

use super::*;

fn session(s: &str) -> SessionId {
    s.parse().unwrap()
}

const MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0xd0, 0, 2]);

#[test]
fn captured_bytes() {
    // (frame, its bytes): the wire format, pinned.
    let cases: Vec<(Frame, Vec<u8>)> = vec![
        (
            Frame::Hello(Hello {
                session: session("demo@1.0"),
                mac: MAC,
                want: 7,
                version: 1,
            }),
            [
                &[0, 0, 0, 26, 1][..],
                b"DRVC",
                &[1, 0x52, 0x54, 0, 0xd0, 0, 2, 0, 0, 0, 7, 0, 8],
                b"demo@1.0",
            ]
            .concat(),
        ),
        (
            Frame::Welcome {
                start: 3,
                total: 0x0102_0304,
            },
            vec![0, 0, 0, 9, 2, 0, 0, 0, 3, 1, 2, 3, 4],
        ),
        (
            Frame::Refuse(Refuse {
                code: RefuseCode::TooOld,
                oldest: 40,
                message: "gone".into(),
            }),
            [&[0, 0, 0, 12, 3, 1, 0, 0, 0, 40, 0, 4][..], b"gone"].concat(),
        ),
        (
            Frame::Chunk {
                index: 258,
                bytes: b"abc".to_vec(),
            },
            [&[0, 0, 0, 8, 4, 0, 0, 1, 2][..], b"abc"].concat(),
        ),
        (
            Frame::Chunk {
                index: 0,
                bytes: Vec::new(),
            },
            vec![0, 0, 0, 5, 4, 0, 0, 0, 0],
        ),
        (
            Frame::KeepAlive { have: 9 },
            vec![0, 0, 0, 5, 5, 0, 0, 0, 9],
        ),
        (
            Frame::Part {
                index: 258,
                offset: 0x10000,
                bytes: b"ab".to_vec(),
            },
            [&[0, 0, 0, 11, 6, 0, 0, 1, 2, 0, 1, 0, 0][..], b"ab"].concat(),
        ),
    ];
    for (frame, bytes) in cases {
        assert_eq!(frame.encode(), bytes, "{frame:?}");
        assert_eq!(
            decode(&bytes, CONTROL_LIMIT),
            Ok(Some((frame.clone(), bytes.len())))
        );
        assert_eq!(
            read_frame(&mut &bytes[..], CONTROL_LIMIT).unwrap(),
            frame,
            "{frame:?}"
        );
        // Every proper prefix is "not yet".
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut], CONTROL_LIMIT), Ok(None), "{cut}");
        }
    }
}

#[test]
fn refusals() {
    let hello = Frame::Hello(Hello {
        session: session("a@b"),
        mac: MAC,
        want: 0,
        version: VERSION,
    })
    .encode();
    let with = |at: usize, v: u8| {
        let mut b = hello.clone();
        b[at] = v;
        b
    };
    let mut long_session = hello.clone();
    long_session.push(b'x');
    long_session[3] += 1;
    let cases: Vec<(Vec<u8>, usize, &str)> = vec![
        (vec![0, 0, 0, 0], 100, "empty frame"),
        (
            vec![0, 0, 0, 101, 4],
            100,
            "frame of 101 bytes is over the limit of 100",
        ),
        (vec![0, 0, 0, 1, 9], 100, "unknown frame kind 9"),
        (
            vec![0, 0, 0, 4, 4, 0, 0, 0],
            100,
            "malformed CHUNK frame: truncated",
        ),
        (
            with(5, b'X'),
            100,
            "malformed HELLO frame: not a drover chain HELLO (magic)",
        ),
        (
            with(9, 3),
            100,
            "malformed HELLO frame: protocol version 3, this side speaks 1 to 2",
        ),
        (
            with(9, 0),
            100,
            "malformed HELLO frame: protocol version 0, this side speaks 1 to 2",
        ),
        (
            vec![0, 0, 0, 8, 6, 0, 0, 0, 0, 0, 0, 0],
            100,
            "malformed PART frame: truncated",
        ),
        (long_session, 100, "malformed HELLO frame: 1 trailing bytes"),
        (
            vec![0, 0, 0, 6, 5, 0, 0, 0, 0, 0],
            100,
            "malformed KEEPALIVE frame: 1 trailing bytes",
        ),
        (
            [
                &[0, 0, 0, 18, 1][..],
                b"DRVC",
                &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ]
            .concat(),
            100,
            "malformed HELLO frame: chain session \"\" is not NAME@VERSION",
        ),
        (
            [&[0, 0, 0, 9, 3, 1, 0, 0, 0, 0, 0x04, 0x01][..], b"x"].concat(),
            100,
            "malformed REFUSE frame: message of 1025 bytes",
        ),
    ];
    for (bytes, limit, want) in cases {
        let err = decode(&bytes, limit).unwrap_err().to_string();
        assert!(err.starts_with(want), "{bytes:?}: {err}");
        assert!(read_frame(&mut &bytes[..], limit).is_err());
    }
    // A PART carries at most PART_MAX bytes, whatever the frame limit.
    let big = Frame::Part {
        index: 0,
        offset: 0,
        bytes: vec![0; PART_MAX + 1],
    }
    .encode();
    let err = decode(&big, 1 << 20).unwrap_err().to_string();
    assert!(
        err.starts_with("malformed PART frame: 65537 data bytes, at most 65536"),
        "{err}"
    );
}

#[test]
fn parts_cover_a_chunk_in_order() {
    let data: Vec<u8> = (0..PART_MAX * 2 + 5).map(|i| i as u8).collect();
    let mut wire = Vec::new();
    write_parts(&mut wire, 3, 0, &data[..PART_MAX + 1], PART_MAX).unwrap();
    write_parts(
        &mut wire,
        3,
        PART_MAX + 1,
        &data[PART_MAX + 1..],
        usize::MAX,
    )
    .unwrap();
    let mut r = &wire[..];
    let mut got = Vec::new();
    let mut offsets = Vec::new();
    while !r.is_empty() {
        match read_frame(&mut r, PART_MAX + PART_HEADER).unwrap() {
            Frame::Part {
                index: 3,
                offset,
                bytes,
            } => {
                assert_eq!(offset as usize, got.len());
                offsets.push(offset as usize);
                got.extend_from_slice(&bytes);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got, data);
    assert_eq!(offsets, [0, PART_MAX, PART_MAX + 1, 2 * PART_MAX + 1]);
}

#[test]
fn long_messages_are_cut_on_a_char_boundary() {
    let f = Frame::Refuse(Refuse {
        code: RefuseCode::Other(77),
        oldest: 0,
        message: "é".repeat(MAX_MESSAGE),
    });
    let (back, _) = decode(&f.encode(), CONTROL_LIMIT).unwrap().unwrap();
    let Frame::Refuse(r) = back else { panic!() };
    assert_eq!(r.code, RefuseCode::Other(77));
    assert_eq!(r.message, "é".repeat(MAX_MESSAGE / 2));
}

#[test]
fn session_ids() {
    assert_eq!(session("demo@1.0").parts(), ("demo", "1.0"));
    for bad in ["demo", "@1", "a@", "a@b@c", "../x@1", "a@.."] {
        assert!(bad.parse::<SessionId>().is_err(), "{bad}");
    }
    let long = format!("{}@{}", "n".repeat(128), "v".repeat(128));
    let f = Frame::Hello(Hello {
        session: session(&long),
        mac: MAC,
        want: 1,
        version: VERSION,
    });
    assert!(f.encode().len() <= CONTROL_LIMIT);
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    let session = ("[a-z][a-z0-9._-]{0,19}", "[0-9][a-z0-9._-]{0,10}")
        .prop_map(|(n, v)| format!("{n}@{v}").parse::<SessionId>().unwrap());
    prop_oneof![
        (session, any::<[u8; 6]>(), any::<u32>(), 1..=VERSION).prop_map(
            |(session, mac, want, version)| {
                Frame::Hello(Hello {
                    session,
                    mac: MacAddr(mac),
                    want,
                    version,
                })
            }
        ),
        (any::<u32>(), any::<u32>()).prop_map(|(start, total)| Frame::Welcome { start, total }),
        (1u8..=255, any::<u32>(), ".{0,40}").prop_map(|(code, oldest, message)| {
            Frame::Refuse(Refuse {
                code: RefuseCode::from_u8(code),
                oldest,
                message,
            })
        }),
        (any::<u32>(), proptest::collection::vec(any::<u8>(), 0..300))
            .prop_map(|(index, bytes)| Frame::Chunk { index, bytes }),
        any::<u32>().prop_map(|have| Frame::KeepAlive { have }),
        (
            any::<u32>(),
            any::<u32>(),
            proptest::collection::vec(any::<u8>(), 0..300)
        )
            .prop_map(|(index, offset, bytes)| Frame::Part {
                index,
                offset,
                bytes
            }),
    ]
}

proptest! {
    #[test]
    fn frames_round_trip_in_a_stream(frames in proptest::collection::vec(arb_frame(), 1..6)) {
        let stream: Vec<u8> = frames.iter().flat_map(|f| f.encode()).collect();
        let mut at = 0;
        let mut reader = &stream[..];
        for f in &frames {
            let (got, used) = decode(&stream[at..], CONTROL_LIMIT).unwrap().unwrap();
            prop_assert_eq!(&got, f);
            at += used;
            prop_assert_eq!(&read_frame(&mut reader, CONTROL_LIMIT).unwrap(), f);
        }
        prop_assert_eq!(at, stream.len());
    }

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400), limit in 0usize..600) {
        if let Ok(Some((f, used))) = decode(&bytes, limit) {
            prop_assert!(used <= bytes.len() && used <= limit + 4);
            // What decodes re-encodes to the same bytes, except a REFUSE's
            // lossy message and codes, which may differ in representation.
            if !matches!(f, Frame::Refuse(_)) {
                prop_assert_eq!(&f.encode()[..], &bytes[..used]);
            }
        }
    }

    #[test]
    fn any_kind_byte_with_any_body(kind in 0u8..8, body in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut frame = ((body.len() + 1) as u32).to_be_bytes().to_vec();
        frame.push(kind);
        frame.extend_from_slice(&body);
        let _ = decode(&frame, CONTROL_LIMIT);
    }
}
