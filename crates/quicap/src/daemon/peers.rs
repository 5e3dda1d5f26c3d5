//! The table of connected peers and the forwarding decision for outgoing packets.
//!
//! A peer may have two links, one dialed by each side ("dual connection"). A node sends
//! on the link it dialed while that link answers liveness probes, and on the other link
//! otherwise; with a single link, that link serves both directions.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quicap_mesh::links::{self, Candidate, Transport};
use quicap_mesh::liveness::{self, Pace};
use quicap_pki::cert::VerifiedCert;
use quicap_wire::control::Modes;
use quicap_wire::NodeId;

use crate::link::{CloseCode, Link, LinkId, LinkKind, RelaySender};
use crate::relay::Hop;
use crate::status::{LinkStatus, PeerStatus};

/// Liveness of a link: the time of the last probe answer, in milliseconds since the
/// node's epoch (see [`crate::daemon::Node::now_ms`]), and the probe counters, in
/// atomics that the data path reads for every packet. What they mean (when a link
/// answers, how often it is probed) is decided by [`quicap_mesh::liveness`].
#[derive(Debug, Default)]
pub struct Liveness {
    last_answer_ms: AtomicU64,
    sent: AtomicU64,
    answers: AtomicU64,
    /// Counters at the start of the current loss window, and the last loss measured.
    window_sent: AtomicU64,
    window_answers: AtomicU64,
    loss_permille: AtomicU64,
    /// Its [`Pace`]: [`PACE_BUSY`], [`PACE_IDLE`] or [`PACE_DORMANT`].
    pace: AtomicU8,
    /// When the link last went busy.
    busy_since_ms: AtomicU64,
    /// Wakes the link's prober when tunnel traffic arrives on an idle link.
    traffic: tokio::sync::Notify,
}

const PACE_BUSY: u8 = 0;
const PACE_IDLE: u8 = 1;
const PACE_DORMANT: u8 = 2;

/// Probe answers after which a link counts as proven (about a second of probing).
const PROVEN_ANSWERS: u64 = 4;

/// Probes per loss measurement window (5 s at 4 probes per second, 20 s on an idle link).
const LOSS_WINDOW: u64 = 20;

impl Liveness {
    pub fn new(now_ms: u64) -> Arc<Self> {
        Arc::new(Liveness {
            last_answer_ms: AtomicU64::new(now_ms),
            ..Liveness::default()
        })
    }

    pub fn probe_sent(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    pub fn answered(&self, now_ms: u64) {
        self.answers.fetch_add(1, Ordering::Relaxed);
        self.last_answer_ms.fetch_max(now_ms, Ordering::Relaxed);
    }

    /// Share of probes left unanswered, in permille, over the last complete window of
    /// [`LOSS_WINDOW`] probes (one probe still in flight counts as answered).
    pub fn loss_permille(&self) -> u16 {
        let sent = self.sent.load(Ordering::Relaxed);
        let answers = self.answers.load(Ordering::Relaxed);
        let ws = self.window_sent.load(Ordering::Relaxed);
        if sent.saturating_sub(ws) >= LOSS_WINDOW {
            let wa = self.window_answers.load(Ordering::Relaxed);
            let probes = sent - ws;
            let answered = (answers.saturating_sub(wa) + 1).min(probes);
            self.loss_permille
                .store((probes - answered) * 1000 / probes, Ordering::Relaxed);
            self.window_sent.store(sent, Ordering::Relaxed);
            self.window_answers.store(answers, Ordering::Relaxed);
        }
        u16::try_from(self.loss_permille.load(Ordering::Relaxed)).unwrap_or(1000)
    }

    /// Milliseconds since the last answer.
    pub fn silent_for(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.last_answer_ms.load(Ordering::Relaxed))
    }

    /// Alive, and answered enough probes to be trusted with a peer's traffic.
    pub fn proven(&self, now_ms: u64) -> bool {
        self.answers.load(Ordering::Relaxed) >= PROVEN_ANSWERS && self.alive(now_ms)
    }

    /// Answered recently enough for its probe rate ([`liveness::answering`]).
    pub fn alive(&self, now_ms: u64) -> bool {
        let last = self.last_answer_ms.load(Ordering::Relaxed);
        liveness::answering(last, self.pace(), now_ms)
    }

    /// Silent for so long that the link should be closed ([`liveness::dead`]).
    pub fn dead(&self, limit_ms: u64, now_ms: u64) -> bool {
        let last = self.last_answer_ms.load(Ordering::Relaxed);
        liveness::dead(last, self.pace(), limit_ms, now_ms)
    }

    pub fn pace(&self) -> Pace {
        match self.pace.load(Ordering::Relaxed) {
            PACE_BUSY => Pace::Busy {
                since: self.busy_since_ms.load(Ordering::Relaxed),
            },
            PACE_IDLE => Pace::Idle,
            _ => Pace::Dormant,
        }
    }

    /// Probed at the idle or the dormant rate.
    pub fn is_idle(&self) -> bool {
        self.pace.load(Ordering::Relaxed) != PACE_BUSY
    }

    /// The link carried tunnel traffic (either way): an idle link goes back to the full
    /// probe rate now, not at its next idle probe up to a second later, so that a link
    /// that fails under new traffic is found as fast as one that was busy all along.
    pub fn carried_traffic(&self) {
        if self.is_idle() {
            self.traffic.notify_one();
        }
    }

    /// Waits for [`Self::carried_traffic`] on an idle link.
    pub async fn traffic_on_idle_link(&self) {
        self.traffic.notified().await;
    }

    /// Switches to probing at `pace`.
    pub fn set_pace(&self, pace: Pace) {
        let value = match pace {
            Pace::Busy { since } => {
                self.busy_since_ms.store(since, Ordering::Relaxed);
                PACE_BUSY
            }
            Pace::Idle => PACE_IDLE,
            Pace::Dormant => PACE_DORMANT,
        };
        self.pace.store(value, Ordering::Relaxed);
    }
}

/// The shortest probe interval among `links` if none is busy (and there is one).
fn quiet_period<'a>(links: impl Iterator<Item = &'a PeerLink>) -> Option<Duration> {
    let mut shortest: Option<u64> = None;
    for l in links {
        let pace = l.liveness.pace();
        if pace.is_busy() {
            return None;
        }
        shortest = Some(shortest.map_or(pace.interval(), |s| s.min(pace.interval())));
    }
    shortest.map(Duration::from_millis)
}

/// One live, authenticated link to a peer, as the peer table keeps it.
#[derive(Debug, Clone)]
pub struct PeerLink {
    pub link: Link,
    /// True if this node dialed the connection.
    pub outgoing: bool,
    /// For a relayed link: the one both ends keep when there are two, dialed by the
    /// node with the lower id.
    pub kept: bool,
    /// When it came up, on the node's clock ([`crate::daemon::Node::now_ms`]).
    pub since_ms: u64,
    pub liveness: Arc<Liveness>,
    /// Queue of control messages to send on this link.
    pub control: tokio::sync::mpsc::Sender<quicap_wire::Message>,
    /// Serial number of the certificate the peer presented on this link.
    pub peer_serial: Vec<u8>,
    /// How many times this node had renewed its certificate when the link came up
    /// (see `Node::generation`).
    pub generation: u64,
    /// The instance number the peer sent on this link (0 until it has).
    pub instance: Arc<AtomicU64>,
    /// Packets and frames received on this link and dropped because the peer's
    /// certificate does not authorize their source.
    pub refused: Arc<AtomicU64>,
}

/// Where and how a link can be dialed again.
pub type Dialable = (std::net::SocketAddr, LinkKind);

/// A link as the data path sends on it: the link, and the liveness it tells of the
/// traffic (an idle link goes back to probing at the full rate at once).
#[derive(Debug, Clone)]
pub struct SendLink {
    pub link: Link,
    pub liveness: Arc<Liveness>,
}

impl PeerLink {
    fn candidate(&self, now_ms: u64) -> Candidate {
        Candidate {
            alive: self.liveness.alive(now_ms),
            transport: match self.link.kind() {
                LinkKind::QuicDirect | LinkKind::QuicRelayed => Transport::Quic,
                LinkKind::Tcp => Transport::Tcp,
            },
            kept: self.kept,
            outgoing: self.outgoing,
            up_since: self.since_ms,
        }
    }

    fn send_link(&self) -> SendLink {
        SendLink {
            link: self.link.clone(),
            liveness: self.liveness.clone(),
        }
    }
}

#[derive(Debug)]
struct Peer {
    /// Mesh node id of the peer (hash of its name).
    id: NodeId,
    cert: VerifiedCert,
    /// What the peer announced in its hello.
    modes: Modes,
    links: Vec<PeerLink>,
}

impl Peer {
    /// The direct link to send on: answering links first, the self-dialed one before
    /// the other, the newest among equals.
    fn preferred(&self, now_ms: u64) -> Option<&PeerLink> {
        self.best(now_ms, false)
    }

    /// The preferred direct link, or the best relayed one for a peer without any.
    fn reachable_on(&self, now_ms: u64) -> Option<&PeerLink> {
        self.preferred(now_ms).or_else(|| self.best(now_ms, true))
    }

    /// The link the peer's traffic takes. `around`: the mesh routes the peer through
    /// another node (a direct link slower than the way around, or none): its relayed
    /// link, end to end, or until one is up a direct link that still answers.
    /// Otherwise [`Self::reachable_on`].
    fn traffic_link(&self, now_ms: u64, around: bool) -> Option<&PeerLink> {
        if around {
            self.best(now_ms, true)
                .or_else(|| self.preferred(now_ms).filter(|l| l.liveness.alive(now_ms)))
        } else {
            self.reachable_on(now_ms)
        }
    }

    /// The best link of one kind (direct or relayed), by the link core's rule
    /// ([`links::best`]).
    fn best(&self, now_ms: u64, relayed: bool) -> Option<&PeerLink> {
        links::best(
            self.links
                .iter()
                .filter(|l| l.link.relayed() == relayed)
                .map(|l| (l, l.candidate(now_ms))),
        )
    }
}

/// Connected peers by name; a peer without links is removed.
#[derive(Debug, Default)]
pub struct PeerTable {
    peers: Mutex<BTreeMap<String, Peer>>,
}

impl PeerTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Peer>> {
        // Every mutation is a single insert, push or retain, so a panic elsewhere while
        // the lock was held cannot have left the map half-changed.
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a link; the certificate replaces any older one of the same peer. Returns the
    /// number of connected peers.
    ///
    /// A link made with another certificate than the peer's links so far (the peer
    /// renewed it) supersedes them: [`PeerTable::close_renewed`] closes them once it is
    /// proven, so that every link of a peer then stands for the one certificate the
    /// table holds, and the peer's old certificate may expire without cutting it off.
    pub fn add(&self, cert: VerifiedCert, modes: Modes, link: PeerLink) -> usize {
        let mut peers = self.lock();
        let peer = peers.entry(cert.name().to_owned()).or_insert_with(|| Peer {
            id: quicap_pki::node_id(cert.name()),
            cert: cert.clone(),
            modes,
            links: Vec::new(),
        });
        if peer.cert.cert().serial != cert.cert().serial {
            tracing::info!(
                peer = %cert.name(),
                serial = %cert.cert().serial_hex(),
                previous = %peer.cert.cert().serial_hex(),
                links = peer.links.len(),
                "peer renewed its certificate; the links made with the previous one close once this one is proven"
            );
        }
        peer.cert = cert;
        peer.modes = modes;
        peer.links.push(link);
        peers.len()
    }

    /// Removes the link `id`; returns how many links the peer has left and how many
    /// peers are connected.
    pub fn remove(&self, name: &str, id: LinkId) -> (usize, usize) {
        let mut peers = self.lock();
        let left = match peers.get_mut(name) {
            Some(peer) => {
                peer.links.retain(|l| l.link.id() != id);
                peer.links.len()
            }
            None => 0,
        };
        if left == 0 {
            peers.remove(name);
        }
        (left, peers.len())
    }

    /// The connection to send a packet for `destination` on: the peer whose certificate
    /// authorizes the longest prefix containing it, over its preferred link.
    pub fn route(&self, destination: IpAddr, now_ms: u64) -> Option<SendLink> {
        let peers = self.lock();
        let host_len = if destination.is_ipv4() { 32 } else { 128 };
        let mut best: Option<(u8, &Peer)> = None;
        for peer in peers.values() {
            let auth = peer.cert.authorization();
            let hosts = auth
                .addresses
                .iter()
                .filter(|a| a.addr() == destination)
                .map(|_| host_len);
            let nets = auth
                .subnets
                .iter()
                .filter(|s| s.contains(&destination))
                .map(|s| s.prefix_len());
            if let Some(len) = hosts.chain(nets).max() {
                if best.is_none_or(|(l, _)| len > l) {
                    best = Some((len, peer));
                }
            }
        }
        let (_, peer) = best?;
        peer.preferred(now_ms).map(PeerLink::send_link)
    }

    /// True if no link carries tunnel traffic (all are probed at the idle rate).
    /// True if the peer called `name` has links and every one of them is idle.
    /// While no link of `name` carries traffic: the shortest probe interval among them
    /// ([`Pace::interval`]), the period their idle timers keep to. None while one is
    /// busy, or `name` has no link.
    pub fn quiet_period_of(&self, name: &str) -> Option<Duration> {
        quiet_period(self.lock().get(name)?.links.iter())
    }

    /// The same over the links of every peer (with none, the idle probe interval).
    pub fn quiet_period(&self) -> Option<Duration> {
        let peers = self.lock();
        let mut links = peers.values().flat_map(|p| p.links.iter()).peekable();
        if links.peek().is_none() {
            return Some(Duration::from_millis(liveness::IDLE_PROBE_INTERVAL_MS));
        }
        quiet_period(links)
    }

    /// True if a relayed link carries tunnel traffic (is probed at the full rate).
    pub fn relayed_busy(&self) -> bool {
        self.lock().values().any(|p| {
            p.links
                .iter()
                .any(|l| l.link.relayed() && !l.liveness.is_idle())
        })
    }

    /// Node ids of the peers, and of those with a relayed link.
    pub fn ids(&self, relayed_only: bool) -> Vec<NodeId> {
        self.lock()
            .values()
            .filter(|p| !relayed_only || p.links.iter().any(|l| l.link.relayed()))
            .map(|p| p.id)
            .collect()
    }

    /// Closes the links a peer made with a certificate it has since renewed, once a link
    /// with the current one is proven (answered a second of probes): closing them at
    /// once would leave the peer, which learns of the new link a moment later, without
    /// any link to this node for that moment, and the mesh would route around it.
    /// Returns how many links it closed.
    pub fn close_renewed(&self, now_ms: u64) -> usize {
        let peers = self.lock();
        let mut closed = 0;
        for peer in peers.values() {
            let current = &peer.cert.cert().serial;
            let open = |l: &&PeerLink| !l.link.is_closed();
            if !peer
                .links
                .iter()
                .filter(open)
                .any(|l| l.peer_serial == *current && l.liveness.proven(now_ms))
            {
                continue;
            }
            for link in peer.links.iter().filter(open) {
                if link.peer_serial != *current {
                    link.link
                        .close(CloseCode::Superseded, "certificate renewed");
                    closed += 1;
                }
            }
        }
        closed
    }

    /// Closes the relayed links of peers that also have a proven direct link, except
    /// those in `keep` (peers the mesh routes through other nodes: their traffic takes
    /// the relayed link, end to end); and the second relayed link to a peer once the
    /// one both ends keep ([`PeerLink::kept`]) is proven. Only a link made with this node's
    /// current certificate (`generation`, see [`PeerLink::generation`]) counts as the kept
    /// one: after a renewal the peer closes the links made with the old certificate,
    /// and the new one must not have been closed for one of them. Returns how many
    /// links it closed; a closed link leaves the table when its session ends.
    pub fn close_superseded_relays(&self, now_ms: u64, keep: &[NodeId], generation: u64) -> usize {
        let peers = self.lock();
        let mut closed = 0;
        for peer in peers.values() {
            let open = |l: &&PeerLink| l.link.relayed() && !l.link.is_closed();
            if peer
                .links
                .iter()
                .filter(open)
                .any(|l| l.kept && l.generation == generation && l.liveness.proven(now_ms))
            {
                for link in peer.links.iter().filter(open).filter(|l| !l.kept) {
                    link.link
                        .close(CloseCode::Superseded, "duplicate relayed link");
                    closed += 1;
                }
            }
            if keep.contains(&peer.id)
                || !peer
                    .links
                    .iter()
                    .any(|l| !l.link.relayed() && l.liveness.proven(now_ms))
            {
                continue;
            }
            for link in peer.links.iter().filter(open) {
                link.link.close(CloseCode::Superseded, "direct link up");
                closed += 1;
            }
        }
        closed
    }

    /// Adds to `out` the node ids of the connected peers that carry Layer 2.
    pub fn extend_l2_ids(&self, out: &mut Vec<NodeId>) {
        out.extend(self.lock().values().filter(|p| p.modes.l2).map(|p| p.id));
    }

    /// Where relay frames for the peer with node id `id` go: on its preferred direct
    /// link, to its UDP address on QUIC, in relay records on TLS/TCP, in datagrams of
    /// the relay context on HTTP/3.
    pub fn relay_next_hop(&self, id: NodeId, now_ms: u64) -> Option<Hop> {
        let peers = self.lock();
        let link = &peers.values().find(|p| p.id == id)?.preferred(now_ms)?.link;
        match link {
            Link::Quic { relayed: false, .. } => Some(Hop::Udp(link.remote_address())),
            Link::Tcp(tcp) => Some(Hop::Link(RelaySender::Tcp(tcp.frame_sender()))),
            Link::H3(h3) => Some(Hop::Link(RelaySender::H3(h3.relay_sender()))),
            Link::Quic { relayed: true, .. } => None,
        }
    }

    /// The link the traffic for the peer with node id `id` takes (see
    /// [`Peer::traffic_link`]); the per-packet lookup, which allocates nothing.
    pub fn traffic_link(&self, id: NodeId, now_ms: u64, around: bool) -> Option<SendLink> {
        self.lock()
            .values()
            .find(|p| p.id == id)
            .and_then(|p| p.traffic_link(now_ms, around).map(PeerLink::send_link))
    }

    /// Whether the peer with node id `id` is connected and its certificate lets it be an
    /// egress of proxied flows.
    pub fn may_egress(&self, id: NodeId) -> bool {
        self.lock()
            .values()
            .any(|p| p.id == id && p.cert.authorization().egress)
    }

    /// Whether the direct links of the peer with node id `id` can carry proxied flows
    /// (any of them a QUIC link); `None` without a direct link.
    pub fn direct_carries_flows(&self, id: NodeId) -> Option<bool> {
        let peers = self.lock();
        let peer = peers.values().find(|p| p.id == id)?;
        let mut direct = peer.links.iter().filter(|l| !l.link.relayed()).peekable();
        direct.peek()?;
        Some(direct.any(|l| l.link.carries_flows()))
    }

    /// Whether the peer with node id `id` has a relayed link, answering or not.
    pub fn has_relayed(&self, id: NodeId) -> bool {
        self.lock()
            .values()
            .any(|p| p.id == id && p.links.iter().any(|l| l.link.relayed()))
    }

    /// The preferred direct link of the peer called `name`.
    pub fn preferred(&self, name: &str, now_ms: u64) -> Option<Link> {
        self.lock()
            .get(name)
            .and_then(|p| p.preferred(now_ms).map(|l| l.link.clone()))
    }

    /// Every peer with whether its preferred link answers probes, the RTT to it and
    /// that link's probe loss in permille. The RTT is the lowest among the peer's
    /// answering links: a link that has just replaced another (both sides dialed)
    /// starts from its handshake's RTT, inflated by certificate checks, and would
    /// otherwise make the route flap until its estimate settles.
    pub fn neighbor_state(&self, now_ms: u64) -> Vec<(String, bool, std::time::Duration, u16)> {
        self.lock()
            .iter()
            .filter_map(|(name, p)| {
                let l = p.preferred(now_ms)?;
                let rtt = p
                    .links
                    .iter()
                    .filter(|k| !k.link.relayed() && k.liveness.alive(now_ms))
                    .map(|k| k.link.rtt())
                    .min()
                    .unwrap_or_else(|| l.link.rtt());
                Some((
                    name.clone(),
                    l.liveness.alive(now_ms),
                    rtt,
                    l.liveness.loss_permille(),
                ))
            })
            .collect()
    }

    /// Queues a control message on the preferred link of `name`; false if impossible.
    pub fn send_control(&self, name: &str, message: quicap_wire::Message, now_ms: u64) -> bool {
        self.lock()
            .get(name)
            .and_then(|p| p.preferred(now_ms))
            .is_some_and(|l| l.control.try_send(message).is_ok())
    }

    /// Queues a control message on the preferred link of every peer, direct or relayed.
    pub fn send_control_to_all(&self, message: &quicap_wire::Message, now_ms: u64) {
        for peer in self.lock().values() {
            if let Some(link) = peer.reachable_on(now_ms) {
                let _ = link.control.try_send(message.clone());
            }
        }
    }

    /// Names of the peers with a direct link: the mesh's neighbours.
    pub fn names(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, p)| p.links.iter().any(|l| !l.link.relayed()))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// An open outgoing direct link to `name`: one dialed outside the peer's dial loop
    /// (with a renewed certificate), which the loop takes over instead of dialing.
    pub fn outgoing_direct(&self, name: &str) -> Option<Link> {
        self.lock()
            .get(name)?
            .links
            .iter()
            .find(|l| l.outgoing && !l.link.relayed() && !l.link.is_closed())
            .map(|l| l.link.clone())
    }

    /// Whether `name` has an open link other than `link` that came up after it.
    pub fn has_newer_link(&self, name: &str, link: LinkId) -> bool {
        let peers = self.lock();
        let Some(peer) = peers.get(name) else {
            return false;
        };
        let Some(since) = peer
            .links
            .iter()
            .find(|l| l.link.id() == link)
            .map(|l| l.since_ms)
        else {
            return false;
        };
        peer.links
            .iter()
            .any(|l| l.link.id() != link && l.since_ms >= since && !l.link.is_closed())
    }

    /// Every peer by name and node id, with the remote address and kind of a direct
    /// link to it that can be dialed again (an answering one first: QUIC either way,
    /// TCP if this node dialed it), or `None` for a peer reached otherwise.
    pub fn redial_targets(&self, now_ms: u64) -> Vec<(String, NodeId, Option<Dialable>)> {
        self.lock()
            .iter()
            .map(|(name, p)| {
                let direct = p
                    .links
                    .iter()
                    .filter(|l| match l.link.kind() {
                        LinkKind::QuicDirect => true,
                        LinkKind::Tcp => l.outgoing,
                        LinkKind::QuicRelayed => false,
                    })
                    .max_by_key(|l| l.liveness.alive(now_ms))
                    .map(|l| (l.link.remote_address(), l.link.kind()));
                (name.clone(), p.id, direct)
            })
            .collect()
    }

    /// Another link of `name`, answering probes now (for its pace), whose node sent an instance number other than `instance`,
    /// the one of `link`, which must be answering too: the remote address of a second
    /// running node with the same certificate. (A crashed node's links stop answering;
    /// its restart is no second node.)
    pub fn other_instance(
        &self,
        name: &str,
        link: &Liveness,
        instance: u64,
        now_ms: u64,
    ) -> Option<String> {
        let answering = |l: &Liveness| l.alive(now_ms);
        if !answering(link) {
            return None;
        }
        let peers = self.lock();
        peers.get(name)?.links.iter().find_map(|l| {
            let other = l.instance.load(Ordering::Relaxed);
            (other != 0 && other != instance && answering(&l.liveness))
                .then(|| l.link.remote_label())
        })
    }

    /// Closes every link of every peer for which `reason` returns a reason.
    pub fn close_where(&self, code: CloseCode, reason: impl Fn(&VerifiedCert) -> Option<String>) {
        let peers = self.lock();
        for (name, peer) in peers.iter() {
            if let Some(why) = reason(&peer.cert) {
                tracing::warn!(peer = %name, reason = %why, "closing peer");
                for link in &peer.links {
                    link.link.close(code, &why);
                }
            }
        }
    }

    /// The end of the earliest-ending certificate among the connected peers.
    pub fn earliest_not_after(&self) -> Option<time::OffsetDateTime> {
        self.lock().values().map(|p| p.cert.cert().not_after).min()
    }

    /// The link `id` of the peer called `name`.
    pub fn link_by_id(&self, name: &str, id: LinkId) -> Option<Link> {
        self.lock()
            .get(name)?
            .links
            .iter()
            .find(|l| l.link.id() == id)
            .map(|l| l.link.clone())
    }

    /// Every link, for shutdown.
    pub fn all_links(&self) -> Vec<Link> {
        self.lock()
            .values()
            .flat_map(|p| p.links.iter().map(|l| l.link.clone()))
            .collect()
    }

    /// Remote addresses of the direct QUIC links: where relay frames may come from.
    pub fn direct_remotes(&self) -> Vec<std::net::SocketAddr> {
        self.lock()
            .values()
            .flat_map(|p| {
                p.links
                    .iter()
                    .filter(|l| l.link.kind() == LinkKind::QuicDirect)
            })
            .map(|l| l.link.remote_address())
            .collect()
    }

    /// The peers as `quicap status` reports them, each with the link its traffic takes
    /// (as the data path picks it) marked in use. `around`: the peers the mesh routes
    /// through another node.
    pub fn snapshot(&self, now_ms: u64, around: &[NodeId]) -> Vec<PeerStatus> {
        let peers = self.lock();
        peers
            .iter()
            .map(|(name, peer)| {
                let in_use = peer
                    .traffic_link(now_ms, around.contains(&peer.id))
                    .map(|l| l.link.id());
                let auth = peer.cert.authorization();
                PeerStatus {
                    name: name.clone(),
                    addresses: auth.addresses.iter().map(ToString::to_string).collect(),
                    subnets: auth.subnets.iter().map(ToString::to_string).collect(),
                    valid_until: quicap_pki::fmt_time(&peer.cert.cert().not_after),
                    refused: peer
                        .links
                        .iter()
                        .map(|l| l.refused.load(Ordering::Relaxed))
                        .sum(),
                    transport: String::new(),
                    transport_why: String::new(),
                    links: peer
                        .links
                        .iter()
                        .map(|l| {
                            let stats = l.link.stats();
                            LinkStatus {
                                kind: l.link.kind().as_str().into(),
                                remote: l.link.remote_label(),
                                direction: if l.outgoing { "outgoing" } else { "incoming" }.into(),
                                in_use: in_use == Some(l.link.id()),
                                alive: l.liveness.alive(now_ms),
                                idle: l.liveness.is_idle(),
                                dormant: l.liveness.pace() == Pace::Dormant,
                                rtt_ms: l.link.rtt().as_secs_f64() * 1000.0,
                                path_mtu: stats.path_mtu,
                                rx_bytes: stats.rx_bytes,
                                tx_bytes: stats.tx_bytes,
                                uptime_secs: now_ms.saturating_sub(l.since_ms) / 1000,
                            }
                        })
                        .collect(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quicap_mesh::liveness::{SILENT_BUSY_MS, SILENT_DORMANT_MS, SILENT_IDLE_MS};

    #[test]
    fn loss_is_measured_per_window_of_probes() {
        let l = Liveness::new(0);
        assert_eq!(l.loss_permille(), 0);
        for i in 0..20 {
            l.probe_sent();
            if i % 4 != 0 {
                l.answered(i);
            }
        }
        // 15 answers + 1 in flight of 20 probes: 20 % lost.
        assert_eq!(l.loss_permille(), 200);
        for i in 0..20 {
            l.probe_sent();
            l.answered(100 + i);
        }
        assert_eq!(l.loss_permille(), 0);
    }

    #[test]
    fn liveness_follows_answers() {
        let l = Liveness::new(0);
        assert!(l.alive(SILENT_BUSY_MS));
        assert!(!l.alive(SILENT_BUSY_MS + 1));
        l.answered(1000);
        assert!(l.alive(1000 + SILENT_BUSY_MS));
        assert_eq!(l.silent_for(1500), 500);
    }

    #[test]
    fn idle_links_answer_less_often_and_get_a_fresh_start_when_busy_again() {
        let l = Liveness::new(0);
        l.set_pace(Pace::Idle);
        assert!(l.is_idle());
        assert!(l.alive(SILENT_IDLE_MS));
        assert!(!l.alive(SILENT_IDLE_MS + 1));
        l.set_pace(Pace::Dormant);
        assert!(l.is_idle());
        assert!(l.alive(SILENT_DORMANT_MS));
        assert!(!l.dead(3_000, 7_000));
        assert!(l.dead(3_000, 7_001));
        // Busy again five seconds after the last answer: alive while the faster
        // probes have had time to be answered, not a moment longer, and dead only
        // the full limit after the traffic began.
        l.set_pace(Pace::Busy { since: 5_000 });
        assert!(!l.is_idle());
        assert!(l.alive(5_000 + SILENT_BUSY_MS));
        assert!(!l.alive(5_001 + SILENT_BUSY_MS));
        assert!(!l.dead(3_000, 8_000));
        assert!(l.dead(3_000, 8_001));
        l.answered(5_400);
        assert!(l.alive(5_400 + SILENT_BUSY_MS));
    }
}
