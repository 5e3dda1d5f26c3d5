//! The links to one peer: when to dial it and over which transport, which link carries
//! its traffic, and when a link is no longer needed. No IO, no clock: the caller feeds
//! events with `now` and polls for what to do.
//!
//! ```text
//!  handle_dial_done(transport, result)   handle_link_up / handle_link_down
//!  handle_answer(link), handle_pace(link, pace)   handle_timeout(now)
//!        |
//!        v
//!  poll_event() -> Dial { transport, why } | Close { link, why }
//!  poll_timeout() -> next deadline         traffic_link(), status()
//! ```
//!
//! **Transport choice** (`Mode::Auto`): QUIC first. TCP is dialed only while no QUIC
//! link answers: [`FALLBACK_AFTER_MS`] after the first QUIC dial went unanswered, or
//! as soon as the only QUIC link has been silent for as long as makes a link dead for
//! sending (600 ms while it carries traffic, 1600 ms while idle, 5600 ms while dormant). While on TCP, QUIC is
//! tried again after 2 s, then at doubling intervals up to [`QUIC_RETRY_MAX_MS`]; once a
//! QUIC link has answered probes for [`RETURN_HOLD_MS`], traffic is on it (it is
//! preferred as soon as it answers) and the TCP link is closed. A reset TCP link is
//! dialed again at once while QUIC still fails. Every dial and close says why.

use std::cmp::Reverse;
use std::collections::VecDeque;

use crate::liveness::{self, Pace};
use crate::Time;

/// A transport a link runs over, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Transport {
    Quic,
    Tcp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Quic => "quic",
            Transport::Tcp => "tcp",
        }
    }
}

/// Which transports a node dials a peer over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// QUIC, and TCP only while QUIC fails.
    Auto,
    Only(Transport),
}

/// A link, as the caller names it (any value unique among the peer's live links).
pub type LinkId = u64;

/// What the caller should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Dial the peer over `transport`; report the link with [`PeerLinks::handle_link_up`]
    /// once it is up (its hello exchange done), or [`PeerLinks::handle_dial_failed`].
    Dial {
        transport: Transport,
        why: &'static str,
    },
    /// Close this link: it is no longer needed.
    Close { link: LinkId, why: &'static str },
}

/// First wait before dialing again after a failure or a lost link.
pub const BACKOFF_MIN_MS: Time = 250;
/// Longest wait between dials of one transport while no link is up.
pub const BACKOFF_MAX_MS: Time = 4_000;
/// How long a first QUIC dial may go unanswered before TCP is dialed beside it: past
/// QUIC's first retransmission of its Initial (about 1 s), so that a peer that starts
/// a moment later than this node is still reached over QUIC.
pub const FALLBACK_AFTER_MS: Time = 2_000;
/// First wait, then the longest, between QUIC dials while a TCP link carries the
/// traffic.
pub const QUIC_RETRY_MIN_MS: Time = 2_000;
pub const QUIC_RETRY_MAX_MS: Time = 30_000;
/// How long a QUIC link must answer before the TCP link beside it is closed.
pub const RETURN_HOLD_MS: Time = 3_000;
pub use crate::liveness::{SILENT_BUSY_MS, SILENT_DORMANT_MS, SILENT_IDLE_MS};

#[derive(Debug, Clone)]
struct Link {
    id: LinkId,
    transport: Transport,
    /// Dialed by this node (not by the peer).
    outgoing: bool,
    up_since: Time,
    last_answer: Time,
    /// How often it is probed (a busy link has a full silence limit from when it
    /// went busy).
    pace: Pace,
    /// Since when it has answered without a gap long enough to count as dead.
    answering_since: Time,
    /// Fell silent for longer than its limit; stays so until it answers again (a link
    /// that stops carrying traffic gets a longer limit, which must not revive it).
    silent: bool,
}

impl Link {
    /// When it stops counting as answering, by its probe rate.
    fn answering_until(&self) -> Time {
        liveness::answering_until(self.last_answer, self.pace)
    }

    /// Answered recently enough for its probe rate.
    fn alive(&self, now: Time) -> bool {
        !self.silent && now <= self.answering_until()
    }

    fn candidate(&self, now: Time) -> Candidate {
        Candidate {
            alive: self.alive(now),
            transport: self.transport,
            kept: false,
            outgoing: self.outgoing,
            up_since: self.up_since,
        }
    }
}

/// Dial state of one transport.
#[derive(Debug, Clone, Default)]
struct Track {
    dialing: bool,
    /// Earliest time of the next dial.
    next_at: Time,
    backoff: Time,
}

impl Track {
    /// A dial failed or a link was lost: the next dial waits twice as long as the
    /// last (at least `min`, at most `max`), plus `jitter`.
    fn failed(&mut self, now: Time, jitter: Time, min: Time, max: Time) {
        self.backoff = if self.backoff == 0 {
            min
        } else {
            (self.backoff * 2).clamp(min, max)
        };
        self.next_at = now + self.backoff + jitter;
    }

    fn reset(&mut self, now: Time) {
        self.backoff = 0;
        self.next_at = now;
    }
}

/// What the choice of the link a peer's traffic takes looks at. The same rule picks
/// among the links of every peer, dialed or not: [`PeerLinks::traffic_link`] here, the
/// daemon's peer table for each packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Answers probes (see [`liveness::answering`]).
    pub alive: bool,
    pub transport: Transport,
    /// Of two relayed links to one node (each end dialed one), the one both keep.
    pub kept: bool,
    /// Dialed by this node.
    pub outgoing: bool,
    pub up_since: Time,
}

/// The link to send on among `links`: answering before silent, then QUIC before TCP,
/// the kept one, the one this node dialed, and the newest among equals.
pub fn best<T>(links: impl IntoIterator<Item = (T, Candidate)>) -> Option<T> {
    links
        .into_iter()
        .max_by_key(|(_, c)| {
            (
                c.alive,
                Reverse(c.transport),
                c.kept,
                c.outgoing,
                c.up_since,
            )
        })
        .map(|(link, _)| link)
}

/// Why the traffic takes the transport it takes, for the log and `quicap status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    pub transport: Option<Transport>,
    pub why: &'static str,
}

/// The links to one peer that this node dials (see the module documentation).
#[derive(Debug)]
pub struct PeerLinks {
    mode: Mode,
    links: Vec<Link>,
    quic: Track,
    tcp: Track,
    /// Since when no QUIC link answers, while that is so.
    quic_failing_since: Option<Time>,
    /// QUIC dials that failed since the last QUIC link.
    quic_failures: u32,
    events: VecDeque<Event>,
    rng: u64,
    why: &'static str,
}

impl PeerLinks {
    /// A peer to dial in `mode`; `seed` seeds the jitter of the backoff.
    pub fn new(mode: Mode, seed: u64, now: Time) -> PeerLinks {
        let mut links = PeerLinks {
            mode,
            links: Vec::new(),
            quic: Track::default(),
            tcp: Track::default(),
            quic_failing_since: None,
            quic_failures: 0,
            events: VecDeque::new(),
            rng: seed | 1,
            why: "not dialed yet",
        };
        links.quic.next_at = now;
        links.tcp.next_at = now;
        links.handle_timeout(now);
        links
    }

    fn wants(&self, t: Transport) -> bool {
        match self.mode {
            Mode::Auto => true,
            Mode::Only(only) => only == t,
        }
    }

    /// Up to a quarter of `base`, from the seeded generator (xorshift64*).
    fn jitter(&mut self, base: Time) -> Time {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        r % (base / 4 + 1)
    }

    fn track(&mut self, t: Transport) -> &mut Track {
        match t {
            Transport::Quic => &mut self.quic,
            Transport::Tcp => &mut self.tcp,
        }
    }

    fn has_link(&self, t: Transport) -> bool {
        self.links.iter().any(|l| l.transport == t)
    }

    fn quic_alive(&self, now: Time) -> bool {
        self.links
            .iter()
            .any(|l| l.transport == Transport::Quic && l.alive(now))
    }

    /// A dial this node started (after [`Event::Dial`]) failed: no link, or no hello.
    pub fn handle_dial_failed(&mut self, transport: Transport, now: Time) {
        self.track(transport).dialing = false;
        let (min, max) = match transport {
            Transport::Quic if self.has_link(Transport::Tcp) => {
                (QUIC_RETRY_MIN_MS, QUIC_RETRY_MAX_MS)
            }
            _ => (BACKOFF_MIN_MS, BACKOFF_MAX_MS),
        };
        let backoff = self.track(transport).backoff.max(min);
        let jitter = self.jitter(backoff);
        self.track(transport).failed(now, jitter, min, max);
        if transport == Transport::Quic {
            self.quic_failures += 1;
        }
        self.handle_timeout(now);
    }

    /// A link to the peer came up, its hello exchange done: dialed by this node
    /// (`outgoing`, ending the dial of its transport) or by the peer. It counts as
    /// answering.
    pub fn handle_link_up(
        &mut self,
        link: LinkId,
        transport: Transport,
        outgoing: bool,
        now: Time,
    ) {
        self.links.push(Link {
            id: link,
            transport,
            outgoing,
            up_since: now,
            last_answer: now,
            pace: Pace::Idle,
            answering_since: now,
            silent: false,
        });
        if outgoing {
            self.track(transport).dialing = false;
        }
        if transport == Transport::Quic {
            self.quic_failures = 0;
            self.quic.backoff = 0;
        }
        self.handle_timeout(now);
    }

    /// A link went down. A link of a transport that still has to carry the traffic is
    /// dialed again after [`BACKOFF_MIN_MS`] (longer if it did not last).
    pub fn handle_link_down(&mut self, link: LinkId, now: Time) {
        let Some(i) = self.links.iter().position(|l| l.id == link) else {
            return;
        };
        let gone = self.links.swap_remove(i);
        if gone.outgoing {
            // A link that lasted is dialed again after the least wait; one that did
            // not waits twice as long as the last time.
            if now.saturating_sub(gone.up_since) >= BACKOFF_MAX_MS {
                self.track(gone.transport).backoff = 0;
            }
            let backoff = self.track(gone.transport).backoff.max(BACKOFF_MIN_MS);
            let jitter = self.jitter(backoff);
            self.track(gone.transport)
                .failed(now, jitter, BACKOFF_MIN_MS, BACKOFF_MAX_MS);
        }
        self.handle_timeout(now);
    }

    /// A probe on `link` was answered.
    pub fn handle_answer(&mut self, link: LinkId, now: Time) {
        self.mark_silent(now);
        if let Some(l) = self.links.iter_mut().find(|l| l.id == link) {
            if l.silent {
                l.answering_since = now;
                l.silent = false;
            }
            l.last_answer = now;
        }
        self.handle_timeout(now);
    }

    /// `link` is probed at `pace` now: it started or stopped carrying traffic, or went
    /// dormant.
    pub fn handle_pace(&mut self, link: LinkId, pace: Pace, now: Time) {
        self.mark_silent(now);
        if let Some(l) = self.links.iter_mut().find(|l| l.id == link) {
            l.pace = pace;
        }
        self.handle_timeout(now);
    }

    /// Runs the rules; call when [`Self::poll_timeout`] is due (calling it more often
    /// does no harm).
    pub fn handle_timeout(&mut self, now: Time) {
        self.mark_silent(now);
        let quic_alive = self.quic_alive(now);
        if quic_alive {
            self.quic_failing_since = None;
        } else if self.quic_failing_since.is_none() && self.wants(Transport::Quic) {
            // Failing since the last QUIC answer, or since now if there never was one.
            let since = self
                .links
                .iter()
                .filter(|l| l.transport == Transport::Quic)
                .map(|l| l.answering_until())
                .max()
                .unwrap_or(now);
            self.quic_failing_since = Some(since.min(now));
        }
        // QUIC: dial while no QUIC link is up.
        if self.wants(Transport::Quic)
            && !self.has_link(Transport::Quic)
            && !self.quic.dialing
            && now >= self.quic.next_at
        {
            let why = if self.has_link(Transport::Tcp) {
                "trying QUIC again while TCP carries the traffic"
            } else if self.quic_failures > 0 {
                "QUIC dial failed; dialing again"
            } else {
                "dialing over QUIC"
            };
            self.dial(Transport::Quic, why);
        }
        // TCP: only (in auto) while QUIC fails.
        let tcp_needed = match self.mode {
            Mode::Only(Transport::Tcp) => true,
            Mode::Only(Transport::Quic) => false,
            Mode::Auto => self.tcp_fallback_due(now, quic_alive),
        };
        if tcp_needed
            && !self.has_link(Transport::Tcp)
            && !self.tcp.dialing
            && now >= self.tcp.next_at
        {
            let why = if self.mode != Mode::Auto {
                "dialing over TCP"
            } else if self.links.iter().any(|l| l.transport == Transport::Quic) {
                "the QUIC link stopped answering: falling back to TCP"
            } else {
                "no answer over QUIC: falling back to TCP"
            };
            self.dial(Transport::Tcp, why);
        }
        // Back on QUIC: close this node's TCP links once a QUIC link has answered for a
        // while (the peer closes those it dialed by the same rule).
        if self.mode == Mode::Auto {
            let proven_quic = self.links.iter().any(|l| {
                l.transport == Transport::Quic
                    && l.alive(now)
                    && now.saturating_sub(l.answering_since) >= RETURN_HOLD_MS
            });
            if proven_quic {
                let closing: Vec<LinkId> = self
                    .links
                    .iter()
                    .filter(|l| l.transport == Transport::Tcp && l.outgoing)
                    .map(|l| l.id)
                    .collect();
                for link in closing {
                    self.links.retain(|l| l.id != link);
                    self.events.push_back(Event::Close {
                        link,
                        why: "QUIC answers again",
                    });
                }
                self.tcp.reset(now);
            }
        }
        self.why = self.explain(now);
    }

    fn dial(&mut self, transport: Transport, why: &'static str) {
        self.track(transport).dialing = true;
        self.events.push_back(Event::Dial { transport, why });
    }

    /// Marks the links that have been silent for longer than their limit.
    fn mark_silent(&mut self, now: Time) {
        for l in &mut self.links {
            if !l.alive(now) {
                l.silent = true;
            }
        }
    }

    /// Whether TCP is needed in auto mode: QUIC has failed for long enough.
    fn tcp_fallback_due(&self, now: Time, quic_alive: bool) -> bool {
        if quic_alive {
            return false;
        }
        let Some(since) = self.quic_failing_since else {
            return false;
        };
        let had_quic = self.links.iter().any(|l| l.transport == Transport::Quic);
        // A QUIC link that stopped answering has already been silent for its limit.
        had_quic || self.quic_failures > 0 || now.saturating_sub(since) >= FALLBACK_AFTER_MS
    }

    fn explain(&self, now: Time) -> &'static str {
        match self.traffic_transport(now) {
            Some(Transport::Quic) => "QUIC answers",
            Some(Transport::Tcp) if self.mode == Mode::Auto => "QUIC does not answer; on TCP",
            Some(Transport::Tcp) => "transport = \"tcp\"",
            None => "no link answers",
        }
    }

    /// Whether [`Self::poll_event`] has something.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// The next event to carry out.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`Self::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Time> {
        let mut next: Option<Time> = None;
        let mut at = |t: Time| next = Some(next.map_or(t, |n| n.min(t)));
        if self.wants(Transport::Quic) && !self.has_link(Transport::Quic) && !self.quic.dialing {
            at(self.quic.next_at);
        }
        if !self.has_link(Transport::Tcp) && !self.tcp.dialing && self.wants(Transport::Tcp) {
            match (self.mode, self.quic_failing_since) {
                (Mode::Only(_), _) => at(self.tcp.next_at),
                (Mode::Auto, Some(since)) => {
                    at(self.tcp.next_at.max(since + FALLBACK_AFTER_MS));
                }
                (Mode::Auto, None) => {}
            }
        }
        for l in &self.links {
            // When it would fall silent, and when a QUIC link is proven.
            at(l.answering_until() + 1);
            if l.transport == Transport::Quic && self.has_link(Transport::Tcp) {
                at(l.answering_since + RETURN_HOLD_MS);
            }
        }
        next
    }

    /// The link the peer's traffic takes (see [`best`]).
    pub fn traffic_link(&self, now: Time) -> Option<LinkId> {
        best(self.links.iter().map(|l| (l.id, l.candidate(now))))
    }

    fn traffic_transport(&self, now: Time) -> Option<Transport> {
        let id = self.traffic_link(now)?;
        self.links
            .iter()
            .find(|l| l.id == id && l.alive(now))
            .map(|l| l.transport)
    }

    /// The transport the traffic takes now and why.
    pub fn choice(&self, now: Time) -> Choice {
        Choice {
            transport: self.traffic_transport(now),
            why: self.why,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dials(links: &mut PeerLinks) -> Vec<Transport> {
        std::iter::from_fn(|| links.poll_event())
            .filter_map(|e| match e {
                Event::Dial { transport, .. } => Some(transport),
                Event::Close { .. } => None,
            })
            .collect()
    }

    #[test]
    fn a_fixed_transport_is_the_only_one_dialed() {
        for only in [Transport::Quic, Transport::Tcp] {
            let mut links = PeerLinks::new(Mode::Only(only), 1, 0);
            let mut dialed = dials(&mut links);
            let mut in_flight = !dialed.is_empty();
            for t in (0..60_000).step_by(100) {
                if in_flight {
                    links.handle_dial_failed(only, t);
                }
                links.handle_timeout(t);
                let new = dials(&mut links);
                in_flight = !new.is_empty();
                dialed.extend(new);
            }
            assert!(
                dialed.len() > 10,
                "{only:?} dialed again and again: {dialed:?}"
            );
            assert!(dialed.iter().all(|&t| t == only), "{dialed:?}");
        }
    }

    #[test]
    fn auto_waits_for_quic_before_dialing_tcp() {
        let mut links = PeerLinks::new(Mode::Auto, 1, 0);
        assert_eq!(dials(&mut links), [Transport::Quic]);
        links.handle_timeout(FALLBACK_AFTER_MS - 1);
        assert!(dials(&mut links).is_empty());
        assert_eq!(links.poll_timeout(), Some(FALLBACK_AFTER_MS));
        links.handle_timeout(FALLBACK_AFTER_MS);
        assert_eq!(dials(&mut links), [Transport::Tcp]);
        assert_eq!(links.choice(FALLBACK_AFTER_MS).transport, None);
    }

    #[test]
    fn an_answering_incoming_quic_link_keeps_tcp_away() {
        let mut links = PeerLinks::new(Mode::Auto, 1, 0);
        dials(&mut links);
        // The peer dialed in over QUIC; this node's own dial has not come back yet.
        links.handle_link_up(9, Transport::Quic, false, 100);
        for t in (100..10_000).step_by(250) {
            links.handle_answer(9, t);
        }
        assert!(dials(&mut links).is_empty());
        assert_eq!(links.traffic_link(10_000), Some(9));
        assert_eq!(links.choice(10_000).why, "QUIC answers");
    }
}
