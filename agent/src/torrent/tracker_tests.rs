use proptest::prelude::*;

use super::*;

/// Announces captured from stock clients (Debian 12's aria2 1.36 and
/// python3-libtorrent 2.0.8) for the torrent of `fixtures/`, with their
/// own percent-encoding styles (upper and lower case hex, `)` unescaped).
const ARIA2_QUERY: &[u8] = b"info_hash=%81%D5%B1%82%29%3C%E6h%17%01%CBb%DE%FE%B1%88n%E2B%9E&peer_id=A2-1-36-0-o%3B%E3%E9Ir%CCotG&uploaded=0&downloaded=0&left=40000&compact=1&key=%E3%E9Ir%CCotG&numwant=50&no_peer_id=1&port=6962&event=started&supportcrypto=1";
const LIBTORRENT_QUERY: &[u8] = b"info_hash=%81%d5%b1%82)%3c%e6h%17%01%cbb%de%fe%b1%88n%e2B%9e&peer_id=-LT2080-oaguyz~UfHe5&port=6990&uploaded=0&downloaded=0&left=40000&corrupt=0&key=84BCDE48&event=started&numwant=200&compact=1&no_peer_id=1&supportcrypto=1&redundant=0";

fn announce() -> Announce {
    Announce {
        info_hash: InfoHash([0x81; 20]),
        peer_id: PeerId(*b"-DR0100-\x00\x01 +%&=\xff~.-_"),
        port: 7152,
        uploaded: 1,
        downloaded: 2,
        left: 3,
        event: Event::Started,
        compact: true,
        numwant: Some(80),
    }
}

#[test]
fn parses_stock_client_announces() {
    let hash = InfoHash::from_hex("81d5b182293ce6681701cb62defeb1886ee2429e").unwrap();
    let a = Announce::parse_query(ARIA2_QUERY).unwrap();
    assert_eq!(a.info_hash, hash);
    assert_eq!(&a.peer_id.0[..10], b"A2-1-36-0-");
    assert_eq!(
        (a.port, a.uploaded, a.downloaded, a.left),
        (6962, 0, 0, 40000)
    );
    assert_eq!(
        (a.event, a.compact, a.numwant),
        (Event::Started, true, Some(50))
    );

    let a = Announce::parse_query(LIBTORRENT_QUERY).unwrap();
    assert_eq!(a.info_hash, hash);
    assert_eq!(&a.peer_id.0, b"-LT2080-oaguyz~UfHe5");
    assert_eq!((a.port, a.left, a.numwant), (6990, 40000, Some(200)));
}

#[test]
fn announce_query_round_trip() {
    let a = announce();
    let q = a.to_query();
    assert!(q.starts_with("info_hash=%81%81"), "{q}");
    assert!(
        q.contains("&peer_id=-DR0100-%00%01%20%2B%25%26%3D%FF~.-_&"),
        "{q}"
    );
    assert_eq!(Announce::parse_query(q.as_bytes()).unwrap(), a);
    for event in [Event::None, Event::Stopped, Event::Completed] {
        let b = Announce {
            event,
            compact: false,
            numwant: None,
            ..a.clone()
        };
        assert_eq!(Announce::parse_query(b.to_query().as_bytes()).unwrap(), b);
    }
}

#[test]
fn announce_query_errors_say_what_is_accepted() {
    let base = announce().to_query();
    let without = |name: &str| -> String {
        base.split('&')
            .filter(|p| !p.starts_with(&format!("{name}=")))
            .collect::<Vec<_>>()
            .join("&")
    };
    let cases = [
        (without("info_hash"), "missing info_hash"),
        (without("peer_id"), "missing peer_id"),
        (without("port"), "missing port"),
        (without("left"), "missing left"),
        (
            format!("{base}&info_hash=abc"),
            "info_hash is 3 bytes; expected 20 (percent-encoded)",
        ),
        (
            format!("{base}&peer_id=%zz"),
            "bad percent escape \"%zz\"; expected % and two hex digits",
        ),
        (format!("{base}&peer_id=%4"), "bad percent escape \"%4\""),
        (format!("{base}&port=0"), "port=0; accepted: 1 to 65535"),
        (
            format!("{base}&port=65536"),
            "port=\"65536\"; accepted: 1 to 65535",
        ),
        (
            format!("{base}&left=-1"),
            "left=\"-1\"; accepted: a byte count (decimal)",
        ),
        (
            format!("{base}&event=begun"),
            "event=\"begun\"; accepted: started, stopped, completed, or none",
        ),
        (
            format!("{base}&compact=yes"),
            "compact=\"yes\"; accepted: 0 or 1",
        ),
        (
            format!("{base}&x={}", "y".repeat(4096)),
            "query of 4290 bytes; at most 4096 accepted",
        ),
    ];
    for (q, want) in cases {
        let e = Announce::parse_query(q.as_bytes()).unwrap_err().to_string();
        assert!(e.starts_with(want), "{q}: {e}");
    }
    // Unknown parameters and BEP 21's paused are fine.
    let q = format!("{base}&key=abc&ip=1.2.3.4&supportcrypto=1&event=paused&novalue");
    assert_eq!(
        Announce::parse_query(q.as_bytes()).unwrap().event,
        Event::None
    );
}

#[test]
fn scrape_query() {
    let h1 = InfoHash([1; 20]);
    let h2 = InfoHash([0xfe; 20]);
    let q = format!("info_hash={}&info_hash={}", escape(&h1.0), escape(&h2.0));
    assert_eq!(parse_scrape_query(q.as_bytes()).unwrap(), vec![h1, h2]);
    assert_eq!(parse_scrape_query(b"").unwrap(), vec![]);
    assert!(parse_scrape_query(b"info_hash=x").is_err());
}

fn peer(s: &str) -> Peer {
    Peer {
        addr: s.parse().unwrap(),
        id: None,
    }
}

#[test]
fn compact_answer_pinned() {
    let reply = AnnounceReply {
        interval: 30,
        min_interval: Some(5),
        complete: 1,
        incomplete: 2,
        peers: vec![peer("10.0.0.2:6881"), peer("[::1]:7000")],
    };
    let bytes = reply.encode(true);
    let want = [
        &b"d8:completei1e10:incompletei2e8:intervali30e12:min intervali5e5:peers6:"[..],
        &[10, 0, 0, 2, 0x1a, 0xe1],
        b"6:peers618:",
        &[0; 15],
        &[1, 0x1b, 0x58],
        b"e",
    ]
    .concat();
    assert_eq!(bytes, want);
    // IPv4 first, then peers6.
    assert_eq!(AnnounceReply::parse(&bytes).unwrap(), reply);
}

#[test]
fn listed_answer() {
    let mut reply = AnnounceReply {
        interval: 60,
        min_interval: None,
        complete: 0,
        incomplete: 0,
        peers: vec![peer("10.0.0.2:6881"), peer("[fe80::1]:7000")],
    };
    reply.peers[0].id = Some(PeerId([b'a'; 20]));
    let bytes = reply.encode(false);
    assert!(bytes.starts_with(
        b"d8:completei0e10:incompletei0e8:intervali60e5:peersld2:ip8:10.0.0.27:peer id20:aaaa"
    ));
    assert_eq!(AnnounceReply::parse(&bytes).unwrap(), reply);
}

#[test]
fn failures_and_bad_answers() {
    let f = failure("unknown torrent");
    assert_eq!(f, b"d14:failure reason15:unknown torrente");
    let e = AnnounceReply::parse(&f).unwrap_err().to_string();
    assert_eq!(e, "the tracker refused: unknown torrent");
    let e = parse_scrape(&f).unwrap_err().to_string();
    assert_eq!(e, "the tracker refused: unknown torrent");
    for (bytes, want) in [
        (&b"le"[..], "tracker answer: a list, not a dictionary"),
        (b"de", "tracker answer: no interval"),
        (
            b"d8:intervali-1ee",
            "tracker answer: interval is not a count",
        ),
        (
            b"d8:intervali1e5:peers5:abcdee",
            "tracker answer: compact peers of 5 bytes, not a multiple of 6",
        ),
        (
            b"d8:intervali1e5:peersi1ee",
            "tracker answer: peers is an integer",
        ),
        (
            b"d8:intervali1e5:peersld2:ip4:host4:porti1eeee",
            "tracker answer: a peer in the list: no ip address",
        ),
        (
            b"d8:intervali1e5:peersld2:ip7:1.2.3.44:porti70000eeee",
            "tracker answer: a peer in the list: no port",
        ),
        (b"d8:intervali1e", "tracker answer: bencode at byte 14"),
    ] {
        let e = AnnounceReply::parse(bytes).unwrap_err().to_string();
        assert!(e.starts_with(want), "{}: {e}", bytes.escape_ascii());
    }
}

#[test]
fn scrape_answer() {
    let files = vec![
        (
            InfoHash([1; 20]),
            ScrapeStats {
                complete: 1,
                downloaded: 2,
                incomplete: 3,
            },
        ),
        (InfoHash([2; 20]), ScrapeStats::default()),
    ];
    let bytes = encode_scrape(&files);
    assert!(bytes.starts_with(b"d5:filesd20:\x01\x01"));
    assert_eq!(parse_scrape(&bytes).unwrap(), files);
}

proptest! {
    #[test]
    fn any_announce_round_trips(
        hash in any::<[u8; 20]>(), id in any::<[u8; 20]>(), port in 1u16..,
        up in any::<u64>(), down in any::<u64>(), left in any::<u64>(),
        event in 0u8..4, compact in any::<bool>(), numwant in proptest::option::of(any::<u32>()),
    ) {
        let a = Announce {
            info_hash: InfoHash(hash),
            peer_id: PeerId(id),
            port,
            uploaded: up,
            downloaded: down,
            left,
            event: [Event::None, Event::Started, Event::Stopped, Event::Completed][usize::from(event)],
            compact,
            numwant,
        };
        prop_assert_eq!(Announce::parse_query(a.to_query().as_bytes()).unwrap(), a);
    }

    #[test]
    fn any_query_bytes_never_panic(q in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Announce::parse_query(&q);
        let _ = parse_scrape_query(&q);
    }

    #[test]
    fn answers_round_trip(
        peers in proptest::collection::vec((any::<[u8; 4]>(), any::<u16>()), 0..50),
        interval in any::<u32>(),
    ) {
        let reply = AnnounceReply {
            interval,
            min_interval: None,
            complete: 3,
            incomplete: 4,
            peers: peers.iter().map(|(ip, port)| Peer { addr: SocketAddr::new(IpAddr::from(*ip), *port), id: None }).collect(),
        };
        prop_assert_eq!(AnnounceReply::parse(&reply.encode(true)).unwrap(), reply.clone());
        prop_assert_eq!(AnnounceReply::parse(&reply.encode(false)).unwrap(), reply);
    }
}
