//! Layer 2 forwarding state: which mesh node a MAC address was last seen behind.
//!
//! The mesh is a learning switch whose ports are the nodes that run a TAP: a frame
//! teaches its source MAC behind the node that originated it; a frame to a known unicast
//! MAC goes to that node; broadcast, multicast and unknown unicast go to every TAP node.
//! Received frames are only ever written to the local TAP, never sent on, so flooding
//! cannot loop. Time is passed in (milliseconds on the node's clock).

use std::collections::BTreeMap;
use std::sync::Mutex;

use quicap_mesh::NodeId;

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

/// What a frame says about its sender, for `tap.check-sources`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameSource {
    /// An IPv4 or IPv6 packet from this address, or an ARP message from this sender
    /// address.
    Address(std::net::IpAddr),
    /// One that names no sender a certificate could list: an IPv4 or ARP sender of
    /// 0.0.0.0 (DHCP, ARP probes), an IPv6 source of :: (duplicate address detection)
    /// or in fe80::/10 (neighbour discovery, which runs on link-local addresses).
    Unnamed,
    /// Anything else: another protocol, a VLAN tag, a frame too short to read.
    Other,
}

/// The sender a frame claims, read from its IPv4, IPv6 or ARP header.
pub fn frame_source(frame: &[u8]) -> FrameSource {
    use std::net::IpAddr;
    let (Some(ethertype), Some(payload)) = (frame.get(12..14), frame.get(14..)) else {
        return FrameSource::Other;
    };
    let ip_source = || quicap_wire::ip::addresses(payload).map(|(source, _)| source);
    let address: Option<IpAddr> = match ethertype {
        // The header's version must match the ethertype.
        [0x08, 0x00] => ip_source().filter(IpAddr::is_ipv4),
        [0x86, 0xdd] => ip_source().filter(IpAddr::is_ipv6),
        // ARP for IPv4 over Ethernet (hardware type 1, protocol 0x0800, lengths 6 and
        // 4): the sender's protocol address follows its hardware address.
        [0x08, 0x06] => payload
            .get(..18)
            .filter(|h| h[..6] == [0, 1, 8, 0, 6, 4])
            .map(|h| IpAddr::from([h[14], h[15], h[16], h[17]])),
        _ => None,
    };
    match address {
        None => FrameSource::Other,
        Some(IpAddr::V4(a)) if a.is_unspecified() => FrameSource::Unnamed,
        Some(IpAddr::V6(a)) if a.is_unspecified() || a.is_unicast_link_local() => {
            FrameSource::Unnamed
        }
        Some(a) => FrameSource::Address(a),
    }
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

    /// An Ethernet frame of `ethertype` around `payload`.
    fn frame(ethertype: [u8; 2], payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&ethertype);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn frame_source_reads_ipv4_ipv6_and_arp_senders() {
        let mut v4 = vec![
            0x45, 0, 0, 20, 0, 0, 0, 0, 64, 1, 0, 0, 10, 78, 0, 2, 10, 78, 0, 1,
        ];
        assert_eq!(
            frame_source(&frame([8, 0], &v4)),
            FrameSource::Address("10.78.0.2".parse().unwrap())
        );
        v4[12..16].copy_from_slice(&[0, 0, 0, 0]);
        assert_eq!(frame_source(&frame([8, 0], &v4)), FrameSource::Unnamed);

        let mut v6 = vec![0x60, 0, 0, 0, 0, 0, 58, 255];
        v6.extend_from_slice(&"fd78::2".parse::<std::net::Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&[0; 16]);
        assert_eq!(
            frame_source(&frame([0x86, 0xdd], &v6)),
            FrameSource::Address("fd78::2".parse().unwrap())
        );
        v6[8..24].copy_from_slice(&"fe80::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
        assert_eq!(
            frame_source(&frame([0x86, 0xdd], &v6)),
            FrameSource::Unnamed
        );

        let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 10, 78, 0, 2];
        arp.extend_from_slice(&[0; 10]);
        assert_eq!(
            frame_source(&frame([8, 6], &arp)),
            FrameSource::Address("10.78.0.2".parse().unwrap())
        );
        arp[14..18].copy_from_slice(&[0, 0, 0, 0]);
        assert_eq!(frame_source(&frame([8, 6], &arp)), FrameSource::Unnamed);
    }

    #[test]
    fn frame_source_is_other_for_other_protocols_and_short_frames() {
        assert_eq!(
            frame_source(&frame([0x81, 0x00], &[0; 40])),
            FrameSource::Other
        );
        assert_eq!(
            frame_source(&frame([0x88, 0xcc], &[0; 40])),
            FrameSource::Other
        );
        // An IPv4 ethertype around an IPv6 header, and headers cut short.
        assert_eq!(
            frame_source(&frame([8, 0], &[0x60; 40])),
            FrameSource::Other
        );
        assert_eq!(
            frame_source(&frame([8, 0], &[0x45; 10])),
            FrameSource::Other
        );
        assert_eq!(
            frame_source(&frame([8, 6], &[0, 1, 8, 0, 6, 4])),
            FrameSource::Other
        );
        assert_eq!(frame_source(&[0; 13]), FrameSource::Other);
        assert_eq!(frame_source(&[]), FrameSource::Other);
    }

    const A: Mac = [2, 0, 0, 0, 0, 1];
    const B: Mac = [2, 0, 0, 0, 0, 2];

    #[test]
    fn learns_moves_and_ages_out() {
        let t = MacTable::default();
        assert_eq!(t.lookup(&A, 0), None);
        t.learn(A, NodeId(2), 10);
        assert_eq!(t.lookup(&A, 20), Some(NodeId(2)));
        t.learn(A, NodeId(3), 30);
        assert_eq!(t.lookup(&A, 40), Some(NodeId(3)));
        assert_eq!(t.lookup(&A, 30 + MAC_AGE_MS + 1), None);
    }

    #[test]
    fn forgets_a_disconnected_node() {
        let t = MacTable::default();
        t.learn(A, NodeId(2), 0);
        t.learn(B, NodeId(3), 0);
        t.forget_node(NodeId(2));
        assert_eq!(t.lookup(&A, 1), None);
        assert_eq!(t.lookup(&B, 1), Some(NodeId(3)));
    }

    #[test]
    fn capacity_is_bounded() {
        let t = MacTable::default();
        for i in 0..(MAC_CAPACITY as u64 + 10) {
            let b = i.to_be_bytes();
            t.learn([2, 0, b[4], b[5], b[6], b[7]], NodeId(9), i);
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
