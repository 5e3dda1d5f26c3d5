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

/// A mesh node id (see `super::mesh::node_id`).
type NodeId = u64;

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

    fn expire(&mut self, now_ms: u64) {
        while self
            .packets
            .front()
            .is_some_and(|(t, _)| now_ms.saturating_sub(*t) > HELD_MS)
        {
            self.pop_front();
        }
    }
}

/// Held packets by destination node.
#[derive(Debug, Default)]
pub struct Held {
    queues: Mutex<HashMap<NodeId, Queue>>,
}

impl Held {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Queue>> {
        // Every mutation leaves the map consistent between statements.
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds `datagram` for `node`. Returns the number of packets this dropped: the
    /// oldest ones when the node's queue is full, or `datagram` itself when it alone
    /// exceeds the byte bound or too many nodes already have packets held.
    pub fn push(&self, node: NodeId, datagram: Bytes, now_ms: u64) -> usize {
        if datagram.len() > HELD_BYTES {
            return 1;
        }
        let mut queues = self.lock();
        if !queues.contains_key(&node) && queues.len() >= HELD_NODES {
            queues.retain(|_, q| {
                q.expire(now_ms);
                !q.packets.is_empty()
            });
            if queues.len() >= HELD_NODES {
                return 1;
            }
        }
        let queue = queues.entry(node).or_default();
        let before = queue.packets.len();
        queue.expire(now_ms);
        let mut dropped = before - queue.packets.len();
        while queue.packets.len() >= HELD_PACKETS || queue.bytes + datagram.len() > HELD_BYTES {
            queue.pop_front();
            dropped += 1;
        }
        queue.bytes += datagram.len();
        queue.packets.push_back((now_ms, datagram));
        dropped
    }

    /// Takes the packets held for `node` that are still fresh, oldest first.
    pub fn take(&self, node: NodeId, now_ms: u64) -> Vec<Bytes> {
        let Some(mut queue) = self.lock().remove(&node) else {
            return Vec::new();
        };
        queue.expire(now_ms);
        queue.packets.into_iter().map(|(_, p)| p).collect()
    }

    /// Drops stale packets and forgets nodes left without any.
    pub fn expire(&self, now_ms: u64) {
        self.lock().retain(|_, q| {
            q.expire(now_ms);
            !q.packets.is_empty()
        });
    }

    /// Packets held for all nodes together.
    pub fn len(&self) -> usize {
        self.lock().values().map(|q| q.packets.len()).sum()
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
            assert_eq!(held.push(7, packet(tag, 100), 10), 0);
        }
        assert_eq!(held.push(8, packet(9, 100), 10), 0);
        let out = held.take(7, 20);
        assert_eq!(out.iter().map(|p| p[0]).collect::<Vec<_>>(), [0, 1, 2]);
        assert!(held.take(7, 20).is_empty());
        assert_eq!(held.len(), 1);
    }

    #[test]
    fn a_full_queue_drops_its_oldest_packets() {
        let held = Held::default();
        for i in 0..HELD_PACKETS + 5 {
            let dropped = held.push(1, packet((i % 256) as u8, 10), 0);
            assert_eq!(dropped, usize::from(i >= HELD_PACKETS));
        }
        let out = held.take(1, 0);
        assert_eq!(out.len(), HELD_PACKETS);
        assert_eq!(out[0][0], 5);
        // The byte bound holds too.
        for _ in 0..HELD_BYTES / 60_000 + 2 {
            held.push(2, packet(0, 60_000), 0);
        }
        let total: usize = held.take(2, 0).iter().map(|p| p.len()).sum();
        assert!(total <= HELD_BYTES, "{total}");
        assert_eq!(held.push(3, packet(0, HELD_BYTES + 1), 0), 1);
        assert_eq!(held.len(), 0);
    }

    #[test]
    fn stale_packets_are_dropped_not_sent() {
        let held = Held::default();
        held.push(1, packet(1, 10), 0);
        held.push(1, packet(2, 10), 4_000);
        let out = held.take(1, HELD_MS + 1);
        assert_eq!(out.iter().map(|p| p[0]).collect::<Vec<_>>(), [2]);
        held.push(2, packet(1, 10), 0);
        held.expire(HELD_MS + 1);
        assert_eq!(held.len(), 0);
    }

    #[test]
    fn the_number_of_nodes_is_bounded() {
        let held = Held::default();
        for node in 0..HELD_NODES as u64 {
            assert_eq!(held.push(node, packet(0, 10), 0), 0);
        }
        assert_eq!(held.push(u64::MAX, packet(0, 10), 0), 1);
        // Room again once the others have gone stale.
        assert_eq!(held.push(u64::MAX, packet(0, 10), HELD_MS + 1), 0);
        assert_eq!(held.len(), 1);
    }
}
