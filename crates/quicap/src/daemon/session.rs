//! One authenticated connection to a peer: identity check, hello exchange, then the
//! datagram receive loop and the control loop until the connection ends.
//!
//! The control loop also probes the link at the pace [`quicap_mesh::liveness`] sets
//! (every 250 ms while the link carries tunnel traffic, every second while it does
//! not); each answering Pong keeps the link's [`Liveness`] fresh. The peer table stops
//! sending on a link that no longer counts as answering when another link to the same
//! peer does, and the prober closes a link that stays silent past the dead limit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use bytes::Bytes;
use futures::FutureExt;
use quicap_mesh::liveness::{self, PaceClock};
use quicap_pki::cert::VerifiedCert;
use quicap_pki::NodeCert;
use quicap_wire::control::Hello;
use quicap_wire::overlay::PayloadKind;
use quicap_wire::{ip, negotiate_version, Escaped, Header, Message};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::dialer::Dialer;
use super::frames::{read_message, ReadError};
use super::mesh::{Accepted, Via, SIGNED_NODE_INFO_VERSION};
use super::peers::{Liveness, PeerLink};
use super::Node;
use crate::link::{CloseCode, ControlRecv, ControlSend, Link, WriteError};

const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Control messages queued for one link; routing dumps of large meshes take several.
const CONTROL_QUEUE: usize = 256;
/// Datagrams handled per batch on the receive side at most.
const READ_BATCH: usize = 64;
/// A link counts as idle once it has carried no tunnel traffic (datagrams either way)
/// for this long.
const BUSY_HOLD_MS: u64 = 5000;

/// Relay frames a second forwarded for other nodes above which every direct link
/// counts as busy. Measured at the middle node of a line, a relayed link with no
/// traffic of its own carries 5 a second (probes, pongs, ACKs), 22 while it still
/// probes at the full rate.
const RELAY_BUSY_PER_SEC: u64 = 30;

/// Whether a link carried tunnel traffic lately: the transport's count of datagrams
/// on it. A direct link also counts as busy while this node's relayed links carry traffic
/// or it forwards relay frames for others: those travel beside the direct links' QUIC
/// connections, on whichever link the mesh picks, and a failing link under relayed
/// traffic must be found as fast as under direct traffic. A relayed link goes by its
/// own datagrams only (its probes are relay frames too, and would keep it busy).
#[derive(Debug)]
struct TrafficWatch {
    relayed: bool,
    datagrams: u64,
    forwarded: u64,
    checked: u64,
    busy_until: u64,
}

impl TrafficWatch {
    fn new(node: &Node, link: &Link, now_ms: u64) -> Self {
        TrafficWatch {
            relayed: link.relayed(),
            datagrams: link.stats().datagrams,
            forwarded: node.relay_forwarded(),
            checked: now_ms,
            busy_until: now_ms + BUSY_HOLD_MS,
        }
    }

    /// Tunnel traffic just went over the link, whatever the transport's counters say yet.
    fn carried(&mut self, now_ms: u64) {
        self.busy_until = now_ms + BUSY_HOLD_MS;
    }

    fn busy(&mut self, node: &Node, link: &Link, now_ms: u64) -> bool {
        let datagrams = link.stats().datagrams;
        let forwarded = node.relay_forwarded();
        let elapsed = now_ms.saturating_sub(self.checked).max(1);
        let relaying = !self.relayed
            && (forwarded.saturating_sub(self.forwarded) * 1000 >= RELAY_BUSY_PER_SEC * elapsed
                || node.peers.relayed_busy());
        if datagrams != self.datagrams || relaying {
            self.busy_until = now_ms + BUSY_HOLD_MS;
        }
        self.datagrams = datagrams;
        self.forwarded = forwarded;
        self.checked = now_ms;
        now_ms < self.busy_until
    }
}

/// Runs a link until it ends. Returns true if the hello exchange completed, i.e. the
/// peer accepted this node.
pub async fn run(node: Arc<Node>, link: Link, outgoing: bool, expected: Option<&str>) -> bool {
    let relayed = link.relayed();
    let remote = link.remote_label();
    let (cert, hello, version, control) = match establish(&node, &link, outgoing, expected).await {
        Ok(ok) => ok,
        Err(e) => {
            let reason = match link.close_reason() {
                Some(r) if !link.closed_locally() => r,
                _ => format!("{e:#}"),
            };
            if let Some(refused) = node.refusals.after_handshake(link.remote_address()) {
                warn!(%remote, peer = expected.unwrap_or("?"), %reason, refused, "connection refused");
            }
            return false;
        }
    };
    let name = cert.name().to_owned();
    let id = quicap_pki::node_id(&name);
    let auth = cert.authorization().clone();
    let liveness = Liveness::new(node.now_ms());
    let (control_tx, control_rx) = mpsc::channel::<Message>(CONTROL_QUEUE);
    // A relayed peer is no neighbour: it hears nothing of routing from us, and we
    // take none from it.
    let _ = control_tx.try_send(Message::Instance(node.instance));
    if !relayed {
        for msg in node.mesh.greeting() {
            let _ = control_tx.try_send(msg);
        }
    }
    let instance = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let serial = cert.cert().serial.clone();
    let peers = node.peers.add(
        cert,
        hello.modes,
        PeerLink {
            link: link.clone(),
            outgoing,
            // Both ends usually dial a relayed link at once; they agree to keep the one
            // the node with the lower id dialed.
            kept: relayed && outgoing == (node.mesh.id < id),
            since_ms: node.now_ms(),
            liveness: liveness.clone(),
            control: control_tx.clone(),
            peer_serial: serial.clone(),
            generation: node.generation.load(Ordering::Relaxed),
            instance: instance.clone(),
            refused: refused.clone(),
        },
    );
    node.peers_changed(peers);
    let dialer = node.dialers.get(&name).cloned();
    if let Some(d) = &dialer {
        d.link_up(&link, outgoing, node.now_ms());
    }
    if !relayed {
        // The router learns of the new neighbour before this link's first routing
        // message is read: it ignores messages from nodes it does not know as
        // neighbours, and the peer sends its routes once, right after the hello.
        super::routing::mesh_step(&node, node.now_ms());
    }
    node.mesh.notify.notify_one();
    info!(peer = %name, %remote, kind = %link.kind(), outgoing, version, l2 = hello.modes.l2, "peer connected");
    // A CRL reloaded during the hello exchange closed the peers in the table, which
    // this link was not yet in: check again now that it is.
    if node
        .trust()
        .crl
        .as_ref()
        .is_some_and(|crl| crl.is_revoked(&serial))
    {
        warn!(peer = %name, "closing peer: certificate revoked");
        link.close(CloseCode::CertificateInvalidated, "certificate revoked");
    }
    // Packets that waited for a link to this node.
    super::datapath::release_held(&node, id, &link);
    // Proxied flows the peer opens on this link; the task ends with the link.
    tokio::spawn(crate::proxy::serve_flows(
        node.clone(),
        link.clone(),
        name.clone(),
    ));

    let datagrams = receive_datagrams(&node, &link, &name, &auth, (&liveness, &refused));
    let control = control_loop(
        &node,
        (&link, dialer.as_deref()),
        control,
        (control_tx, control_rx),
        &name,
        (&liveness, &instance),
        (relayed, version),
    );
    let violation = tokio::select! {
        _ = datagrams => None,
        v = control => v,
    };
    // Either loop ends on its own, with the connection still up, only when the peer
    // broke the protocol: close the link, saying how, rather than keep a connection
    // nobody serves.
    if !link.is_closed() {
        let reason = violation.unwrap_or_else(|| "control stream ended".to_owned());
        warn!(peer = %name, %remote, %reason, "closing link: protocol violation");
        link.close(CloseCode::ProtocolViolation, &reason);
    }
    let reason = link.closed().await;
    if let Some(d) = &dialer {
        d.link_down(&link, node.now_ms());
    }
    let (left, peers) = node.peers.remove(&name, link.id());
    if left == 0 {
        node.macs.forget_node(id);
    }
    node.peers_changed(peers);
    node.mesh.notify.notify_one();
    info!(peer = %name, %remote, %reason, links_left = left, "peer disconnected");
    true
}

type Control = (ControlSend, ControlRecv);

async fn establish(
    node: &Node,
    link: &Link,
    outgoing: bool,
    expected: Option<&str>,
) -> Result<(VerifiedCert, Hello, u8, Control)> {
    let cert = peer_certificate(node, link)?;
    if let Some(expected) = expected {
        if cert.name() != expected {
            link.close(
                CloseCode::Refused,
                &format!("expected {expected}, got {}", cert.name()),
            );
            bail!(
                "peer presented certificate for {:?}, expected {expected:?}",
                cert.name()
            );
        }
    }
    if cert.name() == node.name {
        link.close(CloseCode::Refused, "connected to itself");
        bail!("connected to itself (a peer endpoint points at this node)");
    }
    let (mut send, mut recv) = if outgoing {
        link.open_control().await?
    } else {
        tokio::time::timeout(HELLO_TIMEOUT, link.accept_control())
            .await
            .map_err(|_| anyhow!("no hello within {HELLO_TIMEOUT:?}"))??
    };
    let ours = Hello {
        min_version: *node.versions.start(),
        max_version: *node.versions.end(),
        name: node.name.clone(),
        mtu: node.mtu,
        modes: node.modes,
    };
    let mut buf = Vec::new();
    Message::Hello(ours).encode(&mut buf)?;
    if send.write_all(&buf).await.is_err() {
        bail!("the link closed before the hello was sent");
    }
    let theirs = match tokio::time::timeout(HELLO_TIMEOUT, read_message(&mut recv)).await {
        Err(_) => bail!("no hello within {HELLO_TIMEOUT:?}"),
        Ok(Err(ReadError::Violation(reason))) => {
            link.close(CloseCode::ProtocolViolation, &reason);
            bail!(reason);
        }
        Ok(Err(e)) => return Err(e.into()),
        Ok(Ok(Message::Hello(h))) => h,
        Ok(Ok(Message::Goodbye(reason))) => bail!("peer said goodbye: {}", Escaped(&reason)),
        Ok(Ok(other)) => {
            let reason = format!("expected a hello, got {}", other.kind_name());
            link.close(CloseCode::ProtocolViolation, &reason);
            bail!(reason);
        }
    };
    if theirs.name != cert.name() {
        link.close(
            CloseCode::ProtocolViolation,
            "hello name differs from certificate",
        );
        bail!(
            "hello names {} (unverified) but the certificate is {}'s",
            Escaped(&theirs.name),
            cert.name()
        );
    }
    let Some(version) = negotiate_version(
        node.versions.clone(),
        theirs.min_version..=theirs.max_version,
    ) else {
        let reason = format!(
            "incompatible protocol versions: we speak {}..={}, peer speaks {}..={}",
            node.versions.start(),
            node.versions.end(),
            theirs.min_version,
            theirs.max_version
        );
        let mut bye = Vec::new();
        Message::Goodbye(reason.clone()).encode(&mut bye)?;
        let _ = send.write_all(&bye).await;
        send.finish().await;
        // Give the goodbye a moment to leave before the close frame.
        tokio::time::sleep(Duration::from_millis(100)).await;
        link.close(CloseCode::Incompatible, &reason);
        bail!(reason);
    };
    Ok((cert, theirs, version, (send, recv)))
}

/// The peer's certificate, checked again by QUICAP's own verifier (rustls already
/// verified it during the handshake) so that the rest of the node works with a
/// [`VerifiedCert`] and its authorization.
fn peer_certificate(node: &Node, link: &Link) -> Result<VerifiedCert> {
    let chain = link
        .peer_certificates()
        .ok_or_else(|| anyhow!("peer presented no certificate"))?;
    let der = chain
        .first()
        .ok_or_else(|| anyhow!("peer presented no certificate"))?;
    let cert = NodeCert::from_der(der).map_err(|e| {
        link.close(CloseCode::Refused, "not a node certificate");
        anyhow!("peer certificate: {e}")
    })?;
    let trust = node.trust();
    cert.verify(
        &trust.ca,
        trust.crl.as_ref(),
        time::OffsetDateTime::now_utc(),
    )
    .map_err(|e| {
        link.close(CloseCode::Refused, &e.to_string());
        anyhow!("peer certificate: {e}")
    })
}

/// How long after a link's Instance message it is compared with the peer's other
/// links: longer than a dead link stays alive (an idle one 1.6 s), so that a node
/// restarted at once after a crash is not taken for a second one.
const INSTANCE_CHECK_DELAY_MS: u64 = 2500;

/// Reads control messages, answers pings, and probes the link; returns when the
/// control stream ends, with how the peer broke the protocol if it did.
async fn control_loop(
    node: &Node,
    (link, dialer): (&Link, Option<&Dialer>),
    (mut send, mut recv): Control,
    (tx, mut rx): (mpsc::Sender<Message>, mpsc::Receiver<Message>),
    peer: &str,
    (liveness, instance): (&Liveness, &AtomicU64),
    (relayed, version): (bool, u8),
) -> Option<String> {
    // One writer owns the send stream; the reader, the prober and the mesh queue
    // messages for it.
    let peer_id = quicap_pki::node_id(peer);
    let writer = async move {
        let mut buf = Vec::new();
        while let Some(mut msg) = rx.recv().await {
            if version < SIGNED_NODE_INFO_VERSION {
                if let Message::NodeInfo(info) = msg {
                    msg = Message::LegacyNodeInfo(info);
                }
            }
            buf.clear();
            if let Err(e) = msg.encode(&mut buf) {
                debug!(%peer, error = %e, message = msg.kind_name(), "control message not sent");
                continue;
            }
            match send.write_all(&buf).await {
                Ok(()) => {}
                Err(WriteError::Stopped(code)) => {
                    return Some(format!("control stream stopped by the peer (code {code})"));
                }
                Err(WriteError::Lost) => return None,
            }
        }
        None
    };
    let probe_tx = tx.clone();
    // When to compare the peer's instance number with its other links' (0: not due).
    let instance_check_due = &AtomicU64::new(0);
    let prober = async move {
        let mut seq = 0u64;
        // A new link probes at the full rate at first, so that it proves itself quickly.
        let mut traffic = TrafficWatch::new(node, link, node.now_ms());
        let mut clock = PaceClock::new(liveness.pace(), node.now_ms());
        loop {
            let pace = clock.pace();
            let silent = liveness.silent_for(node.now_ms());
            let pause = liveness::probe_pause(pace, silent);
            // Idle probes go out at wall-clock multiples of their interval, at both ends
            // alike, so that an idle node wakes once for its own probe and its peer's.
            let pause = if pause == pace.interval() && !pace.is_busy() {
                super::aligned_pause(Duration::from_millis(pause))
            } else {
                Duration::from_millis(pause)
            };
            let woken = tokio::select! {
                _ = tokio::time::sleep(pause) => false,
                _ = liveness.traffic_on_idle_link() => true,
            };
            let now = node.now_ms();
            if woken {
                // quinn may not have sent the datagram yet: its counters lag.
                traffic.carried(now);
                node.traffic_resumed.notify_one();
            }
            if let Some(next) = clock.update(traffic.busy(node, link, now), now) {
                liveness.set_pace(next);
                if let Some(d) = dialer {
                    d.pace(link, next, now);
                }
                if next.is_busy() {
                    // The routing core keeps a slower pace while every link is idle.
                    node.mesh.notify.notify_one();
                }
            }
            if liveness.dead(node.dead_after_ms, now) {
                let silent = liveness.silent_for(now);
                let reason = format!("no answer to probes for {silent} ms");
                link.close(CloseCode::Unresponsive, &reason);
                warn!(%peer, %reason, "closing dead link");
                return None;
            }
            let due = instance_check_due.load(Ordering::Relaxed);
            if due != 0 && now >= due {
                instance_check_due.store(0, Ordering::Relaxed);
                let value = instance.load(Ordering::Relaxed);
                if let Some(other) = node.peers.other_instance(peer, liveness, value, now) {
                    warn!(
                        %peer,
                        remote = %link.remote_label(),
                        %other,
                        "two running nodes hold the certificate of this peer (give each machine its own: quicap cert request, quicap ca sign)"
                    );
                }
            }
            seq += 1;
            // A full queue means the stream is stuck; the missing pong says enough.
            let _ = probe_tx.try_send(Message::Ping(seq));
            liveness.probe_sent();
        }
    };
    let reader = async move {
        loop {
            match read_message(&mut recv).await {
                Ok(Message::Ping(v)) => {
                    let _ = tx.try_send(Message::Pong(v));
                }
                Ok(Message::Pong(_)) => {
                    let now = node.now_ms();
                    liveness.answered(now);
                    if let Some(d) = dialer {
                        d.answered(link, now);
                    }
                }
                Ok(Message::Goodbye(reason)) => {
                    info!(%peer, reason = %Escaped(&reason), "peer said goodbye");
                }
                Ok(Message::Hello(_)) => return Some("a second hello".to_owned()),
                Ok(
                    Message::Routes(_)
                    | Message::Request { .. }
                    | Message::NodeInfo(_)
                    | Message::LegacyNodeInfo(_),
                ) if relayed => {}
                Ok(msg @ (Message::Routes(_) | Message::Request { .. })) => {
                    node.mesh.handle_message(peer_id, &msg, node.now_ms());
                }
                Ok(Message::LegacyNodeInfo(_)) if version >= SIGNED_NODE_INFO_VERSION => {
                    return Some(format!(
                        "unsigned node info on a version {version} connection"
                    ));
                }
                Ok(Message::NodeInfo(info) | Message::LegacyNodeInfo(info)) => {
                    let via = Via { peer, version };
                    match node.mesh.accept_node_info(&info, &node.trust(), via) {
                        Accepted::Ignored => {}
                        Accepted::Relay => {
                            let now = node.now_ms();
                            for other in node.peers.names() {
                                if other != peer {
                                    node.peers.send_control(
                                        &other,
                                        Message::NodeInfo(info.clone()),
                                        now,
                                    );
                                }
                            }
                        }
                        Accepted::OwnRenewed(own) => {
                            node.peers.send_control_to_all(&own, node.now_ms());
                        }
                    }
                }
                Ok(Message::HostDrops(host)) => node.scheduling.host_drops(&host),
                Ok(Message::Instance(value)) => {
                    instance.store(value, Ordering::Relaxed);
                    instance_check_due
                        .store(node.now_ms() + INSTANCE_CHECK_DELAY_MS, Ordering::Relaxed);
                }
                Ok(Message::Unknown(_)) => {}
                Err(ReadError::Violation(reason)) => return Some(reason),
                Err(ReadError::Lost(e)) => {
                    debug!(%peer, error = %e, "control stream ended with the connection");
                    return None;
                }
            }
        }
    };
    tokio::select! {
        v = writer => v,
        v = prober => v,
        v = reader => v,
    }
}

/// Moves datagrams from the connection to the TUN or TAP, dropping (and counting) any
/// whose header is invalid or carries a routing extension, whose kind this node does
/// not run, or (for IP, and for Ethernet with `tap.check-sources`) whose source address
/// the peer's certificate does not authorize.
async fn receive_datagrams(
    node: &Node,
    link: &Link,
    peer: &str,
    auth: &quicap_pki::Authorization,
    (liveness, refused): (&Liveness, &AtomicU64),
) {
    let peer_id = quicap_pki::node_id(peer);
    let mut routed: u64 = 0;
    let mut batch: Vec<Bytes> = Vec::with_capacity(READ_BATCH);
    loop {
        // One datagram, then every one already received: the batch ends where the
        // socket's receive batch ended, so flows coalesce without waiting.
        match link.read_datagram().await {
            Some(d) => batch.push(d),
            None => return,
        }
        while batch.len() < READ_BATCH {
            match link.read_datagram().now_or_never() {
                Some(Some(d)) => batch.push(d),
                _ => break,
            }
        }
        liveness.carried_traffic();
        for datagram in batch.drain(..) {
            let (header, offset) = match Header::parse(&datagram) {
                Ok(ok) => ok,
                Err(e) => {
                    debug!(%peer, error = %e, "dropping malformed datagram");
                    continue;
                }
            };
            // Tunnel traffic comes from the node at the other end of the connection
            // only: a datagram that claims another origin (a routing extension, which
            // this version never sends) could be forged by any node of the network.
            if header.route.is_some() {
                routed += 1;
                if routed.is_power_of_two() {
                    warn!(%peer, dropped = routed, "dropping datagram with a routing extension: tunnel traffic travels between its two ends only");
                }
                continue;
            }
            let payload = &datagram[offset..];
            match header.kind {
                PayloadKind::Flow => {
                    if !node.udp.deliver(link.id(), datagram.slice(offset..)) {
                        debug!(%peer, "dropping a flow datagram: no association, or its queue is full");
                    }
                }
                PayloadKind::Ip => {
                    let Some(tun) = &node.tun else {
                        continue;
                    };
                    let Some((source, destination)) = ip::addresses(payload) else {
                        continue;
                    };
                    if !auth.permits_source(source) {
                        let dropped = refused.fetch_add(1, Ordering::Relaxed) + 1;
                        if dropped.is_power_of_two() {
                            warn!(%peer, %source, dropped, "dropping packet: source address not authorized by the peer's certificate");
                        }
                        continue;
                    }
                    if node.masque_deliver(destination, payload) {
                        continue;
                    }
                    tun.stage(payload);
                }
                PayloadKind::Ethernet => {
                    let Some(tap) = &node.tap else {
                        continue;
                    };
                    let Some(source) = super::l2::source_mac(payload) else {
                        continue;
                    };
                    if node.tap_check_sources {
                        use super::l2::FrameSource;
                        match super::l2::frame_source(payload) {
                            FrameSource::Unnamed => {}
                            FrameSource::Address(a) if auth.permits_source(a) => {}
                            claimed => {
                                let dropped = refused.fetch_add(1, Ordering::Relaxed) + 1;
                                if dropped.is_power_of_two() {
                                    warn!(%peer, source = ?claimed, dropped, "dropping frame: source not authorized by the peer's certificate (tap.check-sources)");
                                }
                                continue;
                            }
                        }
                    }
                    node.macs.learn(source, peer_id, node.now_ms());
                    tap.stage(payload);
                }
            }
        }
        for interface in node.interfaces() {
            interface.flush();
        }
    }
}
