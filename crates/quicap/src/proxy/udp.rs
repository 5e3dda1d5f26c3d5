//! UDP through the proxy: SOCKS5 UDP ASSOCIATE at the ingress, a UDP socket per
//! association at the egress, and the payloads between them in datagrams of the link
//! (see [`quicap_wire::flow`]).
//!
//! ```text
//!  app ──UDP (SOCKS5 header)──> association socket ──link datagram: id, target, data──> egress
//!      <──UDP (SOCKS5 header)──  (ingress)        <──link datagram: id|R, source, data── socket ──UDP──> target
//! ```
//!
//! Every association has a stream of its own on each link it uses (one per egress):
//! its opening asks the egress for it, its end ends it. Datagrams are routed to the
//! association by [`UdpFlows`], a table of (link, id) the link's receive loop reads; a
//! full queue drops the datagram, as UDP may.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use quicap_wire::flow::{self, REPLY_BIT};
use quicap_wire::socks::{self, Reply, Target};
use quicap_wire::{Header, NodeId, PayloadKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tracing::debug;

use super::socks::unspecified;
use super::Active;
use crate::config::ProxyListener;
use crate::daemon::Node;
use crate::link::{Link, LinkId};

/// Datagrams queued for one association before more are dropped.
const QUEUE: usize = 256;
/// An association of the egress that carried nothing for this long ends.
const IDLE: Duration = Duration::from_secs(120);
/// Host names an egress association keeps resolved.
const NAMES: usize = 64;
/// The largest UDP payload read from a socket.
const MAX_PAYLOAD: usize = 65_535;

/// Where the flow datagrams a link brings go: (link, id with the direction bit) to the
/// queue of the association.
#[derive(Debug, Default)]
pub struct UdpFlows {
    routes: Mutex<HashMap<(LinkId, u32), mpsc::Sender<Bytes>>>,
    next_id: AtomicU32,
}

impl UdpFlows {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(LinkId, u32), mpsc::Sender<Bytes>>> {
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands a flow datagram's payload (after the overlay header) from `link` to its
    /// association; false if there is none, or its queue is full.
    pub fn deliver(&self, link: LinkId, payload: Bytes) -> bool {
        let Some(id) = flow::datagram_id(&payload) else {
            return false;
        };
        let routes = self.lock();
        routes
            .get(&(link, id))
            .is_some_and(|tx| tx.try_send(payload).is_ok())
    }

    fn register(&self, link: LinkId, id: u32) -> Route<'_> {
        let (tx, rx) = mpsc::channel(QUEUE);
        self.lock().insert((link, id), tx);
        Route {
            flows: self,
            key: (link, id),
            rx,
        }
    }

    fn new_id(&self) -> u32 {
        self.next_id.fetch_add(1, Ordering::Relaxed) & !REPLY_BIT
    }
}

/// An association's entry in [`UdpFlows`], removed on drop.
pub(crate) struct Route<'a> {
    flows: &'a UdpFlows,
    key: (LinkId, u32),
    pub(crate) rx: mpsc::Receiver<Bytes>,
}

impl Drop for Route<'_> {
    fn drop(&mut self) {
        self.flows.lock().remove(&self.key);
    }
}

/// A flow datagram for `link`: the overlay header, `id`, the target or source, data.
pub(crate) fn datagram(id: u32, peer: &Target, data: &[u8]) -> Option<Bytes> {
    let header = Header::direct(PayloadKind::Flow);
    let mut out = vec![0u8; header.buffer_len()];
    header.emit(&mut out).ok()?;
    flow::push_datagram_head(id, peer, &mut out).ok()?;
    out.extend_from_slice(data);
    Some(Bytes::from(out))
}

pub(crate) fn send(link: &Link, datagram: Bytes) -> bool {
    match link.frame(datagram) {
        Some(framed) => link.send_datagram(framed).is_ok(),
        None => false,
    }
}

enum Event {
    /// A datagram of `n` bytes from the application at this address.
    FromApp(usize, SocketAddr),
    /// A datagram from an egress.
    Reply(Bytes),
}

/// One egress an association uses: its link, id there and stream.
pub(crate) struct Leg<'a> {
    pub(crate) link: Link,
    pub(crate) id: u32,
    pub(crate) route: Route<'a>,
    _stream: (quinn::SendStream, quinn::RecvStream),
    _open: super::FlowUse,
}

/// Serves a SOCKS5 UDP ASSOCIATE: a UDP socket beside the listener for the client's
/// datagrams, replies from the egresses back to it, until the client's TCP connection
/// ends.
pub async fn associate(node: &Node, listener: &ProxyListener, client: &mut TcpStream) {
    let counters = &node.proxy;
    let client_ip = match client.peer_addr() {
        Ok(a) => crate::transport::unmapped(a).ip(),
        Err(_) => return,
    };
    let socket = match UdpSocket::bind(SocketAddr::new(listener.listen.ip(), 0)).await {
        Ok(s) => s,
        Err(e) => {
            debug!(error = %e, "no UDP socket for an association");
            counters.count_failure(Reply::GeneralFailure);
            let _ = client
                .write_all(&socks::reply(Reply::GeneralFailure, unspecified()))
                .await;
            return;
        }
    };
    let bound = socket.local_addr().unwrap_or_else(|_| unspecified());
    if !super::socks::succeeded(client, bound).await {
        return;
    }
    let _active = Active::new(counters);
    let mut legs: HashMap<NodeId, Leg<'_>> = HashMap::new();
    let mut app: Option<SocketAddr> = None;
    let mut buf = vec![0u8; MAX_PAYLOAD];
    let mut eof = [0u8; 1];
    loop {
        let event = {
            // Replies of any egress, without a future per leg: each leg's queue polled.
            let reply = std::future::poll_fn(|cx| {
                for leg in legs.values_mut() {
                    if let std::task::Poll::Ready(Some(d)) = leg.route.rx.poll_recv(cx) {
                        return std::task::Poll::Ready(d);
                    }
                }
                std::task::Poll::Pending
            });
            tokio::select! {
                r = client.read(&mut eof) => match r {
                    // The association lives as long as the client's TCP connection
                    // (RFC 1928 section 7), which carries nothing more.
                    Ok(0) | Err(_) => break,
                    Ok(_) => continue,
                },
                r = socket.recv_from(&mut buf) => match r {
                    Ok((n, from)) => Event::FromApp(n, from),
                    Err(_) => continue,
                },
                d = reply => Event::Reply(d),
            }
        };
        match event {
            Event::FromApp(n, from) => {
                if crate::transport::unmapped(from).ip() != client_ip {
                    continue;
                }
                app = Some(from);
                let Ok(d) = socks::parse_udp(&buf[..n]) else {
                    counters.bad_requests.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let Some(egress) = pick(node, listener, &d.target, &mut legs).await else {
                    counters.count_failure(Reply::NetworkUnreachable);
                    continue;
                };
                let Some(leg) = legs.get(&egress) else {
                    continue;
                };
                if let Some(out) = datagram(leg.id, &d.target, d.payload) {
                    send(&leg.link, out);
                }
            }
            Event::Reply(d) => {
                let (Some(app), Ok((_, Target::Addr(from), data))) =
                    (app, flow::parse_datagram(&d))
                else {
                    continue;
                };
                let mut out = Vec::with_capacity(data.len() + 22);
                socks::udp_header(from, &mut out);
                out.extend_from_slice(data);
                let _ = socket.send_to(&out, app).await;
            }
        }
    }
    for (_, mut leg) in legs.drain() {
        leg.finish();
    }
}

/// The egress a datagram to `target` goes to, with a leg opened there if none is yet:
/// the listener's egress nodes in order, or the owner of the destination's prefix.
async fn pick<'a>(
    node: &'a Node,
    listener: &ProxyListener,
    target: &Target,
    legs: &mut HashMap<NodeId, Leg<'a>>,
) -> Option<NodeId> {
    let candidates: Vec<NodeId> = if listener.egress.is_empty() {
        vec![super::owner(node, target).await.ok()?]
    } else {
        listener
            .egress
            .iter()
            .map(|n| quicap_pki::node_id(n))
            .collect()
    };
    for id in candidates {
        if let Some(leg) = legs.get(&id) {
            if !leg.link.is_closed() {
                return Some(id);
            }
            legs.remove(&id);
        }
        match open_leg(node, id, None).await {
            Ok(leg) => {
                legs.insert(id, leg);
                return Some(id);
            }
            Err(reply) => debug!(egress = %id, reply = reply.as_str(), "no UDP association there"),
        }
    }
    None
}

impl Leg<'_> {
    /// Ends the association at the egress.
    pub(crate) fn finish(&mut self) {
        let _ = self._stream.0.finish();
    }
}

/// Opens an association at `egress`; for `target` alone if given (the egress then
/// refuses a target its policy does not allow at once).
pub(crate) async fn open_leg<'a>(
    node: &'a Node,
    egress: NodeId,
    target: Option<&Target>,
) -> Result<Leg<'a>, Reply> {
    let id = node.udp.new_id();
    let opening = match target {
        None => flow::open_udp(id).map(|o| o.to_vec()),
        Some(t) => flow::open_udp_to(id, t),
    }
    .map_err(|_| Reply::GeneralFailure)?;
    // Registered before the egress can answer, so that no early reply is lost.
    let mut route = None;
    let (link, send, recv) = super::open_stream(node, egress, &opening, |link| {
        route = Some(node.udp.register(link.id(), id | REPLY_BIT));
    })
    .await?;
    let route = route.ok_or(Reply::GeneralFailure)?;
    Ok(Leg {
        link,
        id,
        route,
        _stream: (send, recv),
        _open: node.flow_peers.open(egress),
    })
}

/// The egress side of an association `id` a peer opened on `link`: a UDP socket, the
/// peer's datagrams sent from it where the policy allows, its replies back, until the
/// stream ends or nothing passes for [`IDLE`].
pub async fn serve_association(
    node: &Node,
    link: &Link,
    (id, only): (u32, Option<Target>),
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let counters = &node.proxy;
    let allowed = node.own_cert().authorization.egress && node.egress.is_some();
    let socket = match allowed {
        true => UdpSocket::bind("[::]:0").await.ok(),
        false => None,
    };
    let refused = match (&socket, node.egress.as_ref(), &only) {
        (Some(_), Some(policy), Some(target)) => {
            // An association for one target: refused now if the policy refuses it.
            let checked =
                tokio::time::timeout(super::CONNECT_TIMEOUT, super::resolve(policy, target)).await;
            match checked {
                Ok(Ok(_)) => None,
                Ok(Err(reply)) => Some(reply),
                Err(_) => Some(Reply::TtlExpired),
            }
        }
        (Some(_), Some(_), None) => None,
        _ => Some(Reply::NotAllowed),
    };
    let (Some(socket), Some(policy), None) = (socket, node.egress.as_ref(), refused) else {
        counters.egress_refused.fetch_add(1, Ordering::Relaxed);
        let reply = refused.unwrap_or(Reply::NotAllowed);
        let _ = send.write_all(&flow::status(reply)).await;
        let _ = send.finish();
        return;
    };
    let mut route = node.udp.register(link.id(), id);
    if send
        .write_all(&flow::status(Reply::Succeeded))
        .await
        .is_err()
    {
        return;
    }
    counters.egress_flows.fetch_add(1, Ordering::Relaxed);
    let mut names: HashMap<String, Vec<SocketAddr>> = HashMap::new();
    let mut buf = vec![0u8; MAX_PAYLOAD];
    let mut end = [0u8; 1];
    loop {
        tokio::select! {
            r = recv.read(&mut end) => {
                if !matches!(r, Ok(Some(n)) if n > 0) {
                    break;
                }
            }
            d = route.rx.recv() => {
                let Some(d) = d else { break };
                let Ok((_, target, data)) = flow::parse_datagram(&d) else {
                    continue;
                };
                let addrs = match &target {
                    Target::Addr(a) => vec![*a],
                    Target::Name(name, _) => match names.get(name) {
                        Some(a) => a.clone(),
                        None => {
                            if names.len() >= NAMES {
                                names.clear();
                            }
                            let found = super::resolve(policy, &target).await.unwrap_or_default();
                            names.insert(name.clone(), found.clone());
                            found
                        }
                    },
                };
                let Some(to) = addrs.into_iter().find(|a| policy.allows(*a)) else {
                    counters.egress_refused.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let _ = socket.send_to(data, mapped(to)).await;
            }
            r = socket.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                let from = crate::transport::unmapped(from);
                if let Some(out) = datagram(id | REPLY_BIT, &Target::Addr(from), &buf[..n]) {
                    send_reply(link, out);
                }
            }
            () = tokio::time::sleep(IDLE) => break,
        }
    }
    let _ = send.finish();
}

fn send_reply(link: &Link, datagram: Bytes) {
    if !send(link, datagram) {
        debug!("UDP reply not sent on the link");
    }
}

/// An IPv4 address as the dual-stack socket sends to it.
pub(crate) fn mapped(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(v4) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()),
        v6 => v6,
    }
}
