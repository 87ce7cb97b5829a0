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
