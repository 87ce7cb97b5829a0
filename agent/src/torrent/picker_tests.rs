use super::*;

fn bits(len: u32, set: &[u32]) -> Bitfield {
    let mut b = Bitfield::new(len);
    for &i in set {
        b.set(i);
    }
    b
}

const PIECE: u32 = 4 * MAX_BLOCK;

fn picker(pieces: u32, window: u32) -> Picker {
    Picker::new(u64::from(pieces) * u64::from(PIECE), PIECE, window)
}

#[test]
fn rarest_first_inside_the_window_nearest_on_a_tie() {
    let mut p = picker(10, 4);
    p.avail = vec![3, 1, 2, 1, 0, 0, 0, 0, 0, 0];
    let has = Bitfield::full(10);
    let now = Instant::now();
    let peer = PeerView {
        key: 1,
        has: &has,
        seed: false,
    };
    // One piece's blocks: piece 1 (avail 1, nearer than 3).
    let got = p.pick(peer, 4, now);
    assert!(got.iter().all(|b| b.index == 1), "{got:?}");
    let got = p.pick(peer, 4, now);
    assert!(got.iter().all(|b| b.index == 3), "{got:?}");
    // Pieces 4.. are outside the window [0, 4).
    let got = p.pick(peer, 100, now);
    let pieces: HashSet<u32> = got.iter().map(|b| b.index).collect();
    assert_eq!(pieces, HashSet::from([0, 2]));
    assert!(p.pick(peer, 100, now).is_empty());
}

/// Equally rare pieces: the nearest SPREAD_BYTES first, each node from
/// its own rank inside them, so the nodes do not all ask the holder of
/// the nearest piece at once.
#[test]
fn ties_start_at_each_nodes_rank_within_the_nearest_group() {
    let group = (SPREAD_BYTES / u64::from(PIECE)) as u32;
    assert_eq!(group, 32);
    let has = Bitfield::full(64);
    let peer = PeerView {
        key: 1,
        has: &has,
        seed: false,
    };
    let first_pieces = |rank: u32, avail: &[(usize, u16)]| {
        let mut p = picker(64, 64);
        p.avail = vec![1; 64];
        for &(i, a) in avail {
            p.avail[i] = a;
        }
        p.stripe = (rank, 4);
        let got = p.pick(peer, 4 * 4, Instant::now());
        got.chunks(4).map(|c| c[0].index).collect::<Vec<u32>>()
    };
    assert_eq!(first_pieces(0, &[]), [0, 1, 2, 3]);
    assert_eq!(first_pieces(3, &[]), [29, 30, 31, 0]);
    // Rarer still comes first, wherever it is.
    assert_eq!(first_pieces(3, &[(40, 0)]), [40, 29, 30, 31]);
}

#[test]
fn a_seed_is_asked_only_for_what_no_peer_has_its_stripe_first() {
    let mut p = picker(8, 8);
    p.avail = vec![1, 0, 0, 0, 0, 0, 0, 0];
    p.stripe = (1, 2);
    let has = Bitfield::full(8);
    let seed = PeerView {
        key: 1,
        has: &has,
        seed: true,
    };
    let order: Vec<u32> = p
        .pick(seed, 100, Instant::now())
        .iter()
        .map(|b| b.index)
        .collect::<Vec<_>>()
        .chunks(4)
        .map(|c| c[0])
        .collect();
    // Odd pieces (rank 1 of 2) first, then the even ones but 0.
    assert_eq!(order, vec![1, 3, 5, 7, 2, 4, 6]);
}

#[test]
fn blocks_received_complete_a_piece_and_cancel_duplicates() {
    let mut p = picker(2, 2);
    p.steal_after = Duration::ZERO;
    let has = bits(2, &[0]);
    let now = Instant::now();
    let a = p.pick(
        PeerView {
            key: 1,
            has: &has,
            seed: false,
        },
        4,
        now,
    );
    assert_eq!(a.len(), 4);
    // Nothing new to start: peer 2 steals peer 1's blocks.
    let b = p.pick(
        PeerView {
            key: 2,
            has: &has,
            seed: false,
        },
        4,
        now,
    );
    assert_eq!(a, b);
    let block = vec![7u8; MAX_BLOCK as usize];
    for (n, r) in a.iter().enumerate() {
        match p.received(2, 0, r.begin, &block) {
            Received::Stored { cancel } if n < 3 => assert_eq!(cancel, vec![(1, *r)]),
            Received::Complete {
                index: 0,
                piece,
                cancel,
            } if n == 3 => {
                assert_eq!(cancel, vec![(1, *r)]);
                assert_eq!(piece.contributors, vec![2]);
                assert_eq!(piece.data.len(), PIECE as usize);
            }
            other => panic!("block {n}: {other:?}"),
        }
    }
    // Late duplicate from peer 1: ignored.
    assert!(matches!(p.received(1, 0, 0, &block), Received::Unwanted));
    p.verified(0, true);
    assert!(p.have.get(0));
}

#[test]
fn malformed_blocks_are_named() {
    let mut p = picker(2, 2);
    let block = vec![0u8; MAX_BLOCK as usize];
    assert!(matches!(p.received(1, 5, 0, &block), Received::Malformed));
    assert!(matches!(p.received(1, 0, 1, &block), Received::Malformed));
    assert!(matches!(
        p.received(1, 0, 0, &block[..10]),
        Received::Malformed
    ));
    assert!(matches!(
        p.received(1, 0, PIECE, &block),
        Received::Malformed
    ));
    // Well-formed but never asked for.
    assert!(matches!(p.received(1, 0, 0, &block), Received::Unwanted));
}

#[test]
fn expired_and_forgotten_requests_are_asked_again() {
    let mut p = picker(1, 1);
    let has = Bitfield::full(1);
    let t0 = Instant::now();
    let first = p.pick(
        PeerView {
            key: 1,
            has: &has,
            seed: false,
        },
        2,
        t0,
    );
    assert_eq!(first.len(), 2);
    assert_eq!(p.asked_of(1), 2);
    let expired = p.expire(t0 + Duration::from_secs(30), Duration::from_secs(20));
    assert_eq!(expired.len(), 2);
    assert_eq!(p.asked_of(1), 0);
    let again = p.pick(
        PeerView {
            key: 2,
            has: &has,
            seed: false,
        },
        4,
        t0,
    );
    assert_eq!(again.len(), 4);
    p.forget_peer(2);
    assert_eq!(p.asked_of(2), 0);
}

#[test]
fn a_short_last_piece_has_short_blocks() {
    let mut p = Picker::new(u64::from(PIECE) + 100, PIECE, 4);
    let has = Bitfield::full(2);
    let got = p.pick(
        PeerView {
            key: 1,
            has: &has,
            seed: false,
        },
        100,
        Instant::now(),
    );
    let last: Vec<_> = got.iter().filter(|b| b.index == 1).collect();
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].length, 100);
}

/// A peer found sending a bad piece: its blocks of other pieces still in
/// memory are dropped and asked again, so they cannot fail those pieces
/// and get their honest co-senders blamed.
#[test]
fn a_bad_peers_blocks_are_discarded_from_pieces_in_memory() {
    let mut p = picker(4, 4);
    let has = Bitfield::full(4);
    let now = Instant::now();
    let view = |key| PeerView {
        key,
        has: &has,
        seed: false,
    };
    // Peer 1 is asked for piece 0's first two blocks, peer 2 for the rest.
    let one = p.pick(view(1), 2, now);
    let two = p.pick(view(2), 2, now);
    assert!(one.iter().chain(&two).all(|b| b.index == 0));
    let block = vec![0u8; MAX_BLOCK as usize];
    for b in &one {
        assert!(matches!(
            p.received(1, b.index, b.begin, &block),
            Received::Stored { .. }
        ));
    }
    assert!(matches!(
        p.received(2, two[0].index, two[0].begin, &block),
        Received::Stored { .. }
    ));
    // Peer 1 sent a bad piece elsewhere: its two blocks are dropped.
    assert_eq!(p.discard_from(1), 2);
    assert_eq!(p.discard_from(1), 0);
    // They are asked again (of peer 3), and the piece is whole only with
    // them and peer 2's last block; its senders are 2 and 3 only.
    let again = p.pick(view(3), 10, now);
    let begins: Vec<u32> = again
        .iter()
        .filter(|b| b.index == 0)
        .map(|b| b.begin)
        .collect();
    assert_eq!(begins, [one[0].begin, one[1].begin]);
    for b in &again[..2] {
        assert!(matches!(
            p.received(3, b.index, b.begin, &block),
            Received::Stored { .. }
        ));
    }
    match p.received(2, two[1].index, two[1].begin, &block) {
        Received::Complete { piece, .. } => {
            let mut who = piece.contributors.clone();
            who.sort_unstable();
            assert_eq!(who, [2, 3]);
        }
        other => panic!("{other:?}"),
    }
}

/// Blocks of the piece the disk waits for are stolen after `steal_after`,
/// those of later pieces only after `STEAL_FAR_FACTOR` times as long.
#[test]
fn only_the_awaited_piece_is_stolen_soon() {
    let mut p = picker(2, 2);
    let has = Bitfield::full(2);
    let t0 = Instant::now();
    let view = |key| PeerView {
        key,
        has: &has,
        seed: false,
    };
    let asked = p.pick(view(1), 8, t0);
    assert_eq!(asked.len(), 8);
    // Nothing new to start; 3 s later only piece 0's blocks are stolen.
    let later = t0 + p.steal_after;
    let stolen = p.pick(view(2), 8, later);
    assert_eq!(stolen.len(), 4);
    assert!(stolen.iter().all(|b| b.index == 0), "{stolen:?}");
    let much_later = t0 + p.steal_after * STEAL_FAR_FACTOR;
    let stolen = p.pick(view(3), 8, much_later);
    assert!(stolen.iter().all(|b| b.index == 1), "{stolen:?}");
    assert_eq!(stolen.len(), 4);
}

/// A piece the HTTP fallback brought frees what was asked for it: counted
/// in flight forever, those blocks would shrink every later request
/// window (the swarm caps what is in flight over all peers).
#[test]
fn a_piece_got_elsewhere_is_no_longer_in_flight() {
    let mut p = picker(4, 4);
    let has = Bitfield::full(4);
    let now = Instant::now();
    for key in [1, 2] {
        let view = PeerView {
            key,
            has: &has,
            seed: false,
        };
        p.pick(view, 4, now);
    }
    assert_eq!(
        (p.asked_of(1) + p.asked_of(2), p.asked_of(1), p.asked_of(2)),
        (8, 4, 4)
    );
    let first = p.partial.keys().copied().min().unwrap();
    p.got_elsewhere(first);
    assert_eq!(p.asked_of(1) + p.asked_of(2), 4);
    assert!(p.have.get(first));
}
