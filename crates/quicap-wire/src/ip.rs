//! The few facts the data path needs from an IP packet, and the ICMP errors a node sends
//! back into its own interface when a packet does not fit the tunnel.
//!
//! * [`addresses`]: source and destination of an IPv4 or IPv6 packet.
//! * [`packet_too_big`]: ICMPv4 "fragmentation needed" (RFC 792, RFC 1191) or ICMPv6
//!   "packet too big" (RFC 4443 §3.2) answering a packet.
//! * [`fragment_v4`]: splits an IPv4 packet without DF into fragments (RFC 791).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const IPV4_HEADER: usize = 20;
const IPV6_HEADER: usize = 40;
const PROTO_ICMP: u8 = 1;
const PROTO_ICMPV6: u8 = 58;
/// RFC 1812 §4.3.2.3: an ICMPv4 error should carry as much of the original as fits in 576.
const ICMPV4_MAX: usize = 576;
/// RFC 4443 §2.4(c): an ICMPv6 error must not exceed the IPv6 minimum MTU.
const ICMPV6_MAX: usize = 1280;

/// Source and destination address of an IP packet, if it is a well-formed IPv4 or IPv6
/// header.
pub fn addresses(packet: &[u8]) -> Option<(IpAddr, IpAddr)> {
    match packet.first()? >> 4 {
        4 if packet.len() >= IPV4_HEADER => {
            let src: [u8; 4] = packet[12..16].try_into().ok()?;
            let dst: [u8; 4] = packet[16..20].try_into().ok()?;
            Some((IpAddr::from(src), IpAddr::from(dst)))
        }
        6 if packet.len() >= IPV6_HEADER => {
            let src: [u8; 16] = packet[8..24].try_into().ok()?;
            let dst: [u8; 16] = packet[24..40].try_into().ok()?;
            Some((IpAddr::from(src), IpAddr::from(dst)))
        }
        _ => None,
    }
}

/// The IP protocol of a packet (IPv6: its first next header; extension headers are not
/// followed).
pub fn protocol(packet: &[u8]) -> Option<u8> {
    match packet.first()? >> 4 {
        4 if packet.len() >= IPV4_HEADER => Some(packet[9]),
        6 if packet.len() >= IPV6_HEADER => Some(packet[6]),
        _ => None,
    }
}

/// The destination port of a TCP or UDP packet (the first fragment of one, for IPv4);
/// `None` for other protocols and for packets too short to tell.
pub fn destination_port(packet: &[u8]) -> Option<u16> {
    let proto = protocol(packet)?;
    if proto != 6 && proto != 17 {
        return None;
    }
    let start = match packet[0] >> 4 {
        4 => {
            let fragment_offset = u16::from_be_bytes([packet[6], packet[7]]) & 0x1fff;
            if fragment_offset != 0 {
                return None;
            }
            usize::from(packet[0] & 0x0f) * 4
        }
        _ => IPV6_HEADER,
    };
    let port = packet.get(start + 2..start + 4)?;
    Some(u16::from_be_bytes([port[0], port[1]]))
}

/// Largest value of the IPv4 fragment offset field (13 bits, in units of 8 bytes).
const MAX_FRAGMENT_OFFSET: usize = 0x1fff;

/// True if `packet` is IPv4 with the don't-fragment bit clear.
pub fn is_fragmentable_v4(packet: &[u8]) -> bool {
    packet.len() >= IPV4_HEADER && packet[0] >> 4 == 4 && packet[6] & 0x40 == 0
}

/// An ICMP error this node sends back into its interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpError {
    /// ICMP "fragmentation needed" (type 3 code 4, RFC 1191) or ICMPv6 "packet too big"
    /// (type 2, RFC 4443), carrying the usable MTU.
    TooBig { mtu: u16 },
    /// ICMP "host unreachable" (type 3 code 1) or ICMPv6 "address unreachable" (type 1
    /// code 3): no node of the mesh has the destination, as WireGuard answers a packet
    /// for an address no peer has. Never sent about a packet to a multicast or
    /// broadcast address.
    Unreachable,
    /// ICMP "communication administratively prohibited" (type 3 code 13, RFC 1812) or
    /// ICMPv6 "administratively prohibited" (type 1 code 1): a policy refuses the
    /// destination. Never sent about a packet to a multicast or broadcast address.
    Prohibited,
}

/// Writes into `out` the ICMP error telling the sender of `original` that packets larger
/// than `mtu` bytes cannot pass, sent from `from`; see [`icmp_error`].
pub fn packet_too_big(original: &[u8], mtu: u16, from: IpAddr, out: &mut [u8]) -> Option<usize> {
    icmp_error(original, IcmpError::TooBig { mtu }, from, out)
}

/// Writes into `out` the ICMP `error` about `original`, sent from `from` (an address of
/// the same family). Returns the length written, or `None` when no error may be sent:
/// the original is itself an ICMP error or malformed, its source cannot be answered,
/// `from` has the wrong family or `out` is too small.
pub fn icmp_error(
    original: &[u8],
    error: IcmpError,
    from: IpAddr,
    out: &mut [u8],
) -> Option<usize> {
    let (src, dst) = addresses(original)?;
    if matches!(error, IcmpError::Unreachable | IcmpError::Prohibited) {
        let group = match dst {
            IpAddr::V4(d) => d.is_multicast() || d.is_broadcast(),
            IpAddr::V6(d) => d.is_multicast(),
        };
        if group {
            return None;
        }
    }
    match (src, from) {
        (IpAddr::V4(to), IpAddr::V4(from)) => error_v4(original, error, from, to, out),
        (IpAddr::V6(to), IpAddr::V6(from)) => error_v6(original, error, from, to, out),
        _ => None,
    }
}

fn error_v4(
    original: &[u8],
    error: IcmpError,
    from: Ipv4Addr,
    to: Ipv4Addr,
    out: &mut [u8],
) -> Option<usize> {
    if to.is_unspecified() || to.is_broadcast() || to.is_multicast() {
        return None;
    }
    let ihl = usize::from(original[0] & 0x0f) * 4;
    let fragment_offset = u16::from_be_bytes([original[6], original[7]]) & 0x1fff;
    if ihl < IPV4_HEADER || original.len() < ihl || fragment_offset != 0 {
        return None;
    }
    // Never answer an ICMP error with an ICMP error (RFC 1122 §3.2.2).
    if original[9] == PROTO_ICMP {
        let icmp_type = *original.get(ihl)?;
        if !matches!(icmp_type, 0 | 8 | 13 | 14 | 17 | 18) {
            return None;
        }
    }
    let quoted = original.len().min(ICMPV4_MAX - IPV4_HEADER - 8);
    let total = IPV4_HEADER + 8 + quoted;
    let out = out.get_mut(..total)?;
    write_ipv4_header(out, total, PROTO_ICMP, from, to);
    let icmp = &mut out[IPV4_HEADER..];
    match error {
        IcmpError::TooBig { mtu } => {
            icmp[..8].copy_from_slice(&[3, 4, 0, 0, 0, 0, 0, 0]);
            icmp[6..8].copy_from_slice(&mtu.to_be_bytes());
        }
        IcmpError::Unreachable => icmp[..8].copy_from_slice(&[3, 1, 0, 0, 0, 0, 0, 0]),
        IcmpError::Prohibited => icmp[..8].copy_from_slice(&[3, 13, 0, 0, 0, 0, 0, 0]),
    }
    icmp[8..].copy_from_slice(&original[..quoted]);
    let sum = checksum(&[icmp]);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    Some(total)
}

fn error_v6(
    original: &[u8],
    error: IcmpError,
    from: Ipv6Addr,
    to: Ipv6Addr,
    out: &mut [u8],
) -> Option<usize> {
    if to.is_unspecified() || to.is_multicast() {
        return None;
    }
    // Never answer an ICMPv6 error (types below 128) with an error (RFC 4443 §2.4(e)).
    if original[6] == PROTO_ICMPV6 && original.get(IPV6_HEADER).is_some_and(|t| *t < 128) {
        return None;
    }
    let quoted = original.len().min(ICMPV6_MAX - IPV6_HEADER - 8);
    let payload = 8 + quoted;
    let total = IPV6_HEADER + payload;
    let out = out.get_mut(..total)?;
    out[..8].copy_from_slice(&[0x60, 0, 0, 0, 0, 0, PROTO_ICMPV6, 64]);
    out[4..6].copy_from_slice(&u16::try_from(payload).ok()?.to_be_bytes());
    out[8..24].copy_from_slice(&from.octets());
    out[24..40].copy_from_slice(&to.octets());
    let (header, icmp) = out.split_at_mut(IPV6_HEADER);
    match error {
        IcmpError::TooBig { mtu } => {
            icmp[..8].copy_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0]);
            icmp[4..8].copy_from_slice(&u32::from(mtu).to_be_bytes());
        }
        IcmpError::Unreachable => icmp[..8].copy_from_slice(&[1, 3, 0, 0, 0, 0, 0, 0]),
        IcmpError::Prohibited => icmp[..8].copy_from_slice(&[1, 1, 0, 0, 0, 0, 0, 0]),
    }
    icmp[8..].copy_from_slice(&original[..quoted]);
    let len = u32::try_from(payload).ok()?.to_be_bytes();
    let pseudo = [&header[8..40], &len[..], &[0, 0, 0, PROTO_ICMPV6][..]];
    let sum = checksum(&[pseudo[0], pseudo[1], pseudo[2], icmp]);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    Some(total)
}

/// Splits an IPv4 packet whose DF bit is clear into fragments of at most `mtu` bytes,
/// calling `emit` with each (a packet without payload is one fragment: itself). A packet
/// that is a fragment already keeps its offset, and MF on its last piece. Returns
/// `false` (and emits nothing) if the packet cannot be fragmented: DF set, malformed,
/// `mtu` too small for its header plus 8 bytes, or offsets that would not fit the
/// 13-bit field.
pub fn fragment_v4(packet: &[u8], mtu: usize, mut emit: impl FnMut(&[u8])) -> bool {
    if !is_fragmentable_v4(packet) {
        return false;
    }
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    if ihl < IPV4_HEADER || total > packet.len() || total < ihl || mtu < ihl + 8 {
        return false;
    }
    let flags_offset = u16::from_be_bytes([packet[6], packet[7]]);
    let base_offset = usize::from(flags_offset & 0x1fff) * 8;
    let more_after = flags_offset & 0x2000 != 0;
    let payload = &packet[ihl..total];
    let step = (mtu - ihl) & !7;
    // The last fragment's offset must fit the 13-bit field: beyond it the offset would
    // run into the flag bits, and a datagram cannot end past 65535 bytes anyway.
    let last_start = payload.len().saturating_sub(1) / step * step;
    if (base_offset + last_start) / 8 > MAX_FRAGMENT_OFFSET {
        return false;
    }
    let mut buf = [0u8; 65535];
    let mut at = 0;
    // At least one fragment, so that a packet without payload is sent as it is.
    loop {
        let end = (at + step).min(payload.len());
        let last = end == payload.len();
        let len = ihl + end - at;
        let frag = &mut buf[..len];
        frag[..ihl].copy_from_slice(&packet[..ihl]);
        frag[ihl..].copy_from_slice(&payload[at..end]);
        frag[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        let offset = ((base_offset + at) / 8) as u16;
        let mf = if last && !more_after { 0 } else { 0x2000 };
        frag[6..8].copy_from_slice(&(offset | mf).to_be_bytes());
        frag[10..12].copy_from_slice(&[0, 0]);
        let sum = checksum(&[&frag[..ihl]]);
        frag[10..12].copy_from_slice(&sum.to_be_bytes());
        emit(frag);
        if last {
            return true;
        }
        at = end;
    }
}

fn write_ipv4_header(out: &mut [u8], total: usize, proto: u8, from: Ipv4Addr, to: Ipv4Addr) {
    out[..IPV4_HEADER].fill(0);
    out[0] = 0x45;
    out[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    out[8] = 64;
    out[9] = proto;
    out[12..16].copy_from_slice(&from.octets());
    out[16..20].copy_from_slice(&to.octets());
    let sum = checksum(&[&out[..IPV4_HEADER]]);
    out[10..12].copy_from_slice(&sum.to_be_bytes());
}

/// The Internet checksum (RFC 1071) over the concatenation of `parts`; each part but
/// the last must have even length.
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        let mut chunks = part.chunks_exact(2);
        for c in &mut chunks {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            sum += u32::from(*last) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ipv4_packet(len: usize, df: bool, proto: u8) -> Vec<u8> {
        let mut p = vec![0u8; len];
        write_ipv4_header(
            &mut p,
            len,
            proto,
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
        );
        if df {
            p[6] = 0x40;
        }
        for (i, b) in p[IPV4_HEADER..].iter_mut().enumerate() {
            *b = i as u8;
        }
        p
    }

    fn ipv6_packet(len: usize, next: u8) -> Vec<u8> {
        let mut p = vec![0u8; len];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&((len - IPV6_HEADER) as u16).to_be_bytes());
        p[6] = next;
        p[8..24].copy_from_slice(&"fd00::1".parse::<Ipv6Addr>().unwrap().octets());
        p[24..40].copy_from_slice(&"fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        p
    }

    #[test]
    fn reads_addresses_of_both_families() {
        let v4 = ipv4_packet(28, true, 17);
        assert_eq!(
            addresses(&v4),
            Some(("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()))
        );
        let v6 = ipv6_packet(48, 17);
        assert_eq!(
            addresses(&v6),
            Some(("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap()))
        );
        assert_eq!(addresses(&v4[..19]), None);
        assert_eq!(addresses(&[0x50; 60]), None);
    }

    #[test]
    fn icmpv4_frag_needed_is_well_formed() {
        let original = ipv4_packet(1400, true, 6);
        let mut out = [0u8; 1500];
        let n = packet_too_big(&original, 1200, "10.0.0.254".parse().unwrap(), &mut out).unwrap();
        assert_eq!(n, ICMPV4_MAX);
        let reply = &out[..n];
        assert_eq!(checksum(&[&reply[..IPV4_HEADER]]), 0);
        assert_eq!(checksum(&[&reply[IPV4_HEADER..]]), 0);
        assert_eq!(&reply[12..16], &[10, 0, 0, 254]);
        assert_eq!(&reply[16..20], &[10, 0, 0, 1]);
        assert_eq!(&reply[20..22], &[3, 4]);
        assert_eq!(u16::from_be_bytes([reply[26], reply[27]]), 1200);
        assert_eq!(&reply[28..48], &original[..20]);
    }

    #[test]
    fn icmpv6_packet_too_big_is_well_formed() {
        let original = ipv6_packet(1400, 6);
        let mut out = [0u8; 1500];
        let n = packet_too_big(&original, 1280, "fd00::fe".parse().unwrap(), &mut out).unwrap();
        assert_eq!(n, ICMPV6_MAX);
        let reply = &out[..n];
        assert_eq!(reply[6], PROTO_ICMPV6);
        assert_eq!(&reply[24..40], &original[8..24]);
        assert_eq!(reply[40], 2);
        assert_eq!(u32::from_be_bytes(reply[44..48].try_into().unwrap()), 1280);
        let len = ((n - IPV6_HEADER) as u32).to_be_bytes();
        assert_eq!(
            checksum(&[&reply[8..40], &len, &[0, 0, 0, PROTO_ICMPV6], &reply[40..]]),
            0
        );
    }

    #[test]
    fn never_answers_icmp_errors_or_mismatched_families() {
        let mut err = ipv4_packet(100, true, PROTO_ICMP);
        err[IPV4_HEADER] = 3;
        let mut out = [0u8; 1500];
        assert_eq!(
            packet_too_big(&err, 1200, "10.0.0.9".parse().unwrap(), &mut out),
            None
        );
        let mut echo = err.clone();
        echo[IPV4_HEADER] = 8;
        assert!(packet_too_big(&echo, 1200, "10.0.0.9".parse().unwrap(), &mut out).is_some());
        let mut err6 = ipv6_packet(100, PROTO_ICMPV6);
        err6[IPV6_HEADER] = 1;
        assert_eq!(
            packet_too_big(&err6, 1280, "fd00::9".parse().unwrap(), &mut out),
            None
        );
        let v4 = ipv4_packet(100, true, 6);
        assert_eq!(
            packet_too_big(&v4, 1200, "fd00::9".parse().unwrap(), &mut out),
            None
        );
    }

    #[test]
    fn fragments_reassemble_to_original_payload() {
        let original = ipv4_packet(3000, false, 17);
        let mut frags = Vec::new();
        assert!(fragment_v4(&original, 1200, |f| frags.push(f.to_vec())));
        assert_eq!(frags.len(), 3);
        let mut payload = vec![0u8; 3000 - IPV4_HEADER];
        for (i, f) in frags.iter().enumerate() {
            assert!(f.len() <= 1200);
            assert_eq!(checksum(&[&f[..IPV4_HEADER]]), 0);
            let fo = u16::from_be_bytes([f[6], f[7]]);
            assert_eq!(fo & 0x2000 != 0, i < 2, "MF flag of fragment {i}");
            let off = usize::from(fo & 0x1fff) * 8;
            payload[off..off + f.len() - IPV4_HEADER].copy_from_slice(&f[IPV4_HEADER..]);
        }
        assert_eq!(payload, original[IPV4_HEADER..]);
    }

    #[test]
    fn unreachable_errors_are_well_formed_for_both_families() {
        let mut out = [0u8; 1500];
        let v4 = ipv4_packet(100, true, 17);
        let len = icmp_error(
            &v4,
            IcmpError::Unreachable,
            "10.0.0.2".parse().unwrap(),
            &mut out,
        )
        .unwrap();
        assert_eq!(&out[IPV4_HEADER..IPV4_HEADER + 2], &[3, 1]);
        assert_eq!(checksum(&[&out[IPV4_HEADER..len]]), 0);
        assert_eq!(&out[IPV4_HEADER + 8..len], &v4[..]);
        let v6 = ipv6_packet(100, 17);
        let len = icmp_error(
            &v6,
            IcmpError::Unreachable,
            "fd00::2".parse().unwrap(),
            &mut out,
        )
        .unwrap();
        assert_eq!(&out[IPV6_HEADER..IPV6_HEADER + 2], &[1, 3]);
        assert_eq!(&out[IPV6_HEADER + 8..len], &v6[..]);
        let from = "fd00::2".parse().unwrap();
        let len = icmp_error(&v6, IcmpError::Prohibited, from, &mut out).unwrap();
        assert_eq!(&out[IPV6_HEADER..IPV6_HEADER + 2], &[1, 1]);
        assert_eq!(&out[IPV6_HEADER + 8..len], &v6[..]);
        let from = "10.0.0.2".parse().unwrap();
        let len = icmp_error(&v4, IcmpError::Prohibited, from, &mut out).unwrap();
        assert_eq!(&out[IPV4_HEADER..IPV4_HEADER + 2], &[3, 13]);
        assert_eq!(checksum(&[&out[IPV4_HEADER..len]]), 0);
    }

    #[test]
    fn ports_are_read_from_tcp_and_udp_only() {
        let mut udp = ipv4_packet(100, true, 17);
        udp[IPV4_HEADER + 2..IPV4_HEADER + 4].copy_from_slice(&53u16.to_be_bytes());
        assert_eq!(
            (protocol(&udp), destination_port(&udp)),
            (Some(17), Some(53))
        );
        let mut v6 = ipv6_packet(100, 6);
        v6[IPV6_HEADER + 2..IPV6_HEADER + 4].copy_from_slice(&443u16.to_be_bytes());
        assert_eq!(destination_port(&v6), Some(443));
        assert_eq!(destination_port(&ipv4_packet(100, true, 1)), None);
        assert_eq!(destination_port(&udp[..IPV4_HEADER + 3]), None);
        assert_eq!(protocol(&[0x45, 0]), None);
    }

    #[test]
    fn packets_to_groups_are_never_called_unreachable() {
        let mut out = [0u8; 1500];
        let mut v4 = ipv4_packet(100, true, 17);
        v4[16..20].copy_from_slice(&[224, 0, 0, 1]);
        let mut v6 = ipv6_packet(100, 17);
        v6[24] = 0xff;
        for (p, from) in [(&v4, "10.0.0.2"), (&v6, "fd00::2")] {
            let from = from.parse().unwrap();
            assert_eq!(icmp_error(p, IcmpError::Unreachable, from, &mut out), None);
            assert_eq!(icmp_error(p, IcmpError::Prohibited, from, &mut out), None);
            assert!(packet_too_big(p, 1200, from, &mut out).is_some());
        }
    }

    #[test]
    fn a_packet_without_payload_is_sent_whole() {
        let original = ipv4_packet(IPV4_HEADER, false, 17);
        let mut frags = Vec::new();
        assert!(fragment_v4(&original, 1200, |f| frags.push(f.to_vec())));
        assert_eq!(frags, [original]);
    }

    #[test]
    fn fragment_offsets_never_reach_the_flag_bits() {
        // A fragment near the end of the offset range: its own pieces would need
        // offsets past 0x1fff, which would set the flag bits.
        let mut original = ipv4_packet(3000, false, 17);
        original[6..8].copy_from_slice(&0x1f00u16.to_be_bytes());
        fix_checksum(&mut original);
        assert!(!fragment_v4(&original, 1200, |_| panic!("emitted")));
        // Further down the range the pieces carry the original's offset plus their own,
        // with MF kept from the original on the last one.
        original[6..8].copy_from_slice(&(0x2000u16 | 0x0100).to_be_bytes());
        fix_checksum(&mut original);
        let mut frags = Vec::new();
        assert!(fragment_v4(&original, 1200, |f| frags.push(f.to_vec())));
        for (i, f) in frags.iter().enumerate() {
            let fo = u16::from_be_bytes([f[6], f[7]]);
            assert_eq!(fo & 0x4000, 0, "DF or reserved bit set in fragment {i}");
            assert_eq!(fo & 0x2000, 0x2000, "MF of fragment {i}");
            assert_eq!(
                usize::from(fo & 0x1fff),
                0x100 + i * ((1200 - IPV4_HEADER) / 8)
            );
        }
    }

    fn fix_checksum(packet: &mut [u8]) {
        packet[10..12].fill(0);
        let sum = checksum(&[&packet[..IPV4_HEADER]]);
        packet[10..12].copy_from_slice(&sum.to_be_bytes());
    }

    #[test]
    fn does_not_fragment_df_packets() {
        let original = ipv4_packet(3000, true, 17);
        assert!(!fragment_v4(&original, 1200, |_| panic!("emitted")));
    }

    proptest! {
        #[test]
        fn never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..200), mtu in 0usize..2000) {
            let mut out = [0u8; 1500];
            let _ = addresses(&bytes);
            let _ = packet_too_big(&bytes, 1200, "10.0.0.1".parse().unwrap(), &mut out);
            let _ = packet_too_big(&bytes, 1280, "fd00::1".parse().unwrap(), &mut out);
            let _ = fragment_v4(&bytes, mtu, |_| {});
        }

        /// Whatever the packet's own offset and length, no fragment's offset field
        /// spills into the flags, fragments fit the MTU, and they cover the payload.
        #[test]
        fn fragments_keep_offsets_in_their_field(
            len in IPV4_HEADER..4000usize,
            offset in 0u16..0x2000,
            more in any::<bool>(),
            mtu in 68usize..1500,
        ) {
            let mut packet = ipv4_packet(len, false, 17);
            packet[6..8].copy_from_slice(&(offset | if more { 0x2000 } else { 0 }).to_be_bytes());
            let mut covered = 0;
            let done = fragment_v4(&packet, mtu, |f| {
                let fo = u16::from_be_bytes([f[6], f[7]]);
                assert_eq!(fo & 0x4000, 0);
                assert!(usize::from(fo & 0x1fff) >= usize::from(offset));
                assert!(f.len() <= mtu.max(IPV4_HEADER));
                covered += f.len() - IPV4_HEADER;
            });
            if done {
                prop_assert_eq!(covered, len - IPV4_HEADER);
            }
        }
    }
}
