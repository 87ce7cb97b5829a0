//! The chain's two faces at the protocol level: the head speaking frames
//! to a hand-written client, and the coordinator's HTTP API refusing what
//! it must (tokens, shapes, sizes) and starting sessions on command.

mod chain_lab;

use std::io::Write as _;
use std::net::TcpStream;
use std::time::Duration;

use chain_lab::*;
use drover_agent::chain::api::{
    Assignment, Join, SessionStatus, Start, Status, HEARTBEAT_PATH, JOIN_PATH, MAX_BODY,
    SESSIONS_PATH, START_PATH,
};
use drover_agent::chain::frame::{read_frame, Frame, Hello, RefuseCode};
use drover_agent::fetch::Client;

fn connect(lab: &Lab) -> TcpStream {
    let s = TcpStream::connect(lab.head).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

fn hello(session: &str, want: u32) -> Vec<u8> {
    hello_v(session, want, drover_agent::chain::frame::VERSION)
}

fn hello_v(session: &str, want: u32, version: u8) -> Vec<u8> {
    Frame::Hello(Hello {
        session: session.parse().unwrap(),
        mac: mac(1),
        want,
        version,
    })
    .encode()
}

/// Named `chain::…` so that `cargo test chain` selects them.
mod chain {
    use super::*;

    #[test]
    fn the_head_streams_from_the_chunk_asked_for() {
        let lab = Lab::new(2, session_config(1), None);
        let total = lab.manifest.chunks.len() as u32;
        let limit = drover_agent::chain::frame::limit_for(&lab.manifest);
        // Version 1: each chunk one CHUNK frame.
        let mut s = connect(&lab);
        s.write_all(&hello_v("chaintest@1.0", 5, 1)).unwrap();
        assert_eq!(
            read_frame(&mut s, limit).unwrap(),
            Frame::Welcome { start: 5, total }
        );
        for i in 5..total {
            let e = &lab.manifest.chunks[i as usize];
            let want = &lab.payload[e.offset as usize..(e.offset + e.length) as usize];
            match read_frame(&mut s, limit).unwrap() {
                Frame::Chunk { index, bytes } => {
                    assert_eq!(index, i);
                    assert!(bytes == want, "chunk {i} differs");
                }
                other => panic!("chunk {i}: got {other:?}"),
            }
        }
        // Then it closes.
        assert!(read_frame(&mut s, limit).is_err());

        // Version 2: each chunk in PARTs of at most PART_MAX, in order.
        let mut s = connect(&lab);
        s.write_all(&hello("chaintest@1.0", 5)).unwrap();
        assert_eq!(
            read_frame(&mut s, limit).unwrap(),
            Frame::Welcome { start: 5, total }
        );
        let mut parts = 0;
        for i in 5..total {
            let e = &lab.manifest.chunks[i as usize];
            let want = &lab.payload[e.offset as usize..(e.offset + e.length) as usize];
            let mut got = Vec::new();
            while got.len() < want.len() {
                match read_frame(&mut s, limit).unwrap() {
                    Frame::Part {
                        index,
                        offset,
                        bytes,
                    } => {
                        assert_eq!((index, offset as usize), (i, got.len()));
                        assert!(bytes.len() <= drover_agent::chain::frame::PART_MAX);
                        got.extend_from_slice(&bytes);
                        parts += 1;
                    }
                    other => panic!("chunk {i}: got {other:?}"),
                }
            }
            assert!(got == want, "chunk {i} differs");
        }
        assert!(
            parts > total - 5,
            "chunks over 64 KiB come in several parts"
        );
        assert!(read_frame(&mut s, limit).is_err());

        // Asking for the end: welcome, nothing else.
        let mut s = connect(&lab);
        s.write_all(&hello("chaintest@1.0", total)).unwrap();
        assert_eq!(
            read_frame(&mut s, limit).unwrap(),
            Frame::Welcome {
                start: total,
                total
            }
        );
        assert!(read_frame(&mut s, limit).is_err());
    }

    #[test]
    fn the_head_refuses_what_it_cannot_serve() {
        let lab = Lab::new(2, session_config(1), None);
        let total = lab.manifest.chunks.len() as u32;
        let mut bad_magic = hello("chaintest@1.0", 0);
        bad_magic[5] = b'X';
        let cases: Vec<(Vec<u8>, RefuseCode, &str)> = vec![
            (
                hello("chaintest@9", 0),
                RefuseCode::UnknownSession,
                "no image chaintest@9",
            ),
            (
                hello("chaintest@1.0", total + 1),
                RefuseCode::BadHello,
                "past the end",
            ),
            (
                Frame::KeepAlive { have: 0 }.encode(),
                RefuseCode::BadHello,
                "expected HELLO",
            ),
            (bad_magic, RefuseCode::BadHello, "magic"),
            (
                // A length over the HELLO limit is refused before it is read.
                vec![0, 1, 0, 0, 1],
                RefuseCode::BadHello,
                "over the limit",
            ),
        ];
        for (bytes, code, text) in cases {
            let mut s = connect(&lab);
            s.write_all(&bytes).unwrap();
            match read_frame(&mut s, 4096).unwrap() {
                Frame::Refuse(r) => {
                    assert_eq!(r.code, code, "{r:?}");
                    assert!(r.message.contains(text), "{r:?}");
                }
                other => panic!("{bytes:?}: got {other:?}"),
            }
        }
    }

    fn client(lab: &Lab, token: Option<&str>) -> Client {
        let mut c = Client::new(lab.server.clone());
        c.timeout = Duration::from_secs(5);
        c.token = token.map(str::to_owned);
        c
    }

    fn join_body(session: &str, mac: &str, listen: &str) -> Vec<u8> {
        serde_json::to_vec(&Join {
            session: session.into(),
            mac: mac.into(),
            listen: listen.into(),
            next: 0,
        })
        .unwrap()
    }

    #[test]
    fn the_api_checks_tokens_and_shapes() {
        let lab = Lab::new(2, session_config(3), None);
        let m1 = mac(1).to_string();
        let good = join_body("chaintest@1.0", &m1, "127.0.0.1:7151");
        let (t1, t2) = (token(1), token(2));
        let huge = vec![b' '; MAX_BODY + 1];
        // (token, path, body, status, part of the answer)
        type Case<'a> = (Option<&'a str>, &'a str, Vec<u8>, u16, &'a str);
        let cases: Vec<Case> = vec![
            (None, JOIN_PATH, good.clone(), 401, "missing or wrong deploy token"),
            (Some("nope"), JOIN_PATH, good.clone(), 401, "deploy token"),
            // Node 2's token is not node 1's.
            (Some(&t2), JOIN_PATH, good.clone(), 401, "deploy token"),
            (
                Some(&t1),
                JOIN_PATH,
                join_body("chaintest", &m1, "127.0.0.1:7151"),
                400,
                "not NAME@VERSION",
            ),
            (
                Some(&t1),
                JOIN_PATH,
                join_body("chaintest@2", &m1, "127.0.0.1:7151"),
                404,
                "no image chaintest@2",
            ),
            (
                Some(&t1),
                JOIN_PATH,
                join_body("chaintest@1.0", "52:54", "127.0.0.1:7151"),
                400,
                "mac \"52:54\"",
            ),
            (
                Some(&t1),
                JOIN_PATH,
                join_body("chaintest@1.0", &m1, "here"),
                400,
                "not IP:PORT",
            ),
            (
                Some(&t1),
                JOIN_PATH,
                join_body("chaintest@1.0", &m1, "127.0.0.1:0"),
                400,
                "no port",
            ),
            (Some(&t1), JOIN_PATH, b"{".to_vec(), 400, ""),
            (Some(&t1), JOIN_PATH, huge, 413, ""),
            (
                Some(&t1),
                HEARTBEAT_PATH,
                format!(
                    r#"{{"session":"chaintest@1.0","mac":"{m1}","generation":0,"received":0,"oldest":0,"written":0,"backpressured":false}}"#
                )
                .into_bytes(),
                404,
                "has not joined",
            ),
        ];
        for (token, path, body, status, text) in cases {
            let r = match client(&lab, token).post_json(path, &body, 4096) {
                Ok(r) => r,
                // The server may answer 413 and close before reading it all.
                Err(_) if status == 413 => continue,
                Err(e) => panic!("{path}: {e:#}"),
            };
            let said = String::from_utf8_lossy(&r.body);
            assert_eq!(r.head.status, status, "{path} {token:?}: {said}");
            assert!(said.contains(text), "{path} {token:?}: {said}");
        }

        // "0.0.0.0:PORT": the coordinator fills in the address it sees.
        let body = join_body("chaintest@1.0", &m1, "0.0.0.0:7151");
        let r = client(&lab, Some(&t1))
            .post_json(JOIN_PATH, &body, 4096)
            .unwrap();
        assert_eq!(r.head.status, 200);
        let a: Assignment = serde_json::from_slice(&r.body).unwrap();
        assert_eq!((a.status, a.upstream), (Status::Waiting, None));
        assert_eq!(a.heartbeat_ms, 200);
        let st = lab.status();
        assert!(!st.started);
        assert_eq!(st.nodes[0].events[0], "joined from 127.0.0.1:7151");
    }

    #[test]
    fn an_admin_starts_a_session_and_reads_it() {
        let lab = Lab::new(2, session_config(5), None);
        let status_path = format!("{SESSIONS_PATH}/chaintest@1.0");
        // Admin only.
        let e = client(&lab, Some(&token(1)))
            .get(&status_path, 1 << 16)
            .unwrap_err();
        assert!(format!("{e:#}").contains("401"), "{e:#}");
        let body = join_body("chaintest@1.0", &mac(1).to_string(), "127.0.0.1:7151");
        let r = client(&lab, Some(&token(1)))
            .post_json(JOIN_PATH, &body, 4096)
            .unwrap();
        assert_eq!(r.head.status, 200);

        let admin = client(&lab, Some(ADMIN));
        let start = serde_json::to_vec(&Start {
            session: "chaintest@1.0".into(),
        })
        .unwrap();
        let r = admin.post_json(START_PATH, &start, 1 << 16).unwrap();
        assert_eq!(r.head.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let st: SessionStatus = serde_json::from_slice(&r.body).unwrap();
        assert!(st.started);
        let st: SessionStatus =
            serde_json::from_slice(&admin.get(&status_path, 1 << 16).unwrap()).unwrap();
        assert_eq!(
            (st.chunks as usize, st.arity, st.nodes.len()),
            (lab.manifest.chunks.len(), 1, 1)
        );
        assert_eq!(st.nodes[0].upstream.as_deref(), Some("head"));
        assert_eq!(st.nodes[0].state, "active");
        let e = admin
            .get(&format!("{SESSIONS_PATH}/other@1"), 1 << 16)
            .unwrap_err();
        assert!(format!("{e:#}").contains("404"), "{e:#}");
    }

    #[test]
    fn a_full_head_refuses_busy() {
        let lab = Lab::new(2, session_config(1), None);
        let images = std::sync::Arc::new(drover_server::chain::StoreImages::new(
            drover_server::store::Store::new(lab.dir.path().join("store")),
        ));
        let cfg = drover_server::chain::HeadConfig {
            max_connections: 1,
            ..Default::default()
        };
        let l = lab
            .rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = l.local_addr().unwrap();
        lab.rt
            .spawn(drover_server::chain::serve_head(l, images, cfg));
        // The first connection takes the only slot (it has not said HELLO).
        let _first = TcpStream::connect(addr).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let mut second = TcpStream::connect(addr).unwrap();
        second
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        second.write_all(&hello("chaintest@1.0", 0)).unwrap();
        match read_frame(&mut second, 4096).unwrap() {
            Frame::Refuse(r) => assert_eq!(
                (r.code, r.message.as_str()),
                (RefuseCode::Busy, "the head already serves 1 streams")
            ),
            other => panic!("got {other:?}"),
        }
    }
}
