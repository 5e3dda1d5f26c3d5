//! The application-layer proxy: flows that enter the mesh at a node's proxy listener
//! ([`socks`], [`http`]) and leave it at an egress node, each TCP flow on a QUIC stream
//! of the link between the two (see [`quicap_wire::flow`]).
//!
//! ```text
//!  app ──TCP──> listener (ingress) ──QUIC stream: kind, target──> egress ──TCP──> target
//!                 SOCKS5 / HTTP     <──status (SOCKS5 reply code)──  resolves, checks
//!                                                                    its [egress] policy
//! ```
//!
//! The ingress picks the egress: the listener's `egress` nodes in order, or the node
//! that advertises the destination's prefix, and only a node whose certificate grants
//! egress. The egress serves a flow only if its own certificate grants egress and its
//! `[egress]` policy allows the destination's address and port; it resolves host names
//! itself. A flow's failure is that flow's: a reset stream, a reply code to its client,
//! a counter in `quicap status`.

pub mod http;
pub mod socks;
pub mod udp;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quicap_wire::flow::{self, Opening};
use quicap_wire::socks::{Reply, Target};
use quicap_wire::NodeId;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::debug;

use crate::config::{EgressSection, ProxyListener, ProxyProtocol};
use crate::daemon::Node;
use crate::link::Link;

/// How long a flow may take to reach its target (resolution and TCP handshake at the
/// egress, or the egress's answer at the ingress).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a relayed link to an egress that is no neighbour may take to come up.
const LINK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client or a peer may take to send a request or a flow's opening.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the proxy did, for `quicap status`.
#[derive(Debug, Default)]
pub struct ProxyCounters {
    /// Flows opened from this node's listeners, and those open now.
    pub flows: AtomicU64,
    pub active: AtomicU64,
    /// Flows refused or failed before their data, by SOCKS5 reply code (index).
    pub failed: [AtomicU64; 9],
    /// Requests from clients this node could not read (malformed, wrong credentials).
    pub bad_requests: AtomicU64,
    /// Flows of other nodes that left the mesh here, and those refused here.
    pub egress_flows: AtomicU64,
    pub egress_refused: AtomicU64,
}

impl ProxyCounters {
    pub fn count_failure(&self, reply: Reply) {
        if let Some(c) = self.failed.get(reply as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// An open flow toward its target: a QUIC stream to the egress, or, when this node is
/// the egress, the TCP connection itself.
#[derive(Debug)]
pub enum FlowIo {
    Stream(quinn::SendStream, quinn::RecvStream, FlowUse),
    Local(TcpStream),
}

/// How long a relayed link that carried flows to a neighbour is kept after the last
/// one ended (or after it came up, before the first).
const FLOW_RELAY_KEEP: Duration = Duration::from_secs(60);

/// The flows open with each peer, and when the last one ended. A neighbour whose
/// direct links are HTTP/3 or TLS/TCP links (no QUIC streams of their own) carries
/// flows on an end-to-end relayed QUIC link through the direct one; routing keeps
/// that link while [`FlowPeers::keeps`] names the peer.
#[derive(Debug, Default)]
pub struct FlowPeers(Mutex<HashMap<NodeId, (u32, Instant)>>);

impl FlowPeers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, (u32, Instant)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a flow with `id` while the guard lives.
    pub fn open(self: &Arc<Self>, id: NodeId) -> FlowUse {
        let mut peers = self.lock();
        let entry = peers.entry(id).or_insert((0, Instant::now()));
        entry.0 += 1;
        FlowUse {
            peers: self.clone(),
            id,
        }
    }

    /// A relayed link to `id` for flows came up: kept a while for its first flow.
    pub fn touch(&self, id: NodeId) {
        self.lock().entry(id).or_insert((0, Instant::now())).1 = Instant::now();
    }

    /// Peers with open flows or flows lately; forgets the others.
    pub fn keeps(&self) -> Vec<NodeId> {
        let mut peers = self.lock();
        peers.retain(|_, (open, last)| *open > 0 || last.elapsed() < FLOW_RELAY_KEEP);
        peers.keys().copied().collect()
    }
}

/// One open flow with a peer (see [`FlowPeers`]).
#[derive(Debug)]
pub struct FlowUse {
    peers: Arc<FlowPeers>,
    id: NodeId,
}

impl Drop for FlowUse {
    fn drop(&mut self) {
        if let Some(entry) = self.peers.lock().get_mut(&self.id) {
            entry.0 = entry.0.saturating_sub(1);
            entry.1 = Instant::now();
        }
    }
}

/// Counts a flow as open while it lives.
#[derive(Debug)]
pub struct Active<'a>(&'a ProxyCounters);

impl<'a> Active<'a> {
    pub fn new(counters: &'a ProxyCounters) -> Self {
        counters.flows.fetch_add(1, Ordering::Relaxed);
        counters.active.fetch_add(1, Ordering::Relaxed);
        Active(counters)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves the clients of `listener` on `socket` until the node stops.
pub async fn run(node: Arc<Node>, listener: Arc<ProxyListener>, socket: tokio::net::TcpListener) {
    loop {
        let (client, from) = match socket.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors, most likely: the clients being served go on.
                debug!(error = %e, listen = %listener.listen, "proxy accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = client.set_nodelay(true);
        let (node, listener) = (node.clone(), listener.clone());
        tokio::spawn(async move {
            match listener.protocol {
                ProxyProtocol::Socks5 => socks::serve(&node, &listener, client, from).await,
                ProxyProtocol::Http => http::serve(&node, &listener, client, from).await,
            }
        });
    }
}

/// Opens a flow to `target` for a client of `listener`: at the first egress that takes
/// it. The error is the reply its client gets.
pub async fn open(node: &Node, listener: &ProxyListener, target: &Target) -> Result<FlowIo, Reply> {
    if listener.egress.is_empty() {
        let egress = owner(node, target).await?;
        return open_at(node, egress, target).await;
    }
    let mut last = Reply::NetworkUnreachable;
    for name in &listener.egress {
        match open_at(node, quicap_pki::node_id(name), target).await {
            Ok(io) => return Ok(io),
            // The destination's answer, not the egress's state: another egress would
            // get the same.
            Err(r @ (Reply::ConnectionRefused | Reply::HostUnreachable)) => return Err(r),
            Err(r) => {
                debug!(egress = %name, %target, reply = r.as_str(), "flow not opened; trying the next egress");
                last = r;
            }
        }
    }
    Err(last)
}

/// The node that advertises the destination's prefix: for a name, the prefix of an
/// address it resolves to here.
pub(crate) async fn owner(node: &Node, target: &Target) -> Result<NodeId, Reply> {
    let addrs: Vec<SocketAddr> = match target {
        Target::Addr(a) => vec![*a],
        Target::Name(name, port) => tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::lookup_host((name.as_str(), *port)),
        )
        .await
        .map_err(|_| Reply::HostUnreachable)?
        .map_err(|_| Reply::HostUnreachable)?
        .collect(),
    };
    addrs
        .iter()
        .find_map(|a| node.mesh.owner(a.ip()))
        .ok_or(Reply::NetworkUnreachable)
}

/// Opens a flow at the egress `id` (this node itself, or a peer over its link).
async fn open_at(node: &Node, id: NodeId, target: &Target) -> Result<FlowIo, Reply> {
    if id == node.mesh.id {
        return egress_connect(node, target).await.map(FlowIo::Local);
    }
    let opening = flow::open_tcp(target).map_err(|_| Reply::AddressTypeNotSupported)?;
    let (_, send, recv) = open_stream(node, id, &opening, |_| {}).await?;
    Ok(FlowIo::Stream(send, recv, node.flow_peers.open(id)))
}

/// Opens a stream to the egress `id` with `opening` and waits for its status; `opened`
/// sees the link first (to register for what the egress may send at once).
pub(super) async fn open_stream(
    node: &Node,
    id: NodeId,
    opening: &[u8],
    opened: impl FnOnce(&Link),
) -> Result<(Link, quinn::SendStream, quinn::RecvStream), Reply> {
    let link = flow_link(node, id).await?;
    let Link::Quic { conn, .. } = &link else {
        // Flows ride QUIC streams; HTTP/3 and TCP links carry none yet.
        debug!(link = %link.kind(), "no flow on this kind of link");
        return Err(Reply::NetworkUnreachable);
    };
    opened(&link);
    let exchange = async {
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|_| Reply::NetworkUnreachable)?;
        send.write_all(opening)
            .await
            .map_err(|_| Reply::NetworkUnreachable)?;
        let mut status = [0u8; 1];
        recv.read_exact(&mut status)
            .await
            .map_err(|_| Reply::GeneralFailure)?;
        match Reply::from_code(status[0]) {
            Reply::Succeeded => Ok((send, recv)),
            refused => Err(refused),
        }
    };
    let (send, recv) = tokio::time::timeout(CONNECT_TIMEOUT + Duration::from_secs(2), exchange)
        .await
        .map_err(|_| Reply::TtlExpired)??;
    Ok((link, send, recv))
}

/// The link a flow to node `id` goes on, if its certificate lets it be an egress: the
/// direct link when the mesh reaches it directly, otherwise the end-to-end relayed
/// one, asked for and waited for.
async fn flow_link(node: &Node, id: NodeId) -> Result<Link, Reply> {
    let deadline = tokio::time::Instant::now() + LINK_TIMEOUT;
    loop {
        let now = node.now_ms();
        let around = node.mesh.next_hop(id).is_some_and(|hop| hop != id);
        let link = node.peers.traffic_link(id, now, around);
        match link {
            Some(l) if !around || l.link.relayed() => {
                if !node.peers.may_egress(id) {
                    return Err(Reply::NotAllowed);
                }
                if l.link.carries_flows() {
                    return Ok(l.link);
                }
                // A direct HTTP/3 or TLS/TCP link has no QUIC streams for flows: an
                // end-to-end relayed QUIC link through it has.
                let relayed = node
                    .peers
                    .traffic_link(id, now, true)
                    .filter(|r| r.link.relayed() && r.link.carries_flows());
                if let Some(r) = relayed {
                    return Ok(r.link);
                }
                node.flow_peers.touch(id);
                node.want_relayed(id, now);
            }
            _ => {}
        }
        if around {
            node.want_relayed(id, now);
        } else if node.mesh.next_hop(id).is_none() {
            return Err(Reply::NetworkUnreachable);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Reply::NetworkUnreachable);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Serves the flows a peer opens on `link` while it is up. Only QUIC links carry them.
pub async fn serve_flows(node: Arc<Node>, link: Link, peer: String) {
    let Link::Quic { conn, .. } = &link else {
        return;
    };
    let id = quicap_pki::node_id(&peer);
    if link.relayed() && node.peers.direct_carries_flows(id) == Some(false) {
        // Dialed for flows, most likely: kept for the first one.
        node.flow_peers.touch(id);
    }
    while let Ok((send, recv)) = conn.accept_bi().await {
        let (node, link, peer) = (node.clone(), link.clone(), peer.clone());
        tokio::spawn(async move {
            let open = node.flow_peers.open(id);
            serve_flow(&node, &link, &peer, (send, recv), open).await
        });
    }
}

/// Serves one stream a peer opened: a TCP flow or a UDP association; `open` counts it
/// while it lasts.
async fn serve_flow(
    node: &Node,
    link: &Link,
    peer: &str,
    (mut send, mut recv): (quinn::SendStream, quinn::RecvStream),
    open: FlowUse,
) {
    let counters = &node.proxy;
    let mut buf = Vec::with_capacity(flow::MAX_OPEN);
    let opening = tokio::time::timeout(REQUEST_TIMEOUT, async {
        loop {
            if let Some(parsed) = flow::parse_open(&buf).map_err(|e| e.to_string())? {
                return Ok(parsed);
            }
            if buf.len() >= flow::MAX_OPEN {
                return Err("opening too long".to_owned());
            }
            let mut byte = [0u8; 64];
            let want = (flow::MAX_OPEN - buf.len()).min(byte.len());
            match recv.read(&mut byte[..want]).await {
                Ok(Some(n)) => buf.extend_from_slice(&byte[..n]),
                Ok(None) | Err(_) => return Err("stream ended in its opening".to_owned()),
            }
        }
    })
    .await;
    let (opening, used) = match opening {
        Ok(Ok(opening)) => opening,
        Ok(Err(why)) => {
            debug!(%peer, reason = %why, "stream refused");
            counters.egress_refused.fetch_add(1, Ordering::Relaxed);
            let _ = send.reset(quinn::VarInt::from_u32(1));
            return;
        }
        Err(_) => {
            let _ = send.reset(quinn::VarInt::from_u32(1));
            return;
        }
    };
    let target = match opening {
        Opening::Tcp(target) => target,
        Opening::Udp(id) => {
            debug!(%peer, id, "UDP association");
            let _open = open;
            return udp::serve_association(node, link, (id, None), send, recv).await;
        }
        Opening::UdpTo(id, target) => {
            debug!(%peer, id, %target, "UDP association for one target");
            let _open = open;
            return udp::serve_association(node, link, (id, Some(target)), send, recv).await;
        }
    };
    let early = buf.split_off(used);
    let mut tcp = match egress_connect(node, &target).await {
        Ok(tcp) => tcp,
        Err(reply) => {
            counters.egress_refused.fetch_add(1, Ordering::Relaxed);
            debug!(%peer, %target, reply = reply.as_str(), "flow refused");
            let _ = send.write_all(&flow::status(reply)).await;
            let _ = send.finish();
            return;
        }
    };
    counters.egress_flows.fetch_add(1, Ordering::Relaxed);
    debug!(%peer, %target, "flow leaves the mesh here");
    if send
        .write_all(&flow::status(Reply::Succeeded))
        .await
        .is_err()
    {
        return;
    }
    if !early.is_empty() && tcp.write_all(&early).await.is_err() {
        return;
    }
    carry(&mut tcp, FlowIo::Stream(send, recv, open)).await;
}

/// Connects to `target` as this node's egress policy allows, resolving a name here.
pub async fn egress_connect(node: &Node, target: &Target) -> Result<TcpStream, Reply> {
    if !node.own_cert().authorization.egress {
        return Err(Reply::NotAllowed);
    }
    let Some(policy) = node.egress.as_ref() else {
        return Err(Reply::NotAllowed);
    };
    let work = async {
        let addrs = resolve(policy, target).await?;
        let mut last = Reply::HostUnreachable;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(tcp) => {
                    let _ = tcp.set_nodelay(true);
                    return Ok(tcp);
                }
                Err(e) => last = connect_error(&e),
            }
        }
        Err(last)
    };
    tokio::time::timeout(CONNECT_TIMEOUT, work)
        .await
        .map_err(|_| Reply::TtlExpired)?
}

/// The addresses of `target` the policy allows; `NotAllowed` if it allows none.
pub async fn resolve(policy: &EgressSection, target: &Target) -> Result<Vec<SocketAddr>, Reply> {
    let addrs: Vec<SocketAddr> = match target {
        Target::Addr(a) => vec![*a],
        Target::Name(name, port) => tokio::net::lookup_host((name.as_str(), *port))
            .await
            .map_err(|_| Reply::HostUnreachable)?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(Reply::HostUnreachable);
    }
    let allowed: Vec<SocketAddr> = addrs.into_iter().filter(|a| policy.allows(*a)).collect();
    if allowed.is_empty() {
        return Err(Reply::NotAllowed);
    }
    Ok(allowed)
}

fn connect_error(e: &std::io::Error) -> Reply {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => Reply::ConnectionRefused,
        std::io::ErrorKind::NetworkUnreachable => Reply::NetworkUnreachable,
        std::io::ErrorKind::HostUnreachable => Reply::HostUnreachable,
        std::io::ErrorKind::TimedOut => Reply::TtlExpired,
        _ => Reply::GeneralFailure,
    }
}

/// Writes bytes a client sent before its flow opened into the flow.
pub async fn write_flow(io: &mut FlowIo, bytes: &[u8]) -> std::io::Result<()> {
    match io {
        FlowIo::Stream(send, ..) => send.write_all(bytes).await.map_err(std::io::Error::from),
        FlowIo::Local(tcp) => tcp.write_all(bytes).await,
    }
}

/// Copies between a TCP connection and its flow both ways until both directions have
/// ended; an end in one direction is passed on as a half-close (FIN on the stream,
/// shutdown on TCP).
pub async fn carry(client: &mut TcpStream, io: FlowIo) {
    let result = match io {
        FlowIo::Stream(send, recv, _open) => {
            let mut stream = tokio::io::join(recv, send);
            tokio::io::copy_bidirectional(client, &mut stream).await
        }
        FlowIo::Local(mut tcp) => tokio::io::copy_bidirectional(client, &mut tcp).await,
    };
    if let Err(e) = result {
        debug!(error = %e, "flow ended with an error");
    }
}
