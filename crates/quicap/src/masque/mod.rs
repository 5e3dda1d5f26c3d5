//! The MASQUE proxy of the HTTP/3 front: CONNECT-UDP (RFC 9298, [`udp`]) and
//! CONNECT-IP (RFC 9484, [`ip`]) for standard clients, with HTTP Datagrams and the
//! Capsule Protocol (RFC 9297).
//!
//! ```text
//!  client ──QUIC──> HTTP/3 front ── extended CONNECT, credentials ──> admitted?
//!                        │ no: the site's answer, as to anyone (never a 407)
//!                        └ yes: 200, capsule-protocol: ?1
//!  payloads:  QUIC DATAGRAM (quarter stream ID, context 0, payload)  ──┐
//!             DATAGRAM capsules on the request stream                ──┴─> session
//!  answers go back the way the client sends: capsules once it sent one, datagrams
//!  otherwise, a capsule for what no datagram can carry.
//! ```
//!
//! A client is admitted by a bearer token or a Basic username and password of
//! `[masque]`, or, with `nodes = true`, by a Concealed proof (RFC 9729) of a node
//! certificate of this network, in `Authorization` or `Proxy-Authorization`. A
//! CONNECT-IP with a Concealed proof to the path of node links is a node link, not a
//! proxy session (see [`crate::camouflage::h3`]). Everything a client sends that this
//! proxy cannot use is dropped and counted, for `quicap status`; only that request is
//! affected.

pub mod ip;
pub mod udp;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::{Buf, Bytes, BytesMut};
use h3::ext::Protocol;
use h3::server::RequestStream;
use http::{header, HeaderValue, Method, StatusCode};
use quicap_wire::masque::{self as wire, MasqueError, DATAGRAM_CAPSULE};
use tokio::sync::mpsc;
use tracing::debug;

use crate::camouflage::auth;
use crate::config::MasqueSection;
use crate::daemon::Node;

/// HTTP Datagrams queued for one session before more are dropped.
const QUEUE: usize = 512;

/// The MASQUE proxy of a node: its config, counters, and the addresses of CONNECT-IP.
#[derive(Debug)]
pub struct Masque {
    pub config: MasqueSection,
    pub counters: MasqueCounters,
    pub pool: ip::Pool,
}

impl Masque {
    /// `reserved`: addresses of this node that no client gets.
    pub fn new(config: MasqueSection, reserved: Vec<std::net::IpAddr>) -> Masque {
        let pool = ip::Pool::new(config.addresses.clone(), reserved);
        Masque {
            config,
            counters: MasqueCounters::default(),
            pool,
        }
    }
}

impl Masque {
    pub fn status(&self) -> crate::status::MasqueStatus {
        let c = &self.counters;
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        crate::status::MasqueStatus {
            udp_sessions: load(&c.udp_sessions),
            ip_sessions: load(&c.ip_sessions),
            active: load(&c.active),
            addresses: self.pool.prefixes().iter().map(|p| p.to_string()).collect(),
            unauthenticated: load(&c.unauthenticated),
            refused: load(&c.refused),
            bad_capsules: load(&c.bad_capsules),
            unknown_context: load(&c.unknown_context),
            no_session: load(&c.no_session),
            oversized: load(&c.oversized),
            spoofed: load(&c.spoofed),
        }
    }
}

/// What the MASQUE proxy did, for `quicap status`.
#[derive(Debug, Default)]
pub struct MasqueCounters {
    pub udp_sessions: AtomicU64,
    pub ip_sessions: AtomicU64,
    pub active: AtomicU64,
    /// MASQUE requests without credentials that admit them (answered as the site).
    pub unauthenticated: AtomicU64,
    /// Admitted requests refused: a malformed path, a destination the policy refuses,
    /// an egress out of reach, an IPv6 session on a path too small for it.
    pub refused: AtomicU64,
    /// Sessions ended for a malformed capsule.
    pub bad_capsules: AtomicU64,
    /// Datagrams dropped: an unknown context ID, no session for their stream, larger
    /// than the destination takes, a source address the client was not assigned.
    pub unknown_context: AtomicU64,
    pub no_session: AtomicU64,
    pub oversized: AtomicU64,
    pub spoofed: AtomicU64,
}

fn count(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Counts a session as open while it lives.
struct Active<'a>(&'a AtomicU64);

impl<'a> Active<'a> {
    fn new(c: &'a AtomicU64) -> Self {
        c.fetch_add(1, Ordering::Relaxed);
        Active(c)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pub type Stream = RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;
type SendHalf = RequestStream<h3_quinn::SendStream<Bytes>, Bytes>;
type RecvHalf = RequestStream<h3_quinn::RecvStream, Bytes>;

/// The sessions of one QUIC connection: where its HTTP Datagrams go, by request
/// stream. Created when its first session is admitted; from then on this connection's
/// datagrams are read here (a connection carries a node link or MASQUE sessions,
/// never both).
#[derive(Debug, Default)]
pub struct Sessions {
    routes: Mutex<HashMap<u64, mpsc::Sender<(u64, Bytes)>>>,
    reading: AtomicBool,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, mpsc::Sender<(u64, Bytes)>>> {
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A session's entry in [`Sessions`], removed on drop.
struct Route {
    sessions: Arc<Sessions>,
    stream_id: u64,
}

impl Drop for Route {
    fn drop(&mut self) {
        self.sessions.lock().remove(&self.stream_id);
    }
}

/// Reads `conn`'s datagrams into the sessions' queues until it closes.
async fn read_datagrams(conn: quinn::Connection, sessions: Arc<Sessions>, node: Arc<Node>) {
    let Some(masque) = node.masque.as_ref() else {
        return;
    };
    while let Ok(d) = conn.read_datagram().await {
        let Ok(parsed) = wire::parse_datagram(&d) else {
            count(&masque.counters.no_session);
            continue;
        };
        let offset = d.len() - parsed.payload.len();
        let (stream_id, context) = (parsed.stream_id, parsed.context_id);
        let delivered = sessions
            .lock()
            .get(&stream_id)
            .is_some_and(|tx| tx.try_send((context, d.slice(offset..))).is_ok());
        if !delivered {
            count(&masque.counters.no_session);
        }
    }
}

/// Whether a request asks for a MASQUE session (and so is this proxy's to answer or
/// hand back to the site).
pub fn is_request(parts: &http::request::Parts) -> bool {
    parts.method == Method::CONNECT
        && matches!(
            parts.extensions.get::<Protocol>(),
            Some(p) if *p == Protocol::CONNECT_UDP || *p == Protocol::CONNECT_IP
        )
}

/// What a request needs to become a session: the node, its connection and the
/// connection's sessions.
pub struct Front {
    pub node: Arc<Node>,
    pub conn: quinn::Connection,
    pub sessions: Arc<Sessions>,
    /// Set once the connection carries a node link or MASQUE sessions.
    pub linked: Arc<AtomicBool>,
    /// The site's `Server` header, for the answers.
    pub server: Option<HeaderValue>,
}

impl Front {
    /// Serves a MASQUE request; gives the stream back (for the site's answer) if its
    /// credentials admit nobody or the connection carries a node link.
    pub async fn serve(&self, parts: &http::request::Parts, stream: Stream) -> Option<Stream> {
        let masque = self.node.masque.as_ref()?;
        let Some(who) = self.admits(masque, parts) else {
            count(&masque.counters.unauthenticated);
            return Some(stream);
        };
        // The first session claims the connection's datagrams, unless a node link has.
        if !self.sessions.reading.load(Ordering::Acquire) {
            if self.linked.swap(true, Ordering::AcqRel) {
                debug!(remote = %self.conn.remote_address(), "MASQUE request on a node link's connection: answered as the site");
                return Some(stream);
            }
            self.sessions.reading.store(true, Ordering::Release);
            tokio::spawn(read_datagrams(
                self.conn.clone(),
                self.sessions.clone(),
                self.node.clone(),
            ));
        }
        let stream_id = stream.id().into_inner();
        let (tx, rx) = mpsc::channel(QUEUE);
        self.sessions.lock().insert(stream_id, tx);
        let route = Route {
            sessions: self.sessions.clone(),
            stream_id,
        };
        let (send, recv) = stream.split();
        let prefix = match wire::context_prefix(stream_id, wire::IP_PACKET_CONTEXT) {
            Ok(p) => p,
            Err(_) => return None,
        };
        let capsules = Arc::new(AtomicBool::new(false));
        let tunnel = Tunnel {
            out: Outgoing {
                conn: self.conn.clone(),
                send,
                prefix,
                capsules: capsules.clone(),
                server: self.server.clone(),
            },
            incoming: Incoming {
                recv,
                datagrams: rx,
                raw: BytesMut::new(),
                capsules,
                node: self.node.clone(),
                _route: route,
            },
        };
        let protocol = parts.extensions.get::<Protocol>().copied();
        if protocol == Some(Protocol::CONNECT_UDP) {
            udp::serve(&self.node, masque, &who, parts.uri.path(), tunnel).await;
        } else {
            ip::serve(&self.node, masque, &who, parts.uri.path(), tunnel).await;
        }
        None
    }

    /// Who the request's credentials name, if they admit it.
    fn admits(&self, masque: &Masque, parts: &http::request::Parts) -> Option<String> {
        let config = &masque.config;
        for name in [header::AUTHORIZATION, header::PROXY_AUTHORIZATION] {
            let Some(value) = parts.headers.get(&name) else {
                continue;
            };
            let bytes = value.as_bytes();
            let (scheme, rest) = match bytes.iter().position(|b| *b == b' ') {
                Some(i) => (&bytes[..i], bytes[i + 1..].trim_ascii()),
                None => continue,
            };
            if scheme.eq_ignore_ascii_case(b"bearer") {
                if let Some(i) = config.tokens.iter().position(|t| same(t.as_bytes(), rest)) {
                    return Some(format!("token {}", i + 1));
                }
            } else if scheme.eq_ignore_ascii_case(b"basic") {
                let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest) else {
                    continue;
                };
                let Some(colon) = decoded.iter().position(|b| *b == b':') else {
                    continue;
                };
                let (user, pass) = (&decoded[..colon], &decoded[colon + 1..]);
                if let Some((u, _)) = config
                    .users
                    .iter()
                    .find(|(u, p)| same(u.as_bytes(), user) & same(p.as_bytes(), pass))
                {
                    return Some(format!("user {}", quicap_wire::Escaped(u)));
                }
            } else if scheme.eq_ignore_ascii_case(b"concealed") && config.nodes {
                let authority = parts.uri.authority().map(|a| a.as_str()).unwrap_or("");
                let trust = self.node.trust();
                match auth::check(
                    &self.conn,
                    bytes,
                    &auth::origin(authority, auth::DIALER_REALM),
                    (&trust.ca, trust.crl.as_ref()),
                    time::OffsetDateTime::now_utc(),
                ) {
                    Ok(cert) => return Some(format!("node {}", quicap_wire::Escaped(cert.name()))),
                    Err(why) => {
                        debug!(remote = %self.conn.remote_address(), reason = %why, "MASQUE proof refused")
                    }
                }
            }
        }
        None
    }
}

/// Compares two secrets in time that depends on their lengths only.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A session's request stream and datagrams, both ways.
pub struct Tunnel {
    pub out: Outgoing,
    pub incoming: Incoming,
}

/// What a client sent.
#[derive(Debug)]
pub enum In {
    /// The payload of an HTTP Datagram in context 0 (a UDP payload, an IP packet), in
    /// a QUIC datagram or a DATAGRAM capsule.
    Payload(Bytes),
    /// A capsule of another type.
    Capsule(u64, Bytes),
    /// The request stream ended: so does the session.
    End,
    /// A malformed capsule: the session ends with H3_DATAGRAM_ERROR.
    Malformed(MasqueError),
}

/// The client's side of a session: its request stream, read as capsules, and its
/// datagrams.
pub struct Incoming {
    recv: RecvHalf,
    datagrams: mpsc::Receiver<(u64, Bytes)>,
    raw: BytesMut,
    /// Set once the client sends a DATAGRAM capsule: the answers go in capsules too.
    capsules: Arc<AtomicBool>,
    /// Whose counters count what is dropped.
    node: Arc<Node>,
    _route: Route,
}

impl Incoming {
    /// The next thing the client sent (cancel-safe). Datagrams in contexts other than
    /// 0, which this proxy never registers (RFC 9298 section 4, RFC 9484 section 6),
    /// are dropped and counted.
    pub async fn next(&mut self) -> In {
        loop {
            match self.next_any().await {
                Any::Datagram {
                    context: 0,
                    payload,
                } => return In::Payload(payload),
                Any::Datagram { .. } => {
                    if let Some(m) = self.node.masque.as_ref() {
                        count(&m.counters.unknown_context);
                    }
                }
                Any::Capsule(kind, value) => return In::Capsule(kind, value),
                Any::End => return In::End,
                Any::Malformed(e) => return In::Malformed(e),
            }
        }
    }

    async fn next_any(&mut self) -> Any {
        loop {
            match wire::parse_capsule(&self.raw) {
                Ok(Some(c)) => {
                    let (kind, len, value_len) = (c.kind, c.len, c.value.len());
                    let value = self.raw.split_to(len).freeze().slice(len - value_len..);
                    if kind != DATAGRAM_CAPSULE {
                        return Any::Capsule(kind, value);
                    }
                    self.capsules.store(true, Ordering::Relaxed);
                    return match wire::read_varint(&value) {
                        Ok((context, n)) => Any::Datagram {
                            context,
                            payload: value.slice(n..),
                        },
                        Err(e) => Any::Malformed(e),
                    };
                }
                Ok(None) => {}
                Err(e) => return Any::Malformed(e),
            }
            let data = std::future::poll_fn(|cx| self.recv.poll_recv_data(cx));
            tokio::select! {
                d = self.datagrams.recv() => match d {
                    Some((context, payload)) => return Any::Datagram { context, payload },
                    None => return Any::End,
                },
                r = data => match r {
                    Ok(Some(mut chunk)) => {
                        while chunk.has_remaining() {
                            let part = chunk.chunk();
                            self.raw.extend_from_slice(part);
                            let n = part.len();
                            chunk.advance(n);
                        }
                    }
                    Ok(None) | Err(_) => return Any::End,
                },
            }
        }
    }
}

/// What [`Incoming::next_any`] read: an HTTP Datagram of any context, or what
/// [`In`] passes on.
enum Any {
    Datagram { context: u64, payload: Bytes },
    Capsule(u64, Bytes),
    End,
    Malformed(MasqueError),
}

/// The proxy's side of a session: its answer, then payloads and capsules to the
/// client.
pub struct Outgoing {
    conn: quinn::Connection,
    send: SendHalf,
    /// The datagram prefix of context 0 on this request stream.
    prefix: Vec<u8>,
    /// The client sends capsules: so does the proxy.
    capsules: Arc<AtomicBool>,
    server: Option<HeaderValue>,
}

impl Outgoing {
    /// The answer that opens the session.
    pub async fn accept(&mut self) -> bool {
        let mut response = http::Response::new(());
        self.headers(&mut response);
        response
            .headers_mut()
            .insert("capsule-protocol", HeaderValue::from_static("?1"));
        self.send.send_response(response).await.is_ok()
    }

    /// A refusal of an admitted request, counted and logged: `status`, and the reason
    /// in `Proxy-Status` (RFC 9209).
    pub async fn refuse(
        &mut self,
        (counters, who): (&MasqueCounters, &str),
        status: StatusCode,
        error: &str,
        details: &str,
    ) {
        count(&counters.refused);
        debug!(%who, %status, error, details, "MASQUE request refused");
        let mut response = http::Response::new(());
        *response.status_mut() = status;
        self.headers(&mut response);
        let value = format!("quicap; error={error}; details=\"{details}\"");
        if let Ok(v) = HeaderValue::from_str(&value) {
            response.headers_mut().insert("proxy-status", v);
        }
        if self.send.send_response(response).await.is_ok() {
            let _ = self.send.finish().await;
        }
    }

    fn headers(&self, response: &mut http::Response<()>) {
        if let Some(server) = &self.server {
            response
                .headers_mut()
                .insert(header::SERVER, server.clone());
        }
    }

    /// The largest payload a datagram to the client carries now (0: none).
    pub fn datagram_room(&self) -> usize {
        self.conn
            .max_datagram_size()
            .map_or(0, |m| m.saturating_sub(self.prefix.len()))
    }

    /// Sends a payload in context 0: a datagram, or a DATAGRAM capsule when the client
    /// sends those or no datagram carries it.
    pub async fn payload(&mut self, payload: &[u8]) -> Result<(), ()> {
        if !self.capsules.load(Ordering::Relaxed) && payload.len() <= self.datagram_room() {
            let mut d = Vec::with_capacity(self.prefix.len() + payload.len());
            d.extend_from_slice(&self.prefix);
            d.extend_from_slice(payload);
            match self.conn.send_datagram(Bytes::from(d)) {
                Ok(()) => return Ok(()),
                Err(quinn::SendDatagramError::TooLarge) => {}
                Err(_) => return Err(()),
            }
        }
        let mut value = Vec::with_capacity(1 + payload.len());
        value.push(0);
        value.extend_from_slice(payload);
        self.capsule(DATAGRAM_CAPSULE, &value).await
    }

    /// Sends a capsule on the request stream.
    pub async fn capsule(&mut self, kind: u64, value: &[u8]) -> Result<(), ()> {
        let mut out = Vec::with_capacity(value.len() + 16);
        wire::put_capsule(kind, value, &mut out).map_err(|_| ())?;
        self.send.send_data(Bytes::from(out)).await.map_err(|_| ())
    }

    /// Ends the session for a malformed capsule of the client's, counted.
    pub fn abort(&mut self, counters: &MasqueCounters, who: &str, error: &MasqueError) {
        count(&counters.bad_capsules);
        debug!(%who, %error, "MASQUE session ended: malformed capsule");
        self.send.stop_stream(h3::error::Code::H3_DATAGRAM_ERROR);
    }

    pub async fn finish(&mut self) {
        let _ = self.send.finish().await;
    }
}

impl std::fmt::Debug for Front {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Front")
            .field("remote", &self.conn.remote_address())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel")
            .field("out", &self.out)
            .field("incoming", &self.incoming)
            .finish()
    }
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("buffered", &self.raw.len())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("capsules", &self.capsules.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}
