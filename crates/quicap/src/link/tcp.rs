//! A link over TLS 1.3 on TCP: for networks that block or throttle UDP.
//!
//! Datagrams, control frames and the close travel as records on the one TLS stream
//! (see [`quicap_wire::stream`]). Two tasks own the stream's halves:
//!
//! ```text
//!  send_datagram* ──> datagram queue ──┐
//!  control writes ──> control queue ───┴─> writer ──> TLS ──> TCP
//!  read_datagram <─── inbound queue <──┬── reader <── TLS <── TCP
//!  control reads <─── control queue <──┘
//! ```
//!
//! The writer batches whatever is queued into one write (one TLS record and one
//! syscall for many datagrams); the reader waits when the inbound queue is full, so a
//! slow receiver slows the sender through TCP's own flow control instead of dropping.
//! Relay records go from the reader straight to the node's [`RelayTable`], and relay
//! frames to send join the datagram queue through a [`FrameSender`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use bytes::{Bytes, BytesMut};
use quicap_wire::control::FRAME_HEADER_LEN;
use quicap_wire::stream::{self, Record};
use quicap_wire::{Escaped, Message};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Notify};
use tokio_rustls::TlsStream;
use tracing::{debug, warn};

use super::{CloseCode, LinkStats, SendError, WriteError};
use crate::relay::RelayTable;

/// Bytes TLS 1.3 adds to a record: a 5-byte header, the inner content type and a
/// 16-byte AEAD tag.
pub const TLS_RECORD_OVERHEAD: usize = 5 + 1 + 16;
/// TCP's own header with the timestamp option, and the IP headers in front of it.
const TCP_HEADER: usize = 20 + 12;
const IPV4_HEADER: usize = 20;
const IPV6_HEADER: usize = 40;
/// Framed datagrams waiting for the writer: little, since TCP's send buffer queues
/// more behind them and every queued packet adds to the latency under load.
const DATAGRAM_QUEUE: usize = 128;
/// Datagrams received and not yet taken by the session before the reader waits.
const INBOUND_QUEUE: usize = 1024;
/// Control bodies received and not yet read.
const CONTROL_QUEUE: usize = 256;
/// The writer gathers up to this much before it writes.
const WRITE_BATCH: usize = 64 * 1024;
const READ_CHUNK: usize = 64 * 1024;
/// Unsent bytes TCP may hold beyond what is in flight (TCP_NOTSENT_LOWAT): enough to
/// keep the path full, little enough that a probe does not wait behind seconds of data.
const NOTSENT_LOWAT: u32 = 128 * 1024;
/// How long a handshake over TCP may take, connect included.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// One TLS/TCP link; clones share it, and dropping the last one closes it (as
/// dropping a QUIC connection's last handle does).
#[derive(Clone)]
pub struct TcpLink {
    shared: Arc<Shared>,
    _handle: Arc<Handle>,
}

/// Closes the link when the last [`TcpLink`] goes; the reader and writer hold only
/// [`Shared`].
struct Handle(Arc<Shared>);

impl Drop for Handle {
    fn drop(&mut self) {
        self.0.close(CloseCode::Shutdown, "link dropped");
    }
}

impl std::fmt::Debug for TcpLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpLink")
            .field("remote", &self.shared.remote)
            .finish_non_exhaustive()
    }
}

struct Shared {
    remote: SocketAddr,
    peer_certificates: Vec<CertificateDer<'static>>,
    /// A duplicate of the socket's descriptor, for TCP_INFO (RTT, MSS).
    fd: OwnedFd,
    max_datagram: usize,
    datagrams_out: mpsc::Sender<Bytes>,
    control_out: mpsc::UnboundedSender<Outgoing>,
    control_in: Mutex<Option<mpsc::Receiver<Bytes>>>,
    inbound: Mutex<VecDeque<Bytes>>,
    inbound_ready: Notify,
    inbound_space: Notify,
    /// Why the link closed, once it has.
    closed: watch::Sender<Option<String>>,
    closed_locally: AtomicBool,
    rx_bytes: AtomicU64,
    tx_bytes: AtomicU64,
    datagrams: AtomicU64,
    /// Where relay records received go.
    relays: Arc<RelayTable>,
}

impl Shared {
    /// Records why the link closed (`locally`: this node closed it and queues a close
    /// record); the first reason stays. Returns true if this call closed it.
    fn set_closed(&self, reason: String, locally: bool) -> bool {
        let closed = self.closed.send_if_modified(|c| {
            if c.is_some() {
                return false;
            }
            // Before the writer can see the link closed: it then waits for the record.
            self.closed_locally.store(locally, Ordering::Relaxed);
            *c = Some(reason);
            true
        });
        if closed {
            self.inbound_ready.notify_one();
        }
        closed
    }

    fn is_closed(&self) -> bool {
        self.closed.borrow().is_some()
    }

    /// Closes the link with a close record for the peer, unless it is closed already.
    fn close(&self, code: CloseCode, reason: &str) -> bool {
        if !self.set_closed("closed locally".into(), true) {
            return false;
        }
        let mut record = Vec::new();
        stream::push_close(code.code(), reason, &mut record);
        let _ = self.control_out.send(Outgoing::Close(record));
        true
    }

    /// The kernel's TCP_INFO of the socket. No crate used here wraps it; with
    /// `sched`'s calls and `heap`, the only `unsafe` in the workspace.
    #[allow(unsafe_code)]
    fn tcp_info(&self) -> Option<libc::tcp_info> {
        // SAFETY: tcp_info is plain data; getsockopt writes at most `len` bytes into it
        // and the descriptor stays open as long as `self.fd`.
        unsafe {
            let mut info: libc::tcp_info = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
            let rc = libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&mut info as *mut libc::tcp_info).cast(),
                &mut len,
            );
            (rc == 0).then_some(info)
        }
    }
}

/// The largest overlay datagram a TCP link with segments of `mss` payload bytes
/// carries so that one datagram, its record prefix and the TLS record around it fit
/// one segment: on a 1500-byte path 1424 bytes over IPv4 (1420-byte packets behind a
/// 4-byte overlay header), 1404 over IPv6 (see `docs/protocol.md`).
pub fn max_datagram_for_mss(mss: usize) -> usize {
    mss.saturating_sub(TLS_RECORD_OVERHEAD + stream::LEN_PREFIX)
        .min(stream::MAX_BODY)
}

/// The segment size of a 1500-byte path for `remote`'s family, before the socket
/// knows its own.
fn default_mss(remote: SocketAddr) -> usize {
    let ip = if remote.is_ipv4() {
        IPV4_HEADER
    } else {
        IPV6_HEADER
    };
    1500 - ip - TCP_HEADER
}

pub(crate) fn set_socket_options(tcp: &TcpStream) -> Result<()> {
    tcp.set_nodelay(true).context("setting TCP_NODELAY")?;
    if let Err(e) = socket2::SockRef::from(tcp).set_tcp_notsent_lowat(NOTSENT_LOWAT) {
        debug!(error = %e, "TCP_NOTSENT_LOWAT not set");
    }
    Ok(())
}

/// Dials `addr` over TCP and runs the TLS handshake as a client, expecting the
/// certificate of node `name`.
pub async fn connect(
    addr: SocketAddr,
    name: &str,
    config: Arc<rustls::ClientConfig>,
    relays: Arc<RelayTable>,
) -> Result<TcpLink> {
    let server_name =
        ServerName::try_from(name.to_owned()).map_err(|_| anyhow!("{name:?} is no server name"))?;
    let handshake = async {
        let tcp = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr} over TCP"))?;
        set_socket_options(&tcp)?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(server_name, tcp)
            .await
            .context("TLS handshake over TCP")?;
        TcpLink::start(TlsStream::Client(tls), addr, relays)
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .map_err(|_| {
            anyhow!("no TLS handshake over TCP with {addr} within {HANDSHAKE_TIMEOUT:?}")
        })?
}

/// Runs the TLS handshake of an accepted TCP connection as the server.
pub async fn accept(
    tcp: TcpStream,
    remote: SocketAddr,
    config: Arc<rustls::ServerConfig>,
    relays: Arc<RelayTable>,
) -> Result<TcpLink> {
    set_socket_options(&tcp)?;
    let handshake = tokio_rustls::TlsAcceptor::from(config).accept(tcp);
    let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .map_err(|_| anyhow!("no TLS handshake within {HANDSHAKE_TIMEOUT:?}"))?
        .context("TLS handshake over TCP")?;
    TcpLink::start(TlsStream::Server(tls), remote, relays)
}

impl TcpLink {
    /// Starts the reader and writer of an established TLS stream whose handshake
    /// authenticated the peer.
    fn start(
        tls: TlsStream<TcpStream>,
        remote: SocketAddr,
        relays: Arc<RelayTable>,
    ) -> Result<TcpLink> {
        let peer = tls
            .get_ref()
            .1
            .peer_certificates()
            .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
            .unwrap_or_default();
        TcpLink::start_upgraded(tls, remote, relays, peer, BytesMut::new())
    }

    /// Starts the reader and writer of a TLS stream on which the peer proved itself
    /// otherwise (a camouflaged link's HTTP upgrade): `peer` is its certificate chain,
    /// `read` what was read past the upgrade, the link's first bytes.
    pub(crate) fn start_upgraded(
        tls: TlsStream<TcpStream>,
        remote: SocketAddr,
        relays: Arc<RelayTable>,
        peer_certificates: Vec<CertificateDer<'static>>,
        read: BytesMut,
    ) -> Result<TcpLink> {
        let (tcp, _) = tls.get_ref();
        let fd = tcp
            .as_fd()
            .try_clone_to_owned()
            .context("duplicating the socket")?;
        let (datagrams_out, datagrams_rx) = mpsc::channel(DATAGRAM_QUEUE);
        let (control_out, control_rx) = mpsc::unbounded_channel();
        let (control_tx, control_in) = mpsc::channel(CONTROL_QUEUE);
        let mut shared = Shared {
            remote,
            peer_certificates,
            fd,
            max_datagram: 0,
            datagrams_out,
            control_out,
            control_in: Mutex::new(Some(control_in)),
            inbound: Mutex::new(VecDeque::new()),
            inbound_ready: Notify::new(),
            inbound_space: Notify::new(),
            closed: watch::channel(None).0,
            closed_locally: AtomicBool::new(false),
            rx_bytes: AtomicU64::new(0),
            tx_bytes: AtomicU64::new(0),
            datagrams: AtomicU64::new(0),
            relays,
        };
        let mss = shared
            .tcp_info()
            .map(|i| i.tcpi_snd_mss as usize)
            .filter(|&m| m > 0)
            .unwrap_or_else(|| default_mss(remote));
        shared.max_datagram = max_datagram_for_mss(mss);
        let shared = Arc::new(shared);
        let (rd, wr) = tokio::io::split(tls);
        tokio::spawn(read_loop(rd, read, shared.clone(), control_tx));
        tokio::spawn(write_loop(wr, shared.clone(), datagrams_rx, control_rx));
        Ok(TcpLink {
            _handle: Arc::new(Handle(shared.clone())),
            shared,
        })
    }

    /// Identifies the link among the live ones.
    pub fn stable_id(&self) -> usize {
        Arc::as_ptr(&self.shared) as usize
    }

    pub fn remote_address(&self) -> SocketAddr {
        self.shared.remote
    }

    pub fn max_datagram_size(&self) -> usize {
        self.shared.max_datagram
    }

    /// A handle that sends relay frames on this link without keeping it open.
    pub fn frame_sender(&self) -> FrameSender {
        FrameSender(self.shared.clone())
    }

    fn check_size(&self, framed: &Bytes) -> Result<(), SendError> {
        if framed.len().saturating_sub(stream::LEN_PREFIX) > self.shared.max_datagram {
            return Err(SendError::TooLarge);
        }
        Ok(())
    }

    pub fn send_datagram(&self, framed: Bytes) -> Result<(), SendError> {
        self.check_size(&framed)?;
        match self.shared.datagrams_out.try_send(framed) {
            Ok(()) => {
                self.shared.datagrams.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                Err(SendError::Other("send queue full".into()))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SendError::Closed),
        }
    }

    pub async fn send_datagram_wait(&self, framed: Bytes) -> Result<(), SendError> {
        self.check_size(&framed)?;
        self.shared
            .datagrams_out
            .send(framed)
            .await
            .map_err(|_| SendError::Closed)?;
        self.shared.datagrams.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    pub async fn read_datagram(&self) -> Option<Bytes> {
        loop {
            {
                let mut q = self
                    .shared
                    .inbound
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                if let Some(d) = q.pop_front() {
                    if q.len() + 1 == INBOUND_QUEUE {
                        self.shared.inbound_space.notify_one();
                    }
                    return Some(d);
                }
            }
            if self.shared.is_closed() {
                return None;
            }
            self.shared.inbound_ready.notified().await;
        }
    }

    /// TCP's smoothed RTT.
    pub fn rtt(&self) -> Duration {
        let micros = self.shared.tcp_info().map_or(0, |i| i.tcpi_rtt);
        Duration::from_micros(u64::from(micros))
    }

    pub fn stats(&self) -> LinkStats {
        let mss = self.shared.tcp_info().map_or(0, |i| i.tcpi_snd_mss);
        LinkStats {
            rx_bytes: self.shared.rx_bytes.load(Ordering::Relaxed),
            tx_bytes: self.shared.tx_bytes.load(Ordering::Relaxed),
            datagrams: self.shared.datagrams.load(Ordering::Relaxed),
            path_mtu: u16::try_from(mss).unwrap_or(u16::MAX),
            black_hole: false,
        }
    }

    pub fn peer_certificates(&self) -> Option<Vec<CertificateDer<'static>>> {
        Some(self.shared.peer_certificates.clone()).filter(|c| !c.is_empty())
    }

    /// Closes the link: the peer gets a close record with `code` and `reason`.
    pub fn close(&self, code: CloseCode, reason: &str) {
        self.shared.close(code, reason);
    }

    pub fn close_reason(&self) -> Option<String> {
        self.shared.closed.borrow().clone()
    }

    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    pub fn closed_locally(&self) -> bool {
        self.shared.closed_locally.load(Ordering::Relaxed)
    }

    pub async fn closed(&self) -> String {
        let mut rx = self.shared.closed.subscribe();
        let reason = match rx.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            Err(_) => "closed".into(),
        };
        reason
    }

    /// The control stream: both ends have it from the start, whichever dialed.
    pub fn control(&self) -> Result<(TcpControlSend, TcpControlRecv)> {
        let recv = self
            .shared
            .control_in
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| anyhow!("the control stream of this link is taken"))?;
        Ok((
            TcpControlSend {
                out: self.shared.control_out.clone(),
                shared: self.shared.clone(),
            },
            TcpControlRecv(recv),
        ))
    }
}

/// Sends relay frames on a TCP link, for the relay table's next hops. Unlike a
/// [`TcpLink`] it does not keep the link open.
#[derive(Clone)]
pub struct FrameSender(Arc<Shared>);

impl std::fmt::Debug for FrameSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("FrameSender").field(&self.0.remote).finish()
    }
}

impl FrameSender {
    /// Identifies the link, as [`TcpLink::stable_id`] does.
    pub fn id(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }

    /// Queues one relay frame, made of `parts`, as a relay record; false if the link
    /// is closed or its queue full (the frame is lost, as on a full UDP socket).
    pub fn send_relay(&self, parts: &[&[u8]]) -> bool {
        let len = parts.iter().map(|p| p.len()).sum();
        let Ok(prefix) = stream::relay_prefix(len) else {
            return false;
        };
        let mut record = BytesMut::with_capacity(stream::RELAY_PREFIX + len);
        record.extend_from_slice(&prefix);
        for p in parts {
            record.extend_from_slice(p);
        }
        self.send_record(record.freeze())
    }

    /// Queues a whole relay record, prefix included, as it arrived on another link.
    pub fn send_record(&self, record: Bytes) -> bool {
        !self.0.is_closed() && self.0.datagrams_out.try_send(record).is_ok()
    }
}

/// The sending half of a TCP link's control stream.
pub struct TcpControlSend {
    out: mpsc::UnboundedSender<Outgoing>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for TcpControlSend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TcpControlSend")
    }
}

impl TcpControlSend {
    /// Sends the control frames in `frames` (each as [`Message::encode`] writes it),
    /// one record each.
    pub fn write_frames(&mut self, mut frames: &[u8]) -> Result<(), WriteError> {
        if self.shared.is_closed() {
            return Err(WriteError::Lost);
        }
        while !frames.is_empty() {
            let Some(header) = frames.first_chunk::<FRAME_HEADER_LEN>() else {
                return Err(WriteError::Lost);
            };
            let len = Message::frame_len(*header).map_err(|_| WriteError::Lost)?;
            let Some(frame) = frames.get(..FRAME_HEADER_LEN + len) else {
                return Err(WriteError::Lost);
            };
            let mut record = Vec::with_capacity(frame.len() + 1);
            stream::push_control(frame, &mut record).map_err(|_| WriteError::Lost)?;
            self.out
                .send(Outgoing::Control(record))
                .map_err(|_| WriteError::Lost)?;
            frames = &frames[frame.len()..];
        }
        Ok(())
    }
}

/// The receiving half of a TCP link's control stream: control frame bodies.
#[derive(Debug)]
pub struct TcpControlRecv(mpsc::Receiver<Bytes>);

impl TcpControlRecv {
    /// The next control frame's body; `None` once the link is closed.
    pub async fn next(&mut self) -> Option<Bytes> {
        self.0.recv().await
    }
}

/// Splits the stream into records: datagrams into the inbound queue, control bodies to
/// the control stream, a close record closes the link. Anything malformed closes it
/// as a protocol violation.
async fn read_loop(
    mut rd: ReadHalf<TlsStream<TcpStream>>,
    mut buf: BytesMut,
    shared: Arc<Shared>,
    control: mpsc::Sender<Bytes>,
) {
    buf.reserve(READ_CHUNK);
    let mut closed = shared.closed.subscribe();
    let reason = 'read: loop {
        while let Some(len) = stream::record_len(&buf) {
            let len = match len {
                Ok(len) => len,
                Err(e) => break 'read violation(&shared, e),
            };
            if buf.len() < len {
                break;
            }
            let record = buf.split_to(len);
            match stream::parse(&record[stream::LEN_PREFIX..]) {
                Ok(Record::Datagram(_)) => {
                    shared.datagrams.fetch_add(1, Ordering::Relaxed);
                    let datagram = record.freeze().slice(stream::LEN_PREFIX..);
                    if !push_inbound(&shared, datagram).await {
                        return;
                    }
                }
                // Taken as it came, prefix and all: forwarded on a TCP link unchanged.
                Ok(Record::Relay(_)) => shared.relays.from_stream(record),
                Ok(Record::Control(_)) => {
                    let body = record.freeze().slice(stream::LEN_PREFIX + 1..);
                    if control.send(body).await.is_err() {
                        // Nobody reads the control stream any more: the session ended.
                        shared.close(CloseCode::Shutdown, "control stream not read");
                        return;
                    }
                }
                Ok(Record::Close { code, reason }) => {
                    let reason = String::from_utf8_lossy(reason);
                    break 'read if reason.is_empty() {
                        format!("closed by peer: {code}")
                    } else {
                        format!("closed by peer: {}", Escaped(&reason))
                    };
                }
                Err(e) => break 'read violation(&shared, e),
            }
        }
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        tokio::select! {
            read = rd.read_buf(&mut buf) => match read {
                Ok(0) => break "the TCP connection ended without a close record".to_owned(),
                Ok(n) => {
                    shared.rx_bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) => break format!("TLS/TCP error: {}", Escaped(&e.to_string())),
            },
            _ = async { closed.wait_for(Option::is_some).await.is_ok() } => return,
        }
    };
    shared.set_closed(reason, false);
}

/// Closes the link for a malformed record; returns the reason.
fn violation(shared: &Shared, e: stream::RecordError) -> String {
    let reason = format!("malformed record: {e}");
    if shared.close(CloseCode::ProtocolViolation, &reason) {
        warn!(remote = %shared.remote, %reason, "closing link: protocol violation");
    }
    reason
}

/// Queues a received datagram, waiting while the queue is full; false once the link
/// closed meanwhile.
async fn push_inbound(shared: &Shared, datagram: Bytes) -> bool {
    let mut datagram = Some(datagram);
    loop {
        {
            let mut q = shared.inbound.lock().unwrap_or_else(|p| p.into_inner());
            if q.len() < INBOUND_QUEUE {
                q.extend(datagram.take());
                drop(q);
                shared.inbound_ready.notify_one();
                return true;
            }
        }
        if shared.is_closed() {
            return false;
        }
        shared.inbound_space.notified().await;
    }
}

/// Writes what is queued, control first, in batches; ends after a close record, or
/// when the link closed otherwise.
async fn write_loop(
    mut wr: WriteHalf<TlsStream<TcpStream>>,
    shared: Arc<Shared>,
    mut datagrams: mpsc::Receiver<Bytes>,
    mut control: mpsc::UnboundedReceiver<Outgoing>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(WRITE_BATCH + 2048);
    let mut closed = shared.closed.subscribe();
    loop {
        // A close record is the last: `closed` is set before it is queued, so the
        // control queue is looked at first.
        let mut last = false;
        tokio::select! {
            biased;
            record = control.recv() => match record {
                Some(r) => last = r.append_to(&mut buf),
                None => return,
            },
            d = datagrams.recv() => match d {
                Some(d) => buf.extend_from_slice(&d),
                None => return,
            },
            _ = async { closed.wait_for(Option::is_some).await.is_ok() },
                if !shared.closed_locally.load(Ordering::Relaxed) => {
                let _ = wr.shutdown().await;
                return;
            }
        }
        while !last && buf.len() < WRITE_BATCH {
            if let Ok(r) = control.try_recv() {
                last = r.append_to(&mut buf);
            } else if let Ok(d) = datagrams.try_recv() {
                buf.extend_from_slice(&d);
            } else {
                break;
            }
        }
        let written = async {
            wr.write_all(&buf).await?;
            wr.flush().await
        };
        if let Err(e) = written.await {
            shared.set_closed(format!("TLS/TCP error: {}", Escaped(&e.to_string())), false);
            return;
        }
        shared
            .tx_bytes
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        buf.clear();
        if last {
            let _ = tokio::time::timeout(Duration::from_secs(1), wr.shutdown()).await;
            return;
        }
    }
}

/// A record for the writer's control queue.
#[derive(Debug)]
enum Outgoing {
    Control(Vec<u8>),
    /// The last record: the writer ends the stream after it.
    Close(Vec<u8>),
}

impl Outgoing {
    /// Appends the record to `buf`; true if it is the last.
    fn append_to(self, buf: &mut Vec<u8>) -> bool {
        match self {
            Outgoing::Control(r) => {
                buf.extend_from_slice(&r);
                false
            }
            Outgoing::Close(r) => {
                buf.extend_from_slice(&r);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_size_packet_fits_one_segment_of_a_1500_byte_path() {
        let v4: SocketAddr = "192.0.2.1:443".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        assert_eq!(default_mss(v4), 1448);
        assert_eq!(default_mss(v6), 1428);
        let header = quicap_wire::overlay::BASE_LEN;
        assert_eq!(max_datagram_for_mss(default_mss(v4)) - header, 1420);
        assert_eq!(max_datagram_for_mss(default_mss(v6)) - header, 1400);
        assert_eq!(max_datagram_for_mss(100_000), stream::MAX_BODY);
        assert_eq!(max_datagram_for_mss(10), 0);
    }
}
