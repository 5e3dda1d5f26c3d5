//! A deterministic simulation of one node's links to a peer while the network between
//! them blocks UDP, TCP or both in the ways real networks do: the transport choice of
//! `PeerLinks` (UDP→TCP fallback and return) measured on a virtual clock.
//!
//! Run with `cargo test -p quicap-mesh --test fallback -- --nocapture` to see the
//! switching times of every scenario.

use quicap_mesh::links::{Event, LinkId, Mode, PeerLinks, Transport};
use quicap_mesh::liveness::{self, Pace, PaceClock};
use quicap_mesh::Time;

/// What the network does to UDP at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Udp {
    Passes,
    /// Dropped silently.
    Dropped,
    /// Rejected with ICMP port unreachable, which QUIC stacks (quinn among them) do not
    /// act on: to the node it looks like silence too.
    Rejected,
}

/// A network whose behaviour changes over time.
struct Net {
    udp: Box<dyn Fn(Time) -> Udp>,
    tcp: Box<dyn Fn(Time) -> bool>,
    /// Moments at which every TCP connection is reset.
    resets: Vec<Time>,
}

const RTT: Time = 2;
/// A dial without an answer gives up after this long (`transport::DIAL_TIMEOUT`).
const DIAL_TIMEOUT: Time = 5_000;
/// A link silent this long is closed by its session (`transport.idle-timeout-ms`).
const DEAD_AFTER: Time = 3_000;
const STEP: Time = 10;

struct SimLink {
    id: LinkId,
    transport: Transport,
    next_probe: Time,
    last_answer: Time,
    clock: PaceClock,
}

struct Sim {
    now: Time,
    core: PeerLinks,
    net: Net,
    links: Vec<SimLink>,
    /// Dials in progress: transport, when they end, whether they bring a link up.
    dials: Vec<(Transport, Time, bool)>,
    next_id: LinkId,
    /// (time, transport the traffic flows over, or none).
    flow: Vec<(Time, Option<Transport>)>,
    log: Vec<String>,
}

impl Sim {
    fn new(net: Net, seed: u64) -> Sim {
        Sim {
            now: 0,
            core: PeerLinks::new(Mode::Auto, seed, 0),
            net,
            links: Vec::new(),
            dials: Vec::new(),
            next_id: 1,
            flow: Vec::new(),
            log: Vec::new(),
        }
    }

    fn works(&self, t: Transport, at: Time) -> bool {
        match t {
            Transport::Quic => (self.net.udp)(at) == Udp::Passes,
            Transport::Tcp => (self.net.tcp)(at),
        }
    }

    fn run_until(&mut self, end: Time) {
        while self.now < end {
            self.step();
            self.now += STEP;
        }
    }

    fn step(&mut self) {
        let now = self.now;
        // Resets.
        if self
            .net
            .resets
            .iter()
            .any(|&r| r > now.saturating_sub(STEP) && r <= now)
        {
            let gone: Vec<LinkId> = self
                .links
                .iter()
                .filter(|l| l.transport == Transport::Tcp)
                .map(|l| l.id)
                .collect();
            for id in gone {
                self.log.push(format!("{now:>6} ms  TCP connection reset"));
                self.drop_link(id);
            }
        }
        // Dials that end now.
        let (done, pending): (Vec<_>, Vec<_>) =
            self.dials.drain(..).partition(|&(_, at, _)| at <= now);
        self.dials = pending;
        for (transport, _, up) in done {
            if up {
                let id = self.next_id;
                self.next_id += 1;
                self.links.push(SimLink {
                    id,
                    transport,
                    next_probe: now,
                    last_answer: now,
                    clock: PaceClock::new(Pace::Idle, now),
                });
                self.log
                    .push(format!("{now:>6} ms  {} link up", transport.as_str()));
                self.core.handle_link_up(id, transport, true, now);
            } else {
                self.log
                    .push(format!("{now:>6} ms  {} dial failed", transport.as_str()));
                self.core.handle_dial_failed(transport, now);
            }
        }
        // Probes and their answers; sessions close links silent for too long.
        let mut dead = Vec::new();
        let mut answers = Vec::new();
        for l in &mut self.links {
            if now >= l.next_probe {
                l.next_probe =
                    now + liveness::probe_pause(l.clock.pace(), now.saturating_sub(l.last_answer));
                let t = l.transport;
                let works = match t {
                    Transport::Quic => (self.net.udp)(now) == Udp::Passes,
                    Transport::Tcp => (self.net.tcp)(now),
                };
                if works {
                    l.last_answer = now + RTT;
                    answers.push(l.id);
                }
            }
            if liveness::dead(l.last_answer, l.clock.pace(), DEAD_AFTER, now) {
                dead.push(l.id);
            }
        }
        for id in answers {
            self.core.handle_answer(id, now + RTT);
        }
        for id in dead {
            self.log
                .push(format!("{now:>6} ms  link {id} closed: unresponsive"));
            self.drop_link(id);
        }
        // The core's timers and orders.
        self.core.handle_timeout(now);
        while let Some(event) = self.core.poll_event() {
            match event {
                Event::Dial { transport, why } => {
                    self.log
                        .push(format!("{now:>6} ms  dial {}: {why}", transport.as_str()));
                    let up = self.works(transport, now);
                    let ends = if up {
                        now + match transport {
                            Transport::Quic => 2 * RTT,
                            Transport::Tcp => 3 * RTT,
                        }
                    } else {
                        now + DIAL_TIMEOUT
                    };
                    self.dials.push((transport, ends.max(now + STEP), up));
                }
                Event::Close { link, why } => {
                    self.log
                        .push(format!("{now:>6} ms  close link {link}: {why}"));
                    self.drop_link(link);
                }
            }
        }
        // Which link carries the traffic, and whether it gets through.
        let carrying = self.core.traffic_link(now);
        for l in &mut self.links {
            if let Some(pace) = l.clock.update(Some(l.id) == carrying, now) {
                if pace.is_busy() {
                    l.next_probe = l.next_probe.min(now + 250);
                }
                self.core.handle_pace(l.id, pace, now);
            }
        }
        let flowing = carrying
            .and_then(|id| self.links.iter().find(|l| l.id == id))
            .map(|l| l.transport)
            .filter(|&t| self.works(t, now));
        if self.flow.last().is_none_or(|&(_, f)| f != flowing) {
            self.flow.push((now, flowing));
        }
    }

    fn drop_link(&mut self, id: LinkId) {
        self.links.retain(|l| l.id != id);
        self.core.handle_link_down(id, self.now);
    }

    /// The first time at or after `from` that traffic flows over `t`.
    fn first_flow(&self, t: Transport, from: Time) -> Option<Time> {
        let mut current = None;
        for &(at, f) in &self.flow {
            if at > from && current == Some(t) {
                return Some(from);
            }
            if at >= from && f == Some(t) {
                return Some(at);
            }
            current = f;
        }
        (current == Some(t)).then_some(from)
    }

    /// Changes of the transport carrying traffic in `[from, to)`, gaps not counted.
    fn switches(&self, from: Time, to: Time) -> usize {
        let mut last = None;
        let mut n = 0;
        for &(at, f) in self.flow.iter().filter(|(at, _)| *at < to) {
            if let Some(t) = f {
                if last.is_some_and(|l| l != t) && at >= from {
                    n += 1;
                }
                last = Some(t);
            }
        }
        n
    }

    /// The longest time without traffic in `[from, to)`.
    fn longest_gap(&self, from: Time, to: Time) -> Time {
        let mut gap_start = None;
        let mut longest = 0;
        let mut state = None;
        for &(at, f) in &self.flow {
            if at >= to {
                break;
            }
            if f.is_none() && state.is_some() {
                gap_start = Some(at.max(from));
            }
            if f.is_some() {
                if let Some(s) = gap_start.take() {
                    if at >= from {
                        longest = longest.max(at - s);
                    }
                }
            }
            state = Some(f);
        }
        if let Some(s) = gap_start {
            longest = longest.max(to.saturating_sub(s));
        }
        longest
    }

    fn has_tcp_link(&self) -> bool {
        self.links.iter().any(|l| l.transport == Transport::Tcp)
    }

    fn print(&self, title: &str) {
        println!("--- {title}");
        for line in &self.log {
            println!("{line}");
        }
    }
}

fn seconds(ms: Time) -> String {
    format!("{:.2} s", ms as f64 / 1000.0)
}

const SEEDS: [u64; 4] = [1, 7, 42, 0xdead_beef];

#[test]
fn udp_dropped_from_the_start_flows_over_tcp_within_5_s() {
    for seed in SEEDS {
        let mut sim = Sim::new(
            Net {
                udp: Box::new(|_| Udp::Dropped),
                tcp: Box::new(|_| true),
                resets: vec![],
            },
            seed,
        );
        sim.run_until(60_000);
        let tcp = sim.first_flow(Transport::Tcp, 0).expect("traffic over TCP");
        if seed == SEEDS[0] {
            sim.print("UDP dropped from the start");
        }
        println!(
            "UDP dropped from the start (seed {seed}): on TCP after {}",
            seconds(tcp)
        );
        assert!(tcp <= 5_000, "on TCP after {tcp} ms");
        assert_eq!(sim.switches(0, 60_000), 0, "never on QUIC, never switched");
    }
}

fn mid_session(udp: Udp) -> Vec<Time> {
    let mut out = Vec::new();
    for seed in SEEDS {
        let mut sim = Sim::new(
            Net {
                udp: Box::new(move |t| if t < 10_000 { Udp::Passes } else { udp }),
                tcp: Box::new(|_| true),
                resets: vec![],
            },
            seed,
        );
        sim.run_until(40_000);
        let on_quic = sim.first_flow(Transport::Quic, 0).expect("on QUIC first");
        assert!(on_quic < 100, "on QUIC at once: {on_quic} ms");
        let on_tcp = sim
            .first_flow(Transport::Tcp, 10_000)
            .expect("traffic over TCP");
        if seed == SEEDS[0] {
            sim.print(&format!("UDP {udp:?} at 10 s"));
        }
        out.push(on_tcp - 10_000);
    }
    out
}

/// [`mid_session`], printed and held to `limit`.
fn on_tcp_within(udp: Udp, what: &str, limit: Time) {
    let times = mid_session(udp);
    let shown: Vec<String> = times.iter().map(|&t| seconds(t)).collect();
    println!("UDP {what} mid-session: on TCP after {}", shown.join(", "));
    assert!(times.iter().all(|&t| t <= limit), "{times:?}");
}

#[test]
fn udp_dropped_mid_session_flows_over_tcp_within_10_s() {
    on_tcp_within(Udp::Dropped, "dropped", 10_000);
}

#[test]
fn udp_rejected_mid_session_flows_over_tcp_within_2_s() {
    on_tcp_within(Udp::Rejected, "rejected with ICMP", 2_000);
}

#[test]
fn udp_cut_for_120_s_returns_to_quic_and_switches_twice() {
    for seed in SEEDS {
        let cut = 10_000..130_000;
        let mut sim = Sim::new(
            Net {
                udp: Box::new(move |t| {
                    if cut.contains(&t) {
                        Udp::Dropped
                    } else {
                        Udp::Passes
                    }
                }),
                tcp: Box::new(|_| true),
                resets: vec![],
            },
            seed,
        );
        sim.run_until(250_000);
        let on_tcp = sim.first_flow(Transport::Tcp, 10_000).expect("on TCP");
        let back = sim
            .first_flow(Transport::Quic, 130_000)
            .expect("back on QUIC");
        if seed == SEEDS[0] {
            sim.print("UDP cut for 120 s");
        }
        println!(
            "UDP cut 10-130 s (seed {seed}): on TCP after {}, back on QUIC {} after UDP returned, {} switches, longest gap {}",
            seconds(on_tcp - 10_000),
            seconds(back - 130_000),
            sim.switches(0, 250_000),
            seconds(sim.longest_gap(0, 250_000)),
        );
        assert!(
            back - 130_000 <= 60_000,
            "back on QUIC after {} ms",
            back - 130_000
        );
        assert!(
            sim.switches(0, 250_000) <= 2,
            "at most 2 switches for the cut"
        );
        assert!(
            sim.longest_gap(back - 1_000, 250_000) <= 1_000,
            "no gap over 1 s at the switch back"
        );
        assert!(
            !sim.has_tcp_link(),
            "the TCP link is closed once QUIC answers again"
        );
    }
}

#[test]
fn a_reset_tcp_link_carries_traffic_again_within_2_s() {
    for seed in SEEDS {
        let mut sim = Sim::new(
            Net {
                udp: Box::new(|_| Udp::Dropped),
                tcp: Box::new(|_| true),
                resets: vec![20_000],
            },
            seed,
        );
        sim.run_until(40_000);
        let again = sim.first_flow(Transport::Tcp, 20_001).expect("TCP again");
        if seed == SEEDS[0] {
            sim.print("TCP reset at 20 s");
        }
        println!(
            "TCP reset (seed {seed}): traffic again after {}",
            seconds(again - 20_000)
        );
        assert!(again - 20_000 <= 2_000, "{} ms", again - 20_000);
    }
}

#[test]
fn both_transports_failing_keep_being_tried_and_recover() {
    for seed in SEEDS {
        let outage = 10_000..40_000;
        let (o1, o2) = (outage.clone(), outage);
        let mut sim = Sim::new(
            Net {
                udp: Box::new(move |t| {
                    if o1.contains(&t) {
                        Udp::Dropped
                    } else {
                        Udp::Passes
                    }
                }),
                tcp: Box::new(move |t| !o2.contains(&t)),
                resets: vec![],
            },
            seed,
        );
        sim.run_until(80_000);
        let back = sim
            .first_flow(Transport::Quic, 40_000)
            .expect("back on QUIC");
        if seed == SEEDS[0] {
            sim.print("UDP and TCP cut 10-40 s");
        }
        let dials = sim
            .log
            .iter()
            .filter(|l| l.contains("dial ") && !l.contains("failed"))
            .count();
        println!(
            "UDP and TCP cut 10-40 s (seed {seed}): {dials} dials, back on QUIC {} after the network returned",
            seconds(back - 40_000)
        );
        assert!(back - 40_000 <= 15_000, "{} ms", back - 40_000);
        assert!(dials < 40, "backoff bounds the dials: {dials}");
    }
}
