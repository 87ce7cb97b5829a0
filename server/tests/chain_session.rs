//! Chain sessions on loopback: a real coordinator and head, 4–7 relay
//! nodes as threads writing files through the agent's pipeline. Each test
//! checks every node's bytes against the image and what the coordinator
//! says about the nodes.

mod chain_lab;

use std::time::Duration;

use chain_lab::*;
use drover_server::chain::SessionConfig;

const NO_DELAY: Duration = Duration::ZERO;

/// Named `chain::…` so that `cargo test chain` selects them.
mod chain {
    use super::*;

    #[test]
    fn a_chain_of_six_delivers_every_chunk_to_every_node() {
        let lab = Lab::new(3, session_config(6), Some(2 << 20));
        let mut nodes: Vec<Node> = (1..=6)
            .map(|i| lab.spawn(i, relay_config(), NO_DELAY))
            .collect();
        // Started when the sixth joined: a chain, head → 1 → 2 → … → 6.
        let st = lab.status();
        assert!(st.started);
        let ups: Vec<_> = st
            .nodes
            .iter()
            .map(|n| n.upstream.clone().unwrap())
            .collect();
        let mut want = vec!["head".to_string()];
        want.extend((1..6).map(|i| mac(i).to_string()));
        assert_eq!(ups, want);
        for n in &mut nodes {
            let (_, stats) = n.join().unwrap();
            assert_eq!(stats.received as usize, lab.manifest.chunks.len());
            assert_eq!((stats.corrupt, stats.reports), (0, 0), "node {}", n.i);
            lab.check_output(n);
        }
        // Only the first node read from the head; each forwarded everything
        // to the next (the tail to nobody), and parts of chunks it did not
        // have whole yet (cut-through).
        let forwarded: Vec<u64> = nodes.iter().map(|n| n.handle.stats().forwarded).collect();
        let total = lab.manifest.chunks.len() as u64;
        assert_eq!(forwarded, [total, total, total, total, total, 0]);
        for n in &nodes[..5] {
            let s = n.handle.stats();
            assert!(s.parts_ahead > 0, "node {}: {s:?}", n.i);
            assert_eq!(s.restarts, 0, "node {}: {s:?}", n.i);
        }
        for n in lab.status().nodes {
            assert_eq!(n.state, "left", "{n:?}");
        }
    }

    #[test]
    fn a_tree_of_arity_two() {
        let cfg = SessionConfig {
            arity: 2,
            ..session_config(5)
        };
        let lab = Lab::new(2, cfg, Some(4 << 20));
        let mut nodes: Vec<Node> = (1..=5)
            .map(|i| lab.spawn(i, relay_config(), NO_DELAY))
            .collect();
        let ups: Vec<_> = lab
            .status()
            .nodes
            .iter()
            .map(|n| n.upstream.clone().unwrap())
            .collect();
        let m = |i| mac(i).to_string();
        assert_eq!(ups, ["head".into(), "head".into(), m(1), m(1), m(2)]);
        for n in &mut nodes {
            n.join().unwrap();
            lab.check_output(n);
        }
    }

    #[test]
    fn a_killed_middle_node_is_bypassed_and_reported_failed() {
        let lab = Lab::new(3, session_config(5), Some(1 << 20));
        let mut nodes: Vec<Node> = (1..=5)
            .map(|i| lab.spawn(i, relay_config(), NO_DELAY))
            .collect();
        let total = lab.manifest.chunks.len() as u32;
        // Node 3 (in the middle) vanishes halfway through.
        let victim = nodes[2].handle.clone();
        wait_until(Duration::from_secs(10), "node 3 halfway", || {
            victim.stats().received >= total / 2
        });
        victim.kill();
        assert!(nodes[2].join().is_err(), "a killed node does not complete");
        for n in nodes.iter_mut().filter(|n| n.i != 3) {
            let (_, stats) = n.join().unwrap();
            lab.check_output(n);
            if n.i == 4 {
                // Node 4 noticed, reported, and resumed from node 2.
                assert!(stats.reports >= 1 && stats.connections >= 2, "{stats:?}");
            }
        }
        wait_until(Duration::from_secs(5), "node 3 marked failed", || {
            lab.node_state(3) == "failed"
        });
    }

    #[test]
    fn a_node_forwarding_corrupt_chunks_is_refused_and_cut_out() {
        let lab = Lab::new(3, session_config(4), Some(2 << 20));
        let mut relays = vec![relay_config(); 4];
        // Node 2 verifies what it receives but flips a bit in everything it
        // forwards from chunk 10 on.
        relays[1].forward_tap = Some(std::sync::Arc::new(|i, offset, bytes: &mut Vec<u8>| {
            if i >= 10 && offset == 0 {
                bytes[0] ^= 1;
            }
        }));
        let mut nodes: Vec<Node> = relays
            .into_iter()
            .zip(1..)
            .map(|(r, i)| lab.spawn(i, r, NO_DELAY))
            .collect();
        for n in &mut nodes {
            let (_, stats) = n.join().unwrap();
            // Nothing corrupt was written anywhere, the corrupter included.
            lab.check_output(n);
            if n.i == 3 {
                assert!(
                    stats.corrupt >= 2,
                    "node 3 refused the bad chunks: {stats:?}"
                );
                // It had forwarded their first parts: it started them over.
                assert!(stats.restarts >= 2, "{stats:?}");
            }
            if n.i == 4 {
                // Behind node 3, it was sent the bad chunks' first parts
                // but never a bad chunk whole: nothing to refuse, nobody
                // blamed.
                assert_eq!((stats.corrupt, stats.reports), (0, 0), "{stats:?}");
            }
        }
        let st = lab.status();
        let two = st
            .nodes
            .iter()
            .find(|n| n.mac == mac(2).to_string())
            .unwrap();
        assert!(
            two.events
                .iter()
                .any(|e| e.starts_with("cut out: sent 2 corrupt chunks")),
            "{two:?}"
        );
    }

    #[test]
    fn a_late_joiner_catches_up_and_completes() {
        let lab = Lab::new(3, session_config(3), Some(1 << 20));
        let mut nodes: Vec<Node> = (1..=3)
            .map(|i| lab.spawn(i, relay_config(), NO_DELAY))
            .collect();
        let total = lab.manifest.chunks.len() as u32;
        let tail = nodes[2].handle.clone();
        wait_until(Duration::from_secs(10), "the chain halfway", || {
            tail.stats().received >= total / 2
        });
        // The tail's buffer no longer holds chunk 0: the newcomer catches up
        // from the head, in place at the tail.
        let mut late = lab.spawn(4, relay_config(), NO_DELAY);
        let st = lab.status();
        assert_eq!(st.nodes.len(), 4);
        assert_eq!(st.nodes[3].mac, mac(4).to_string());
        assert_eq!(st.nodes[3].upstream.as_deref(), Some("head"));
        for n in nodes.iter_mut().chain([&mut late]) {
            n.join().unwrap();
            lab.check_output(n);
        }
    }

    #[test]
    fn a_slow_disk_is_moved_to_the_tail_and_does_not_hold_back_the_others() {
        let cfg = SessionConfig {
            slow_after: Duration::from_millis(500),
            ..session_config(4)
        };
        let lab = Lab::new(3, cfg, Some((3 << 20) / 2));
        let chunks = lab.manifest.chunks.len() as u32;
        // Node 2 writes one chunk per 80 ms: ~7.7 s for the image, where
        // the link alone takes ~2 s.
        let slow = Duration::from_millis(80);
        let mut nodes: Vec<Node> = (1..=4)
            .map(|i| {
                let delay = if i == 2 { slow } else { NO_DELAY };
                lab.spawn(i, relay_config(), delay)
            })
            .collect();
        let mut times = Vec::new();
        for n in &mut nodes {
            let (t, _) = n.join().unwrap();
            lab.check_output(n);
            times.push(t);
        }
        assert!(times[1] >= slow * chunks, "{times:?}");
        // Left behind it, nodes 3 and 4 would finish with it; moved out
        // of their way, it costs them about its buffer and the grace.
        for i in [0, 2, 3] {
            assert!(
                times[i] < times[1] * 2 / 3,
                "node {} is not much faster than the slow one: {times:?}",
                i + 1,
            );
        }
        let st = lab.status();
        let two = st
            .nodes
            .iter()
            .find(|n| n.mac == mac(2).to_string())
            .unwrap();
        assert!(
            two.events.iter().any(|e| e.contains("moved to the tail")),
            "{two:?}"
        );
    }

    #[test]
    fn when_the_head_vanishes_the_first_node_falls_back_and_keeps_relaying() {
        let mut lab = Lab::new(3, session_config(3), Some(1 << 20));
        let total = lab.manifest.chunks.len() as u32;
        let relay = drover_agent::chain::RelayConfig {
            fallback_after: Duration::from_secs(2),
            ..relay_config()
        };
        // What plain HTTP would deliver: the payload (any ChunkSource will do).
        let http = drover_agent::image::MemSource(lab.payload.clone());
        let mut nodes = vec![lab.spawn_with(1, relay.clone(), NO_DELAY, Some(Box::new(http)))];
        nodes.extend((2..=3).map(|i| lab.spawn(i, relay_config(), NO_DELAY)));
        let first = nodes[0].handle.clone();
        wait_until(Duration::from_secs(10), "node 1 halfway", || {
            first.stats().received >= total / 2
        });
        lab.kill_head();
        for n in &mut nodes {
            n.join().unwrap();
            lab.check_output(n);
        }
        let stats = first.stats();
        assert!(
            stats.fallback.as_deref() == Some("no chunk from the chain for 2s"),
            "{stats:?}"
        );
        // Nodes 2 and 3 never noticed: node 1 fed them what it fetched.
        for n in &nodes[1..] {
            assert_eq!(n.handle.stats().reports, 0, "node {}", n.i);
        }
    }
}
