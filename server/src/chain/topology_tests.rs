use super::*;

fn mac(i: u8) -> MacAddr {
    MacAddr([2, 0, 0, 0, 0, i])
}

fn cfg(arity: u32) -> SessionConfig {
    SessionConfig {
        arity,
        expected: None,
        join_timeout: Duration::from_secs(10),
        heartbeat: Duration::from_secs(1),
        dead_after: Duration::from_secs(3),
        slow_after: Duration::from_secs(5),
        slow_window: Duration::from_secs(5),
        corrupt_strikes: 2,
    }
}

/// A session of `n` nodes (MACs 1..=n) joined at `t0` and started.
fn started(arity: u32, n: u8, t0: Instant) -> Session {
    let mut s = Session::new("img@1".parse().unwrap(), 100, cfg(arity));
    for i in 1..=n {
        s.join(mac(i), format!("10.0.0.{i}:7151").parse().unwrap(), 0, t0);
    }
    s.start(t0);
    s
}

fn name(u: Option<Upstream>) -> String {
    match u {
        None => "-".into(),
        Some(Upstream::Head) => "head".into(),
        Some(Upstream::Node(m)) => m.0[5].to_string(),
    }
}

/// Each node of the order as `node<-upstream`.
fn shape(s: &Session) -> Vec<String> {
    s.order()
        .iter()
        .map(|m| format!("{}<-{}", m.0[5], name(s.node(m).unwrap().upstream)))
        .collect()
}

fn state(s: &Session, i: u8) -> NodeState {
    s.node(&mac(i)).unwrap().state
}

fn beat(s: &mut Session, i: u8, received: u32, oldest: u32, now: Instant) {
    let p = Progress {
        received,
        oldest,
        written: received,
        backpressured: false,
        bytes: None,
        downstreams: Vec::new(),
    };
    s.heartbeat(mac(i), p, now).unwrap();
}

fn gen(s: &Session, i: u8) -> u64 {
    s.node(&mac(i)).unwrap().generation
}

#[test]
fn shapes_by_arity() {
    let t = Instant::now();
    let cases: &[(u32, u8, &[&str])] = &[
        (1, 4, &["1<-head", "2<-1", "3<-2", "4<-3"]),
        (
            2,
            6,
            &["1<-head", "2<-head", "3<-1", "4<-1", "5<-2", "6<-2"],
        ),
        (
            3,
            7,
            &[
                "1<-head", "2<-head", "3<-head", "4<-1", "5<-1", "6<-1", "7<-2",
            ],
        ),
        (1, 1, &["1<-head"]),
    ];
    for (arity, n, want) in cases {
        assert_eq!(shape(&started(*arity, *n, t)), *want, "arity {arity}");
    }
}

#[test]
fn start_by_count_timeout_or_command() {
    let t = Instant::now();
    let addr: SocketAddr = "10.0.0.9:1".parse().unwrap();
    // Expected count.
    let mut s = Session::new(
        "img@1".parse().unwrap(),
        10,
        SessionConfig {
            expected: Some(3),
            ..cfg(1)
        },
    );
    s.join(mac(1), addr, 0, t);
    s.join(mac(2), addr, 0, t);
    assert!(!s.started);
    let p = s.placement(&mac(1)).unwrap();
    assert_eq!((p.status, p.upstream), (Status::Waiting, None));
    s.join(mac(3), addr, 0, t);
    assert!(s.started);
    assert_eq!(shape(&s), ["1<-head", "2<-1", "3<-2"]);
    assert_eq!(s.placement(&mac(1)).unwrap().status, Status::Attached);

    // Join timeout, counted from the first join.
    let mut s = Session::new("img@1".parse().unwrap(), 10, cfg(1));
    s.join(mac(1), addr, 0, t);
    s.join(mac(2), addr, 0, t + Duration::from_secs(9));
    s.tick(t + Duration::from_millis(9999));
    assert!(!s.started);
    s.tick(t + Duration::from_secs(10));
    assert!(s.started);

    // Explicit start; an empty session never starts by itself.
    let mut s = Session::new("img@1".parse().unwrap(), 10, cfg(1));
    s.tick(t + Duration::from_secs(100));
    assert!(!s.started);
    s.join(mac(1), addr, 0, t);
    s.start(t);
    assert!(s.started);
    assert_eq!(state(&s, 1), NodeState::Active);
}

#[test]
fn a_reported_node_is_bypassed_then_failed_when_silent() {
    let t = Instant::now();
    let mut s = started(1, 4, t);
    let (g3, g4) = (gen(&s, 3), gen(&s, 4));
    s.report(mac(3), g3, FailReason::Dead, 40, "connection reset", t)
        .unwrap();
    assert_eq!(shape(&s), ["1<-head", "3<-1", "4<-3"]);
    assert_eq!(state(&s, 2), NodeState::Suspect);
    assert_eq!(gen(&s, 3), g3 + 1, "3 moved");
    assert_eq!(gen(&s, 4), g4, "4 did not");
    // The others keep beating; 2 stays silent.
    let later = t + Duration::from_secs(2);
    for i in [1, 3, 4] {
        beat(&mut s, i, 50, 0, later);
    }
    s.tick(t + Duration::from_millis(3001));
    assert_eq!(state(&s, 2), NodeState::Failed);
    assert_eq!(state(&s, 3), NodeState::Active);
    let st = s.status();
    let two = st
        .nodes
        .iter()
        .find(|n| n.mac == mac(2).to_string())
        .unwrap();
    assert_eq!(two.state, "failed");
    assert!(
        two.events.iter().any(|e| e.contains("reports it Dead")),
        "{:?}",
        two.events
    );
}

#[test]
fn a_suspect_that_still_beats_rejoins_at_the_tail() {
    let t = Instant::now();
    let mut s = started(1, 4, t);
    s.report(mac(3), gen(&s, 3), FailReason::Refused, 10, "bad frame", t)
        .unwrap();
    beat(&mut s, 2, 30, 0, t + Duration::from_secs(1));
    assert_eq!(shape(&s), ["1<-head", "3<-1", "4<-3", "2<-4"]);
    assert_eq!(state(&s, 2), NodeState::Active);
}

#[test]
fn a_silent_node_fails_and_its_downstream_moves_up() {
    let t = Instant::now();
    let mut s = started(2, 5, t);
    assert_eq!(shape(&s), ["1<-head", "2<-head", "3<-1", "4<-1", "5<-2"]);
    for i in [2, 3, 4, 5] {
        beat(&mut s, i, 10, 0, t + Duration::from_secs(2));
    }
    s.tick(t + Duration::from_millis(3500));
    assert_eq!(state(&s, 1), NodeState::Failed);
    assert_eq!(shape(&s), ["2<-head", "3<-head", "4<-2", "5<-2"]);
}

#[test]
fn stale_reports_change_nothing() {
    let t = Instant::now();
    let mut s = started(1, 3, t);
    let g = gen(&s, 3);
    s.report(mac(3), g - 1, FailReason::Dead, 5, "old", t)
        .unwrap();
    assert_eq!(shape(&s), ["1<-head", "2<-1", "3<-2"]);
    assert_eq!(
        s.report(mac(9), 1, FailReason::Dead, 5, "", t),
        Err(UnknownNode(mac(9)))
    );
}

#[test]
fn corrupt_data_twice_cuts_the_sender_out() {
    let t = Instant::now();
    let mut s = started(1, 4, t);
    let g = gen(&s, 3);
    s.report(mac(3), g, FailReason::Corrupt, 7, "chunk 7: SHA-256", t)
        .unwrap();
    // First strike: same assignment, re-request from the same upstream.
    assert_eq!(gen(&s, 3), g);
    assert_eq!(state(&s, 2), NodeState::Active);
    s.report(mac(3), g, FailReason::Corrupt, 7, "chunk 7: SHA-256", t)
        .unwrap();
    assert_eq!(state(&s, 2), NodeState::CutOut);
    assert_eq!(shape(&s), ["1<-head", "3<-1", "4<-3"]);
    // It finishes its own deploy from the head; nobody is fed by it.
    let p = s.placement(&mac(2)).unwrap();
    assert_eq!(
        (p.status, p.upstream),
        (Status::Attached, Some(Upstream::Head))
    );
    beat(&mut s, 2, 50, 0, t);
    assert_eq!(state(&s, 2), NodeState::CutOut);
    assert_eq!(s.status().nodes.last().unwrap().state, "cut-out");
}

#[test]
fn a_stall_blames_the_upstream_only_if_it_has_the_chunk() {
    let t = Instant::now();
    let mut s = started(1, 3, t);
    beat(&mut s, 2, 20, 0, t);
    s.report(mac(3), gen(&s, 3), FailReason::Stalled, 20, "", t)
        .unwrap();
    assert_eq!(state(&s, 2), NodeState::Active, "2 is waiting itself");
    beat(&mut s, 2, 21, 0, t);
    s.report(mac(3), gen(&s, 3), FailReason::Stalled, 20, "", t)
        .unwrap();
    assert_eq!(state(&s, 2), NodeState::Suspect);
    assert_eq!(shape(&s), ["1<-head", "3<-1"]);
}

#[test]
fn too_old_catches_up_from_the_head_in_place() {
    let t = Instant::now();
    let mut s = started(1, 4, t);
    beat(&mut s, 2, 60, 30, t);
    s.report(mac(3), gen(&s, 3), FailReason::TooOld, 10, "oldest 30", t)
        .unwrap();
    assert_eq!(shape(&s), ["1<-head", "2<-1", "3<-head", "4<-3"]);
    // Caught up: 2 is ahead and still holds chunk 45.
    beat(&mut s, 3, 45, 0, t);
    assert_eq!(shape(&s), ["1<-head", "2<-1", "3<-2", "4<-3"]);
}

#[test]
fn late_joiners_attach_at_the_tail_or_catch_up() {
    let t = Instant::now();
    let mut s = started(1, 2, t);
    let addr: SocketAddr = "10.0.0.5:1".parse().unwrap();
    // The tail still holds chunk 0: plain tail.
    s.join(mac(5), addr, 0, t);
    assert_eq!(shape(&s), ["1<-head", "2<-1", "5<-2"]);
    // The tail's buffer has moved on: catch up from the head.
    beat(&mut s, 5, 80, 64, t);
    s.join(mac(6), addr, 0, t);
    assert_eq!(shape(&s), ["1<-head", "2<-1", "5<-2", "6<-head"]);
    assert_eq!(s.placement(&mac(5)).unwrap().downstreams_pending, 0);
}

#[test]
fn a_slow_node_with_downstreams_moves_to_the_tail() {
    let t = Instant::now();
    let mut s = started(1, 4, t);
    // Node 2's buffer is full (its disk is behind) from t on; everyone
    // beats every second.
    let round = |s: &mut Session, k: u32| {
        let now = t + Duration::from_secs(k.into());
        let slow = Progress {
            received: 30,
            oldest: 0,
            written: 2,
            backpressured: true,
            bytes: None,
            downstreams: Vec::new(),
        };
        s.heartbeat(mac(2), slow, now).unwrap();
        for i in [1, 3, 4] {
            beat(s, i, 30 + 10 * k, 0, now);
        }
    };
    for k in 0..5 {
        round(&mut s, k);
    }
    assert_eq!(shape(&s), ["1<-head", "2<-1", "3<-2", "4<-3"]);
    round(&mut s, 5);
    assert_eq!(shape(&s), ["1<-head", "3<-1", "4<-3", "2<-4"]);
    let two = &s.status().nodes[3];
    assert!(
        two.events.last().unwrap().contains("moved to the tail"),
        "{two:?}"
    );
    // At the tail it holds back nobody: it stays.
    for k in 6..14 {
        round(&mut s, k);
    }
    assert_eq!(shape(&s), ["1<-head", "3<-1", "4<-3", "2<-4"]);
}

#[test]
fn leaving_and_lingering() {
    let t = Instant::now();
    let mut s = started(1, 3, t);
    assert_eq!(s.placement(&mac(1)).unwrap().downstreams_pending, 1);
    beat(&mut s, 2, 100, 90, t);
    assert_eq!(s.placement(&mac(1)).unwrap().downstreams_pending, 0);
    let g2 = gen(&s, 2);
    s.leave(mac(1), true, None, t).unwrap();
    // Node 2 has every chunk: it connects to nobody any more, so it is
    // not given a new upstream (it still feeds 3 from where it is).
    assert_eq!(shape(&s), ["2<-1", "3<-2"]);
    assert_eq!(gen(&s, 2), g2);
    assert_eq!(s.placement(&mac(1)).unwrap().status, Status::Fallback);
    assert_eq!(s.status().nodes.first().unwrap().state, "complete");
    // A left node's heartbeats do not bring it back.
    beat(&mut s, 1, 100, 90, t);
    assert_eq!(state(&s, 1), NodeState::Left);
    // An incomplete node is given the next upstream up.
    s.leave(mac(2), true, None, t).unwrap();
    assert_eq!(shape(&s), ["3<-head"]);
}

#[test]
fn a_left_node_shows_its_last_progress() {
    let t = Instant::now();
    let mut s = started(1, 3, t);
    beat(&mut s, 3, 90, 0, t);
    let last = Progress {
        received: 100,
        oldest: 40,
        written: 100,
        backpressured: false,
        bytes: None,
        downstreams: Vec::new(),
    };
    s.leave(mac(3), true, Some(last), t).unwrap();
    // Without it (an older agent), a complete node has received them all
    // and its last heartbeat's count written stands.
    beat(&mut s, 2, 70, 0, t);
    s.leave(mac(2), true, None, t).unwrap();
    let st = s.status();
    let row = |i: u8| {
        let n = st
            .nodes
            .iter()
            .find(|n| n.mac == mac(i).to_string())
            .unwrap();
        (n.state.as_str(), n.received, n.written)
    };
    assert_eq!(row(3), ("left", 100, 100));
    assert_eq!(row(2), ("left", 100, 70));
}

#[test]
fn joining_again_keeps_the_place_unless_data_was_lost() {
    let t = Instant::now();
    let mut s = started(1, 3, t);
    beat(&mut s, 2, 40, 0, t);
    let g = gen(&s, 2);
    let addr: SocketAddr = "10.0.0.2:7151".parse().unwrap();
    s.join(mac(2), addr, 40, t);
    assert_eq!((shape(&s).len(), gen(&s, 2)), (3, g));
    assert_eq!(shape(&s)[1], "2<-1");
    // Restarted with nothing: to the tail.
    s.join(mac(2), addr, 0, t);
    assert_eq!(shape(&s), ["1<-head", "3<-1", "2<-3"]);
}

#[test]
fn a_slow_link_with_downstreams_moves_to_the_tail() {
    let t = Instant::now();
    let mut s = started(1, 4, t);
    // Node 2 receives 1 chunk/s, the others 10/s.
    let round = |s: &mut Session, k: u32| {
        let now = t + Duration::from_secs(k.into());
        for i in [1, 2, 3, 4] {
            let received = if i == 2 { k } else { 10 * k };
            beat(s, i, received, 0, now);
        }
    };
    for k in 0..5 {
        round(&mut s, k);
    }
    assert_eq!(shape(&s), ["1<-head", "2<-1", "3<-2", "4<-3"]);
    round(&mut s, 5);
    assert_eq!(shape(&s), ["1<-head", "3<-1", "4<-3", "2<-4"]);
    let two = &s.status().nodes[3];
    assert!(
        two.events
            .last()
            .unwrap()
            .contains("received 1.0 chunks/s where its upstream received 10.0"),
        "{two:?}"
    );
    // At the tail its pace harms nobody. The head-fed node, once its
    // downstream's rate is measured again, is probed: it swaps with it
    // (both fast, so they stay so).
    for k in 6..16 {
        round(&mut s, k);
    }
    assert_eq!(shape(&s), ["3<-head", "1<-3", "4<-1", "2<-4"]);
}

#[test]
fn silent_nodes_are_listed_once_for_the_fleet_and_a_session_ends() {
    let t = Instant::now();
    let mut s = started(1, 3, t);
    assert!(!s.is_over());
    beat(&mut s, 1, 10, 0, t + Duration::from_secs(2));
    beat(&mut s, 3, 10, 0, t + Duration::from_secs(2));
    s.tick(t + Duration::from_secs(4));
    let failed: Vec<u8> = s.newly_failed.drain(..).map(|(m, _)| m.0[5]).collect();
    assert_eq!(failed, [2], "only the silent node");
    s.tick(t + Duration::from_secs(4));
    assert!(s.newly_failed.is_empty(), "told once");
    s.leave(mac(1), true, None, t + Duration::from_secs(4))
        .unwrap();
    assert!(!s.is_over(), "3 is still active");
    s.leave(mac(3), true, None, t + Duration::from_secs(4))
        .unwrap();
    assert!(s.is_over(), "left or failed, every one");
    let empty = Session::new("img@1".parse().unwrap(), 10, cfg(1));
    assert!(!empty.is_over(), "a session nobody joined yet is not over");
}

#[test]
fn a_slow_link_on_the_head_fed_node_is_found_by_the_probe() {
    let t = Instant::now();
    let mut s = started(1, 4, t);
    // Node 1's link carries 1 chunk/s; the others could take 10/s but
    // behind node 1 they get its pace, until the probe.
    let mut got = [0u32; 5];
    let mut moves = Vec::new();
    for k in 1..30u32 {
        let now = t + Duration::from_secs(k.into());
        let order: Vec<u8> = s.order().iter().map(|m| m.0[5]).collect();
        for (p, &i) in order.iter().enumerate() {
            let link = if i == 1 { 1 } else { 10 };
            let up = match s.node(&mac(i)).unwrap().upstream {
                Some(Upstream::Node(u)) => got[usize::from(u.0[5])],
                _ => u32::MAX,
            };
            // At most its link's rate, never past its upstream.
            got[usize::from(i)] = (got[usize::from(i)] + link).min(up).min(100);
            let _ = p;
        }
        for &i in &order {
            beat(&mut s, i, got[usize::from(i)], 0, now);
        }
        let now_shape = shape(&s);
        if moves.last() != Some(&now_shape) {
            moves.push(now_shape);
        }
    }
    let last = moves.last().unwrap();
    assert_eq!(
        last.last().unwrap(),
        "1<-4",
        "node 1 ends at the tail: {moves:?}"
    );
    let one = s.node(&mac(1)).unwrap();
    let events: Vec<&String> = one.events.iter().collect();
    assert!(
        events.iter().any(|e| e.starts_with("probe: moved behind")),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.contains("where its upstream received")),
        "{events:?}"
    );
}

#[test]
fn waiting_for_the_start_is_not_a_measured_rate() {
    // Nodes heartbeat for two rate windows before the session starts,
    // receiving nothing: no rate, so the probe keeps its one swap for
    // when the head-fed node's link can be measured.
    let t = Instant::now();
    let cfg = SessionConfig {
        join_timeout: Duration::from_secs(60),
        ..cfg(1)
    };
    let mut s = Session::new("img@1".parse().unwrap(), 100, cfg);
    for i in 1..=3 {
        s.join(mac(i), format!("10.0.0.{i}:7151").parse().unwrap(), 0, t);
    }
    for k in 1..=12u64 {
        for i in 1..=3 {
            beat(&mut s, i, 0, 0, t + Duration::from_secs(k));
        }
    }
    let start = t + Duration::from_secs(12);
    s.start(start);
    let first = ["1<-head", "2<-1", "3<-2"];
    assert_eq!(shape(&s), first);
    for i in 1..=3 {
        assert_eq!(s.node(&mac(i)).unwrap().rate, None, "node {i}");
    }
    for i in 1..=3 {
        beat(&mut s, i, 5, 0, start + Duration::from_secs(1));
    }
    assert_eq!(shape(&s), first);
    assert!(
        !s.node(&mac(1))
            .unwrap()
            .events
            .iter()
            .any(|e| e.starts_with("probe")),
        "{:?}",
        s.node(&mac(1)).unwrap().events
    );
}

#[test]
fn in_a_tree_a_slow_head_fed_node_is_compared_with_its_siblings() {
    let t = Instant::now();
    let mut s = started(2, 6, t);
    assert_eq!(s.order()[..2], [mac(1), mac(2)]);
    // Node 1 gets 1 chunk/s from the head, node 2 gets 10.
    for k in 0..=5u32 {
        let now = t + Duration::from_secs(k.into());
        for i in 1..=6u8 {
            let received = if matches!(i, 1 | 3 | 4) { k } else { 10 * k };
            beat(&mut s, i, received, 0, now);
        }
    }
    assert_eq!(s.order().last(), Some(&mac(1)), "{:?}", shape(&s));
    let one = s.node(&mac(1)).unwrap();
    assert!(
        one.events
            .iter()
            .any(|e| e.contains("where another node fed by the head received 10.0")),
        "{:?}",
        one.events
    );
}

#[test]
fn filling_the_chain_is_not_slowness() {
    // 16 nodes, 1 chunk per second at the head, one hop per second: node
    // i gets its first chunk i seconds in. The rate windows close while
    // the deep nodes still have nothing and trail their upstream by one
    // chunk: nobody may be moved.
    let t = Instant::now();
    let mut s = started(1, 16, t);
    for k in 1..=30u32 {
        let now = t + Duration::from_secs(k.into());
        for i in 1..=16u8 {
            beat(&mut s, i, k.saturating_sub(u32::from(i) - 1), 0, now);
        }
    }
    let want: Vec<String> = (1..=16u8)
        .map(|i| match i {
            1 => "1<-head".to_owned(),
            i => format!("{i}<-{}", i - 1),
        })
        .collect();
    let moved: Vec<String> = (1..=16u8)
        .flat_map(|i| {
            s.node(&mac(i))
                .unwrap()
                .events
                .iter()
                .cloned()
                .collect::<Vec<_>>()
        })
        .filter(|e| e.contains("moved to the tail"))
        .collect();
    assert!(moved.is_empty(), "{moved:?}");
    // The one probe of the head-fed node is the only change allowed.
    let got = shape(&s);
    assert!(got == want || got[..2] == ["2<-head", "1<-2"], "{got:?}");
}

/// A fluid model of a chain session in motion, for timing tests. Each
/// node's link carries `link[i]` chunks per second each way; a node
/// receives at the lower of its own link's rate and its upstream's, never
/// past the chunks its upstream holds whole (a chunk is forwarded once
/// verified); the head holds every chunk and feeds at any rate. A node
/// heartbeats at the interval the session gives it, its report reaching
/// the coordinator `lat[i]` late (a saturated slow link's queues delay its
/// heartbeats both ways); it notices a new upstream at once and takes
/// `RECONNECT` to receive again, from the start of the chunk it was in.
/// A node with every chunk leaves once nobody it feeds needs it.
struct Sim {
    s: Session,
    t0: Instant,
    total: u32,
    link: Vec<f64>,
    lat: Vec<f64>,
    got: Vec<f64>,
    /// Chunks' worth of bytes read, partial chunks read again included.
    bytes: Vec<f64>,
    gens: Vec<u64>,
    /// When each node may receive again after a new upstream.
    idle_until: Vec<f64>,
    next_beat: Vec<f64>,
    /// Reports on their way: (arrival, node, progress).
    in_flight: Vec<(f64, usize, Progress)>,
    left: Vec<bool>,
    done: Vec<Option<f64>>,
    /// Every change of the chain's shape: when, and the new shape.
    history: Vec<String>,
}

const RECONNECT: f64 = 0.1;
const STEP: f64 = 0.01;
/// Bytes per chunk, for the bytes nodes report.
const CHUNK_BYTES: f64 = 1048576.0;

impl Sim {
    /// Nodes 1..=link.len(), joined in that order and started.
    fn new(cfg: SessionConfig, total: u32, link: &[f64], lat: &[f64]) -> Sim {
        let t0 = Instant::now();
        let n = link.len();
        let mut s = Session::new("img@1".parse().unwrap(), total, cfg);
        for i in 1..=n {
            let addr = format!("10.0.0.{i}:7151").parse().unwrap();
            s.join(mac(i as u8), addr, 0, t0);
        }
        s.start(t0);
        let pad = |v: &[f64]| std::iter::once(0.0).chain(v.iter().copied()).collect();
        Sim {
            s,
            t0,
            total,
            link: pad(link),
            lat: pad(lat),
            got: vec![0.0; n + 1],
            bytes: vec![0.0; n + 1],
            gens: vec![0; n + 1],
            idle_until: vec![0.0; n + 1],
            // Heartbeats out of phase, as real nodes' are.
            next_beat: (0..=n).map(|i| 0.013 * i as f64).collect(),
            in_flight: Vec::new(),
            left: vec![false; n + 1],
            done: vec![None; n + 1],
            history: Vec::new(),
        }
    }

    fn at(&self, secs: f64) -> Instant {
        self.t0 + Duration::from_secs_f64(secs)
    }

    /// Run until every node has every chunk, or `limit` seconds.
    fn run(&mut self, limit: f64) {
        let n = self.link.len() - 1;
        let mut now = 0.0;
        while now < limit && self.done[1..].iter().any(Option::is_none) {
            now += STEP;
            let order: Vec<usize> = self.s.order().iter().map(|m| usize::from(m.0[5])).collect();
            let others = (1..=n).filter(|i| !order.contains(i));
            for i in order.iter().copied().chain(others) {
                let node = self.s.node(&mac(i as u8)).unwrap();
                if node.generation != self.gens[i] {
                    self.gens[i] = node.generation;
                    self.got[i] = self.got[i].floor();
                    self.idle_until[i] = now + RECONNECT;
                }
                let (whole, up_link) = match node.upstream {
                    Some(Upstream::Node(u)) => {
                        let u = usize::from(u.0[5]);
                        (self.got[u].floor(), self.link[u])
                    }
                    Some(Upstream::Head) => (f64::from(self.total), f64::INFINITY),
                    None => (0.0, 0.0),
                };
                if now >= self.idle_until[i] && self.got[i] < whole {
                    let step = (self.link[i].min(up_link) * STEP).min(whole - self.got[i]);
                    self.got[i] += step;
                    self.bytes[i] += step;
                }
                if self.done[i].is_none() && self.got[i] >= f64::from(self.total) {
                    self.done[i] = Some(now);
                }
            }
            for i in 1..=n {
                if !self.left[i] && now >= self.next_beat[i] {
                    let interval = self
                        .s
                        .heartbeat_for(&mac(i as u8), self.at(now))
                        .as_secs_f64();
                    let received = self.got[i].floor() as u32;
                    // Its connected downstreams: each has been handed the
                    // chunks it holds whole, and the one it is receiving
                    // once half of it is through (the rest waits in the
                    // connection's buffer).
                    let downstreams = (1..=n)
                        .filter(|&d| {
                            now >= self.idle_until[d]
                                && self.s.node(&mac(d as u8)).unwrap().upstream
                                    == Some(Upstream::Node(mac(i as u8)))
                        })
                        .map(|d| {
                            let next = (self.got[d] + 0.5).floor().min(self.got[i].floor());
                            (mac(d as u8), next as u32)
                        })
                        .collect();
                    let p = Progress {
                        received,
                        oldest: 0,
                        written: received,
                        backpressured: false,
                        bytes: Some((self.bytes[i] * CHUNK_BYTES) as u64),
                        downstreams,
                    };
                    self.in_flight.push((now + self.lat[i], i, p));
                    self.next_beat[i] = now + 2.0 * self.lat[i] + interval;
                }
            }
            let (due, later): (Vec<_>, Vec<_>) =
                self.in_flight.drain(..).partition(|&(t, _, _)| t <= now);
            self.in_flight = later;
            let t = self.at(now);
            for (_, i, p) in due {
                let m = mac(i as u8);
                let complete = p.received >= self.total;
                self.s.heartbeat(m, p, t).unwrap();
                if complete && self.s.placement(&m).unwrap().downstreams_pending == 0 {
                    self.s.leave(m, true, None, t).unwrap();
                    self.left[i] = true;
                }
            }
            self.s.tick(t);
            let now_shape = shape(&self.s).join(" ");
            if !self.history.last().is_some_and(|h| h.ends_with(&now_shape)) {
                let got: Vec<u32> = self.got[1..].iter().map(|g| g.floor() as u32).collect();
                self.history
                    .push(format!("{now:.2} s {got:?}: {now_shape}"));
            }
        }
    }

    /// The slowest of `nodes` to have every chunk.
    fn last_done(&self, nodes: impl Iterator<Item = usize>) -> f64 {
        nodes
            .map(|i| self.done[i].unwrap_or(f64::INFINITY))
            .fold(0.0, f64::max)
    }

    /// Every note about moves (slow or probe), as `node: note`.
    fn moves(&self) -> Vec<String> {
        (1..self.link.len())
            .flat_map(|i| {
                let n = self.s.node(&mac(i as u8)).unwrap();
                n.events
                    .iter()
                    .filter(|e| e.contains("moved"))
                    .map(move |e| format!("{i}: {e}"))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// The fault test's fleet (16 nodes, `chunks` at 3.8 chunks/s, the
/// default timers), one node's link at a tenth of the rate.
fn fault_test_fleet(chunks: u32, slow: Option<usize>) -> Sim {
    let cfg = SessionConfig {
        expected: None,
        ..SessionConfig::default()
    };
    let link: Vec<f64> = (1..=16)
        .map(|i| if Some(i) == slow { 0.38 } else { 3.8 })
        .collect();
    // A saturated link's queue (tbf, 128 KiB at 0.4 MB/s) delays the slow
    // node's heartbeats by a third of a second each way.
    let delay: Vec<f64> = (1..=16)
        .map(|i| if Some(i) == slow { 0.33 } else { 0.02 })
        .collect();
    Sim::new(cfg, chunks, &link, &delay)
}

#[test]
fn filling_and_running_a_chain_moves_nobody() {
    // The fault test's fleet undisturbed, and a transfer long enough for
    // the heartbeats to slow down to every `heartbeat` (2 s): nobody is
    // called slow; the probe swaps the first two nodes once.
    for chunks in [32, 160] {
        let mut sim = fault_test_fleet(chunks, None);
        sim.run(300.0);
        let moves = sim.moves();
        assert!(
            moves.len() == 1 && moves[0].starts_with("1: probe: moved behind"),
            "{chunks} chunks: {moves:?}\n{}",
            sim.history.join("\n")
        );
        assert!(sim.done.iter().skip(1).all(Option::is_some));
    }
}

#[test]
fn a_slow_link_is_moved_before_it_costs_the_others_a_tenth() {
    let mut base = fault_test_fleet(32, None);
    base.run(120.0);
    let undisturbed = base.last_done(1..=16);
    // Node 1 starts fed by the head: found by the probe, which takes a
    // window, then a window behind the next node; it costs more.
    for slow in 1..=15 {
        let mut sim = fault_test_fleet(32, Some(slow));
        sim.run(120.0);
        let others = sim.last_done((1..=16).filter(|&i| i != slow));
        let moved = sim.moves();
        let why = || format!("node {slow}: {moved:?}\n{}", sim.history.join("\n"));
        let own = format!("{slow}: ");
        assert!(
            moved
                .iter()
                .any(|e| e.starts_with(&format!("{own}slow: it "))),
            "{}",
            why()
        );
        assert!(
            moved
                .iter()
                .all(|e| e.starts_with(&own) || e.starts_with("1: probe")),
            "{}",
            why()
        );
        let bound = if slow == 1 { 1.2 } else { 1.1 };
        assert!(
            others <= undisturbed * bound,
            "slow node {slow}: the others done at {others:.2} s, undisturbed {undisturbed:.2} s\n{}",
            why()
        );
    }
}
