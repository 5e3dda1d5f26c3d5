//! The link core ([`quicap_mesh::links::PeerLinks`]) of each peer this node dials, as
//! the sessions feed it what they see (links up and down, probe answers, links going
//! busy or idle); its driver, which carries out its dials and closes, is
//! [`super::dial::drive`]. The decisions are the core's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use quicap_mesh::links::{Choice, Mode, PeerLinks, Transport};
use tokio::sync::Notify;

use crate::config::{PeerConfig, PeerTransport};
use crate::link::{Link, LinkId, LinkKind};

/// The core of one peer, shared by its driver and the sessions of its links.
#[derive(Debug)]
pub struct Dialer {
    pub(super) core: Mutex<PeerLinks>,
    pub(super) wake: Notify,
    /// When the driver is next due by itself (node milliseconds).
    pub(super) deadline: AtomicU64,
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
    pub(super) fn with<T>(&self, f: impl FnOnce(&mut PeerLinks) -> T) -> T {
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

    /// `link` is probed at `pace` now.
    pub fn pace(&self, link: &Link, pace: quicap_mesh::liveness::Pace, now_ms: u64) {
        if transport_of(link).is_some() {
            self.with(|c| c.handle_pace(core_id(link.id()), pace, now_ms));
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
