//! The uplink: packets read from the TUN and frames read from the TAP are sent to the
//! peer the forwarding decision picks, in QUIC DATAGRAM frames behind the overlay header.
//!
//! IP packets larger than the connection's current datagram size are never dropped
//! silently: IPv4 packets without DF are fragmented here (RFC 791); everything else is
//! answered with ICMP "fragmentation needed" / ICMPv6 "packet too big" written back into
//! the TUN, so the sender lowers its path MTU. A packet for an overlay address no node
//! has is answered with ICMP "destination unreachable" at once, as WireGuard does,
//! within the same budget of ICMP errors. Ethernet frames that do not fit are
//! dropped and logged. `send_datagram_wait` makes the reader wait when quinn's bounded
//! datagram queue is full, instead of dropping.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quicap_wire::overlay::PayloadKind;
use quicap_wire::{ip, Header, NodeId};
use tracing::{debug, warn};

use super::l2;
use super::peers::SendLink;
use super::Node;
use crate::device::Interface;
use crate::link::{Framed, Link, LinkId, SendError};
use crate::packet_io::Reader;

const BUF_LEN: usize = 65536;

/// Where a packet goes: a link to the node it is for, or held until one is up.
#[derive(Clone)]
enum Next {
    Send(SendLink),
    /// No link to this node yet: one is being dialed (see [`super::held`]).
    Hold(NodeId),
}

/// Why a packet has nowhere to go.
#[derive(Clone, Copy, PartialEq, Eq)]
enum NoRoute {
    /// No node of the mesh owns the destination.
    Unowned,
    /// Its owner is known, but no link or route to it is up.
    Unreachable,
}

/// Where to send an IP packet for `destination`.
fn route(node: &Node, destination: IpAddr, now: u64) -> Result<Next, NoRoute> {
    let owner = node.mesh.owner(destination);
    if let Some(found) = owner.and_then(|owner| route_to_node(node, owner, now)) {
        return Ok(found);
    }
    // Before node information has arrived: the directly connected peer whose
    // certificate covers the destination.
    match node.peers.route(destination, now) {
        Some(link) => Ok(Next::Send(link)),
        None if owner.is_none() => Err(NoRoute::Unowned),
        None => Err(NoRoute::Unreachable),
    }
}

/// Whether `destination` lies in the overlay (the prefixes of the TUN's addresses and
/// its routes): a packet for such an address that no node owns can go nowhere, and its
/// sender is told at once. A prefix's IPv4 broadcast address is nobody's either, but
/// not an address to answer for.
fn in_overlay(tun: &Interface, destination: IpAddr) -> bool {
    let spec = &tun.spec;
    spec.addresses
        .iter()
        .map(|a| a.trunc())
        .chain(spec.routes.iter().copied())
        .any(|p| p.contains(&destination) && !(p.addr().is_ipv4() && p.broadcast() == destination))
}

/// Writes ICMP "host unreachable" / ICMPv6 "address unreachable" about `packet` into
/// the TUN, from the unreachable address itself (see [`oversize`] for why).
fn answer_unreachable(tun: &Interface, packet: &[u8], destination: IpAddr) {
    let mut icmp = [0u8; 1280];
    if let Some(len) = ip::icmp_error(packet, ip::IcmpError::Unreachable, destination, &mut icmp) {
        debug!(%destination, "answering destination unreachable: no node has this address");
        tun.write_one(&icmp[..len]);
    }
}

/// The forwarding decision of the previous packet: consecutive packets of one flow
/// skip the lookups, within a read (the segments of a TSO super-packet) and across
/// reads in the same millisecond (a flood of small packets, one per read). A link
/// chosen at most a millisecond ago is as good as a fresh choice: routes and links
/// change on the scale of probes and routing messages, and a send that fails drops it.
struct LastRoute {
    destination: IpAddr,
    /// [`Node::now_ms`] when it was decided.
    at: u64,
    next: Next,
    max: usize,
}

/// How long a link cut down by a suspected black hole must stay so before the sender
/// of a packet too big for it is told with an ICMP error. quinn's black-hole detection
/// can shrink a link to 1200 bytes after a few bursts of congestion loss and probes
/// back up after
/// [`crate::transport::BLACK_HOLE_COOLDOWN`]; an ICMP error sent meanwhile would make
/// the sender's kernel keep the smaller MTU for ten minutes.
const TOO_BIG_GRACE: Duration = Duration::from_secs(4);
/// A link that fit every packet for this long starts a new grace period.
const TOO_BIG_EPISODE_GAP: Duration = Duration::from_secs(10);

/// ICMP errors written into the TUN: at most this many per second, in bursts of up to
/// [`ICMP_BURST`] (the kernel's own defaults, `net.ipv4.icmp_msgs_per_sec` and
/// `icmp_msgs_burst`). A sender flooding packets that do not fit would otherwise get
/// one error per packet.
const ICMP_PER_SEC: f64 = 1000.0;
const ICMP_BURST: f64 = 50.0;

/// quinn's statistics are read at most this often per link: a flood of packets too big
/// for a link would otherwise lock its connection once per packet.
const SUSPICION_RECHECK: Duration = Duration::from_millis(100);

/// A link that packets have been too big for.
struct TooSmall {
    /// Start of the current episode (or of the current suspicion of a black hole).
    first: Instant,
    last: Instant,
    /// Last reading of [`black_hole_suspected`], and when it was taken.
    suspected: bool,
    checked: Option<Instant>,
}

/// Whether packets too big for a link get an ICMP error: the links packets were too
/// big for, and the budget for ICMP errors, which the
/// "destination unreachable" answers share.
struct TooBigGate {
    links: HashMap<LinkId, TooSmall>,
    tokens: f64,
    refilled: Instant,
}

impl Default for TooBigGate {
    fn default() -> Self {
        Self {
            links: HashMap::new(),
            tokens: ICMP_BURST,
            refilled: Instant::now(),
        }
    }
}

impl TooBigGate {
    /// Whether a packet too big for `link` gets an ICMP error now (else it is dropped).
    /// A link is suspected of a black hole when its transport sends minimum-size
    /// packets (QUIC's 1200 bytes) until it probes again; links that are merely
    /// smaller than the packet (a routed header on top of a full-size packet, a path
    /// MTU found by probing) are not.
    fn answer(&mut self, link: &Link, now: Instant) -> bool {
        self.decide(link.id(), || link.stats().black_hole, now)
    }

    /// [`TooBigGate::answer`] for link `link`, with `suspected` reading quinn's opinion:
    /// answered if the ICMP budget allows and the link is not held at 1200 bytes by a
    /// suspected black hole, or has been for [`TOO_BIG_GRACE`].
    fn decide(&mut self, link: LinkId, suspected: impl FnOnce() -> bool, now: Instant) -> bool {
        self.refill(now);
        if self.tokens < 1.0 {
            return false;
        }
        if self.links.len() > 64 {
            self.links.retain(|_, l| now - l.last < TOO_BIG_EPISODE_GAP);
        }
        let l = self.links.entry(link).or_insert(TooSmall {
            first: now,
            last: now,
            suspected: false,
            checked: None,
        });
        if now - l.last >= TOO_BIG_EPISODE_GAP {
            l.first = now;
        }
        l.last = now;
        if l.checked.is_none_or(|t| now - t >= SUSPICION_RECHECK) {
            let s = suspected();
            if s && !l.suspected {
                l.first = now;
            }
            l.suspected = s;
            l.checked = Some(now);
        }
        let answer = !l.suspected || now - l.first >= TOO_BIG_GRACE;
        if answer {
            self.tokens -= 1.0;
        }
        answer
    }

    /// Takes one ICMP error from the budget the errors of this uplink share; false if
    /// it is spent.
    fn spend(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * ICMP_PER_SEC).min(ICMP_BURST);
        self.refilled = now;
    }
}

/// A read from `iface` failed with `e`. The interface was removed (the kernel answers
/// EBADFD from then on): the node stops with that error, for its supervisor to start it
/// again. Anything else is logged (at powers of two of `failures`, so a persistent
/// error does not flood the log) and the read retried 100 ms later.
async fn read_failed(node: &Node, iface: &Interface, e: &std::io::Error, failures: &mut u64) {
    if e.raw_os_error() == Some(libc::EBADFD) {
        node.fail(format!(
            "interface {} was removed (reading it: {e})",
            iface.spec.name
        ));
        // The node is stopping; nothing more to read.
        std::future::pending::<()>().await;
    }
    *failures += 1;
    if failures.is_power_of_two() {
        warn!(interface = %iface.spec.name, error = %e, failures = *failures, "reading from the interface failed");
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
}

pub async fn tun_to_peers(node: Arc<Node>) {
    let Some(tun) = node.tun.as_ref() else {
        return;
    };
    let mut reader = Reader::new(tun.spec.mtu);
    let mut arena = BytesMut::new();
    let mut gate = TooBigGate::default();
    let mut failures = 0u64;
    let mut last: Option<LastRoute> = None;
    loop {
        if let Err(e) = reader.read(&tun.device).await {
            if e.raw_os_error().is_some() {
                read_failed(&node, tun, &e, &mut failures).await;
            } else {
                debug!(error = %e, "dropping a malformed packet from the TUN");
            }
            continue;
        }
        let now = node.now_ms();
        // A decision to hold does not outlive the read: the link it waits for may
        // come up (and the held packets go out) while this task waits for the next.
        if last
            .as_ref()
            .is_some_and(|l| l.at != now || matches!(l.next, Next::Hold(_)))
        {
            last = None;
        }
        let mut missing = NoRoute::Unreachable;
        for packet in reader.packets() {
            let Some((_, destination)) = ip::addresses(packet) else {
                continue;
            };
            // For a CONNECT-IP client of this node.
            if node.masque_deliver(destination, packet) {
                continue;
            }
            if last.as_ref().is_none_or(|l| l.destination != destination) {
                last = match route(&node, destination, now) {
                    Ok(next) => Some(LastRoute {
                        destination,
                        at: now,
                        max: match &next {
                            Next::Send(send) => send.link.max_datagram_size(),
                            Next::Hold(_) => usize::MAX,
                        },
                        next,
                    }),
                    Err(why) => {
                        missing = why;
                        None
                    }
                };
            }
            let Some(LastRoute { next, max, .. }) = &last else {
                if missing == NoRoute::Unowned
                    && in_overlay(tun, destination)
                    && gate.spend(Instant::now())
                {
                    answer_unreachable(tun, packet, destination);
                } else {
                    debug!(%destination, "no route for destination");
                }
                continue;
            };
            let header = Header::direct(PayloadKind::Ip);
            let link = match next {
                Next::Send(send) => {
                    send.liveness.carried_traffic();
                    &send.link
                }
                Next::Hold(dest) => {
                    hold(&node, *dest, &header, packet, now);
                    continue;
                }
            };
            if header.buffer_len() + packet.len() > *max {
                too_big(&node, link, packet, *max, header, &mut gate).await;
                continue;
            }
            let Some(datagram) = link.datagram(&mut arena, &header, packet) else {
                continue;
            };
            match link.send_datagram_wait(datagram).await {
                Ok(()) => {}
                Err(SendError::TooLarge) => {
                    let max = link.max_datagram_size();
                    too_big(&node, link, packet, max, header, &mut gate).await;
                    last = None;
                }
                Err(e) => {
                    debug!(error = %e, "datagram not sent");
                    last = None;
                }
            }
        }
    }
}

/// Holds `payload` behind `header` for `dest` until a link to it is up. The datagram
/// gets its own allocation: a slice of the uplink's arena would keep the whole arena
/// chunk (256 KiB) alive while it waits, and the held queues' byte bound would not
/// bound memory.
fn hold(node: &Node, dest: NodeId, header: &Header, payload: &[u8], now: u64) {
    let mut buf = vec![0u8; header.buffer_len()];
    if header.emit(&mut buf).is_err() {
        return;
    }
    buf.extend_from_slice(payload);
    let dropped = node.held.push(dest, Bytes::from(buf), now);
    if dropped > 0 {
        debug!(
            node = %dest,
            dropped, "dropped held packets: no link to the node yet"
        );
    }
}

/// Sends the packets held for the peer `id` on `link`, a link to it that just came up.
pub fn release_held(node: &Node, id: NodeId, link: &Link) {
    let held = node.held.take(id, node.now_ms());
    if held.is_empty() {
        return;
    }
    let count = held.len();
    let mut unsent = 0;
    // A new link may carry less than the one the packets were framed for (a relayed
    // connection starts a relay frame smaller): those get what live packets get.
    let mut gate = TooBigGate::default();
    for datagram in held {
        let Some(framed) = link.frame(datagram.clone()) else {
            unsent += 1;
            continue;
        };
        match link.send_datagram(framed) {
            Ok(()) => {}
            Err(SendError::TooLarge) => {
                unsent += 1;
                let Ok((header, hlen)) = Header::parse(&datagram) else {
                    continue;
                };
                let Some(packet) = datagram.get(hlen..) else {
                    continue;
                };
                if header.kind != PayloadKind::Ip {
                    continue;
                }
                let max = link.max_datagram_size();
                for d in oversize(node, link, packet, max, header, &mut gate).carry_out(node) {
                    let _ = link.send_datagram(d);
                }
            }
            Err(e) => {
                unsent += 1;
                debug!(error = %e, "held datagram not sent");
            }
        }
    }
    debug!(
        node = %id,
        count, unsent, "sent packets held until the link was up"
    );
}

/// The link to mesh node `dest` (see `PeerTable::traffic_link`): the direct one when
/// `dest` is the next hop; otherwise the end-to-end relayed one (the nodes between
/// forward its packets without decrypting them), asked for if it is not up yet, and
/// meanwhile a direct link that still answers, or the packet waits.
fn route_to_node(node: &Node, dest: NodeId, now: u64) -> Option<Next> {
    let around = node.mesh.next_hop(dest).is_some_and(|hop| hop != dest);
    let link = node.peers.traffic_link(dest, now, around);
    if around && !link.as_ref().is_some_and(|l| l.link.relayed()) {
        node.want_relayed(dest, now);
    }
    match link {
        Some(link) => Some(Next::Send(link)),
        None if around => Some(Next::Hold(dest)),
        None => None,
    }
}

/// Layer 2 over the mesh: a frame to a learned MAC goes to the node it was learned from;
/// broadcast, multicast and unknown unicast go to every node that runs a TAP, each copy
/// routed as unicast (head-end replication). Receivers only ever write frames to their
/// TAP, so flooding cannot loop.
pub async fn tap_to_peers(node: Arc<Node>) {
    let Some(tap) = node.tap.as_ref() else {
        return;
    };
    let mut buf = vec![0u8; BUF_LEN];
    let mut arena = BytesMut::new();
    // Nodes a frame goes to; reused, so a frame allocates nothing.
    let mut targets: Vec<NodeId> = Vec::new();
    let mut oversized: u64 = 0;
    let mut failures = 0u64;
    loop {
        let n = match tap.device.recv(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                read_failed(&node, tap, &e, &mut failures).await;
                continue;
            }
        };
        let frame = &buf[..n];
        let Some(destination) = l2::destination_mac(frame) else {
            continue;
        };
        let now = node.now_ms();
        let known = if l2::is_group(&destination) {
            None
        } else {
            node.macs.lookup(&destination, now)
        };
        targets.clear();
        match known {
            Some(id) => targets.push(id),
            None => {
                // Nodes known to the mesh, and connected peers whose node information
                // has not arrived yet.
                node.mesh.extend_l2_nodes(&mut targets);
                node.peers.extend_l2_ids(&mut targets);
                targets.sort_unstable();
                targets.dedup();
            }
        }
        let header = Header::direct(PayloadKind::Ethernet);
        let hlen = header.buffer_len();
        for &dest in &targets {
            let link = match route_to_node(&node, dest, now) {
                None => continue,
                Some(Next::Hold(dest)) => {
                    hold(&node, dest, &header, frame, now);
                    continue;
                }
                Some(Next::Send(send)) => {
                    send.liveness.carried_traffic();
                    send.link
                }
            };
            if hlen + n > link.max_datagram_size() {
                oversized += 1;
                if oversized.is_power_of_two() {
                    warn!(
                        frame = n,
                        max = link.max_datagram_size().saturating_sub(hlen),
                        dropped = oversized,
                        "dropping Ethernet frame larger than the path allows (lower tap.mtu)"
                    );
                }
                continue;
            }
            let Some(datagram) = link.datagram(&mut arena, &header, frame) else {
                continue;
            };
            if let Err(e) = link.send_datagram_wait(datagram).await {
                debug!(error = %e, "datagram not sent");
            }
        }
    }
}

/// What to do with a packet that does not fit a datagram of `max` bytes behind
/// `header` (see [`oversize`]).
enum Oversize {
    /// Send these datagrams instead: the fragments of an IPv4 packet without DF.
    Fragments(Vec<Framed>),
    /// Write this ICMP error ("packet too big", "fragmentation needed") to the TUN.
    Answer(Vec<u8>),
    Drop,
}

impl Oversize {
    /// Writes the ICMP error if that is the decision; returns the datagrams to send.
    fn carry_out(self, node: &Node) -> Vec<Framed> {
        match self {
            Oversize::Fragments(frags) => frags,
            Oversize::Answer(icmp) => {
                if let Some(tun) = &node.tun {
                    tun.write_one(&icmp);
                }
                Vec::new()
            }
            Oversize::Drop => Vec::new(),
        }
    }
}

/// Decides on a packet that does not fit a datagram of `max` bytes behind `header`: an
/// IPv4 packet without DF is fragmented; any other is answered with an ICMP error if
/// `gate` lets it through, dropped otherwise.
fn oversize(
    node: &Node,
    link: &Link,
    packet: &[u8],
    max: usize,
    header: Header,
    gate: &mut TooBigGate,
) -> Oversize {
    if node.tun.is_none() {
        return Oversize::Drop;
    }
    let hlen = header.buffer_len();
    let room = max.saturating_sub(hlen);
    if ip::is_fragmentable_v4(packet) {
        let mut frags = Vec::new();
        if ip::fragment_v4(packet, room, |f| {
            frags.extend(link.datagram_alloc(&header, f));
        }) {
            return Oversize::Fragments(frags);
        }
    }
    if !gate.answer(link, Instant::now()) {
        debug!(
            max,
            "dropping a packet that does not fit (link cut after a suspected black hole, or ICMP budget spent)"
        );
        return Oversize::Drop;
    }
    // The error comes from the packet's destination: an address of this node would be
    // dropped by the kernel as a martian when it arrives on the TUN.
    let Some((source, from)) = ip::addresses(packet) else {
        return Oversize::Drop;
    };
    let mtu = u16::try_from(room).unwrap_or(u16::MAX);
    let mut icmp = [0u8; 1280];
    match ip::packet_too_big(packet, mtu, from, &mut icmp) {
        Some(len) => {
            debug!(%source, mtu, "answering packet too big");
            Oversize::Answer(icmp[..len].to_vec())
        }
        None => Oversize::Drop,
    }
}

/// [`oversize`] on the uplink: fragments wait for room in quinn's queue.
async fn too_big(
    node: &Node,
    link: &Link,
    packet: &[u8],
    max: usize,
    header: Header,
    gate: &mut TooBigGate,
) {
    for d in oversize(node, link, packet, max, header, gate).carry_out(node) {
        let _ = link.send_datagram_wait(d).await;
    }
}

/// Sends a packet from a CONNECT-IP client of this node (its source already checked)
/// on its way, as a packet read from the TUN goes: to another client here, to the
/// node that owns its destination, into the TUN for an address of this node, or into
/// the TUN to leave the mesh here when this node may egress and `[egress]` allows the
/// destination. The error is the ICMP error its sender gets.
pub async fn send_from_client(node: &Node, packet: &[u8]) -> Result<(), ip::IcmpError> {
    let Some(tun) = node.tun.as_ref() else {
        return Err(ip::IcmpError::Unreachable);
    };
    let (_, destination) = ip::addresses(packet).ok_or(ip::IcmpError::Unreachable)?;
    if node.masque_deliver(destination, packet) {
        return Ok(());
    }
    let now = node.now_ms();
    match route(node, destination, now) {
        Ok(Next::Send(send)) => {
            let header = Header::direct(PayloadKind::Ip);
            // The largest packet the link carries now, as an ICMP error states it.
            let too_big = || ip::IcmpError::TooBig {
                mtu: u16::try_from(
                    send.link
                        .max_datagram_size()
                        .saturating_sub(header.buffer_len()),
                )
                .unwrap_or(u16::MAX),
            };
            if header.buffer_len() + packet.len() > send.link.max_datagram_size() {
                return Err(too_big());
            }
            send.liveness.carried_traffic();
            let datagram = send
                .link
                .datagram_alloc(&header, packet)
                .ok_or(ip::IcmpError::Unreachable)?;
            match send.link.send_datagram_wait(datagram).await {
                Ok(()) => Ok(()),
                Err(SendError::TooLarge) => Err(too_big()),
                Err(e) => {
                    debug!(error = %e, "client packet not sent");
                    Ok(())
                }
            }
        }
        Ok(Next::Hold(dest)) => {
            hold(node, dest, &Header::direct(PayloadKind::Ip), packet, now);
            Ok(())
        }
        Err(NoRoute::Unreachable) => Err(ip::IcmpError::Unreachable),
        Err(NoRoute::Unowned) => {
            let own = tun.spec.addresses.iter().any(|a| a.addr() == destination);
            if own {
                tun.write_one(packet);
                return Ok(());
            }
            if in_overlay(tun, destination) {
                return Err(ip::IcmpError::Unreachable);
            }
            let may = node.own_cert().authorization.egress
                && node.egress.as_ref().is_some_and(|policy| {
                    policy.allows_packet(destination, ip::destination_port(packet))
                });
            if !may {
                return Err(ip::IcmpError::Prohibited);
            }
            tun.write_one(packet);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_answers_share_the_icmp_budget() {
        let mut gate = TooBigGate::default();
        let t0 = Instant::now();
        let burst = (0..100).filter(|_| gate.spend(t0)).count();
        assert_eq!(burst as f64, ICMP_BURST);
        assert!(
            !gate.decide(LinkId(1), || false, t0),
            "too-big answers are out of budget too"
        );
        assert!(
            gate.spend(t0 + Duration::from_millis(2)),
            "refilled at 1000 a second"
        );
    }

    #[test]
    fn too_big_answers_wait_for_a_lasting_black_hole_only() {
        let mut gate = TooBigGate::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Not held at 1200 bytes by a suspected black hole: answered at once.
        assert!(gate.decide(LinkId(1), || false, at(0)));
        // Suspected from 1 s on: silent for 4 s, answered after.
        assert!(!gate.decide(LinkId(1), || true, at(1_000)));
        assert!(!gate.decide(LinkId(1), || true, at(4_900)));
        assert!(gate.decide(LinkId(1), || true, at(5_000)));
        // Another link has its own grace.
        assert!(!gate.decide(LinkId(2), || true, at(5_100)));
        // Ten seconds without an oversized packet: a new episode, a new grace.
        assert!(gate.decide(LinkId(1), || true, at(14_000)));
        assert!(!gate.decide(LinkId(1), || true, at(24_000)));
        assert!(gate.decide(LinkId(1), || true, at(28_000)));
    }

    #[test]
    fn quinn_is_asked_at_most_every_100_ms_per_link() {
        let mut gate = TooBigGate::default();
        let t0 = Instant::now();
        let mut asked = 0;
        for ms in 0..1_000 {
            gate.decide(
                LinkId(1),
                || {
                    asked += 1;
                    true
                },
                t0 + Duration::from_millis(ms),
            );
        }
        assert_eq!(asked, 10);
    }

    #[test]
    fn icmp_errors_are_limited_to_a_burst_then_a_rate() {
        let mut gate = TooBigGate::default();
        let t0 = gate.refilled;
        let mut sent = |now| {
            (0..200)
                .filter(|_| gate.decide(LinkId(1), || false, now))
                .count()
        };
        assert_eq!(sent(t0), ICMP_BURST as usize);
        // 10 ms later: 10 more at 1000 per second.
        assert_eq!(sent(t0 + Duration::from_millis(10)), 10);
        // A quiet second refills the burst, no more.
        assert_eq!(sent(t0 + Duration::from_millis(1_010)), ICMP_BURST as usize);
    }

    #[test]
    fn too_big_gate_forgets_old_links() {
        let mut gate = TooBigGate::default();
        let t0 = Instant::now();
        for link in 0..100usize {
            gate.tokens = ICMP_BURST;
            gate.decide(LinkId(link), || false, t0);
        }
        gate.decide(LinkId(1000), || false, t0 + TOO_BIG_EPISODE_GAP);
        assert!(gate.links.len() <= 65, "{}", gate.links.len());
    }
}
