//! Relayed paths: end-to-end QUIC connections between nodes that have no direct link,
//! carried in relay frames ([`quicap_wire::relay`]) by the nodes in between.
//!
//! [`RelaySocket`] sits between quinn and the UDP socket. To quinn, a node reachable only
//! through the mesh has a *virtual address* (in 240.0.0.0/4, which no network routes);
//! a packet quinn sends there leaves in a relay frame towards the next hop the mesh
//! chose, and a relay frame addressed to this node reaches quinn as a packet from the
//! sender's virtual address. A relay frame addressed to another node is forwarded as it
//! came, hop limit spent, without touching quinn: an intermediate node holds no QUIC
//! state and no keys of the connections it carries, and its work per packet is one
//! receive and one send (batched by GRO and GSO like any other traffic).
//!
//! A next hop is a [`Hop`]: a direct QUIC peer's UDP address, or a peer reached over
//! TLS/TCP, where frames travel in relay records on that link. Frames that arrive over
//! TCP come in through [`RelayTable::from_stream`] and take the same decisions; those
//! for this node go to the table's first socket, the one relayed dials leave from.
//!
//! Relay frames are taken only from the addresses of this node's direct peers, whose
//! certificates the mesh has verified, and from TLS/TCP links, whose handshake verified
//! them; anything else is dropped, so a node is no open relay for strangers and answers
//! nothing to a probe.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use quicap_wire::relay::{self, RelayHeader};
use quicap_wire::stream::RELAY_PREFIX;
use quicap_wire::NodeId;
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

use crate::link::RelaySender;

/// First octet of virtual addresses: 240.0.0.0/4 is reserved and never routed.
const VIRTUAL_FIRST_OCTET: u8 = 240;
/// Port of every virtual address (quinn refuses port 0).
const VIRTUAL_PORT: u16 = 1;
/// Frames from TCP links waiting for quinn to take them; more are dropped, as a full
/// socket buffer drops them.
const STREAM_INBOX: usize = 4096;

/// Where relay frames for a node go next.
#[derive(Debug, Clone)]
pub enum Hop {
    /// A direct QUIC peer: on the UDP socket to its address.
    Udp(SocketAddr),
    /// A peer whose link carries relay frames itself: in relay records on a TLS/TCP
    /// link, in datagrams of their own context on an HTTP/3 link (camouflage mode).
    Link(RelaySender),
}

impl PartialEq for Hop {
    fn eq(&self, other: &Hop) -> bool {
        match (self, other) {
            (Hop::Udp(a), Hop::Udp(b)) => a == b,
            (Hop::Link(a), Hop::Link(b)) => a.id() == b.id(),
            _ => false,
        }
    }
}

/// Where relay frames go: the mesh's next hop for each node, and which addresses are
/// direct peers. Shared by the node's sockets and updated by the daemon.
#[derive(Debug)]
pub struct RelayTable {
    local: NodeId,
    state: RwLock<TableState>,
    /// The first socket made on this table: frames for this node that arrive over
    /// TCP are handed to quinn there, and frames that go on over UDP leave from it.
    stream_socket: OnceLock<Weak<SocketState>>,
}

#[derive(Debug, Default)]
struct TableState {
    next_hop: HashMap<NodeId, Hop>,
    neighbours: HashSet<SocketAddr>,
    virtual_of: HashMap<NodeId, SocketAddr>,
    node_at: HashMap<SocketAddr, NodeId>,
}

impl RelayTable {
    pub fn new(local: NodeId) -> Arc<Self> {
        Arc::new(RelayTable {
            local,
            state: RwLock::default(),
            stream_socket: OnceLock::new(),
        })
    }

    /// Replaces the routing state: the next hop for each node reachable through the
    /// mesh, and the UDP addresses of the direct peers.
    pub fn update(
        &self,
        next_hops: impl IntoIterator<Item = (NodeId, Hop)>,
        neighbours: impl IntoIterator<Item = SocketAddr>,
    ) {
        let mut state = self.write();
        state.next_hop = next_hops
            .into_iter()
            .map(|(node, hop)| match hop {
                Hop::Udp(addr) => (node, Hop::Udp(canonical(addr))),
                stream => (node, stream),
            })
            .collect();
        state.neighbours = neighbours.into_iter().map(canonical).collect();
    }

    /// The virtual address under which quinn reaches `node` through relays, allocated
    /// on first use and stable for the life of the table.
    pub fn virtual_addr(&self, node: NodeId) -> SocketAddr {
        if let Some(addr) = self.read().virtual_of.get(&node) {
            return *addr;
        }
        let mut state = self.write();
        if let Some(addr) = state.virtual_of.get(&node) {
            return *addr;
        }
        // 2^28 - 1 addresses: more nodes than a mesh will ever see.
        let index = state.virtual_of.len() as u32 + 1;
        let ip = u32::from(Ipv4Addr::new(VIRTUAL_FIRST_OCTET, 0, 0, 0)) | (index & 0x0fff_ffff);
        let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), VIRTUAL_PORT));
        state.virtual_of.insert(node, addr);
        state.node_at.insert(addr, node);
        addr
    }

    /// The node behind a virtual address, if `addr` is one this table gave out.
    pub fn node_at(&self, addr: SocketAddr) -> Option<NodeId> {
        let addr = canonical(addr);
        if !is_virtual(addr) {
            return None;
        }
        self.read().node_at.get(&addr).copied()
    }

    /// Takes one relay record (prefix included) that arrived on a TLS/TCP link: hands
    /// a frame for this node to quinn, forwards one for another node, drops the rest.
    pub fn from_stream(&self, mut record: BytesMut) {
        let Some(socket) = self.stream_socket.get().and_then(Weak::upgrade) else {
            return;
        };
        let frame = &mut record[RELAY_PREFIX..];
        let action = self.action(&self.read(), frame, true);
        match action {
            Action::Deliver(source) => {
                let addr = socket.shown(self.virtual_addr(source));
                let data = record.freeze().slice(RELAY_PREFIX + relay::LEN..);
                socket.inject(addr, data);
            }
            Action::Forward(hop) => {
                // Checked by `action`: the frame has a hop to spend.
                let _ = relay::forward_hop(frame);
                let sent = match hop {
                    Hop::Udp(next) => socket.send_udp(next, None, frame, frame.len(), 1),
                    // The record goes on as it came, hop limit spent.
                    Hop::Link(link) => link.send_record(record.freeze()),
                };
                socket.counters.count_sent(sent, 1);
            }
            // A relay record holds a relay frame, never a QUIC packet.
            Action::Quic | Action::Drop => {
                RelayCounters::add(&socket.counters.dropped, 1);
            }
        }
    }

    /// What to do with `datagram`, with the table read once by the caller.
    fn action(&self, table: &TableState, datagram: &[u8], trusted: bool) -> Action {
        if !datagram.first().is_some_and(|b| relay::is_relay_frame(*b)) {
            return Action::Quic;
        }
        if !trusted {
            return Action::Drop;
        }
        let Ok(header) = RelayHeader::read(datagram) else {
            return Action::Drop;
        };
        if datagram.len() <= relay::LEN {
            return Action::Drop;
        }
        if header.destination == self.local {
            return Action::Deliver(header.source);
        }
        match table.next_hop.get(&header.destination) {
            Some(next) if header.hop_limit > 1 => Action::Forward(next.clone()),
            _ => Action::Drop,
        }
    }

    fn next_hop(&self, node: NodeId) -> Option<Hop> {
        self.read().next_hop.get(&node).cloned()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, TableState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, TableState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// IPv4-mapped IPv6 addresses (what a dual-stack socket reports) as plain IPv4.
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, v6.port())),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

fn is_virtual(addr: SocketAddr) -> bool {
    matches!(addr, SocketAddr::V4(v4) if v4.ip().octets()[0] >= VIRTUAL_FIRST_OCTET)
}

/// Counters of a [`RelaySocket`], for `quicap status` and tests.
#[derive(Debug, Default)]
pub struct RelayCounters {
    /// Frames passed on to another node.
    pub forwarded: AtomicU64,
    /// Frames for this node, handed to quinn.
    pub delivered: AtomicU64,
    /// Frames sent for this node's own relayed connections.
    pub originated: AtomicU64,
    /// Frames dropped: from a stranger, malformed, out of hops, no route, or a full
    /// socket or send queue.
    pub dropped: AtomicU64,
}

impl RelayCounters {
    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts `n` frames passed on, or dropped if the next hop did not take them.
    fn count_sent(&self, sent: bool, n: usize) {
        Self::add(if sent { &self.forwarded } else { &self.dropped }, n);
    }
}

/// A UDP socket for quinn that also carries relay frames; see the module docs.
pub struct RelaySocket {
    state: Arc<SocketState>,
    table: Arc<RelayTable>,
    /// Frames under construction for sending.
    scratch: Mutex<Vec<u8>>,
}

/// The part of a [`RelaySocket`] its table also reaches, for frames from TCP links.
struct SocketState {
    inner: Arc<dyn AsyncUdpSocket>,
    /// Whether the socket is IPv6 (dual-stack): addresses are then shown to quinn in
    /// their IPv4-mapped form, as quinn uses them.
    ipv6: bool,
    /// Datagrams sorted out of a mixed receive batch or handed over from TCP links,
    /// delivered by the next receive.
    pending: Mutex<VecDeque<Pending>>,
    has_pending: AtomicBool,
    /// The receiving task while it waits, for datagrams handed over from TCP links.
    waker: Mutex<Option<Waker>>,
    takes_streams: bool,
    counters: Arc<RelayCounters>,
}

impl fmt::Debug for SocketState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SocketState")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

struct Pending {
    meta: RecvMeta,
    data: Bytes,
}

impl fmt::Debug for RelaySocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelaySocket")
            .field("inner", &self.state.inner)
            .field("local", &self.table.local)
            .finish_non_exhaustive()
    }
}

/// What to do with one datagram of a receive batch.
#[derive(Debug, Clone, PartialEq)]
enum Action {
    Quic,
    /// To another node, through this next hop.
    Forward(Hop),
    Deliver(NodeId),
    Drop,
}

impl SocketState {
    /// A virtual address in the form quinn uses on this socket.
    fn shown(&self, addr: SocketAddr) -> SocketAddr {
        match addr {
            SocketAddr::V4(v4) if self.ipv6 => {
                SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
            }
            _ => addr,
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, VecDeque<Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a datagram from a TCP link for quinn, as if from `addr`, and wakes the
    /// receiving task.
    fn inject(&self, addr: SocketAddr, data: Bytes) {
        {
            let mut pending = self.pending();
            if pending.len() >= STREAM_INBOX {
                RelayCounters::add(&self.counters.dropped, 1);
                return;
            }
            let meta = RecvMeta {
                addr,
                len: data.len(),
                stride: data.len(),
                ecn: None,
                dst_ip: None,
            };
            pending.push_back(Pending { meta, data });
            self.has_pending.store(true, Ordering::Release);
        }
        RelayCounters::add(&self.counters.delivered, 1);
        if let Some(waker) = &*self.waker.lock().unwrap_or_else(|e| e.into_inner()) {
            waker.wake_by_ref();
        }
    }

    /// Sends `count` frames of `stride` bytes (the last may be shorter) in `frames` to
    /// `next` over UDP; false if the socket did not take them.
    fn send_udp(
        &self,
        next: SocketAddr,
        ecn: Option<quinn::udp::EcnCodepoint>,
        frames: &[u8],
        stride: usize,
        count: usize,
    ) -> bool {
        let transmit = Transmit {
            destination: next,
            ecn,
            contents: frames,
            segment_size: (count > 1).then_some(stride),
            src_ip: None,
        };
        // A full socket or an unreachable hop loses the frames, as a congested router
        // would; the end-to-end connection recovers.
        self.inner.try_send(&transmit).is_ok()
    }

    /// Sends frames to `next`, one relay record each on a TCP link or in one send on
    /// UDP, and counts them as forwarded or dropped.
    fn forward(
        &self,
        next: &Hop,
        ecn: Option<quinn::udp::EcnCodepoint>,
        frames: &[u8],
        stride: usize,
    ) {
        let count = frames.len().div_ceil(stride);
        match next {
            Hop::Udp(addr) => {
                let sent = self.send_udp(*addr, ecn, frames, stride, count);
                self.counters.count_sent(sent, count);
            }
            Hop::Link(link) => {
                for frame in frames.chunks(stride) {
                    self.counters.count_sent(link.send_relay(&[frame]), 1);
                }
            }
        }
    }

    /// Hands out datagrams left over from a mixed batch or handed over from TCP links.
    fn drain_pending(&self, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta]) -> usize {
        let mut pending = self.pending();
        let mut n = 0;
        while n < bufs.len().min(meta.len()) {
            let Some(p) = pending.pop_front() else { break };
            let len = p.data.len().min(bufs[n].len());
            bufs[n][..len].copy_from_slice(&p.data[..len]);
            meta[n] = p.meta;
            meta[n].len = len;
            meta[n].stride = len;
            n += 1;
        }
        self.has_pending
            .store(!pending.is_empty(), Ordering::Release);
        n
    }
}

impl RelaySocket {
    pub fn new(inner: Arc<dyn AsyncUdpSocket>, table: Arc<RelayTable>) -> io::Result<Self> {
        let ipv6 = inner.local_addr()?.is_ipv6();
        let first = table.stream_socket.get().is_none();
        let state = Arc::new(SocketState {
            inner,
            ipv6,
            pending: Mutex::default(),
            has_pending: AtomicBool::new(false),
            waker: Mutex::default(),
            takes_streams: first,
            counters: Arc::default(),
        });
        if first {
            let _ = table.stream_socket.set(Arc::downgrade(&state));
        }
        Ok(RelaySocket {
            state,
            table,
            scratch: Mutex::default(),
        })
    }

    pub fn counters(&self) -> Arc<RelayCounters> {
        self.state.counters.clone()
    }

    /// Sorts one received buffer (one datagram, or several of `meta.stride` bytes from
    /// GRO): forwards relay frames for other nodes, unwraps those for this node, and
    /// leaves QUIC packets in place. A buffer quinn should not see gets length 0.
    fn sort(&self, buf: &mut [u8], meta: &mut RecvMeta) {
        let len = meta.len.min(buf.len());
        let stride = if meta.stride == 0 { len } else { meta.stride };
        let data = &mut buf[..len];
        if len == 0 || !data.chunks(stride).any(|d| relay::is_relay_frame(d[0])) {
            return;
        }
        // One look at the table for the whole batch.
        let (trusted, first, uniform) = {
            let table = self.table.read();
            let trusted = table.neighbours.contains(&canonical(meta.addr));
            let first = self.table.action(&table, &data[..stride.min(len)], trusted);
            let uniform = data
                .chunks(stride)
                .skip(1)
                .all(|d| self.table.action(&table, d, trusted) == first);
            (trusted, first, uniform)
        };
        let count = len.div_ceil(stride);
        let counters = &self.state.counters;
        match first {
            Action::Forward(next) if uniform => {
                for d in data.chunks_mut(stride) {
                    // Checked by `action`: every frame has a hop to spend.
                    let _ = relay::forward_hop(d);
                }
                self.state.forward(&next, meta.ecn, data, stride);
                meta.len = 0;
            }
            Action::Deliver(source) if uniform => {
                let inner = stride - relay::LEN;
                let mut out = 0;
                for at in (0..len).step_by(stride) {
                    let end = (at + stride).min(len);
                    data.copy_within(at + relay::LEN..end, out);
                    out += end - at - relay::LEN;
                }
                meta.len = out;
                meta.stride = inner;
                meta.addr = self.state.shown(self.table.virtual_addr(source));
                RelayCounters::add(&counters.delivered, count);
            }
            Action::Drop if uniform => {
                RelayCounters::add(&counters.dropped, count);
                meta.len = 0;
            }
            _ => {
                self.sort_each(data, stride, trusted, meta);
                meta.len = 0;
            }
        }
    }

    /// The slow path for a batch that mixes kinds: one datagram at a time, the ones for
    /// quinn queued for the next receive.
    fn sort_each(&self, data: &mut [u8], stride: usize, trusted: bool, meta: &RecvMeta) {
        let counters = &self.state.counters;
        let mut pending = self.state.pending();
        for d in data.chunks_mut(stride) {
            let action = self.table.action(&self.table.read(), d, trusted);
            let (addr, payload) = match action {
                Action::Quic => (meta.addr, &d[..]),
                Action::Deliver(source) => {
                    RelayCounters::add(&counters.delivered, 1);
                    (
                        self.state.shown(self.table.virtual_addr(source)),
                        &d[relay::LEN..],
                    )
                }
                Action::Forward(next) => {
                    let _ = relay::forward_hop(d);
                    self.state.forward(&next, meta.ecn, d, d.len());
                    continue;
                }
                Action::Drop => {
                    RelayCounters::add(&counters.dropped, 1);
                    continue;
                }
            };
            let mut m = *meta;
            m.addr = addr;
            m.len = payload.len();
            m.stride = payload.len();
            pending.push_back(Pending {
                meta: m,
                data: Bytes::copy_from_slice(payload),
            });
        }
        self.state
            .has_pending
            .store(!pending.is_empty(), Ordering::Release);
    }

    /// Sends quinn's datagrams for `node` in relay frames on a TCP link, one record
    /// each.
    fn originate_on_stream(
        &self,
        link: &RelaySender,
        header: RelayHeader,
        transmit: &Transmit,
        segment: usize,
    ) {
        let mut room = [0u8; relay::LEN];
        header.write(&mut room);
        let counters = &self.state.counters;
        for datagram in transmit.contents.chunks(segment) {
            let sent = link.send_relay(&[&room, datagram]);
            RelayCounters::add(
                if sent {
                    &counters.originated
                } else {
                    &counters.dropped
                },
                1,
            );
        }
    }
}

impl AsyncUdpSocket for RelaySocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.state.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let Some(node) = self.table.node_at(transmit.destination) else {
            return self.state.inner.try_send(transmit);
        };
        let segment = transmit
            .segment_size
            .unwrap_or(transmit.contents.len())
            .max(1);
        let counters = &self.state.counters;
        let header = RelayHeader::new(node, self.table.local);
        let next = match self.table.next_hop(node) {
            Some(Hop::Udp(next)) => next,
            Some(Hop::Link(link)) => {
                self.originate_on_stream(&link, header, transmit, segment);
                return Ok(());
            }
            None => {
                // No route right now: lost like any packet, and the connection's loss
                // recovery and idle timeout take it from there.
                let count = transmit.contents.len().div_ceil(segment);
                RelayCounters::add(&counters.dropped, count);
                return Ok(());
            }
        };
        let mut frames = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        frames.clear();
        let mut count = 0;
        for datagram in transmit.contents.chunks(segment) {
            let at = frames.len();
            frames.resize(at + relay::LEN, 0);
            header.write(&mut frames[at..]);
            frames.extend_from_slice(datagram);
            count += 1;
        }
        self.state.inner.try_send(&Transmit {
            destination: next,
            ecn: transmit.ecn,
            contents: &frames,
            segment_size: transmit.segment_size.map(|s| s + relay::LEN),
            src_ip: None,
        })?;
        RelayCounters::add(&counters.originated, count);
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let state = &self.state;
        if state.has_pending.load(Ordering::Acquire) {
            let n = state.drain_pending(bufs, meta);
            if n > 0 {
                if state.has_pending.load(Ordering::Acquire) {
                    cx.waker().wake_by_ref();
                }
                return Poll::Ready(Ok(n));
            }
        }
        let n = match state.inner.poll_recv(cx, bufs, meta) {
            Poll::Ready(Ok(n)) => n,
            Poll::Pending if state.takes_streams => {
                let mut waker = state.waker.lock().unwrap_or_else(|e| e.into_inner());
                if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *waker = Some(cx.waker().clone());
                }
                drop(waker);
                // A datagram handed over between the check above and the waker's
                // registration would otherwise wait for the next UDP datagram.
                if state.has_pending.load(Ordering::Acquire) {
                    cx.waker().wake_by_ref();
                }
                return Poll::Pending;
            }
            other => return other,
        };
        for (buf, m) in bufs.iter_mut().zip(meta.iter_mut()).take(n) {
            self.sort(buf, m);
        }
        if state.has_pending.load(Ordering::Acquire) {
            cx.waker().wake_by_ref();
        }
        Poll::Ready(Ok(n))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.state.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.state.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.state.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.state.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use quicap_pki::{Authorization, Ca, NodeCert, NodeRequest, ParsedCsr, SignRequest};
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};

    use crate::tls::{Identity, Trust};
    use crate::transport;

    const A: NodeId = NodeId(1);
    const B: NodeId = NodeId(2);
    const C: NodeId = NodeId(3);

    struct TestPki {
        ca: Ca,
        trust: Trust,
    }

    impl TestPki {
        fn new() -> TestPki {
            let now = time::OffsetDateTime::now_utc();
            let files = Ca::create("relay-test", now, 2, &mut rand::rng()).expect("CA");
            let ca = Ca::load(&files.cert_pem, &files.key_pem).expect("CA loads");
            let trust = Trust {
                ca: CertificateDer::from(ca.cert().der.clone()),
                crl: None,
            };
            TestPki { ca, trust }
        }

        fn identity(&self, name: &str) -> Identity {
            let now = time::OffsetDateTime::now_utc();
            let req = NodeRequest::generate(name).expect("key");
            let csr = ParsedCsr::from_pem(&req.csr_pem).expect("CSR");
            let sign = SignRequest::from_csr(
                &csr,
                None,
                Authorization {
                    addresses: vec!["10.99.0.1/24".parse().expect("prefix")],
                    subnets: Vec::new(),
                    egress: false,
                },
                now - time::Duration::hours(1),
                now + time::Duration::days(1),
            )
            .expect("sign request");
            let pem = self.ca.sign(&sign, &mut rand::rng()).expect("signed");
            Identity {
                cert: CertificateDer::from(NodeCert::from_pem(&pem).expect("cert").der),
                key: PrivateKeyDer::from_pem_slice(req.key_pem.as_bytes()).expect("key"),
            }
        }
    }

    struct TestNode {
        endpoint: quinn::Endpoint,
        table: Arc<RelayTable>,
        counters: Arc<RelayCounters>,
        client: quinn::ClientConfig,
        addr: SocketAddr,
    }

    /// A node with an endpoint bound to `bind` (port 0), reached by the others at
    /// 127.0.0.1: in the plain IPv4 form, as the daemon's table holds addresses.
    fn node(pki: &TestPki, name: &str, id: NodeId, bind: &str) -> TestNode {
        let identity = pki.identity(name);
        let tc = Arc::new(quinn::TransportConfig::default());
        let server = transport::server_config(&pki.trust, &identity, tc.clone()).expect("server");
        let client = transport::client_config(&pki.trust, &identity, tc).expect("client");
        let table = RelayTable::new(id);
        let (endpoint, counters) = transport::endpoint(
            bind.parse().expect("address"),
            server,
            table.clone(),
            &mut transport::SocketDrops::default(),
        )
        .expect("endpoint");
        let port = endpoint.local_addr().expect("bound").port();
        let addr = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port);
        TestNode {
            endpoint,
            table,
            counters,
            client,
            addr,
        }
    }

    fn count(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// A - B - C on loopback, where A and C only know B.
    fn line(bind: &str) -> (TestNode, TestNode, TestNode) {
        let pki = TestPki::new();
        let (a, b, c) = (
            node(&pki, "node-a", A, bind),
            node(&pki, "node-b", B, bind),
            node(&pki, "node-c", C, bind),
        );
        a.table
            .update([(B, Hop::Udp(b.addr)), (C, Hop::Udp(b.addr))], [b.addr]);
        b.table.update(
            [(A, Hop::Udp(a.addr)), (C, Hop::Udp(c.addr))],
            [a.addr, c.addr],
        );
        c.table
            .update([(B, Hop::Udp(b.addr)), (A, Hop::Udp(b.addr))], [b.addr]);
        (a, b, c)
    }

    async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), f)
            .await
            .unwrap_or_else(|_| panic!("{what} took longer than 10 s"))
    }

    #[tokio::test]
    async fn relayed_connection_runs_end_to_end_through_a_node_without_quic_state() {
        relayed_connection_through_b("127.0.0.1:0").await;
    }

    /// The default `listen = ["[::]:4433"]`: dual-stack sockets, IPv4 peers.
    #[tokio::test]
    async fn relayed_connection_runs_on_dual_stack_sockets() {
        relayed_connection_through_b("[::]:0").await;
    }

    async fn relayed_connection_through_b(bind: &str) {
        let (a, b, c) = line(bind);
        let to_c = a.table.virtual_addr(C);
        let connecting = a
            .endpoint
            .connect_with(a.client.clone(), to_c, "node-c")
            .expect("connect");
        let (ours, theirs) = within("handshake", async {
            let incoming = c.endpoint.accept().await.expect("incoming");
            let theirs = incoming.await.expect("accepted");
            (connecting.await.expect("connected"), theirs)
        })
        .await;
        assert_eq!(canonical(theirs.remote_address()), c.table.virtual_addr(A));

        ours.send_datagram(bytes::Bytes::from_static(b"to c"))
            .expect("datagram");
        let got = within("datagram to C", theirs.read_datagram()).await;
        assert_eq!(got.expect("datagram").as_ref(), b"to c");
        theirs
            .send_datagram(bytes::Bytes::from_static(b"to a"))
            .expect("datagram");
        let got = within("datagram to A", ours.read_datagram()).await;
        assert_eq!(got.expect("datagram").as_ref(), b"to a");

        // Enough stream data for GSO/GRO batches of frames, checked byte for byte.
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let (mut send, _) = within("open", ours.open_bi()).await.expect("stream");
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            send.write_all(&sent).await.expect("write");
            send.finish().expect("finish");
            send
        });
        let (_, mut recv) = within("accept", theirs.accept_bi()).await.expect("stream");
        let received = within("transfer", recv.read_to_end(2 << 20))
            .await
            .expect("read");
        assert!(received == data, "stream data changed on the way");
        within("writer", writer).await.expect("writer task");

        // B carried it all and never held a connection: it did not decrypt anything.
        assert_eq!(b.endpoint.open_connections(), 0);
        assert!(count(&b.counters.forwarded) > 500, "B forwarded too little");
        assert!(count(&a.counters.originated) > 500);
        assert!(count(&c.counters.delivered) > 500);
        assert_eq!(count(&b.counters.delivered), 0);
    }

    #[tokio::test]
    async fn frames_from_strangers_are_dropped_unanswered() {
        let (_a, b, c) = line("127.0.0.1:0");
        let stranger = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("socket");
        let mut frame = vec![0u8; relay::LEN + 64];
        RelayHeader::new(C, NodeId(99)).write(&mut frame);
        stranger.send_to(&frame, b.addr).await.expect("send");
        within("drop", async {
            while count(&b.counters.dropped) == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert_eq!(count(&b.counters.forwarded), 0);
        assert_eq!(count(&c.counters.delivered), 0);
        let mut buf = [0u8; 64];
        let answer =
            tokio::time::timeout(Duration::from_millis(200), stranger.recv_from(&mut buf)).await;
        assert!(answer.is_err(), "a stranger's frame got an answer");
    }

    /// A relay socket for node C whose one neighbour is `neighbour` and whose route to
    /// node A leads to the returned plain socket.
    async fn sorter(neighbour: SocketAddr) -> (RelaySocket, std::net::UdpSocket) {
        let hop = std::net::UdpSocket::bind("127.0.0.1:0").expect("socket");
        hop.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let table = RelayTable::new(C);
        table.update(
            [(A, Hop::Udp(hop.local_addr().expect("bound")))],
            [neighbour],
        );
        let runtime = quinn::default_runtime().expect("runtime");
        let inner = runtime
            .wrap_udp_socket(std::net::UdpSocket::bind("127.0.0.1:0").expect("socket"))
            .expect("wrapped");
        // Let the reactor see the new socket writable before anything is sent on it.
        tokio::time::sleep(Duration::from_millis(20)).await;
        (RelaySocket::new(inner, table).expect("relay socket"), hop)
    }

    fn frame(destination: NodeId, source: NodeId, len: usize, fill: u8) -> Vec<u8> {
        let mut f = vec![fill; len];
        RelayHeader::new(destination, source).write(&mut f);
        f
    }

    fn batch(from: SocketAddr, datagrams: &[Vec<u8>]) -> (Vec<u8>, RecvMeta) {
        let stride = datagrams[0].len();
        let data: Vec<u8> = datagrams.concat();
        let meta = RecvMeta {
            addr: from,
            len: data.len(),
            stride,
            ..RecvMeta::default()
        };
        (data, meta)
    }

    #[tokio::test]
    async fn a_batch_of_frames_for_this_node_is_unwrapped_in_place() {
        let neighbour: SocketAddr = "127.0.0.1:9".parse().expect("address");
        let (sock, _hop) = sorter(neighbour).await;
        let (mut data, mut meta) = batch(
            neighbour,
            &[frame(C, B, 100, 1), frame(C, B, 100, 2), frame(C, B, 60, 3)],
        );
        sock.sort(&mut data, &mut meta);
        assert_eq!((meta.len, meta.stride), (80 + 80 + 40, 80));
        assert_eq!(meta.addr, sock.table.virtual_addr(B));
        assert!(data[..80].iter().all(|b| *b == 1));
        assert!(data[80..160].iter().all(|b| *b == 2));
        assert!(data[160..200].iter().all(|b| *b == 3));
        assert_eq!(count(&sock.state.counters.delivered), 3);
    }

    #[tokio::test]
    async fn a_batch_of_frames_for_another_node_leaves_in_one_send() {
        let neighbour: SocketAddr = "127.0.0.1:9".parse().expect("address");
        let (sock, hop) = sorter(neighbour).await;
        let (mut data, mut meta) = batch(neighbour, &[frame(A, B, 100, 7), frame(A, B, 50, 8)]);
        sock.sort(&mut data, &mut meta);
        assert_eq!(meta.len, 0, "forwarded frames must not reach quinn");
        let mut buf = [0u8; 200];
        for (len, fill) in [(100, 7), (50, 8)] {
            let (n, _) = hop.recv_from(&mut buf).expect("forwarded frame");
            assert_eq!(n, len);
            let header = RelayHeader::read(&buf[..n]).expect("relay header");
            assert_eq!((header.destination, header.source), (A, B));
            assert_eq!(header.hop_limit, relay::DEFAULT_HOP_LIMIT - 1);
            assert!(buf[relay::LEN..n].iter().all(|b| *b == fill));
        }
        assert_eq!(count(&sock.state.counters.forwarded), 2);
    }

    #[tokio::test]
    async fn a_mixed_batch_is_sorted_one_datagram_at_a_time() {
        let neighbour: SocketAddr = "127.0.0.1:9".parse().expect("address");
        let (sock, hop) = sorter(neighbour).await;
        let mut quic = vec![5u8; 100];
        quic[0] = 0x40;
        let mut spent = frame(A, B, 100, 6);
        spent[2] = 1;
        let (mut data, mut meta) = batch(
            neighbour,
            &[
                quic.clone(),
                frame(C, B, 100, 1),
                frame(A, B, 100, 2),
                spent,
                frame(C, NodeId(7), 30, 3),
            ],
        );
        sock.sort(&mut data, &mut meta);
        assert_eq!(meta.len, 0);
        let mut storage = vec![0u8; 4 * 200];
        let mut bufs: Vec<IoSliceMut<'_>> = storage.chunks_mut(200).map(IoSliceMut::new).collect();
        let mut metas = [RecvMeta::default(); 4];
        assert_eq!(sock.state.drain_pending(&mut bufs, &mut metas), 3);
        assert_eq!((metas[0].addr, metas[0].len), (neighbour, 100));
        assert_eq!(&bufs[0][..100], &quic[..]);
        assert_eq!(
            (metas[1].addr, metas[1].len),
            (sock.table.virtual_addr(B), 80)
        );
        assert!(bufs[1][..80].iter().all(|b| *b == 1));
        assert_eq!(
            (metas[2].addr, metas[2].len),
            (sock.table.virtual_addr(NodeId(7)), 10)
        );
        let mut buf = [0u8; 200];
        let (n, _) = hop.recv_from(&mut buf).expect("forwarded frame");
        assert_eq!(n, 100);
        assert!(buf[relay::LEN..n].iter().all(|b| *b == 2));
        assert_eq!(count(&sock.state.counters.forwarded), 1);
        assert_eq!(count(&sock.state.counters.delivered), 2);
        assert_eq!(
            count(&sock.state.counters.dropped),
            1,
            "the frame out of hops"
        );
        assert!(!sock.state.has_pending.load(Ordering::Acquire));
    }

    /// A relay record as a TCP link delivers it, prefix included.
    fn record(frame: &[u8]) -> BytesMut {
        let mut r = BytesMut::new();
        r.extend_from_slice(&quicap_wire::stream::relay_prefix(frame.len()).expect("fits"));
        r.extend_from_slice(frame);
        r
    }

    #[tokio::test]
    async fn frames_from_a_tcp_link_reach_quinn_or_go_on_over_udp() {
        let (sock, hop) = sorter("127.0.0.1:9".parse().expect("address")).await;
        let table = sock.table.clone();
        table.from_stream(record(&frame(C, B, 100, 4)));
        table.from_stream(record(&frame(A, B, 90, 5)));
        table.from_stream(record(&frame(NodeId(42), B, 90, 6)));
        let mut quic = vec![5u8; 100];
        quic[0] = 0x40;
        table.from_stream(record(&quic));

        let mut storage = vec![0u8; 2 * 200];
        let mut bufs: Vec<IoSliceMut<'_>> = storage.chunks_mut(200).map(IoSliceMut::new).collect();
        let mut metas = [RecvMeta::default(); 2];
        assert_eq!(sock.state.drain_pending(&mut bufs, &mut metas), 1);
        assert_eq!(
            (metas[0].addr, metas[0].len),
            (sock.table.virtual_addr(B), 80)
        );
        assert!(bufs[0][..80].iter().all(|b| *b == 4));
        let mut buf = [0u8; 200];
        let (n, _) = hop.recv_from(&mut buf).expect("forwarded frame");
        assert_eq!(n, 90);
        let header = RelayHeader::read(&buf[..n]).expect("relay header");
        assert_eq!((header.destination, header.source), (A, B));
        assert_eq!(header.hop_limit, relay::DEFAULT_HOP_LIMIT - 1);
        assert!(buf[relay::LEN..n].iter().all(|b| *b == 5));
        let counters = &sock.state.counters;
        assert_eq!(count(&counters.delivered), 1);
        assert_eq!(count(&counters.forwarded), 1);
        assert_eq!(count(&counters.dropped), 2, "no route, and a QUIC packet");
    }

    /// quinn's receive task, waiting on the UDP socket, wakes for a frame that came
    /// over TCP.
    #[tokio::test]
    async fn a_frame_from_a_tcp_link_wakes_the_waiting_receiver() {
        let (sock, _hop) = sorter("127.0.0.1:9".parse().expect("address")).await;
        let sock = Arc::new(sock);
        let receiver = sock.clone();
        let received = tokio::spawn(async move {
            let mut storage = [0u8; 200];
            let mut meta = [RecvMeta::default()];
            std::future::poll_fn(|cx| {
                let mut bufs = [IoSliceMut::new(&mut storage)];
                receiver.poll_recv(cx, &mut bufs, &mut meta)
            })
            .await
            .expect("receive");
            (meta[0].addr, storage[..meta[0].len].to_vec())
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        sock.table.from_stream(record(&frame(C, B, 60, 9)));
        let (addr, data) = within("wake", received).await.expect("task");
        assert_eq!(addr, sock.table.virtual_addr(B));
        assert_eq!(data, vec![9u8; 40]);
    }

    #[tokio::test]
    async fn frames_from_an_address_that_is_no_peer_are_dropped_but_quic_passes() {
        let (sock, _hop) = sorter("127.0.0.1:9".parse().expect("address")).await;
        let stranger: SocketAddr = "127.0.0.1:10".parse().expect("address");
        let mut quic = vec![5u8; 100];
        quic[0] = 0x40;
        let (mut data, mut meta) = batch(stranger, &[quic, frame(C, B, 100, 1)]);
        sock.sort(&mut data, &mut meta);
        let mut storage = vec![0u8; 2 * 200];
        let mut bufs: Vec<IoSliceMut<'_>> = storage.chunks_mut(200).map(IoSliceMut::new).collect();
        let mut metas = [RecvMeta::default(); 2];
        assert_eq!(sock.state.drain_pending(&mut bufs, &mut metas), 1);
        assert_eq!(metas[0].addr, stranger);
        assert_eq!(count(&sock.state.counters.dropped), 1);
        assert_eq!(count(&sock.state.counters.delivered), 0);
    }

    #[test]
    fn virtual_addresses_are_stable_distinct_and_unroutable() {
        let table = RelayTable::new(A);
        let (b, c) = (table.virtual_addr(B), table.virtual_addr(C));
        assert_ne!(b, c);
        assert_eq!(table.virtual_addr(B), b);
        assert_eq!(table.node_at(c), Some(C));
        let mapped = SocketAddr::new(
            match c.ip() {
                IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
                v6 => v6,
            },
            c.port(),
        );
        assert_eq!(table.node_at(mapped), Some(C));
        assert!(is_virtual(b) && b.ip().is_ipv4());
        assert_eq!(
            table.node_at("192.0.2.1:4433".parse().expect("address")),
            None
        );
    }
}
