//! Which incoming handshakes a node takes on, decided before any TLS work is done: the
//! defence against handshake floods. No IO; `now` is passed in.
//!
//! ```text
//!  Initial from an address ──> handle_incoming(source, validated, now)
//!        │ not validated, and the load has passed `retry_above` ──> Retry
//!        │ (a few dozen bytes back; the address must answer from where it claims)
//!        │ more than MAX_IN_FLIGHT handshakes running, or the source's
//!        │ budget (a SourceBudget: PRIVATE or WEB) spent ──> Ignore
//!        └──> Accept ... handle_handshake_done() when it ends, either way
//! ```
//!
//! The load is the number of handshakes in flight and the number started in the
//! current second. With `retry_above` at 0 (the default) every address is validated by
//! a Retry before its handshake: quinn's own anti-amplification bound lets a server
//! send an unvalidated address up to one datagram more than three times what it
//! received, and its handshake retransmissions to a spoofed address reach that. A
//! Retry is smaller than the Initial it answers. Sources are counted only once their
//! address is validated, so a forged source cannot spend another's budget; an IPv6
//! source counts per /64.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::limit::address_source;

/// Handshakes in flight above which new ones are ignored, validated or not.
pub const MAX_IN_FLIGHT: usize = 256;
/// How many handshakes one source may start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SourceBudget {
    /// A second, on average ...
    pub per_sec: f64,
    /// ... and at once.
    pub burst: f64,
}

/// Private mode: only nodes connect, and a site whose nodes share one public address,
/// all restarting, stays within the burst.
pub const PRIVATE: SourceBudget = SourceBudget {
    per_sec: 10.0,
    burst: 20.0,
};

/// Camouflage mode: a web server takes the bursts of browsers (several connections
/// each) and of offices behind one address; a prober that sees connections cut after
/// a few dozen has found something no common web server does.
pub const WEB: SourceBudget = SourceBudget {
    per_sec: 100.0,
    burst: 400.0,
};
/// Sources remembered at most; beyond, the oldest budgets are forgotten.
const MAX_SOURCES: usize = 4096;

/// What to do with an incoming handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// Ask the client to prove its address (QUIC Retry, RFC 9000 §8.1.2).
    Retry,
    /// Drop the Initial without an answer.
    Ignore,
}

/// Per-source handshake budget: a token bucket.
#[derive(Debug, Clone, Copy)]
struct Budget {
    tokens: f64,
    at: Instant,
}

/// The admission state of one node.
#[derive(Debug)]
pub struct Admission {
    retry_above: usize,
    budget: SourceBudget,
    in_flight: usize,
    second: Instant,
    started_this_second: usize,
    sources: HashMap<IpAddr, Budget>,
    /// Verdicts so far, for `quicap status` and the log.
    pub retried: u64,
    pub ignored: u64,
}

impl Admission {
    /// `retry_above`: the load (handshakes in flight, or started this second) from
    /// which unvalidated addresses get a Retry; 0 for always. `budget`: what each
    /// validated source may start.
    pub fn new(retry_above: usize, budget: SourceBudget, now: Instant) -> Admission {
        Admission {
            retry_above,
            budget,
            in_flight: 0,
            second: now,
            started_this_second: 0,
            sources: HashMap::new(),
            retried: 0,
            ignored: 0,
        }
    }

    /// Decides on an incoming handshake from `source`; `validated` says whether its
    /// address is proven (a Retry token came back, or it is a relayed node's virtual
    /// address, reached only through authenticated peers). An accepted handshake counts
    /// as in flight until [`Admission::handle_handshake_done`].
    pub fn handle_incoming(&mut self, source: IpAddr, validated: bool, now: Instant) -> Verdict {
        if now.saturating_duration_since(self.second) >= Duration::from_secs(1) {
            self.second = now;
            self.started_this_second = 0;
        }
        let load = self.in_flight.max(self.started_this_second);
        let verdict = if !validated && load >= self.retry_above {
            Verdict::Retry
        } else if self.in_flight >= MAX_IN_FLIGHT || !self.spend(source, validated, now) {
            Verdict::Ignore
        } else {
            Verdict::Accept
        };
        match verdict {
            Verdict::Accept => {
                self.in_flight += 1;
                self.started_this_second += 1;
            }
            Verdict::Retry => self.retried += 1,
            Verdict::Ignore => self.ignored += 1,
        }
        verdict
    }

    /// An accepted handshake ended (a connection, or a failure).
    pub fn handle_handshake_done(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Takes one handshake from `source`'s budget, if its address is validated (an
    /// unvalidated one may be forged: charging it would let anyone spend a victim's
    /// budget).
    fn spend(&mut self, source: IpAddr, validated: bool, now: Instant) -> bool {
        if !validated {
            return true;
        }
        let key = address_source(source);
        if self.sources.len() >= MAX_SOURCES && !self.sources.contains_key(&key) {
            let full = self.budget.burst / self.budget.per_sec;
            let cutoff = now.checked_sub(Duration::from_secs_f64(full));
            self.sources.retain(|_, b| cutoff.is_some_and(|c| b.at > c));
            if self.sources.len() >= MAX_SOURCES {
                self.sources.clear();
            }
        }
        let budget = self.sources.entry(key).or_insert(Budget {
            tokens: self.budget.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(budget.at).as_secs_f64();
        budget.tokens = (budget.tokens + elapsed * self.budget.per_sec).min(self.budget.burst);
        budget.at = now;
        if budget.tokens < 1.0 {
            return false;
        }
        budget.tokens -= 1.0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn unvalidated_addresses_get_a_retry_by_default() {
        let now = Instant::now();
        let mut a = Admission::new(0, PRIVATE, now);
        assert_eq!(
            a.handle_incoming(ip("192.0.2.1"), false, now),
            Verdict::Retry
        );
        assert_eq!(
            a.handle_incoming(ip("192.0.2.1"), true, now),
            Verdict::Accept
        );
        assert_eq!((a.retried, a.in_flight), (1, 1));
    }

    #[test]
    fn retry_starts_at_the_threshold_of_load() {
        let now = Instant::now();
        let mut a = Admission::new(3, PRIVATE, now);
        for i in 0..3 {
            let src = ip(&format!("192.0.2.{i}"));
            assert_eq!(a.handle_incoming(src, false, now), Verdict::Accept);
        }
        assert_eq!(
            a.handle_incoming(ip("192.0.2.9"), false, now),
            Verdict::Retry
        );
        for _ in 0..3 {
            a.handle_handshake_done();
        }
        // None in flight, but three started this second.
        assert_eq!(
            a.handle_incoming(ip("192.0.2.9"), false, now),
            Verdict::Retry
        );
        let later = now + Duration::from_secs(1);
        assert_eq!(
            a.handle_incoming(ip("192.0.2.9"), false, later),
            Verdict::Accept
        );
    }

    #[test]
    fn a_validated_source_has_a_budget_of_its_own() {
        let now = Instant::now();
        let mut a = Admission::new(0, PRIVATE, now);
        let mut accepted = 0;
        for _ in 0..50 {
            if a.handle_incoming(ip("2001:db8::1"), true, now) == Verdict::Accept {
                accepted += 1;
                a.handle_handshake_done();
            }
        }
        assert_eq!(accepted as f64, PRIVATE.burst);
        // The same /64 shares it; another source does not.
        assert_eq!(
            a.handle_incoming(ip("2001:db8::2"), true, now),
            Verdict::Ignore
        );
        assert_eq!(
            a.handle_incoming(ip("192.0.2.1"), true, now),
            Verdict::Accept
        );
        // It refills.
        let later = now + Duration::from_millis(200);
        assert_eq!(
            a.handle_incoming(ip("2001:db8::1"), true, later),
            Verdict::Accept
        );
    }

    #[test]
    fn forged_sources_cannot_spend_a_budget() {
        let now = Instant::now();
        let mut a = Admission::new(1000, PRIVATE, now);
        for _ in 0..100 {
            a.handle_incoming(ip("192.0.2.1"), false, now);
            a.handle_handshake_done();
        }
        assert_eq!(
            a.handle_incoming(ip("192.0.2.1"), true, now),
            Verdict::Accept
        );
    }

    #[test]
    fn in_flight_handshakes_are_capped() {
        let now = Instant::now();
        let mut a = Admission::new(0, PRIVATE, now);
        for i in 0..MAX_IN_FLIGHT {
            let src = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i as u32));
            assert_eq!(a.handle_incoming(src, true, now), Verdict::Accept);
        }
        assert_eq!(
            a.handle_incoming(ip("192.0.2.1"), true, now),
            Verdict::Ignore
        );
        a.handle_handshake_done();
        assert_eq!(
            a.handle_incoming(ip("192.0.2.1"), true, now),
            Verdict::Accept
        );
    }
}
