//! Batched packet I/O on a tunnel interface.
//!
//! With TUN offloads on (`IFF_VNET_HDR`, TSO/USO), one read returns a TCP or UDP
//! "super-packet" of up to 64 KiB behind a virtio-net header, which [`Reader`] splits
//! into MTU-sized packets (checksums included); and [`Writer`] coalesces the packets of
//! one flow that arrive in the same batch into one super-packet (GRO) before writing,
//! so the kernel runs its TCP receive path once per batch instead of once per packet.
//! Without offloads (TAP, `tun.offload = false`, or a kernel that refuses them) the same
//! types read and write one packet per call.
//!
//! A coalesced write the kernel rejects (EINVAL, seen on some kernels) turns coalescing
//! off for the life of the interface; the packets of later batches are written one by
//! one behind an empty virtio-net header.

use std::io;

use tracing::{debug, warn};
use tun_rs::{
    AsyncDevice, DeviceImpl, GROTable, VirtioNetHdr, IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP_L4, VIRTIO_NET_HDR_LEN,
};

/// Largest IP packet (and TSO super-packet).
const MAX_PACKET: usize = 65535;

/// Packets staged in one [`Writer`] batch at most; a full batch is written at once.
pub const WRITE_BATCH: usize = 64;

/// Reads packets from an interface, a batch per system call when offloads are on.
///
/// With offloads a read that holds one packet (every packet of a UDP flood, whose
/// sender the kernel cannot batch) stays where it was read, behind the virtio-net
/// header; only super-packets are split into the segment buffers.
pub struct Reader {
    raw: Vec<u8>,
    bufs: Vec<Vec<u8>>,
    sizes: Vec<usize>,
    /// Packets of the last read in `bufs`.
    split: usize,
    /// The last read was one packet, `raw[VIRTIO_NET_HDR_LEN..end]`.
    unsplit: Option<usize>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("split", &self.split)
            .field("unsplit", &self.unsplit)
            .finish_non_exhaustive()
    }
}

/// virtio-net header values (`linux/virtio_net.h`) that tun-rs does not export.
const GSO_NONE: u8 = 0;
const F_NEEDS_CSUM: u8 = 1;
const VIRTIO_NET_HDR_GSO_ECN: u8 = 0x80;

impl Reader {
    /// A reader for an interface with the given MTU.
    pub fn new(mtu: u16) -> Reader {
        // The first buffer also takes whole unsplit packets; the rest take the
        // segments of a split super-packet, each at most one MTU.
        let mut bufs = vec![vec![0u8; MAX_PACKET]];
        bufs.extend((1..IDEAL_BATCH_SIZE).map(|_| vec![0u8; usize::from(mtu).max(1500)]));
        Reader {
            raw: vec![0u8; VIRTIO_NET_HDR_LEN + MAX_PACKET],
            bufs,
            sizes: vec![0; IDEAL_BATCH_SIZE],
            split: 0,
            unsplit: None,
        }
    }

    /// Waits for the next read and returns how many packets it held. An error without
    /// an OS error code is a malformed read: the caller drops it and reads on.
    pub async fn read(&mut self, device: &AsyncDevice) -> io::Result<usize> {
        self.split = 0;
        self.unsplit = None;
        if !device.tcp_gso() {
            // No virtio-net header: tun-rs reads straight into the first buffer.
            self.split = device
                .recv_multiple(&mut self.raw, &mut self.bufs, &mut self.sizes, 0)
                .await?;
            return Ok(self.split);
        }
        let len = device.recv(&mut self.raw).await?;
        let (head, packet) = self.raw[..len].split_at_mut(len.min(VIRTIO_NET_HDR_LEN));
        if packet.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a read shorter than its virtio-net header",
            ));
        }
        let hdr = VirtioNetHdr::decode(head)?;
        if hdr.gso_type == GSO_NONE {
            if hdr.flags & F_NEEDS_CSUM != 0 {
                complete_checksum(packet, hdr.csum_start, hdr.csum_offset)?;
            }
            self.unsplit = Some(len);
            return Ok(1);
        }
        self.split = split(hdr, packet, &mut self.bufs, &mut self.sizes)?;
        Ok(self.split)
    }

    /// The packets of the last read.
    pub fn packets(&self) -> impl Iterator<Item = &[u8]> {
        self.unsplit
            .map(|end| &self.raw[VIRTIO_NET_HDR_LEN..end])
            .into_iter()
            .chain(
                self.bufs[..self.split]
                    .iter()
                    .zip(&self.sizes)
                    .map(|(buf, &len)| &buf[..len]),
            )
    }
}

/// Fills in the checksum the kernel left to the device (`NEEDS_CSUM`): the sum from
/// `start` to the end, seeded with the pseudo-header sum already in its field at
/// `start + offset`. tun-rs's vectorised sum, not `quicap_wire::ip::checksum`: this
/// runs over every packet of a UDP flood.
fn complete_checksum(packet: &mut [u8], start: u16, offset: u16) -> io::Result<()> {
    let start = usize::from(start);
    let at = start + usize::from(offset);
    if at + 2 > packet.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "checksum field past the end of the packet",
        ));
    }
    let seed = u16::from_be_bytes([packet[at], packet[at + 1]]);
    packet[at..at + 2].fill(0);
    let sum = tun_rs::checksum(&packet[start..], u64::from(seed));
    packet[at..at + 2].copy_from_slice(&(!sum).to_be_bytes());
    Ok(())
}

/// Splits a TSO/USO super-packet into `bufs`, checksums included. The header length
/// is taken from the packet's own transport header, not from `hdr.hdr_len`, which the
/// kernel may set to the whole first packet on its forwarding path.
fn split(
    mut hdr: VirtioNetHdr,
    packet: &mut [u8],
    bufs: &mut [Vec<u8>],
    sizes: &mut [usize],
) -> io::Result<usize> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    if hdr.gso_size == 0 {
        return Err(invalid("a super-packet with no segment size"));
    }
    let is_v6 = match packet[0] >> 4 {
        4 => false,
        6 => true,
        _ => return Err(invalid("a super-packet that is neither IPv4 nor IPv6")),
    };
    let start = usize::from(hdr.csum_start);
    let transport_len = match (hdr.gso_type & !VIRTIO_NET_HDR_GSO_ECN, is_v6) {
        (VIRTIO_NET_HDR_GSO_UDP_L4, _) if hdr.gso_type & VIRTIO_NET_HDR_GSO_ECN == 0 => 8,
        (VIRTIO_NET_HDR_GSO_TCPV4, false) | (VIRTIO_NET_HDR_GSO_TCPV6, true) => {
            let offset = *packet
                .get(start + 12)
                .ok_or_else(|| invalid("a TCP super-packet shorter than its header"))?;
            let len = usize::from(offset >> 4) * 4;
            if !(20..=60).contains(&len) {
                return Err(invalid("a TCP super-packet with a bad header length"));
            }
            len
        }
        _ => return Err(invalid("a super-packet whose GSO type does not fit it")),
    };
    let hdr_len = start + transport_len;
    let csum_at = start + usize::from(hdr.csum_offset);
    if hdr_len > packet.len() || csum_at + 2 > packet.len() {
        return Err(invalid("a super-packet shorter than its headers"));
    }
    hdr.hdr_len = u16::try_from(hdr_len).map_err(|_| invalid("headers too long"))?;
    tun_rs::gso_split(packet, hdr, bufs, sizes, 0, is_v6)
}

/// Writes packets to an interface in batches, coalescing flows when offloads are on.
///
/// Each staged packet sits in its own buffer behind room for the virtio-net header;
/// buffers have room for a whole super-packet, because GRO only coalesces into a head
/// buffer that can hold the result. Buffers are allocated the first time a batch needs
/// them and reused after.
pub struct Writer {
    bufs: Vec<Vec<u8>>,
    staged: usize,
    gro: GROTable,
    /// Coalescing is still on (offloads on and no write rejected).
    coalesce: bool,
    offload: bool,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("staged", &self.staged)
            .field("coalesce", &self.coalesce)
            .finish_non_exhaustive()
    }
}

impl Writer {
    pub fn new(device: &AsyncDevice) -> Writer {
        let offload = device.tcp_gso();
        Writer {
            bufs: Vec::new(),
            staged: 0,
            gro: GROTable::new(),
            coalesce: offload,
            offload,
        }
    }

    /// Stages a packet; writes the batch first if it is full.
    pub fn stage(&mut self, device: &AsyncDevice, packet: &[u8]) {
        if self.staged == WRITE_BATCH {
            self.flush(device);
        }
        if self.staged == self.bufs.len() {
            self.bufs
                .push(Vec::with_capacity(2 * VIRTIO_NET_HDR_LEN + MAX_PACKET));
        }
        let buf = &mut self.bufs[self.staged];
        buf.clear();
        buf.resize(VIRTIO_NET_HDR_LEN, 0);
        buf.extend_from_slice(packet);
        self.staged += 1;
    }

    /// Writes the staged packets: one write per flow with coalescing, one per packet
    /// without.
    pub fn flush(&mut self, device: &AsyncDevice) {
        if self.staged == 0 {
            return;
        }
        let staged = self.staged;
        self.staged = 0;
        let bufs = &mut self.bufs[..staged];
        if self.coalesce || !self.offload {
            // The blocking-style variant of the device: TUN writes do not wait.
            let sync: &DeviceImpl = device;
            match sync.send_multiple(&mut self.gro, bufs, VIRTIO_NET_HDR_LEN) {
                Ok(_) => {}
                Err(e) if self.coalesce && e.raw_os_error() == Some(libc::EINVAL) => {
                    warn!(error = %e, "the kernel rejected a coalesced TUN write; writing packets one by one from now on");
                    self.coalesce = false;
                }
                Err(e) => debug!(error = %e, "TUN write failed"),
            }
            return;
        }
        for buf in bufs.iter_mut() {
            // An all-zero virtio-net header: no offload for this packet.
            buf[..VIRTIO_NET_HDR_LEN].fill(0);
            if let Err(e) = device.try_send(buf) {
                debug!(error = %e, "TUN write failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use quicap_wire::ip::checksum;

    use super::*;

    /// An IPv4 UDP packet from 10.0.0.1:1000 to 10.0.0.2:2000, its UDP checksum field
    /// holding the pseudo-header sum, as the kernel hands it over with `NEEDS_CSUM`.
    fn partial_udp(payload: &[u8]) -> Vec<u8> {
        let udp_len = u16::try_from(8 + payload.len()).unwrap();
        let mut p = vec![
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        p[2..4].copy_from_slice(&(20 + udp_len).to_be_bytes());
        p.extend_from_slice(&1000u16.to_be_bytes());
        p.extend_from_slice(&2000u16.to_be_bytes());
        p.extend_from_slice(&udp_len.to_be_bytes());
        let seed = !checksum(&[&pseudo_header(&p)]);
        p.extend_from_slice(&seed.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    /// The IPv4 UDP pseudo-header of `p`.
    fn pseudo_header(p: &[u8]) -> Vec<u8> {
        [&p[12..20], &[0, 17], &p[24..26]].concat()
    }

    #[test]
    fn completed_checksum_verifies() {
        let mut p = partial_udp(b"hello, tunnel");
        complete_checksum(&mut p, 20, 6).unwrap();
        // The project's own RFC 1071 sum over the pseudo-header and the datagram:
        // zero when the checksum field is right.
        assert_eq!(checksum(&[&pseudo_header(&p), &p[20..]]), 0);
    }

    #[test]
    fn bad_checksum_offsets_are_errors_not_panics() {
        let mut p = partial_udp(b"x");
        assert!(complete_checksum(&mut p, 20, 100).is_err());
        assert!(complete_checksum(&mut p, u16::MAX, u16::MAX).is_err());
    }

    #[test]
    fn super_packets_that_do_not_fit_their_header_are_errors() {
        let mut bufs = vec![vec![0u8; 1500]; 4];
        let mut sizes = vec![0; 4];
        let mut p = partial_udp(&[7; 64]);
        let uso = VirtioNetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: VIRTIO_NET_HDR_GSO_UDP_L4,
            gso_size: 16,
            csum_start: 20,
            csum_offset: 6,
            ..Default::default()
        };
        let bad = [
            ("TCPv6 on an IPv4 packet", VIRTIO_NET_HDR_GSO_TCPV6, 16, 20),
            ("no segment size", VIRTIO_NET_HDR_GSO_UDP_L4, 0, 20),
            (
                "ECN on UDP",
                VIRTIO_NET_HDR_GSO_UDP_L4 | VIRTIO_NET_HDR_GSO_ECN,
                16,
                20,
            ),
            ("headers past the end", VIRTIO_NET_HDR_GSO_UDP_L4, 16, 90),
        ];
        for (what, gso_type, gso_size, csum_start) in bad {
            let hdr = VirtioNetHdr {
                gso_type,
                gso_size,
                csum_start,
                ..uso
            };
            assert!(split(hdr, &mut p, &mut bufs, &mut sizes).is_err(), "{what}");
        }
        // The same packet as a well-formed USO super-packet splits into 16-byte
        // segments.
        assert_eq!(split(uso, &mut p, &mut bufs, &mut sizes).unwrap(), 4);
        assert!(sizes.iter().all(|&s| s == 20 + 8 + 16));
    }
}
