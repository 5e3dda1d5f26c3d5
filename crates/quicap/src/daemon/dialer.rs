//! The tokio shell around [`quicap_mesh::links::PeerLinks`] for each peer this node
//! dials: carries out its dials and closes, and feeds it what the sessions see (links
//! up and down, probe answers, links going busy or idle). The decisions are the core's;
//! nothing here keeps time or state of its own beyond the dials in flight.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quicap_mesh::links::{Choice, Event, Mode, PeerLinks, Transport};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use super::dial::dial;
use super::{session, Node};
use crate::config::{PeerConfig, PeerTransport};
use crate::link::{CloseCode, Link, LinkId, LinkKind};

/// The core of one peer, shared by its driver and the sessions of its links.
#[derive(Debug)]
pub struct Dialer {
    core: Mutex<PeerLinks>,
    wake: Notify,
    /// When the driver is next due by itself (node milliseconds).
    deadline: AtomicU64,
}

/// The dialers of the node, by peer name; fixed at startup.
pub type Dialers = HashMap<String, Arc<Dialer>>;

/// The transport of a link, as the core knows it; relayed links are not its business.
fn transport_of(link: &Link) -> Option<Transport> {
    match link.kind() {
        LinkKind::QuicDirect => Some(Transport::Quic),
        LinkKind::Tcp => Some(Transport::Tcp),
        LinkKind::QuicRelayed => None,
    }
}

fn core_id(id: LinkId) -> u64 {
    id.0 as u64
}

impl Dialer {
    pub fn new(peer: &PeerConfig, now_ms: u64) -> Arc<Dialer> {
        let mode = match peer.transport {
            PeerTransport::Auto => Mode::Auto,
            PeerTransport::Quic => Mode::Only(Transport::Quic),
            PeerTransport::Tcp => Mode::Only(Transport::Tcp),
        };
        Arc::new(Dialer {
            core: Mutex::new(PeerLinks::new(mode, rand::random(), now_ms)),
            wake: Notify::new(),
            deadline: AtomicU64::new(0),
        })
    }

    /// Runs `f` on the core; wakes the driver if that left something to do, or
    /// something due before the driver would wake by itself.
    fn with<T>(&self, f: impl FnOnce(&mut PeerLinks) -> T) -> T {
        let mut core = self.core.lock().unwrap_or_else(|p| p.into_inner());
        let out = f(&mut core);
        let sooner = core
            .poll_timeout()
            .is_some_and(|t| t < self.deadline.load(Ordering::Relaxed));
        if core.has_events() || sooner {
            self.wake.notify_one();
        }
        out
    }

    /// A link to the peer finished its hello exchange. The driver is woken either way:
    /// the transport the traffic takes may have changed, which it logs.
    pub fn link_up(&self, link: &Link, outgoing: bool, now_ms: u64) {
        if let Some(t) = transport_of(link) {
            self.with(|c| c.handle_link_up(core_id(link.id()), t, outgoing, now_ms));
            self.wake.notify_one();
        }
    }

    pub fn link_down(&self, link: &Link, now_ms: u64) {
        if transport_of(link).is_some() {
            self.with(|c| c.handle_link_down(core_id(link.id()), now_ms));
            self.wake.notify_one();
        }
    }

    /// A probe on `link` was answered.
    pub fn answered(&self, link: &Link, now_ms: u64) {
        if transport_of(link).is_some() {
            self.with(|c| c.handle_answer(core_id(link.id()), now_ms));
        }
    }

    /// `link` went busy (probed at the full rate) or idle.
    pub fn busy(&self, link: &Link, busy: bool, now_ms: u64) {
        if transport_of(link).is_some() {
            self.with(|c| c.handle_busy(core_id(link.id()), busy, now_ms));
        }
    }

    /// The transport the peer's traffic takes and why, for `quicap status`.
    pub fn choice(&self, now_ms: u64) -> Choice {
        self.core
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .choice(now_ms)
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
        let pause = Duration::from_millis(due.saturating_sub(node.now_ms()));
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
