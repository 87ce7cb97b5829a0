use std::collections::HashMap;
use std::net::Ipv6Addr;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use drover_agent::image::{PAYLOAD_FILE, TORRENT_FILE};
use drover_agent::torrent::metainfo::{hash_pieces, Metainfo};
use drover_agent::torrent::tracker::{
    escape, parse_scrape, AnnounceReply, ReplyError, ScrapeStats,
};
use drover_agent::torrent::wire::PeerId;

use super::*;
use crate::test_fixture::{fixture, import_image, token_of, Setup, MAC};

const MAC1: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
const MAC2: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 2]);
const MAC3: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 3]);

struct Lab {
    _dir: tempfile::TempDir,
    tracker: Tracker,
    demo1: InfoHash,
    demo2: InfoHash,
}

/// A store with demo@1 and demo@2; MAC1 and MAC2 deploy demo@1 (tokens
/// t1, t2), MAC3 demo@2 (t3).
fn lab(open: bool) -> Lab {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    import_image(dir.path(), &store, "demo", "1");
    import_image(dir.path(), &store, "demo", "2");
    let hash = |v: &str| {
        let path = store.join("demo").join(v).join(TORRENT_FILE);
        crate::torrent_file::read(&path).unwrap().1.info_hash
    };
    let (demo1, demo2) = (hash("1"), hash("2"));
    let nodes: HashMap<MacAddr, (&str, &str)> = [
        (MAC1, ("t1", "demo@1")),
        (MAC2, ("t2", "demo@1")),
        (MAC3, ("t3", "demo@2")),
    ]
    .into();
    let deployments = move |mac: &MacAddr, token: &str| {
        nodes
            .get(mac)
            .filter(|(t, _)| *t == token)
            .map(|(_, image)| image.to_string())
    };
    let config = TrackerConfig {
        open,
        interval: Duration::from_secs(30),
        ..TrackerConfig::default()
    };
    let tracker = Tracker::new(config, Store::new(&store), Arc::new(deployments));
    Lab {
        _dir: dir,
        tracker,
        demo1,
        demo2,
    }
}

fn node(mac: MacAddr, token: &str) -> Caller {
    Caller::Node {
        mac: mac.to_string(),
        token: token.into(),
    }
}

fn query(hash: InfoHash, peer: u8, port: u16, left: u64) -> String {
    Announce {
        info_hash: hash,
        peer_id: PeerId([peer; 20]),
        port,
        uploaded: 0,
        downloaded: 0,
        left,
        event: Event::Started,
        compact: true,
        numwant: None,
    }
    .to_query()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn refused(body: &[u8]) -> String {
    match AnnounceReply::parse(body) {
        Err(ReplyError::Failure(reason)) => reason,
        other => panic!("not a failure: {other:?}"),
    }
}

#[test]
fn nodes_find_each_other_in_their_deployments_swarm() {
    let l = lab(false);
    let t = &l.tracker;
    let body = t.announce(
        &node(MAC1, "t1"),
        query(l.demo1, 1, 7001, 100).as_bytes(),
        ip("10.0.0.1"),
    );
    let r = AnnounceReply::parse(&body).unwrap();
    assert_eq!((r.interval, r.min_interval), (30, Some(5)));
    assert!(r.peers.is_empty());
    let body = t.announce(
        &node(MAC2, "t2"),
        query(l.demo1, 2, 7002, 100).as_bytes(),
        ip("10.0.0.2"),
    );
    let r = AnnounceReply::parse(&body).unwrap();
    assert_eq!(r.peers.len(), 1);
    assert_eq!(r.peers[0].addr, "10.0.0.1:7001".parse().unwrap());
    assert_eq!((r.complete, r.incomplete), (0, 2));
    // demo@2's node is in another swarm.
    let body = t.announce(
        &node(MAC3, "t3"),
        query(l.demo2, 3, 7003, 0).as_bytes(),
        ip("10.0.0.3"),
    );
    let r = AnnounceReply::parse(&body).unwrap();
    assert!(r.peers.is_empty());
    assert_eq!((r.complete, r.incomplete), (1, 0));
    // An IPv4-mapped source (a server on [::]) is listed as IPv4.
    let mapped = IpAddr::V6(Ipv6Addr::from(0xffff_0a00_0009u128));
    let body = t.announce(
        &node(MAC1, "t1"),
        query(l.demo1, 1, 7001, 100).as_bytes(),
        mapped,
    );
    AnnounceReply::parse(&body).unwrap();
    let body = t.announce(
        &node(MAC2, "t2"),
        query(l.demo1, 2, 7002, 100).as_bytes(),
        ip("10.0.0.2"),
    );
    let r = AnnounceReply::parse(&body).unwrap();
    assert_eq!(r.peers[0].addr, "10.0.0.9:7001".parse().unwrap());
}

#[test]
fn strangers_are_refused_saying_why() {
    let l = lab(false);
    let t = &l.tracker;
    let from = ip("10.0.0.66");
    let q1 = query(l.demo1, 9, 6881, 1);
    let cases: Vec<(Caller, String, String)> = vec![
        (
            node(MAC1, "wrong"),
            q1.clone(),
            "wrong token for node 52:54:00:00:00:01; accepted: /announce/MAC/TOKEN with the deploy.token of its current deployment".into(),
        ),
        (
            Caller::Node { mac: "nonsense".into(), token: "t1".into() },
            q1.clone(),
            "the announce path's node \"nonsense\": ".into(),
        ),
        (
            node(MAC3, "t3"),
            q1.clone(),
            format!("node 52:54:00:00:00:03 is deploying demo@2, whose info_hash is {}, not {}", l.demo2, l.demo1),
        ),
        (
            Caller::Guest,
            q1.clone(),
            "this tracker serves drover nodes only: they announce to /announce/MAC/TOKEN".into(),
        ),
        (
            node(MAC1, "t1"),
            "info_hash=x".into(),
            "bad announce: info_hash is 1 bytes; expected 20".into(),
        ),
        (
            node(MAC1, "t1"),
            q1.replace("&port=6881", ""),
            "bad announce: missing port".into(),
        ),
    ];
    for (caller, q, want) in cases {
        let reason = refused(&t.announce(&caller, q.as_bytes(), from));
        assert!(reason.starts_with(&want), "{caller:?}: {reason}");
    }
    // Nothing of it got into a swarm.
    let body = t.announce(
        &node(MAC2, "t2"),
        query(l.demo1, 2, 7002, 100).as_bytes(),
        ip("10.0.0.2"),
    );
    assert!(AnnounceReply::parse(&body).unwrap().peers.is_empty());
    // Scrapes too.
    let e = parse_scrape(&t.scrape(&Caller::Guest, b""))
        .unwrap_err()
        .to_string();
    assert!(e.contains("serves drover nodes only"), "{e}");
    let e = parse_scrape(&t.scrape(&node(MAC1, "x"), b""))
        .unwrap_err()
        .to_string();
    assert!(e.contains("wrong token"), "{e}");
}

#[test]
fn an_open_tracker_lets_guests_into_store_torrents_only() {
    let l = lab(true);
    let t = &l.tracker;
    let body = t.announce(
        &Caller::Guest,
        query(l.demo1, 0xa, 6881, 0).as_bytes(),
        ip("10.0.0.10"),
    );
    assert!(AnnounceReply::parse(&body).unwrap().peers.is_empty());
    // A node sees the guest seeder, and the guest the node.
    let body = t.announce(
        &node(MAC1, "t1"),
        query(l.demo1, 1, 7001, 5).as_bytes(),
        ip("10.0.0.1"),
    );
    let r = AnnounceReply::parse(&body).unwrap();
    assert_eq!(r.peers[0].addr, "10.0.0.10:6881".parse().unwrap());
    let body = t.announce(
        &Caller::Guest,
        query(l.demo1, 0xa, 6881, 0).as_bytes(),
        ip("10.0.0.10"),
    );
    assert_eq!(AnnounceReply::parse(&body).unwrap().peers.len(), 1);

    let stranger = InfoHash([0x5a; 20]);
    let reason = refused(&t.announce(
        &Caller::Guest,
        query(stranger, 0xb, 6881, 0).as_bytes(),
        ip("10.0.0.11"),
    ));
    assert_eq!(
        reason,
        "unknown torrent: info_hash 5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a is not the payload of an image in this server's store"
    );

    // Scrape: one known and one unknown hash asked; all swarms when none.
    let q = format!(
        "info_hash={}&info_hash={}",
        escape(&l.demo1.0),
        escape(&stranger.0)
    );
    let files = parse_scrape(&t.scrape(&Caller::Guest, q.as_bytes())).unwrap();
    let want = ScrapeStats {
        complete: 1,
        downloaded: 0,
        incomplete: 1,
    };
    assert_eq!(files, vec![(l.demo1, want)]);
    assert_eq!(
        parse_scrape(&t.scrape(&node(MAC3, "t3"), b"")).unwrap(),
        vec![(l.demo1, want)]
    );
}

#[test]
fn a_node_whose_image_has_no_torrent_is_told_so() {
    let l = lab(false);
    let dir = l._dir.path().join("store/demo/1");
    std::fs::remove_file(dir.join(TORRENT_FILE)).unwrap();
    let reason = refused(&l.tracker.announce(
        &node(MAC1, "t1"),
        query(l.demo1, 1, 7001, 1).as_bytes(),
        ip("10.0.0.1"),
    ));
    assert!(
        reason.starts_with("image demo@1 has no payload.torrent"),
        "{reason}"
    );
}

/// The whole server: import made the torrent, the route serves it with
/// this server's announce URL, and a node announces with the token of its
/// boot entry.
#[tokio::test]
async fn served_torrent_and_announce_through_the_server() {
    let f = fixture(Setup {
        auto_register: Some("demo"),
        store: true,
    });
    let got = f.get("/images/demo/1.0/payload.torrent").await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    assert_eq!(got.content_type, "application/x-bittorrent");
    let get = |path: &str| Request::builder().uri(path).body(Body::empty()).unwrap();
    let (_, bytes) = raw(&f.app, get("/images/demo/1.0/payload.torrent")).await;
    let m = Metainfo::parse(&bytes).unwrap();
    assert_eq!(
        m.announce.as_deref(),
        Some("http://10.77.0.1:8080/announce")
    );
    assert_eq!(m.info.name, "demo-1.0.payload");
    let payload = f.dir.path().join("store/demo/1.0").join(PAYLOAD_FILE);
    let data = std::fs::read(&payload).unwrap();
    assert_eq!(m.info.length, data.len() as u64);
    let (pieces, _) = hash_pieces(&data[..], m.info.piece_length).unwrap();
    assert_eq!(pieces, m.info.pieces);
    let head = f
        .call(Method::HEAD, "/images/demo/1.0/payload.torrent", None, None)
        .await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());

    // A node with its boot entry's token, then a guest (closed tracker).
    let token = token_of(&f.ipxe(MAC).await);
    let q = query(m.info_hash, 1, 7001, 10);
    let announce = |path: String| {
        let mut req = Request::builder().uri(path).body(Body::empty()).unwrap();
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(SocketAddr::from((
                [10, 77, 0, 50],
                40000,
            ))));
        req
    };
    let got = f
        .send(announce(format!("/announce/{MAC}/{token}?{q}")))
        .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.content_type, "text/plain");
    let (_, body) = raw(&f.app, announce(format!("/announce/{MAC}/{token}?{q}"))).await;
    let r = AnnounceReply::parse(&body).unwrap();
    assert_eq!((r.incomplete, r.interval), (1, 30));
    let got = f
        .send(announce(format!("/announce/{MAC}/{token}x?{q}")))
        .await;
    assert!(got.body.contains("wrong token"), "{}", got.body);
    let got = f.send(announce(format!("/announce?{q}"))).await;
    assert!(
        got.body.contains("serves drover nodes only"),
        "{}",
        got.body
    );
    let (status, body) = raw(&f.app, announce(format!("/scrape/{MAC}/{token}"))).await;
    assert_eq!(status, StatusCode::OK);
    let files = parse_scrape(&body).unwrap();
    assert_eq!(
        files,
        vec![(
            m.info_hash,
            ScrapeStats {
                complete: 0,
                downloaded: 0,
                incomplete: 1
            }
        )]
    );
}

/// The status and body bytes of `req` (the fixture's `Got` body is text).
async fn raw(app: &axum::Router, req: Request<Body>) -> (StatusCode, Vec<u8>) {
    let resp = tower::ServiceExt::oneshot(app.clone(), req).await.unwrap();
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, body.to_vec())
}

#[test]
fn the_seeder_is_listed_first_and_counted_complete() {
    let l = lab(false);
    let t = &l.tracker;
    t.set_seeder("10.0.0.9:6881".parse().unwrap());
    let body = t.announce(
        &node(MAC1, "t1"),
        query(l.demo1, 1, 7001, 100).as_bytes(),
        ip("10.0.0.1"),
    );
    let r = AnnounceReply::parse(&body).unwrap();
    assert_eq!(r.peers.len(), 1);
    assert_eq!(r.peers[0].addr, "10.0.0.9:6881".parse().unwrap());
    assert_eq!((r.complete, r.incomplete), (1, 1));
    let body = t.announce(
        &node(MAC2, "t2"),
        query(l.demo1, 2, 7002, 100).as_bytes(),
        ip("10.0.0.2"),
    );
    let r = AnnounceReply::parse(&body).unwrap();
    let addrs: Vec<String> = r.peers.iter().map(|p| p.addr.to_string()).collect();
    assert_eq!(addrs, ["10.0.0.9:6881", "10.0.0.1:7001"]);
    assert_eq!(
        t.find_torrent(&l.demo1).as_deref(),
        Some("demo@1"),
        "the seeder finds the image of an info-hash"
    );
}

/// Nodes deploying in torrent mode that have not announced yet keep the
/// swarm unfinished; once one has come and gone unfinished it is dead,
/// not late.
#[test]
fn unannounced_deploying_nodes_count_as_incomplete_until_they_leave() {
    struct Fleet;
    impl NodeDeployments for Fleet {
        fn image_of(&self, mac: &MacAddr, token: &str) -> Option<String> {
            (*mac == MAC1 && token == "t1" || *mac == MAC2 && token == "t2")
                .then(|| "demo@1".to_owned())
        }
        fn unfinished(&self, _image: &str) -> Vec<MacAddr> {
            vec![MAC2]
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    import_image(dir.path(), &store, "demo", "1");
    let t = Tracker::new(
        TrackerConfig::default(),
        Store::new(&store),
        Arc::new(Fleet),
    );
    let hash = crate::torrent_file::read(&store.join("demo/1").join(TORRENT_FILE))
        .unwrap()
        .1
        .info_hash;
    // MAC1 is done; MAC2 has not booted yet: one incomplete.
    let body = t.announce(
        &node(MAC1, "t1"),
        query(hash, 1, 7001, 0).as_bytes(),
        ip("10.0.0.1"),
    );
    let r = AnnounceReply::parse(&body).unwrap();
    assert_eq!((r.complete, r.incomplete), (1, 1));
    // MAC2 comes and leaves unfinished (a crash, a stop): not waited for.
    let mut q = query(hash, 2, 7002, 100);
    t.announce(&node(MAC2, "t2"), q.as_bytes(), ip("10.0.0.2"));
    q = q.replace("event=started", "event=stopped");
    t.announce(&node(MAC2, "t2"), q.as_bytes(), ip("10.0.0.2"));
    let body = t.announce(
        &node(MAC1, "t1"),
        query(hash, 1, 7001, 0).as_bytes(),
        ip("10.0.0.1"),
    );
    let r = AnnounceReply::parse(&body).unwrap();
    assert_eq!((r.complete, r.incomplete), (1, 0));
}
