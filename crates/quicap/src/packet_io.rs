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
use tun_rs::{AsyncDevice, DeviceImpl, GROTable, IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN};

/// Largest IP packet (and TSO super-packet).
const MAX_PACKET: usize = 65535;

/// Packets staged in one [`Writer`] batch at most; a full batch is written at once.
pub const WRITE_BATCH: usize = 64;

/// Reads packets from an interface, a batch per system call when offloads are on.
pub struct Reader {
    raw: Vec<u8>,
    bufs: Vec<Vec<u8>>,
    sizes: Vec<usize>,
    count: usize,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

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
            count: 0,
        }
    }

    /// Waits for the next read and returns how many packets it held.
    pub async fn read(&mut self, device: &AsyncDevice) -> io::Result<usize> {
        self.count = 0;
        let n = device
            .recv_multiple(&mut self.raw, &mut self.bufs, &mut self.sizes, 0)
            .await?;
        self.count = n;
        Ok(n)
    }

    /// The packets of the last read.
    pub fn packets(&self) -> impl Iterator<Item = &[u8]> {
        self.bufs[..self.count]
            .iter()
            .zip(&self.sizes)
            .map(|(buf, &len)| &buf[..len])
    }
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
