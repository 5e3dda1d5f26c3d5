//! Dialing: the driver of each dialed peer's link core (see [`super::dialer`]), which
//! dials the peer's endpoint over QUIC or TLS/TCP when the core says so, and the
//! end-to-end relayed connections the relayed-dial core asks for.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use quicap_mesh::links::{Choice, Event, Transport};
use quicap_mesh::NodeId;
use tracing::{debug, info, warn};

use super::dialer::Dialer;
use super::members::NodeMembers;
use super::{refusal, session, Node};
use crate::camouflage::{self, client::WebDial};
use crate::config::{PeerConfig, PeerTransport};
use crate::link::{tcp, CloseCode, Link, LinkId};
use crate::tls::RefusalSlot;
use crate::transport;

/// Opens the end-to-end relayed connections the relayed-dial core asks for.
pub(super) async fn relay_dialer(node: Arc<Node>) {
    loop {
        node.relay_wake.notified().await;
        let wanted: Vec<NodeId> = {
            let mut core = node.relayed_dials();
            core.handle_timeout(node.now_ms());
            std::iter::from_fn(|| core.poll_dial()).collect()
        };
        for dest in wanted {
            if !node.peers.has_relayed(dest) {
                tokio::spawn(dial_relayed(node.clone(), dest));
            }
        }
    }
}

/// Dials `dest` at its virtual address: the handshake and everything after it travel
/// in relay frames along the mesh's routes, end to end encrypted.
pub(super) async fn dial_relayed(node: Arc<Node>, dest: NodeId) {
    let Some(name) = node.mesh.name_of(dest) else {
        return;
    };
    let addr = node.relays.virtual_addr(dest);
    match connect(&node, &name, addr).await {
        Ok(link) => {
            node.relayed_dials().handle_link_up(dest);
            session::run(node, link, true, Some(&name)).await;
        }
        Err(e) => {
            debug!(peer = %name, error = %format!("{e:#}"), "relayed dial failed");
            node.relayed_dials().handle_dial_failed(dest, node.now_ms());
        }
    }
}

/// Runs the core of `peer`: dials when it says so, closes what it no longer needs.
pub async fn drive(node: Arc<Node>, peer: PeerConfig, dialer: Arc<Dialer>) {
    let Some(target) = peer.endpoint.clone() else {
        return;
    };
    let mut last_choice: Option<Choice> = None;
    loop {
        let now = node.now_ms();
        let (events, due) = {
            let mut core = dialer.core.lock().unwrap_or_else(|p| p.into_inner());
            core.handle_timeout(now);
            let events: Vec<Event> = std::iter::from_fn(|| core.poll_event()).collect();
            // Stored under the lock: a session's event after it sees the new deadline.
            let due = core.poll_timeout().unwrap_or(now + 60_000);
            dialer.deadline.store(due, Ordering::Relaxed);
            (events, due)
        };
        for event in events {
            match event {
                Event::Dial { transport, why } => {
                    // A fallback to TCP is news; QUIC (re)dials and fixed transports
                    // are routine.
                    if transport == Transport::Tcp && peer.transport == PeerTransport::Auto {
                        info!(peer = %peer.name, transport = transport.as_str(), why, "dialing");
                    } else {
                        debug!(peer = %peer.name, transport = transport.as_str(), why, "dialing");
                    }
                    tokio::spawn(dial_once(
                        node.clone(),
                        peer.clone(),
                        target.clone(),
                        transport,
                        dialer.clone(),
                    ));
                }
                Event::Close { link, why } => {
                    if let Some(l) = node.peers.link_by_id(&peer.name, LinkId(link as usize)) {
                        info!(peer = %peer.name, kind = %l.kind(), why, "closing link");
                        l.close(CloseCode::Superseded, why);
                    }
                }
            }
        }
        let choice = dialer.choice(node.now_ms());
        if let Some(t) = choice.transport.filter(|_| last_choice != Some(choice)) {
            info!(peer = %peer.name, transport = t.as_str(), why = choice.why, "traffic takes this transport");
            last_choice = Some(choice);
        }
        let mut pause = Duration::from_millis(due.saturating_sub(node.now_ms()));
        if let Some(period) = node.peers.quiet_period_of(&peer.name) {
            // Idle links answer at the aligned probe instants: their deadlines (when one
            // would fall silent) are checked just after those, not at a wake-up of
            // their own. A link that goes busy moves its deadline closer and wakes
            // this loop (see `Dialer::with`).
            pause = super::aligned_after(pause, period);
        }
        tokio::select! {
            _ = dialer.wake.notified() => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Carries out one dial of `peer` over `transport` and runs the link it brings up;
/// tells the core if it failed. The last error of each peer is logged as a warning
/// when it changes, at debug when it repeats.
async fn dial_once(
    node: Arc<Node>,
    peer: PeerConfig,
    target: String,
    transport: Transport,
    dialer: Arc<Dialer>,
) {
    match dial(&node, &peer.name, &target, transport).await {
        Ok(link) => {
            node.dial_errors.clear(&peer.name, transport);
            if !session::run(node.clone(), link, true, Some(&peer.name)).await {
                dialer.with(|c| c.handle_dial_failed(transport, node.now_ms()));
            }
        }
        Err(e) => {
            let msg = format!("{e:#}");
            if node.dial_errors.changed(&peer.name, transport, &msg) {
                warn!(peer = %peer.name, endpoint = %target, transport = transport.as_str(), error = %msg, "dial failed; retrying");
            } else {
                debug!(peer = %peer.name, transport = transport.as_str(), error = %msg, "dial failed again");
            }
            dialer.with(|c| c.handle_dial_failed(transport, node.now_ms()));
        }
    }
}

/// The last dial error per peer and transport, so that a repeated one is not logged
/// at every attempt.
#[derive(Debug, Default)]
pub struct DialErrors(Mutex<HashMap<(String, Transport), String>>);

impl DialErrors {
    /// Records `error`; true if it differs from the last one of `peer` over `transport`.
    pub fn changed(&self, peer: &str, transport: Transport, error: &str) -> bool {
        let mut last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let key = (peer.to_owned(), transport);
        if last.get(&key).is_some_and(|e| e == error) {
            return false;
        }
        last.insert(key, error.to_owned());
        true
    }

    /// A link over `transport` came up: the next error is news again.
    pub fn clear(&self, peer: &str, transport: Transport) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(peer.to_owned(), transport));
    }
}

pub(super) async fn dial(
    node: &Arc<Node>,
    name: &str,
    target: &str,
    over: Transport,
) -> Result<Link> {
    let addr = tokio::net::lookup_host(target)
        .await
        .with_context(|| format!("resolving {target}"))?
        .next()
        .ok_or_else(|| anyhow!("{target} resolves to no address"))?;
    match over {
        Transport::Quic => connect(node, name, addr).await,
        Transport::Tcp => match node.web_dials.get(name) {
            Some(web) => {
                let members = NodeMembers(node.clone());
                let link = camouflage::upgrade::dial(addr, web, &members).await?;
                Ok(Link::Tcp(link))
            }
            None => connect_tcp(node, name, addr).await,
        },
    }
}

/// Connects to node `name` at `addr` over TLS/TCP.
pub(super) async fn connect_tcp(node: &Node, name: &str, addr: SocketAddr) -> Result<Link> {
    let refusal = RefusalSlot::default();
    let config = Arc::new(node.tls().client(refusal.clone()));
    let link = tcp::connect(addr, name, config, node.relays.clone())
        .await
        .map_err(|e| match refusal.take() {
            Some(r) => anyhow!(refusal::dial_error(&r, &node.trust())),
            None => e,
        })?;
    Ok(Link::Tcp(link))
}

/// Connects to node `name` at `addr` (a real address or a relayed node's virtual one,
/// which every endpoint can reach) from an endpoint of a fitting family; to a
/// camouflaged peer's real address as a web client (see [`connect_web`]).
pub(super) async fn connect(node: &Arc<Node>, name: &str, addr: SocketAddr) -> Result<Link> {
    let endpoint = endpoint_for(node, addr)?;
    let relayed = node.relays.node_at(addr).is_some();
    if let Some(web) = node.web_dials.get(name).filter(|_| !relayed) {
        return connect_web(node, endpoint, addr, web).await;
    }
    let refusal = RefusalSlot::default();
    let connecting =
        endpoint.connect_with(node.client_config(addr, refusal.clone())?, addr, name)?;
    let conn = tokio::time::timeout(transport::DIAL_TIMEOUT, connecting)
        .await
        .map_err(|_| anyhow!("no answer from {addr} within {:?}", transport::DIAL_TIMEOUT))?;
    let conn = conn.map_err(|e| match refusal.take() {
        Some(r) => anyhow!(refusal::dial_error(&r, &node.trust())),
        None => anyhow::Error::from(e),
    })?;
    Ok(Link::quic(conn, relayed))
}

/// An endpoint of `addr`'s family to dial from.
fn endpoint_for(node: &Node, addr: SocketAddr) -> Result<&quinn::Endpoint> {
    node.endpoints
        .iter()
        .find(|e| {
            e.local_addr()
                .map(|l| l.is_ipv6() || addr.is_ipv4())
                .unwrap_or(false)
        })
        .ok_or_else(|| anyhow!("no listen address of {addr}'s family to dial from"))
}

/// Connects to a camouflaged peer at `addr`: a web QUIC connection (the peer's web
/// certificate checked, no client certificate), then a node link inside it.
async fn connect_web(
    node: &Arc<Node>,
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    web: &WebDial,
) -> Result<Link> {
    let config = transport::quic_client_arc(web.quic.clone(), node.transport_web.clone())?;
    let server_name = web.server_name.to_str();
    let connecting = endpoint.connect_with(config, addr, &server_name)?;
    let conn = tokio::time::timeout(transport::DIAL_TIMEOUT, connecting)
        .await
        .map_err(|_| anyhow!("no answer from {addr} within {:?}", transport::DIAL_TIMEOUT))?
        .map_err(|e| anyhow!("web connection to {server_name}: {e}"))?;
    let members = NodeMembers(node.clone());
    let link = camouflage::h3::dial(conn.clone(), &web.authority(addr.port()), &members)
        .await
        .inspect_err(|_| conn.close(0u32.into(), b""))?;
    Ok(Link::H3(link))
}
