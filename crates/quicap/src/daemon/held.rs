//! Tunnel packets for a node that is no neighbour, held until a link to it is up.
//!
//! Traffic between two nodes travels over a connection between them only, direct or
//! end to end over relay frames, so that nothing but the other node can have sent what
//! arrives on it. The first packets for a node reached through others wait here while
//! that connection is dialed (a QUIC handshake through the mesh), as WireGuard holds
//! packets during a handshake, and go out on the link as soon as it is up. Queues are
//! bounded per node and in number of nodes; a full queue drops its oldest packet, and
//! packets older than [`HELD_MS`] are dropped instead of sent. Time is passed in
//! (milliseconds on the node's clock).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;
use quicap_mesh::NodeId;

/// Packets held per node at most; a new one beyond it pushes out the oldest.
pub const HELD_PACKETS: usize = 128;
/// Bytes held per node at most.
pub const HELD_BYTES: usize = 256 * 1024;
/// Nodes with held packets at most; packets for further nodes are dropped.
pub const HELD_NODES: usize = 256;
/// Held packets older than this are dropped: their senders have retransmitted or
/// given up by then.
pub const HELD_MS: u64 = 5_000;

#[derive(Debug, Default)]
struct Queue {
    /// Each packet (a datagram ready to send) with when it was held.
    packets: VecDeque<(u64, Bytes)>,
    bytes: usize,
}

impl Queue {
    fn pop_front(&mut self) {
        if let Some((_, p)) = self.packets.pop_front() {
            self.bytes -= p.len();
        }
    }

    /// Drops the packets older than [`HELD_MS`]; returns how many.
    fn expire(&mut self, now_ms: u64) -> u64 {
        let mut dropped = 0;
        while self
            .packets
            .front()
            .is_some_and(|(t, _)| now_ms.saturating_sub(*t) > HELD_MS)
        {
            self.pop_front();
            dropped += 1;
        }
        dropped
    }
}

#[derive(Debug, Default)]
struct State {
    queues: HashMap<NodeId, Queue>,
    /// Packets dropped so far: pushed out, stale, or refused.
    dropped: u64,
}

impl State {
    /// Drops stale packets and forgets nodes left without any.
    fn expire(&mut self, now_ms: u64) {
        let mut dropped = 0;
        self.queues.retain(|_, q| {
            dropped += q.expire(now_ms);
            !q.packets.is_empty()
        });
        self.dropped += dropped;
    }
}

/// Held packets by destination node.
#[derive(Debug, Default)]
pub struct Held {
    state: Mutex<State>,
}

impl Held {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every mutation leaves the state consistent between statements.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds `datagram` for `node`. Returns the number of packets this dropped: the
    /// oldest ones when the node's queue is full, or `datagram` itself when it alone
    /// exceeds the byte bound or too many nodes already have packets held.
    pub fn push(&self, node: NodeId, datagram: Bytes, now_ms: u64) -> u64 {
        let mut state = self.lock();
        if datagram.len() > HELD_BYTES {
            state.dropped += 1;
            return 1;
        }
        if !state.queues.contains_key(&node) && state.queues.len() >= HELD_NODES {
            let before = state.dropped;
            state.expire(now_ms);
            if state.queues.len() >= HELD_NODES {
                state.dropped += 1;
                return state.dropped - before;
            }
        }
        let queue = state.queues.entry(node).or_default();
        let mut dropped = queue.expire(now_ms);
        while queue.packets.len() >= HELD_PACKETS || queue.bytes + datagram.len() > HELD_BYTES {
            queue.pop_front();
            dropped += 1;
        }
        queue.bytes += datagram.len();
        queue.packets.push_back((now_ms, datagram));
        state.dropped += dropped;
        dropped
    }

    /// Takes the packets held for `node` that are still fresh, oldest first.
    pub fn take(&self, node: NodeId, now_ms: u64) -> Vec<Bytes> {
        let mut state = self.lock();
        let Some(mut queue) = state.queues.remove(&node) else {
            return Vec::new();
        };
        state.dropped += queue.expire(now_ms);
        queue.packets.into_iter().map(|(_, p)| p).collect()
    }

    /// Drops stale packets and forgets nodes left without any.
    pub fn expire(&self, now_ms: u64) {
        self.lock().expire(now_ms);
    }

    /// What `quicap status` shows.
    pub fn status(&self) -> crate::status::HeldStatus {
        let state = self.lock();
        crate::status::HeldStatus {
            packets: state.queues.values().map(|q| q.packets.len() as u64).sum(),
            nodes: state.queues.len() as u64,
            dropped: state.dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(tag: u8, len: usize) -> Bytes {
        Bytes::from(vec![tag; len])
    }

    #[test]
    fn packets_come_back_in_order_once() {
        let held = Held::default();
        for tag in 0..3 {
            assert_eq!(held.push(NodeId(7), packet(tag, 100), 10), 0);
        }
        assert_eq!(held.push(NodeId(8), packet(9, 100), 10), 0);
        let out = held.take(NodeId(7), 20);
        assert_eq!(out.iter().map(|p| p[0]).collect::<Vec<_>>(), [0, 1, 2]);
        assert!(held.take(NodeId(7), 20).is_empty());
        assert_eq!(held.status().packets, 1);
    }

    #[test]
    fn a_full_queue_drops_its_oldest_packets() {
        let held = Held::default();
        for i in 0..HELD_PACKETS + 5 {
            let dropped = held.push(NodeId(1), packet((i % 256) as u8, 10), 0);
            assert_eq!(dropped, u64::from(i >= HELD_PACKETS));
        }
        let out = held.take(NodeId(1), 0);
        assert_eq!(out.len(), HELD_PACKETS);
        assert_eq!(out[0][0], 5);
        // The byte bound holds too.
        for _ in 0..HELD_BYTES / 60_000 + 2 {
            held.push(NodeId(2), packet(0, 60_000), 0);
        }
        let total: usize = held.take(NodeId(2), 0).iter().map(|p| p.len()).sum();
        assert!(total <= HELD_BYTES, "{total}");
        assert_eq!(held.push(NodeId(3), packet(0, HELD_BYTES + 1), 0), 1);
        assert_eq!(held.status().packets, 0);
    }

    #[test]
    fn stale_packets_are_dropped_not_sent() {
        let held = Held::default();
        held.push(NodeId(1), packet(1, 10), 0);
        held.push(NodeId(1), packet(2, 10), 4_000);
        let out = held.take(NodeId(1), HELD_MS + 1);
        assert_eq!(out.iter().map(|p| p[0]).collect::<Vec<_>>(), [2]);
        held.push(NodeId(2), packet(1, 10), 0);
        held.expire(HELD_MS + 1);
        assert_eq!(held.status().packets, 0);
        assert_eq!(held.status().dropped, 2);
    }

    #[test]
    fn the_number_of_nodes_is_bounded() {
        let held = Held::default();
        for node in 0..HELD_NODES as u64 {
            assert_eq!(held.push(NodeId(node), packet(0, 10), 0), 0);
        }
        assert_eq!(held.push(NodeId(u64::MAX), packet(0, 10), 0), 1);
        // Room again once the others have gone stale (dropped, and counted).
        held.push(NodeId(u64::MAX), packet(0, 10), HELD_MS + 1);
        assert_eq!(held.status().packets, 1);
        let status = held.status();
        assert_eq!((status.packets, status.nodes), (1, 1));
        assert_eq!(status.dropped, 1 + HELD_NODES as u64);
    }
}
