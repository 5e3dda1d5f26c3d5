//! Longest-prefix match over the prefixes the nodes of the mesh own: the per-packet
//! lookup of the node a destination address belongs to.
//!
//! A [`PrefixTable`] is a snapshot, built whole whenever the accepted prefixes change
//! and then only read: a lookup is one hash probe per prefix length in use (typically
//! two or three: host routes and a subnet or two), longest first, instead of a scan of
//! every node's prefixes under a lock.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::NodeId;

/// Which node owns the longest prefix containing an address.
#[derive(Debug, Clone, Default)]
pub struct PrefixTable {
    v4: Family,
    v6: Family,
}

/// The prefixes of one address family, as the address bits (host bits cleared, left
/// aligned in a u128) per prefix length.
#[derive(Debug, Clone, Default)]
struct Family {
    /// Prefix lengths in use, longest first.
    lens: Vec<u8>,
    owners: HashMap<(u8, u128), NodeId>,
}

impl PrefixTable {
    /// A table of `(address, prefix length, owner)` entries. Where two nodes claim the
    /// same prefix the higher node id owns it, so that every node decides alike. A
    /// length beyond the family's width counts as a host route.
    pub fn new(entries: impl IntoIterator<Item = (IpAddr, u8, NodeId)>) -> PrefixTable {
        let mut table = PrefixTable::default();
        for (addr, len, owner) in entries {
            let (family, bits, width) = table.family(addr);
            let len = len.min(width);
            let key = (len, mask(bits, len));
            let slot = family.owners.entry(key).or_insert(owner);
            *slot = (*slot).max(owner);
            if !family.lens.contains(&len) {
                family.lens.push(len);
            }
        }
        for family in [&mut table.v4, &mut table.v6] {
            family.lens.sort_unstable_by(|a, b| b.cmp(a));
        }
        table
    }

    /// The owner of the longest prefix that contains `addr`.
    pub fn lookup(&self, addr: IpAddr) -> Option<NodeId> {
        let (family, bits) = match addr {
            IpAddr::V4(a) => (&self.v4, u128::from(u32::from(a)) << 96),
            IpAddr::V6(a) => (&self.v6, u128::from(a)),
        };
        family
            .lens
            .iter()
            .find_map(|&len| family.owners.get(&(len, mask(bits, len))).copied())
    }

    /// Number of prefixes held.
    pub fn len(&self) -> usize {
        self.v4.owners.len() + self.v6.owners.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn family(&mut self, addr: IpAddr) -> (&mut Family, u128, u8) {
        match addr {
            IpAddr::V4(a) => (&mut self.v4, u128::from(u32::from(a)) << 96, 32),
            IpAddr::V6(a) => (&mut self.v6, u128::from(a), 128),
        }
    }
}

/// The first `len` bits of `bits` (left aligned).
fn mask(bits: u128, len: u8) -> u128 {
    match len {
        0 => 0,
        l if l >= 128 => bits,
        l => bits & !(u128::MAX >> l),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_longest_prefix_wins() {
        let t = PrefixTable::new([
            (ip("10.77.0.0"), 24, NodeId(1)),
            (ip("10.77.0.5"), 32, NodeId(2)),
            (ip("10.0.0.0"), 8, NodeId(3)),
            (ip("fd77::"), 64, NodeId(4)),
            (ip("fd77::9"), 128, NodeId(5)),
        ]);
        assert_eq!(t.lookup(ip("10.77.0.5")), Some(NodeId(2)));
        assert_eq!(t.lookup(ip("10.77.0.6")), Some(NodeId(1)));
        assert_eq!(t.lookup(ip("10.9.9.9")), Some(NodeId(3)));
        assert_eq!(t.lookup(ip("192.0.2.1")), None);
        assert_eq!(t.lookup(ip("fd77::9")), Some(NodeId(5)));
        assert_eq!(t.lookup(ip("fd77::1")), Some(NodeId(4)));
        assert_eq!(t.lookup(ip("fd78::1")), None);
        assert_eq!(t.len(), 5);
    }

    #[test]
    fn families_do_not_mix_and_host_bits_do_not_count() {
        let t = PrefixTable::new([
            (ip("0.0.0.0"), 0, NodeId(1)),
            (ip("10.1.2.3"), 24, NodeId(2)),
        ]);
        assert_eq!(t.lookup(ip("::1")), None);
        assert_eq!(t.lookup(ip("10.1.2.200")), Some(NodeId(2)));
        assert_eq!(t.lookup(ip("198.51.100.1")), Some(NodeId(1)));
    }

    #[test]
    fn a_prefix_claimed_twice_goes_to_the_higher_id() {
        let t = PrefixTable::new([
            (ip("10.0.0.0"), 16, NodeId(7)),
            (ip("10.0.0.0"), 16, NodeId(3)),
        ]);
        assert_eq!(t.lookup(ip("10.0.1.1")), Some(NodeId(7)));
    }

    fn naive(entries: &[(IpAddr, u8, NodeId)], addr: IpAddr) -> Option<NodeId> {
        let bits = |a: IpAddr| match a {
            IpAddr::V4(a) => (u128::from(u32::from(a)) << 96, 32u8),
            IpAddr::V6(a) => (u128::from(a), 128u8),
        };
        let (ab, aw) = bits(addr);
        entries
            .iter()
            .filter_map(|&(p, len, id)| {
                let (pb, pw) = bits(p);
                let len = len.min(pw);
                (pw == aw && mask(pb, len) == mask(ab, len)).then_some((len, id))
            })
            .max()
            .map(|(_, id)| id)
    }

    proptest! {
        /// Whatever the entries, the table answers as a scan for the longest
        /// (then highest-id) match would.
        #[test]
        fn answers_as_a_scan_would(
            entries in proptest::collection::vec(
                (any::<u32>(), 0u8..=33, 0u64..8, any::<bool>()), 0..40),
            probes in proptest::collection::vec((any::<u32>(), any::<bool>()), 1..40),
        ) {
            // Few distinct high bits, so that prefixes overlap often.
            let addr = |x: u32, v6: bool| -> IpAddr {
                let x = x & 0xf0f0_00ff;
                if v6 {
                    IpAddr::from(std::net::Ipv6Addr::from(u128::from(x) << 96))
                } else {
                    IpAddr::from(std::net::Ipv4Addr::from(x))
                }
            };
            let entries: Vec<(IpAddr, u8, NodeId)> = entries
                .into_iter()
                .map(|(x, len, id, v6)| (addr(x, v6), if v6 { len * 4 } else { len }, NodeId(id)))
                .collect();
            let table = PrefixTable::new(entries.clone());
            for (x, v6) in probes {
                let a = addr(x, v6);
                prop_assert_eq!(table.lookup(a), naive(&entries, a));
            }
        }
    }
}
