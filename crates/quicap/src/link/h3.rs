//! A link inside an HTTP/3 extended CONNECT: how two nodes in camouflage mode talk
//! once each has proven its identity (see [`crate::camouflage`]).
//!
//! The QUIC connection is a web connection (ALPN `h3`, the operator's web certificate,
//! no client certificate); the link is one CONNECT-IP request on it:
//!
//! ```text
//!  overlay datagram  ──> QUIC DATAGRAM [quarter stream ID][context 0][datagram]
//!  relay frame       ──> QUIC DATAGRAM [quarter stream ID][RELAY_CONTEXT][frame]
//!  control frames    ──> request stream: DATA frames of capsules [CONTROL_CAPSULE][len][frames]
//! ```
//!
//! The datagram prefix (two bytes for the first request stream) is the only framing
//! a packet gets beyond private mode's, written into the headroom the data path leaves
//! (see [`super::Link::headroom`]); a received datagram is sliced behind it, not
//! copied. Datagrams of another request stream or an unknown context are dropped, as
//! RFC 9297 and RFC 9484 have receivers do.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use h3_quinn::{RecvStream, SendStream};
use quicap_wire::control::FRAME_HEADER_LEN;
use quicap_wire::masque::{self, CONTROL_CAPSULE, RELAY_CONTEXT};
use quicap_wire::stream;
use quicap_wire::Message;
use rustls::pki_types::CertificateDer;

use super::WriteError;
use crate::relay::RelayTable;

/// The longest datagram prefix: a quarter stream ID and a context ID of 8 bytes each.
const MAX_PREFIX: usize = 16;
/// The prefix of relay frames on a link whose request is the dialer's first (stream
/// 0, as a node dials): the quarter stream ID and [`RELAY_CONTEXT`].
pub const RELAY_PREFIX_LEN: u16 = 5;

/// The prefix of a link's datagrams, kept inline so that a clone of the link costs no
/// allocation.
#[derive(Debug, Clone, Copy)]
pub(super) struct Prefix {
    bytes: [u8; MAX_PREFIX],
    len: u8,
}

impl Prefix {
    fn new(stream_id: u64, context: u64) -> anyhow::Result<Prefix> {
        let encoded = masque::context_prefix(stream_id, context)?;
        let mut bytes = [0u8; MAX_PREFIX];
        bytes
            .get_mut(..encoded.len())
            .ok_or_else(|| anyhow::anyhow!("datagram prefix too long"))?
            .copy_from_slice(&encoded);
        Ok(Prefix {
            bytes,
            len: encoded.len() as u8,
        })
    }

    pub(super) fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// The control stream halves of either end of the request.
enum Halves {
    Server(
        h3::server::RequestStream<SendStream<Bytes>, Bytes>,
        h3::server::RequestStream<RecvStream, Bytes>,
    ),
    Client(
        h3::client::RequestStream<SendStream<Bytes>, Bytes>,
        h3::client::RequestStream<RecvStream, Bytes>,
    ),
}

struct Shared {
    stream_id: u64,
    /// The node certificate the peer proved it holds.
    peer: CertificateDer<'static>,
    /// Until the session takes them.
    control: Mutex<Option<Halves>>,
    /// Keeps the HTTP/3 connection open while the link lives: a client connection
    /// closes when its last request sender goes.
    _sender: Mutex<Option<Box<dyn Send>>>,
    relays: Arc<RelayTable>,
}

/// A node link carried by one HTTP/3 request; clones share it.
#[derive(Clone)]
pub struct H3Link {
    pub(super) conn: quinn::Connection,
    pub(super) prefix: Prefix,
    relay_prefix: Prefix,
    shared: Arc<Shared>,
    /// Relay frames sent and received: QUIC DATAGRAM frames of the connection that
    /// are not this link's own traffic.
    relay_frames: Arc<AtomicU64>,
}

impl std::fmt::Debug for H3Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H3Link")
            .field("remote", &self.conn.remote_address())
            .field("stream", &self.shared.stream_id)
            .finish_non_exhaustive()
    }
}

impl H3Link {
    /// The server's end of an accepted request, whose client proved it holds `peer`.
    pub fn server(
        conn: quinn::Connection,
        stream: h3::server::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>,
        peer: CertificateDer<'static>,
        relays: Arc<RelayTable>,
    ) -> anyhow::Result<H3Link> {
        let stream_id = stream.id().into_inner();
        let (send, recv) = stream.split();
        H3Link::new(
            conn,
            stream_id,
            Halves::Server(send, recv),
            None,
            peer,
            relays,
        )
    }

    /// The client's end of a request the server accepted, having proven it holds
    /// `peer`; `sender` is the connection's request sender, kept with the link.
    pub fn client<S: Send + 'static>(
        conn: quinn::Connection,
        stream: h3::client::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>,
        sender: S,
        peer: CertificateDer<'static>,
        relays: Arc<RelayTable>,
    ) -> anyhow::Result<H3Link> {
        let stream_id = stream.id().into_inner();
        let (send, recv) = stream.split();
        H3Link::new(
            conn,
            stream_id,
            Halves::Client(send, recv),
            Some(Box::new(sender)),
            peer,
            relays,
        )
    }

    fn new(
        conn: quinn::Connection,
        stream_id: u64,
        halves: Halves,
        sender: Option<Box<dyn Send>>,
        peer: CertificateDer<'static>,
        relays: Arc<RelayTable>,
    ) -> anyhow::Result<H3Link> {
        Ok(H3Link {
            prefix: Prefix::new(stream_id, masque::IP_PACKET_CONTEXT)?,
            relay_prefix: Prefix::new(stream_id, RELAY_CONTEXT)?,
            relay_frames: Arc::default(),
            conn,
            shared: Arc::new(Shared {
                stream_id,
                peer,
                control: Mutex::new(Some(halves)),
                _sender: Mutex::new(sender),
                relays,
            }),
        })
    }

    pub fn remote_address(&self) -> SocketAddr {
        self.conn.remote_address()
    }

    /// The largest overlay datagram the link carries now.
    pub fn max_datagram_size(&self) -> usize {
        self.conn
            .max_datagram_size()
            .map_or(0, |m| m.saturating_sub(self.prefix.as_slice().len()))
    }

    pub fn peer_certificates(&self) -> Vec<CertificateDer<'static>> {
        vec![self.shared.peer.clone()]
    }

    /// The next overlay datagram; relay frames go to the relay table on the way, and
    /// datagrams of other requests or contexts are dropped.
    pub async fn read_datagram(&self) -> Option<Bytes> {
        loop {
            let datagram = self.conn.read_datagram().await.ok()?;
            let Ok(parsed) = masque::parse_datagram(&datagram) else {
                continue;
            };
            if parsed.stream_id != self.shared.stream_id {
                continue;
            }
            let at = datagram.len() - parsed.payload.len();
            match parsed.context_id {
                masque::IP_PACKET_CONTEXT => return Some(datagram.slice(at..)),
                RELAY_CONTEXT => self.relay_in(&datagram[at..]),
                _ => {}
            }
        }
    }

    /// Hands a relay frame to the relay table, as a relay record from a stream link.
    fn relay_in(&self, frame: &[u8]) {
        let Ok(prefix) = stream::relay_prefix(frame.len()) else {
            return;
        };
        let mut record = BytesMut::with_capacity(prefix.len() + frame.len());
        record.put_slice(&prefix);
        record.put_slice(frame);
        self.relay_frames.fetch_add(1, Ordering::Relaxed);
        self.shared.relays.from_stream(record);
    }

    /// The link's own datagrams sent and received (tunnel traffic), which tell
    /// whether it is busy; relay frames beside them do not count.
    pub fn datagrams(&self) -> u64 {
        let s = self.conn.stats();
        (s.frame_tx.datagram + s.frame_rx.datagram)
            .saturating_sub(self.relay_frames.load(Ordering::Relaxed))
    }

    /// A handle that sends relay frames on this link.
    pub fn relay_sender(&self) -> DatagramRelay {
        DatagramRelay {
            conn: self.conn.clone(),
            id: self.conn.stable_id(),
            prefix: self.relay_prefix,
            sent: self.relay_frames.clone(),
        }
    }

    /// The control stream halves; only the first call gets them.
    pub fn control(&self) -> anyhow::Result<(H3ControlSend, H3ControlRecv)> {
        let halves = self
            .shared
            .control
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| anyhow::anyhow!("control stream already taken"))?;
        let (send, recv) = match halves {
            Halves::Server(s, r) => (Sender::Server(s), Recv::Server(r)),
            Halves::Client(s, r) => (Sender::Client(s), Recv::Client(r)),
        };
        Ok((
            H3ControlSend {
                stream: send,
                buf: Vec::new(),
            },
            H3ControlRecv {
                stream: recv,
                raw: BytesMut::new(),
                frames: BytesMut::new(),
            },
        ))
    }
}

/// Sends relay frames in a link's datagrams, for the relay table's next hops. (It
/// holds the connection, which a closed link's table entry keeps only until the
/// table's next update.)
#[derive(Debug, Clone)]
pub struct DatagramRelay {
    conn: quinn::Connection,
    id: usize,
    prefix: Prefix,
    /// The link's count of relay frames.
    sent: Arc<AtomicU64>,
}

impl DatagramRelay {
    /// Tells next hops apart (the link's id).
    pub fn id(&self) -> usize {
        self.id
    }

    /// Sends one relay frame, made of `parts`; false if it was dropped.
    pub fn send_relay(&self, parts: &[&[u8]]) -> bool {
        let prefix = self.prefix.as_slice();
        let len = prefix.len() + parts.iter().map(|p| p.len()).sum::<usize>();
        let mut datagram = BytesMut::with_capacity(len);
        datagram.put_slice(prefix);
        for part in parts {
            datagram.put_slice(part);
        }
        let sent = self.conn.send_datagram(datagram.freeze()).is_ok();
        if sent {
            self.sent.fetch_add(1, Ordering::Relaxed);
        }
        sent
    }

    /// Sends the relay frame of a relay record (prefix included) as it arrived on a
    /// stream link.
    pub fn send_record(&self, record: &[u8]) -> bool {
        match record.get(stream::RELAY_PREFIX..) {
            Some(frame) => self.send_relay(&[frame]),
            None => false,
        }
    }
}

enum Sender {
    Server(h3::server::RequestStream<SendStream<Bytes>, Bytes>),
    Client(h3::client::RequestStream<SendStream<Bytes>, Bytes>),
}

enum Recv {
    Server(h3::server::RequestStream<RecvStream, Bytes>),
    Client(h3::client::RequestStream<RecvStream, Bytes>),
}

/// The sending half of an HTTP/3 link's control stream.
pub struct H3ControlSend {
    stream: Sender,
    buf: Vec<u8>,
}

impl std::fmt::Debug for H3ControlSend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("H3ControlSend")
    }
}

impl H3ControlSend {
    /// Sends `frames` (whole control frames) in one capsule.
    pub async fn write_frames(&mut self, frames: &[u8]) -> Result<(), WriteError> {
        self.buf.clear();
        masque::put_capsule(CONTROL_CAPSULE, frames, &mut self.buf)
            .map_err(|_| WriteError::Lost)?;
        let data = Bytes::copy_from_slice(&self.buf);
        let sent = match &mut self.stream {
            Sender::Server(s) => s.send_data(data).await,
            Sender::Client(s) => s.send_data(data).await,
        };
        sent.map_err(|_| WriteError::Lost)
    }

    /// Ends the request stream.
    pub async fn finish(&mut self) {
        let _ = match &mut self.stream {
            Sender::Server(s) => s.finish().await,
            Sender::Client(s) => s.finish().await,
        };
    }
}

/// Why no control frame could be read.
#[derive(Debug)]
pub enum RecvError {
    /// The connection is gone.
    Lost(String),
    /// The peer broke the framing.
    Violation(String),
}

/// The receiving half of an HTTP/3 link's control stream.
pub struct H3ControlRecv {
    stream: Recv,
    /// Request body bytes not yet taken apart into capsules.
    raw: BytesMut,
    /// Control frame bytes taken from capsules, not yet read.
    frames: BytesMut,
}

impl std::fmt::Debug for H3ControlRecv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("H3ControlRecv")
    }
}

impl H3ControlRecv {
    /// The next control frame's body (its header checked and removed).
    pub async fn next(&mut self) -> Result<Bytes, RecvError> {
        self.fill(FRAME_HEADER_LEN, "between frames").await?;
        let mut header = [0u8; FRAME_HEADER_LEN];
        header.copy_from_slice(&self.frames[..FRAME_HEADER_LEN]);
        let len = Message::frame_len(header)
            .map_err(|e| RecvError::Violation(format!("malformed control frame: {e}")))?;
        self.fill(FRAME_HEADER_LEN + len, "inside a frame").await?;
        self.frames.advance(FRAME_HEADER_LEN);
        Ok(self.frames.split_to(len).freeze())
    }

    /// Reads capsules until `want` control bytes are waiting.
    async fn fill(&mut self, want: usize, at: &str) -> Result<(), RecvError> {
        while self.frames.len() < want {
            match masque::parse_capsule(&self.raw) {
                Ok(Some(capsule)) => {
                    // Capsules of other types are skipped (RFC 9297 section 3.2).
                    if capsule.kind == CONTROL_CAPSULE {
                        self.frames.extend_from_slice(capsule.value);
                    }
                    let len = capsule.len;
                    self.raw.advance(len);
                    continue;
                }
                Ok(None) => {}
                Err(e) => return Err(RecvError::Violation(format!("malformed capsule: {e}"))),
            }
            let data = match &mut self.stream {
                Recv::Server(s) => s.recv_data().await.map(|d| d.map(copy)),
                Recv::Client(s) => s.recv_data().await.map(|d| d.map(copy)),
            };
            match data {
                Ok(Some(chunk)) => self.raw.extend_from_slice(&chunk),
                Ok(None) => {
                    return Err(RecvError::Violation(format!("control stream ended {at}")));
                }
                Err(e) if e.is_h3_no_error() => {
                    return Err(RecvError::Violation(format!("control stream ended {at}")));
                }
                Err(e) => return Err(RecvError::Lost(e.to_string())),
            }
        }
        Ok(())
    }
}

/// A received DATA chunk as bytes.
fn copy(mut chunk: impl Buf) -> Bytes {
    chunk.copy_to_bytes(chunk.remaining())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dialed_links_relay_prefix_is_as_long_as_the_transport_reckons() {
        let prefix = Prefix::new(0, RELAY_CONTEXT).unwrap();
        assert_eq!(prefix.as_slice().len(), usize::from(RELAY_PREFIX_LEN));
    }
}
