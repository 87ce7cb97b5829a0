use proptest::prelude::*;

use super::*;

/// Made by mktorrent 1.1 (fixtures/make.sh) for [`fixture_payload`].
const MKTORRENT: &[u8] = include_bytes!("fixtures/demo-1.0.torrent");
/// Its info-hash as transmission-show and python3-libtorrent print it.
const MKTORRENT_HASH: &str = "81d5b182293ce6681701cb62defeb1886ee2429e";

fn fixture_payload() -> Vec<u8> {
    (0..40_000u32)
        .map(|i| ((i * 7 + i / 251) % 256) as u8)
        .collect()
}

fn info_of(name: &str, bytes: &[u8], piece_length: Option<u32>) -> Info {
    Info::build(name, bytes, bytes.len() as u64, piece_length).unwrap()
}

#[test]
fn agrees_with_a_stock_tool() {
    let theirs = Metainfo::parse(MKTORRENT).unwrap();
    assert_eq!(theirs.info_hash.to_string(), MKTORRENT_HASH);
    assert_eq!(
        theirs.announce.as_deref(),
        Some("http://tracker.invalid/announce")
    );
    // The same file and piece length give the same info dictionary.
    let ours = info_of("demo-1.0.payload", &fixture_payload(), Some(32 << 10));
    assert_eq!(theirs.info, ours);
    assert_eq!(ours.info_hash(), theirs.info_hash);
    assert_eq!(
        crate::image::digest::encode_hex(&ours.pieces[1]),
        "69ff0f88c89c454a31a062e43651e6450aa10a07",
        "python3-libtorrent's hash_for_piece(1)"
    );
}

#[test]
fn pinned_encoding() {
    let info = info_of("demo-1.payload", b"hello", None);
    assert_eq!(info.piece_length, 16 << 10);
    let m = Metainfo::new(info, Some("http://s/announce".into()));
    let mut want = b"d8:announce17:http://s/announce4:infod6:lengthi5e4:name14:demo-1.payload12:piece lengthi16384e6:pieces20:".to_vec();
    want.extend_from_slice(&piece_hash(b"hello"));
    want.extend_from_slice(b"ee");
    assert_eq!(m.to_bytes(), want);
    assert_eq!(Metainfo::parse(&want).unwrap(), m);
    // Without announce: the stored form; same info-hash.
    let stored = Metainfo::new(m.info.clone(), None);
    assert!(stored.to_bytes().starts_with(b"d4:infod6:length"));
    assert_eq!(stored.info_hash, m.info_hash);
}

#[test]
fn piece_length_choice() {
    const K: u64 = 1024;
    for (len, want) in [
        (1, 16 * K),
        (2000 * 16 * K, 16 * K),
        (2000 * 16 * K + 1, 32 * K),
        (50 << 20, 32 * K),
        (1 << 30, 1024 * K),
        (1 << 40, 16 << 20),
    ] {
        assert_eq!(u64::from(choose_piece_length(len)), want, "{len}");
    }
    assert_eq!(check_piece_length(32 << 10), Ok(32 << 10));
    for bad in [0, 1000, 8 << 10, 48 << 10, 32 << 20, 1 << 40] {
        let e = check_piece_length(bad).unwrap_err();
        assert_eq!(
            e,
            format!(
                "{bad} bytes; accepted: a power of two from 16384 (16 KiB) to 16777216 (16 MiB)"
            )
        );
    }
}

#[test]
fn pieces_and_ranges() {
    let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
    let info = info_of("x", &data, Some(32 << 10));
    assert_eq!(info.piece_count(), 4);
    assert_eq!(info.piece_range(0), 0..32768);
    assert_eq!(info.piece_range(3), 98304..100_000);
    assert_eq!(info.piece_size(3), 1696);
    for i in 0..4 {
        let r = info.piece_range(i);
        assert_eq!(
            info.pieces[i as usize],
            piece_hash(&data[r.start as usize..r.end as usize])
        );
    }
    // Exactly whole pieces: no empty last piece.
    let info = info_of("x", &data[..65536], Some(32 << 10));
    assert_eq!(info.piece_count(), 2);
}

#[test]
fn build_refuses_what_parse_would() {
    let e = Info::build("x", &b""[..], 0, None).unwrap_err().to_string();
    assert_eq!(
        e,
        "metainfo: `info.length`: 0 bytes; an empty file has no pieces to share"
    );
    let e = Info::build("x", &b"abc"[..], 4, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("read 3 bytes where 4 were expected"), "{e}");
    let e = Info::build("a/b", &b"abc"[..], 3, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("metainfo: `info.name`: \"a/b\"; accepted: 1 to 255 bytes"),
        "{e}"
    );
    let e = Info::build("x", &b"abc"[..], 3, Some(1000))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("metainfo: `info.piece length`: 1000 bytes; accepted"),
        "{e}"
    );
}

/// `d4:infod…ee` with the info entries given (already sorted).
fn torrent(info_entries: &str) -> Vec<u8> {
    format!("d4:infod{info_entries}ee").into_bytes()
}

#[test]
fn parse_errors_name_the_field() {
    let p20 = "x".repeat(20);
    let good = format!("6:lengthi5e4:name1:x12:piece lengthi16384e6:pieces20:{p20}");
    assert!(Metainfo::parse(&torrent(&good)).is_ok());
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"le".to_vec(),
            "metainfo: `(the file)`: a list; expected a dictionary",
        ),
        (b"de".to_vec(), "metainfo: `info`: missing"),
        (
            b"d4:infoi1ee".to_vec(),
            "metainfo: `info`: an integer; expected a dictionary",
        ),
        (
            b"d8:announcei1e4:infodee".to_vec(),
            "metainfo: `announce`: an integer; expected a byte string",
        ),
        (
            torrent("5:filesle4:name1:x"),
            "metainfo: `info.files`: a multi-file torrent; accepted: one file",
        ),
        (
            torrent("12:meta versioni2e4:name1:x"),
            "metainfo: `info.pieces`: missing: a BitTorrent v2-only torrent",
        ),
        (
            torrent("6:pieces3:abc"),
            "metainfo: `info.pieces`: 3 bytes, not a multiple of 20",
        ),
        (
            torrent(&format!("6:pieces20:{p20}")),
            "metainfo: `info.name`: missing",
        ),
        (
            torrent(&format!("4:name1:x6:pieces20:{p20}")),
            "metainfo: `info.length`: missing",
        ),
        (
            torrent(&format!(
                "6:lengthi-1e4:name1:x12:piece lengthi16384e6:pieces20:{p20}"
            )),
            "metainfo: `info.length`: -1; expected a non-negative integer",
        ),
        (
            torrent(&format!(
                "6:lengthi5e4:name1:x12:piece lengthi1000e6:pieces20:{p20}"
            )),
            "metainfo: `info.piece length`: 1000 bytes; accepted: a power of two",
        ),
        (
            torrent("6:lengthi0e4:name1:x12:piece lengthi16384e6:pieces0:"),
            "metainfo: `info.length`: 0 bytes",
        ),
        (
            torrent(&format!(
                "6:lengthi16385e4:name1:x12:piece lengthi16384e6:pieces20:{p20}"
            )),
            "metainfo: `info.pieces`: 1 SHA-1s, but 16385 bytes in pieces of 16384 need 2",
        ),
        (
            torrent(&format!(
                "6:lengthi5e4:name2:..12:piece lengthi16384e6:pieces20:{p20}"
            )),
            "metainfo: `info.name`: \"..\"; accepted",
        ),
        (
            torrent(&format!(
                "4:name1:x6:lengthi5e12:piece lengthi16384e6:pieces20:{p20}"
            )),
            "metainfo: bencode at byte 17: dictionary key \"length\" comes after \"name\"",
        ),
        (
            [&torrent(&good)[..], b"x"].concat(),
            "metainfo: bencode at byte ",
        ),
    ];
    for (bytes, want) in cases {
        let e = Metainfo::parse(&bytes).unwrap_err().to_string();
        assert!(e.starts_with(want), "{}: {e}", bytes.escape_ascii());
    }
    let mut bad_utf8 = b"d4:infod6:lengthi5e4:name1:".to_vec();
    bad_utf8.push(0xff);
    bad_utf8.extend_from_slice(format!("12:piece lengthi16384e6:pieces20:{p20}ee").as_bytes());
    let e = Metainfo::parse(&bad_utf8).unwrap_err().to_string();
    assert_eq!(e, "metainfo: `info.name`: \"\\\\xff\" is not UTF-8");
}

#[test]
fn info_hash_is_of_the_bytes_as_found() {
    // Keys drover does not write (private, source) are part of the hash.
    let p20 = "x".repeat(20);
    let entries = format!(
        "6:lengthi5e4:name1:x12:piece lengthi16384e6:pieces20:{p20}7:privatei1e6:source3:abc"
    );
    let bytes = torrent(&entries);
    let m = Metainfo::parse(&bytes).unwrap();
    let raw = format!("d{entries}e");
    assert_eq!(m.info_hash, InfoHash::of(raw.as_bytes()));
    assert_ne!(m.info_hash, m.info.info_hash());
}

#[test]
fn announce_is_set_without_touching_info() {
    let with = with_announce(MKTORRENT, "http://10.0.0.1:8080/announce").unwrap();
    let m = Metainfo::parse(&with).unwrap();
    assert_eq!(m.announce.as_deref(), Some("http://10.0.0.1:8080/announce"));
    assert_eq!(m.info_hash.to_string(), MKTORRENT_HASH);
    // Everything else kept: mktorrent's "created by".
    assert!(with.windows(13).any(|w| w == b"mktorrent 1.1"));

    // announce-list would win over announce in clients: dropped.
    let info = info_of("x", b"abc", None);
    let mut d = Dict::new();
    let list = Value::List(vec![Value::List(vec![Value::Bytes(b"http://elsewhere")])]);
    d.insert(b"announce-list", list);
    let info_bytes = info.to_bytes();
    let info_value = bencode::decode(&info_bytes, &Limits::METAINFO).unwrap();
    d.insert(b"info", info_value);
    let with = with_announce(&Value::Dict(d).to_bytes(), "http://s/announce").unwrap();
    assert!(!with.windows(9).any(|w| w == b"elsewhere"));
    assert_eq!(Metainfo::parse(&with).unwrap().info_hash, info.info_hash());

    assert!(with_announce(b"de", "http://s/announce").is_err());
}

#[test]
fn info_hash_hex() {
    let h = InfoHash::from_hex(MKTORRENT_HASH).unwrap();
    assert_eq!(h.to_string(), MKTORRENT_HASH);
    assert_eq!(InfoHash::from_hex(&MKTORRENT_HASH.to_uppercase()), Some(h));
    assert_eq!(InfoHash::from_hex("abc"), None);
    assert_eq!(format!("{h:?}"), format!("InfoHash({MKTORRENT_HASH})"));
}

/// A reader returning at most `step` bytes per read.
struct Dribble<'a>(&'a [u8], usize);

impl Read for Dribble<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.0.len().min(buf.len()).min(self.1);
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

proptest! {
    // SHA-1 is slow in debug builds: fewer, smaller cases.
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn built_torrents_round_trip(
        data in proptest::collection::vec(any::<u8>(), 1..70_000),
        shift in 0u32..3,
        step in 1usize..70_000,
        announce in proptest::option::of("[a-z:/.0-9]{1,40}"),
    ) {
        let piece_length = MIN_PIECE_LENGTH << shift;
        let info = Info::build("n-1.payload", Dribble(&data, step), data.len() as u64, Some(piece_length)).unwrap();
        for i in 0..info.piece_count() {
            let r = info.piece_range(i);
            prop_assert_eq!(info.pieces[i as usize], piece_hash(&data[r.start as usize..r.end as usize]));
        }
        let m = Metainfo::new(info, announce);
        let bytes = m.to_bytes();
        prop_assert_eq!(Metainfo::parse(&bytes).unwrap(), m);
    }
}
