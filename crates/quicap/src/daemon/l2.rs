//! Layer 2 forwarding state: which peer a MAC address was last seen behind.
//!
//! Point-to-point L2 is a learning switch whose ports are the peers: a frame from a peer
//! teaches its source MAC; a frame to a known unicast MAC goes to that peer; broadcast,
//! multicast and unknown unicast go to every L2 peer. Frames received from a peer are
//! only ever written to the local TAP, never sent on to other peers, so flooding cannot
//! loop. Time is passed in (milliseconds on the node's clock).

use std::collections::BTreeMap;
use std::sync::Mutex;

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
    entries: Mutex<BTreeMap<Mac, (String, u64)>>,
}

impl MacTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Mac, (String, u64)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `mac` was seen behind `peer` at `now_ms`.
    pub fn learn(&self, mac: Mac, peer: &str, now_ms: u64) {
        let mut entries = self.lock();
        match entries.get_mut(&mac) {
            Some((p, seen)) if p == peer => *seen = now_ms,
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
                entries.insert(mac, (peer.to_owned(), now_ms));
            }
        }
    }

    /// The peer behind `mac`, if learned and not aged out.
    pub fn lookup(&self, mac: &Mac, now_ms: u64) -> Option<String> {
        let entries = self.lock();
        let (peer, seen) = entries.get(mac)?;
        (now_ms.saturating_sub(*seen) <= MAC_AGE_MS).then(|| peer.clone())
    }

    /// Forgets everything learned behind `peer` (it disconnected).
    pub fn forget_peer(&self, peer: &str) {
        self.lock().retain(|_, (p, _)| p != peer);
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
        t.learn(A, "node-b", 10);
        assert_eq!(t.lookup(&A, 20).as_deref(), Some("node-b"));
        t.learn(A, "node-c", 30);
        assert_eq!(t.lookup(&A, 40).as_deref(), Some("node-c"));
        assert_eq!(t.lookup(&A, 30 + MAC_AGE_MS + 1), None);
    }

    #[test]
    fn forgets_a_disconnected_peer() {
        let t = MacTable::default();
        t.learn(A, "node-b", 0);
        t.learn(B, "node-c", 0);
        t.forget_peer("node-b");
        assert_eq!(t.lookup(&A, 1), None);
        assert_eq!(t.lookup(&B, 1).as_deref(), Some("node-c"));
    }

    #[test]
    fn capacity_is_bounded() {
        let t = MacTable::default();
        for i in 0..(MAC_CAPACITY as u64 + 10) {
            let b = i.to_be_bytes();
            t.learn([2, 0, b[4], b[5], b[6], b[7]], "p", i);
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
