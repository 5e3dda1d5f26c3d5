//! A link: one authenticated connection to a peer, whatever transport carries it.
//!
//! The peer table, the sessions and the data path see only [`Link`], a closed enum
//! matched in every method (no `dyn`, no boxed future, nothing allocated per packet).
//! Each transport is one variant; [`LinkKind`] orders them by preference.
//!
//! A datagram is framed for the link it goes on: [`Link::datagram`] copies the overlay
//! header and the packet into the uplink's arena behind the room the transport's
//! framing needs ([`Link::headroom`]: none on QUIC, the record's length prefix on TCP)
//! and writes that framing there, so the packet is copied once, as before.

pub mod h3;
pub mod tcp;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use quicap_wire::{stream, Escaped, Header};
use rustls::pki_types::CertificateDer;

pub use h3::H3Link;
pub use tcp::TcpLink;

/// The kinds of link, best first: a node prefers a link of a lower kind when it has
/// several that answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LinkKind {
    /// A QUIC connection over a direct UDP path.
    QuicDirect,
    /// A QUIC connection carried end to end in relay frames through other nodes (see
    /// [`crate::relay`]).
    QuicRelayed,
    /// TLS 1.3 over TCP (see [`tcp`]), for paths that carry no UDP.
    Tcp,
}

impl LinkKind {
    /// How `quicap status` and the log name the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkKind::QuicDirect => "quic",
            LinkKind::QuicRelayed => "quic-relayed",
            LinkKind::Tcp => "tcp",
        }
    }
}

impl std::fmt::Display for LinkKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a node closes a link: the application close code on the wire (see
/// `docs/protocol.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCode {
    Shutdown,
    Refused,
    Incompatible,
    ProtocolViolation,
    CertificateInvalidated,
    Unresponsive,
    Superseded,
}

impl CloseCode {
    pub fn code(self) -> u32 {
        match self {
            CloseCode::Shutdown => 0,
            CloseCode::Refused => 1,
            CloseCode::Incompatible => 2,
            CloseCode::ProtocolViolation => 3,
            CloseCode::CertificateInvalidated => 4,
            CloseCode::Unresponsive => 5,
            CloseCode::Superseded => 6,
        }
    }
}

/// Size of the arena chunks datagrams are cut from (see [`Link::datagram`]).
pub const ARENA_CHUNK: usize = 256 * 1024;

/// A datagram framed for one link (see [`Link::datagram`]).
#[derive(Debug, Clone)]
pub struct Framed(Bytes);

/// Identifies a link among the live ones (two live links never share it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinkId(pub(crate) usize);

/// What a link has carried, for `quicap status` and the traffic watch.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinkStats {
    /// Bytes received and sent by the transport, its own overhead included.
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Overlay datagrams received and sent so far.
    pub datagrams: u64,
    /// The largest packet the transport sends on this path now.
    pub path_mtu: u16,
    /// The transport suspects a black hole and sends only minimum-size packets.
    pub black_hole: bool,
}

/// Why a datagram was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Larger than [`Link::max_datagram_size`] allows now.
    #[error("datagram too large for the link")]
    TooLarge,
    #[error("link closed")]
    Closed,
    #[error("{0}")]
    Other(String),
}

/// Why a control stream write failed.
#[derive(Debug)]
pub enum WriteError {
    /// The peer stopped the stream, with this code: a protocol violation.
    Stopped(u64),
    /// The link is gone.
    Lost,
}

/// One authenticated connection to a peer.
#[derive(Debug, Clone)]
pub enum Link {
    /// A QUIC connection, direct or (`relayed`) through relay frames.
    Quic {
        conn: quinn::Connection,
        relayed: bool,
    },
    /// TLS 1.3 over TCP.
    Tcp(TcpLink),
    /// An HTTP/3 request on a web QUIC connection (camouflage mode).
    H3(H3Link),
}

impl Link {
    pub fn quic(conn: quinn::Connection, relayed: bool) -> Link {
        Link::Quic { conn, relayed }
    }

    pub fn kind(&self) -> LinkKind {
        match self {
            Link::Quic { relayed: false, .. } => LinkKind::QuicDirect,
            Link::Quic { relayed: true, .. } => LinkKind::QuicRelayed,
            Link::Tcp(_) => LinkKind::Tcp,
            Link::H3(_) => LinkKind::QuicDirect,
        }
    }

    /// True for a link through other nodes: no neighbour of the mesh.
    pub fn relayed(&self) -> bool {
        self.kind() == LinkKind::QuicRelayed
    }

    /// Whether proxied flows can ride this link's own streams: QUIC links, direct or
    /// relayed. HTTP/3 and TLS/TCP links carry them on a relayed link through them.
    pub fn carries_flows(&self) -> bool {
        matches!(self, Link::Quic { .. })
    }

    pub fn id(&self) -> LinkId {
        match self {
            Link::Quic { conn, .. } | Link::H3(H3Link { conn, .. }) => LinkId(conn.stable_id()),
            Link::Tcp(t) => LinkId(t.stable_id()),
        }
    }

    /// The peer's transport address (a virtual one for a relayed link).
    pub fn remote_address(&self) -> SocketAddr {
        match self {
            Link::Quic { conn, .. } => conn.remote_address(),
            Link::Tcp(t) => t.remote_address(),
            Link::H3(h) => h.remote_address(),
        }
    }

    /// How logs and `quicap status` name the remote end: its address, or `relayed`
    /// for an end-to-end connection through the mesh, whose address is virtual.
    pub fn remote_label(&self) -> String {
        if self.relayed() {
            "relayed".to_owned()
        } else {
            self.remote_address().to_string()
        }
    }

    /// The largest datagram (overlay header and packet) the link carries now; 0 if it
    /// carries none.
    pub fn max_datagram_size(&self) -> usize {
        match self {
            Link::Quic { conn, .. } => conn.max_datagram_size().unwrap_or(0),
            Link::Tcp(t) => t.max_datagram_size(),
            Link::H3(h) => h.max_datagram_size(),
        }
    }

    /// Bytes of framing the transport puts in front of each datagram.
    pub fn headroom(&self) -> usize {
        match self {
            Link::Quic { .. } => 0,
            Link::Tcp(_) => stream::LEN_PREFIX,
            Link::H3(h) => h.prefix.as_slice().len(),
        }
    }

    /// Copies `header` and `payload` into `arena` behind the link's framing and cuts
    /// them off as one datagram for this link: the one copy of the packet.
    ///
    /// Datagrams are cut from arena chunks of [`ARENA_CHUNK`] bytes: one allocation per
    /// few dozen packets instead of one per packet. A chunk is reused once the
    /// transport has sent and dropped every datagram cut from it.
    pub fn datagram(
        &self,
        arena: &mut BytesMut,
        header: &Header,
        payload: &[u8],
    ) -> Option<Framed> {
        arena.clear();
        let need = self.headroom() + header.buffer_len() + payload.len();
        if arena.capacity() < need {
            arena.reserve(need.max(ARENA_CHUNK));
        }
        self.fill(arena, header, payload)?;
        Some(Framed(arena.split().freeze()))
    }

    /// [`Link::datagram`] in an allocation of its own (fragments, rare paths).
    pub fn datagram_alloc(&self, header: &Header, payload: &[u8]) -> Option<Framed> {
        let need = self.headroom() + header.buffer_len() + payload.len();
        let mut buf = BytesMut::with_capacity(need);
        self.fill(&mut buf, header, payload)?;
        Some(Framed(buf.freeze()))
    }

    /// Writes framing, header and payload into the empty `buf`.
    fn fill(&self, buf: &mut BytesMut, header: &Header, payload: &[u8]) -> Option<()> {
        let room = self.headroom();
        let hlen = header.buffer_len();
        buf.resize(room + hlen, 0);
        header.emit(&mut buf[room..]).ok()?;
        buf.extend_from_slice(payload);
        self.write_framing(&mut buf[..], hlen + payload.len())
    }

    /// Frames an overlay datagram built elsewhere (a held packet, a fragment): as is on
    /// QUIC, copied behind the framing on TCP and HTTP/3.
    pub fn frame(&self, datagram: Bytes) -> Option<Framed> {
        let room = self.headroom();
        if room == 0 {
            return Some(Framed(datagram));
        }
        let mut buf = vec![0u8; room];
        buf.extend_from_slice(&datagram);
        self.write_framing(&mut buf, datagram.len())?;
        Some(Framed(Bytes::from(buf)))
    }

    /// Writes the framing of a datagram of `len` bytes into the first
    /// [`Link::headroom`] bytes of `buf`.
    fn write_framing(&self, buf: &mut [u8], len: usize) -> Option<()> {
        match self {
            Link::Quic { .. } => Some(()),
            Link::Tcp(_) => {
                let room = buf.first_chunk_mut::<{ stream::LEN_PREFIX }>()?;
                stream::frame_datagram(room, len).ok()
            }
            Link::H3(h) => {
                let prefix = h.prefix.as_slice();
                buf.get_mut(..prefix.len())?.copy_from_slice(prefix);
                Some(())
            }
        }
    }

    /// Sends a datagram, or drops it when the transport's queue is full.
    pub fn send_datagram(&self, datagram: Framed) -> Result<(), SendError> {
        match self {
            Link::Quic { conn, .. } | Link::H3(H3Link { conn, .. }) => {
                conn.send_datagram(datagram.0).map_err(quic_send_error)
            }
            Link::Tcp(t) => t.send_datagram(datagram.0),
        }
    }

    /// Sends a datagram, waiting for room in the transport's queue.
    pub async fn send_datagram_wait(&self, datagram: Framed) -> Result<(), SendError> {
        match self {
            Link::Quic { conn, .. } | Link::H3(H3Link { conn, .. }) => conn
                .send_datagram_wait(datagram.0)
                .await
                .map_err(quic_send_error),
            Link::Tcp(t) => t.send_datagram_wait(datagram.0).await,
        }
    }

    /// The next datagram received (the overlay datagram, framing removed); `None` once
    /// the link is closed.
    pub async fn read_datagram(&self) -> Option<Bytes> {
        match self {
            Link::Quic { conn, .. } => conn.read_datagram().await.ok(),
            Link::Tcp(t) => t.read_datagram().await,
            Link::H3(h) => h.read_datagram().await,
        }
    }

    /// The transport's smoothed round-trip time.
    pub fn rtt(&self) -> Duration {
        match self {
            Link::Quic { conn, .. } | Link::H3(H3Link { conn, .. }) => conn.rtt(),
            Link::Tcp(t) => t.rtt(),
        }
    }

    pub fn stats(&self) -> LinkStats {
        match self {
            Link::Quic { conn, .. } => quic_stats(conn),
            Link::H3(h) => LinkStats {
                datagrams: h.datagrams(),
                ..quic_stats(&h.conn)
            },
            Link::Tcp(t) => t.stats(),
        }
    }

    /// The certificate chain the peer presented.
    pub fn peer_certificates(&self) -> Option<Vec<CertificateDer<'static>>> {
        match self {
            Link::Quic { conn, .. } => conn
                .peer_identity()
                .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
                .map(|chain| *chain),
            Link::Tcp(t) => t.peer_certificates(),
            Link::H3(h) => Some(h.peer_certificates()),
        }
    }

    /// Closes the link, telling the peer `code` and `reason`.
    pub fn close(&self, code: CloseCode, reason: &str) {
        match self {
            Link::Quic { conn, .. } | Link::H3(H3Link { conn, .. }) => {
                conn.close(code.code().into(), reason.as_bytes())
            }
            Link::Tcp(t) => t.close(code, reason),
        }
    }

    /// Why the link closed, or `None` while it is open.
    pub fn close_reason(&self) -> Option<String> {
        match self {
            Link::Quic { conn, .. } | Link::H3(H3Link { conn, .. }) => {
                conn.close_reason().map(|e| describe_quic_close(&e))
            }
            Link::Tcp(t) => t.close_reason(),
        }
    }

    /// True once the link is closed, by either side.
    pub fn is_closed(&self) -> bool {
        match self {
            Link::Quic { conn, .. } | Link::H3(H3Link { conn, .. }) => {
                conn.close_reason().is_some()
            }
            Link::Tcp(t) => t.is_closed(),
        }
    }

    /// True if this node closed the link.
    pub fn closed_locally(&self) -> bool {
        match self {
            Link::Quic { conn, .. } | Link::H3(H3Link { conn, .. }) => {
                matches!(
                    conn.close_reason(),
                    Some(quinn::ConnectionError::LocallyClosed)
                )
            }
            Link::Tcp(t) => t.closed_locally(),
        }
    }

    /// Waits until the link is closed; returns why.
    pub async fn closed(&self) -> String {
        match self {
            Link::Quic { conn, .. } | Link::H3(H3Link { conn, .. }) => {
                describe_quic_close(&conn.closed().await)
            }
            Link::Tcp(t) => t.closed().await,
        }
    }

    /// Opens the control stream (the dialing side does).
    pub async fn open_control(&self) -> anyhow::Result<(ControlSend, ControlRecv)> {
        match self {
            Link::Quic { conn, .. } => {
                let (send, recv) = conn.open_bi().await?;
                Ok((ControlSend::Quic(send), ControlRecv::Quic(recv)))
            }
            Link::Tcp(t) => {
                let (send, recv) = t.control()?;
                Ok((ControlSend::Tcp(send), ControlRecv::Tcp(recv)))
            }
            Link::H3(h) => {
                let (send, recv) = h.control()?;
                Ok((
                    ControlSend::H3(Box::new(send)),
                    ControlRecv::H3(Box::new(recv)),
                ))
            }
        }
    }

    /// Accepts the control stream the peer opens.
    pub async fn accept_control(&self) -> anyhow::Result<(ControlSend, ControlRecv)> {
        match self {
            Link::Quic { conn, .. } => {
                let (send, recv) = conn.accept_bi().await?;
                Ok((ControlSend::Quic(send), ControlRecv::Quic(recv)))
            }
            Link::Tcp(t) => {
                let (send, recv) = t.control()?;
                Ok((ControlSend::Tcp(send), ControlRecv::Tcp(recv)))
            }
            Link::H3(h) => {
                let (send, recv) = h.control()?;
                Ok((
                    ControlSend::H3(Box::new(send)),
                    ControlRecv::H3(Box::new(recv)),
                ))
            }
        }
    }
}

/// Sends relay frames on a link that carries them itself, for the relay table's next
/// hops (see [`crate::relay::Hop`]).
#[derive(Debug, Clone)]
pub enum RelaySender {
    Tcp(tcp::FrameSender),
    H3(h3::DatagramRelay),
}

impl RelaySender {
    /// Tells next hops apart: the link's id.
    pub fn id(&self) -> usize {
        match self {
            RelaySender::Tcp(t) => t.id(),
            RelaySender::H3(h) => h.id(),
        }
    }

    /// Sends one relay frame, made of `parts`; false if it was dropped.
    pub fn send_relay(&self, parts: &[&[u8]]) -> bool {
        match self {
            RelaySender::Tcp(t) => t.send_relay(parts),
            RelaySender::H3(h) => h.send_relay(parts),
        }
    }

    /// Sends a relay record (prefix included) as it arrived on a stream link.
    pub fn send_record(&self, record: Bytes) -> bool {
        match self {
            RelaySender::Tcp(t) => t.send_record(record),
            RelaySender::H3(h) => h.send_record(&record),
        }
    }
}

/// The stats of a QUIC connection; its DATAGRAM frames all count as the link's.
fn quic_stats(conn: &quinn::Connection) -> LinkStats {
    let s = conn.stats();
    LinkStats {
        rx_bytes: s.udp_rx.bytes,
        tx_bytes: s.udp_tx.bytes,
        datagrams: s.frame_tx.datagram + s.frame_rx.datagram,
        path_mtu: s.path.current_mtu,
        black_hole: s.path.black_holes_detected > 0 && s.path.current_mtu <= 1200,
    }
}

fn quic_send_error(e: quinn::SendDatagramError) -> SendError {
    match e {
        quinn::SendDatagramError::TooLarge => SendError::TooLarge,
        quinn::SendDatagramError::ConnectionLost(_) => SendError::Closed,
        other => SendError::Other(other.to_string()),
    }
}

/// Why a QUIC connection closed, for the log; a reason phrase from the peer is escaped.
fn describe_quic_close(e: &quinn::ConnectionError) -> String {
    match e {
        quinn::ConnectionError::ApplicationClosed(c) => {
            format!(
                "closed by peer: {}",
                Escaped(&String::from_utf8_lossy(&c.reason))
            )
        }
        quinn::ConnectionError::LocallyClosed => "closed locally".into(),
        quinn::ConnectionError::TimedOut => "timed out (no answer from the peer)".into(),
        quinn::ConnectionError::ConnectionClosed(c) => {
            let reason = String::from_utf8_lossy(&c.reason);
            if reason.is_empty() {
                format!("closed by peer: {}", c.error_code)
            } else {
                format!("closed by peer: {}", Escaped(&reason))
            }
        }
        quinn::ConnectionError::TransportError(t) => {
            format!("transport error: {}", Escaped(&t.to_string()))
        }
        other => other.to_string(),
    }
}

/// The sending half of a link's control stream.
#[derive(Debug)]
pub enum ControlSend {
    Quic(quinn::SendStream),
    Tcp(tcp::TcpControlSend),
    /// Boxed: h3's stream halves are large, and control streams few.
    H3(Box<h3::H3ControlSend>),
}

impl ControlSend {
    /// Writes `buf`, whole control frames as [`quicap_wire::Message::encode`] writes
    /// them.
    pub async fn write_all(&mut self, buf: &[u8]) -> Result<(), WriteError> {
        match self {
            ControlSend::Tcp(s) => s.write_frames(buf),
            ControlSend::H3(s) => s.write_frames(buf).await,
            ControlSend::Quic(s) => s.write_all(buf).await.map_err(|e| match e {
                quinn::WriteError::Stopped(code) => WriteError::Stopped(code.into_inner()),
                _ => WriteError::Lost,
            }),
        }
    }

    /// Ends the stream after what was written.
    pub async fn finish(&mut self) {
        match self {
            ControlSend::Quic(s) => {
                let _ = s.finish();
            }
            ControlSend::H3(s) => s.finish().await,
            // The stream ends with the link's close record.
            ControlSend::Tcp(_) => {}
        }
    }
}

/// The receiving half of a link's control stream.
#[derive(Debug)]
pub enum ControlRecv {
    Quic(quinn::RecvStream),
    Tcp(tcp::TcpControlRecv),
    H3(Box<h3::H3ControlRecv>),
}
