//! Layer 2 forwarding state: which mesh node a MAC address was last seen behind.
//!
//! The mesh is a learning switch whose ports are the nodes that run a TAP: a frame
//! teaches its source MAC behind the node that originated it; a frame to a known unicast
//! MAC goes to that node; broadcast, multicast and unknown unicast go to every TAP node.
//! Received frames are only ever written to the local TAP, never sent on, so flooding
//! cannot loop. Time is passed in (milliseconds on the node's clock).

use std::collections::BTreeMap;
use std::sync::Mutex;

/// A mesh node id (see `super::mesh::node_id`).
type NodeId = u64;

/// An Ethernet address.
pub type Mac = [u8; 6];

/// How long a learned address stays valid without being seen again.
pub const MAC_AGE_MS: u64 = 300_000;
/// Upper bound on learned addresses; beyond it the oldest are forgotten.
pub const MAC_CAPACITY: usize = 4096;

/// Destination MAC of an Ethernet frame.
pub fn destination_mac(frame: &[u8]) -> Option<Mac> {
    frame.get(..6)?.try_into().ok()
}

/// Source MAC of an Ethernet frame, if it is a plausible unicast sender.
pub fn source_mac(frame: &[u8]) -> Option<Mac> {
    let mac: Mac = frame.get(6..12)?.try_into().ok()?;
    (mac[0] & 1 == 0 && mac != [0; 6]).then_some(mac)
}

/// True for broadcast and multicast destinations.
pub fn is_group(mac: &Mac) -> bool {
    mac[0] & 1 == 1
}

#[derive(Debug, Default)]
pub struct MacTable {
    entries: Mutex<BTreeMap<Mac, (NodeId, u64)>>,
}

impl MacTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Mac, (NodeId, u64)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `mac` was seen behind `node` at `now_ms`.
    pub fn learn(&self, mac: Mac, node: NodeId, now_ms: u64) {
        let mut entries = self.lock();
        match entries.get_mut(&mac) {
            Some((n, seen)) if *n == node => *seen = now_ms,
            _ => {
                if entries.len() >= MAC_CAPACITY {
                    entries.retain(|_, (_, seen)| now_ms.saturating_sub(*seen) <= MAC_AGE_MS);
                    if entries.len() >= MAC_CAPACITY {
                        if let Some(oldest) =
                            entries.iter().min_by_key(|(_, (_, s))| *s).map(|(m, _)| *m)
                        {
                            entries.remove(&oldest);
                        }
                    }
                }
                entries.insert(mac, (node, now_ms));
            }
        }
    }

    /// The node behind `mac`, if learned and not aged out.
    pub fn lookup(&self, mac: &Mac, now_ms: u64) -> Option<NodeId> {
        let entries = self.lock();
        let (node, seen) = entries.get(mac)?;
        (now_ms.saturating_sub(*seen) <= MAC_AGE_MS).then_some(*node)
    }

    /// Forgets everything learned behind `node` (it disconnected).
    pub fn forget_node(&self, node: NodeId) {
        self.lock().retain(|_, (n, _)| *n != node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Mac = [2, 0, 0, 0, 0, 1];
    const B: Mac = [2, 0, 0, 0, 0, 2];

    #[test]
    fn learns_moves_and_ages_out() {
        let t = MacTable::default();
        assert_eq!(t.lookup(&A, 0), None);
        t.learn(A, 2, 10);
        assert_eq!(t.lookup(&A, 20), Some(2));
        t.learn(A, 3, 30);
        assert_eq!(t.lookup(&A, 40), Some(3));
        assert_eq!(t.lookup(&A, 30 + MAC_AGE_MS + 1), None);
    }

    #[test]
    fn forgets_a_disconnected_node() {
        let t = MacTable::default();
        t.learn(A, 2, 0);
        t.learn(B, 3, 0);
        t.forget_node(2);
        assert_eq!(t.lookup(&A, 1), None);
        assert_eq!(t.lookup(&B, 1), Some(3));
    }

    #[test]
    fn capacity_is_bounded() {
        let t = MacTable::default();
        for i in 0..(MAC_CAPACITY as u64 + 10) {
            let b = i.to_be_bytes();
            t.learn([2, 0, b[4], b[5], b[6], b[7]], 9, i);
        }
        assert_eq!(t.lock().len(), MAC_CAPACITY);
        assert_eq!(
            t.lookup(&[2, 0, 0, 0, 0, 0], MAC_CAPACITY as u64 + 10),
            None
        );
    }

    #[test]
    fn frame_helpers_refuse_short_frames_and_group_sources() {
        let mut frame = [0u8; 14];
        frame[..6].copy_from_slice(&[0xff; 6]);
        frame[6..12].copy_from_slice(&A);
        assert_eq!(destination_mac(&frame), Some([0xff; 6]));
        assert!(is_group(&[0xff; 6]) && !is_group(&A));
        assert_eq!(source_mac(&frame), Some(A));
        frame[6] = 1;
        assert_eq!(source_mac(&frame), None);
        assert_eq!(source_mac(&frame[..8]), None);
    }
}
