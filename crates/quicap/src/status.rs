//! What `quicap status` shows: the report a running node sends over its control socket,
//! and its rendering for people. No IO here.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

/// Version of the status report format; bumped on incompatible changes.
pub const STATUS_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub version: u32,
    pub node: String,
    pub uptime_secs: u64,
    /// `node.mode`: `private` or `camouflage`.
    #[serde(default)]
    pub mode: String,
    /// The packet thread's scheduling: `real-time (realtime = auto)`, ...
    #[serde(default)]
    pub scheduling: String,
    pub interfaces: Vec<InterfaceStatus>,
    pub peers: Vec<PeerStatus>,
    /// The mesh routing table.
    #[serde(default)]
    pub routes: Vec<RouteStatus>,
    /// Relay frames handled since the node started (end-to-end connections of other
    /// nodes carried through this one, and this node's own relayed connections).
    #[serde(default)]
    pub relay: RelayStatus,
    /// Tunnel packets waiting for a link to a node that is no neighbour.
    #[serde(default)]
    pub held: HeldStatus,
    /// Incoming handshakes the node did not take on at once (flood defence).
    #[serde(default)]
    pub handshakes: HandshakeStatus,
    /// The certificate this node presents (the renewed one once it was reloaded).
    #[serde(default)]
    pub certificate: Option<CertificateStatus>,
    /// The proxy listeners' flows and the flows that left the mesh here.
    #[serde(default)]
    pub proxy: ProxyStatus,
    /// The MASQUE proxy of the HTTP/3 front, when `[masque]` is set.
    #[serde(default)]
    pub masque: Option<MasqueStatus>,
}

/// What the MASQUE proxy did (see [`crate::masque::MasqueCounters`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MasqueStatus {
    pub udp_sessions: u64,
    pub ip_sessions: u64,
    pub active: u64,
    /// The prefixes CONNECT-IP clients get addresses from.
    pub addresses: Vec<String>,
    pub unauthenticated: u64,
    pub refused: u64,
    pub bad_capsules: u64,
    pub unknown_context: u64,
    pub no_session: u64,
    pub oversized: u64,
    pub spoofed: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ProxyStatus {
    /// `address (protocol)` of each listener.
    pub listeners: Vec<String>,
    /// Flows opened from the listeners, and open now.
    pub flows: u64,
    pub active: u64,
    /// Flows that failed before their data, by reason (SOCKS5 reply names).
    pub failed: Vec<(String, u64)>,
    /// Client requests refused unread (malformed, wrong credentials).
    pub bad_requests: u64,
    /// Whether `[egress]` is set and the certificate grants egress.
    pub egress: bool,
    /// Flows of other nodes that left the mesh here, and those refused.
    pub egress_flows: u64,
    pub egress_refused: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CertificateStatus {
    /// Serial number, hex with colons as `quicap cert show` prints it.
    pub serial: String,
    /// End of validity, `YYYY-MM-DD HH:MM:SS UTC`.
    pub valid_until: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct HeldStatus {
    /// Packets waiting now, and for how many nodes.
    pub packets: u64,
    pub nodes: u64,
    /// Packets dropped since the node started: a full queue, too old, too many nodes.
    pub dropped: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct HandshakeStatus {
    /// Answered with a QUIC Retry: the client had to prove its address first.
    pub retried: u64,
    /// Dropped unanswered: too many in flight, or from a source over its budget.
    pub ignored: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RelayStatus {
    /// Frames passed on for other nodes, undecrypted.
    pub forwarded: u64,
    /// Frames for this node's relayed connections: received and sent.
    pub delivered: u64,
    pub originated: u64,
    /// Frames dropped: from an address that is no direct peer, malformed, out of
    /// hops, without a route, or refused by a full socket.
    pub dropped: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RouteStatus {
    pub destination: String,
    pub next_hop: String,
    pub metric: u16,
    /// The nodes a packet passes: this node first, the destination last, as announced
    /// hop by hop with the routes.
    pub path: Vec<String>,
    /// Prefixes reachable through this route (the destination's accepted prefixes).
    pub prefixes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InterfaceStatus {
    pub name: String,
    /// `tun` (Layer 3) or `tap` (Layer 2).
    pub kind: String,
    pub addresses: Vec<String>,
    pub mtu: u16,
    /// False while no peer is connected and `no-carrier` is on.
    pub carrier: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PeerStatus {
    pub name: String,
    /// Overlay addresses and subnets the peer's certificate authorizes.
    pub addresses: Vec<String>,
    pub subnets: Vec<String>,
    /// End of the peer's certificate's validity, `YYYY-MM-DD HH:MM:SS UTC` (empty from
    /// nodes that do not report it).
    #[serde(default)]
    pub valid_until: String,
    /// Packets (and with `tap.check-sources`, frames) from this peer dropped because
    /// its certificate does not authorize their source, over its current links.
    #[serde(default)]
    pub refused: u64,
    /// For a peer this node dials: the transport its traffic takes (`quic`, `tcp`,
    /// `none`) and why (`QUIC answers`, `QUIC does not answer; on TCP`, ...); empty
    /// otherwise.
    #[serde(default)]
    pub transport: String,
    #[serde(default)]
    pub transport_why: String,
    pub links: Vec<LinkStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LinkStatus {
    /// The transport: `quic` (a direct QUIC connection), `quic-relayed` (QUIC end to
    /// end through other nodes), `tcp` (TLS over TCP); empty from nodes that do not
    /// report it.
    #[serde(default)]
    pub kind: String,
    pub remote: String,
    /// `outgoing` if this node dialed the connection, `incoming` otherwise.
    pub direction: String,
    /// True for the link this node currently sends on.
    pub in_use: bool,
    /// False when the link stopped answering liveness probes.
    pub alive: bool,
    /// True while the link carries no traffic and is probed once a second, or every
    /// 5 s once it is `dormant` too.
    #[serde(default)]
    pub idle: bool,
    /// True while the link has carried no traffic for 15 s and more.
    #[serde(default)]
    pub dormant: bool,
    pub rtt_ms: f64,
    /// Largest UDP payload this node sends on the link: where path MTU discovery
    /// stands (on a TCP link, the connection's MSS; 0 from nodes that do not report it).
    #[serde(default)]
    pub path_mtu: u16,
    /// UDP payload bytes received and sent on this connection, QUIC overhead included
    /// (on a TCP link, the bytes of its records, TLS overhead not included).
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub uptime_secs: u64,
}

/// A duration in seconds as `1h2m3s`.
pub fn fmt_secs(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// A byte count with a binary unit.
pub fn fmt_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

impl Status {
    /// The report as people read it.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = write!(out, "node {}, up {}", self.node, fmt_secs(self.uptime_secs));
        if !self.mode.is_empty() {
            let _ = write!(out, ", {} mode", self.mode);
        }
        if !self.scheduling.is_empty() {
            let _ = write!(out, ", scheduling {}", self.scheduling);
        }
        out.push('\n');
        if let Some(c) = &self.certificate {
            let _ = writeln!(
                out,
                "certificate serial {}, valid until {}",
                c.serial, c.valid_until
            );
        }
        for i in &self.interfaces {
            let _ = writeln!(
                out,
                "interface {} ({}, mtu {}, carrier {}): {}",
                i.name,
                i.kind,
                i.mtu,
                if i.carrier { "on" } else { "off (no peer)" },
                i.addresses.join(" ")
            );
        }
        if self.peers.is_empty() {
            let _ = writeln!(out, "no peers connected");
        }
        for p in &self.peers {
            let mut claims = p.addresses.clone();
            claims.extend(p.subnets.iter().cloned());
            let _ = write!(out, "peer {} ({})", p.name, claims.join(" "));
            // The date is enough here; --json has the time.
            if let Some(day) = p.valid_until.split(' ').next().filter(|d| !d.is_empty()) {
                let _ = write!(out, ", certificate until {day}");
            }
            if p.refused > 0 {
                let _ = write!(
                    out,
                    ", {} packets refused (source not authorized)",
                    p.refused
                );
            }
            if !p.transport.is_empty() {
                let _ = write!(out, "; on {} ({})", p.transport, p.transport_why);
            }
            out.push('\n');
            for l in &p.links {
                let _ = writeln!(
                    out,
                    "  {} {:<12} {:<8} {:<9} rtt {:.2} ms  mtu {}  rx {}  tx {}  up {}{}{}",
                    if l.in_use { "*" } else { " " },
                    l.kind,
                    l.direction,
                    l.remote,
                    l.rtt_ms,
                    l.path_mtu,
                    fmt_bytes(l.rx_bytes),
                    fmt_bytes(l.tx_bytes),
                    fmt_secs(l.uptime_secs),
                    match (l.idle, l.dormant) {
                        (_, true) => "  dormant",
                        (true, false) => "  idle",
                        (false, false) => "",
                    },
                    if l.alive { "" } else { "  (not answering)" }
                );
            }
        }
        let r = &self.relay;
        if r.forwarded + r.delivered + r.originated + r.dropped > 0 {
            let _ = writeln!(
                out,
                "relay frames: {} forwarded for others, {} received and {} sent for relayed links, {} dropped",
                r.forwarded, r.delivered, r.originated, r.dropped
            );
        }
        let hs = &self.handshakes;
        if hs.ignored > 0 {
            let _ = writeln!(
                out,
                "incoming handshakes: {} asked to prove their address (Retry), {} ignored (too many in flight, or over their source's budget)",
                hs.retried, hs.ignored
            );
        }
        let h = &self.held;
        if h.packets + h.dropped > 0 {
            let _ = writeln!(
                out,
                "held for links being dialed: {} packets for {} nodes, {} dropped",
                h.packets, h.nodes, h.dropped
            );
        }
        let p = &self.proxy;
        if !p.listeners.is_empty() {
            let failed: Vec<String> = p
                .failed
                .iter()
                .map(|(why, n)| format!("{n} {why}"))
                .collect();
            let _ = writeln!(
                out,
                "proxy {}: {} flows ({} open), failed: {}, {} bad requests",
                p.listeners.join(", "),
                p.flows,
                p.active,
                if failed.is_empty() {
                    "none".to_owned()
                } else {
                    failed.join(", ")
                },
                p.bad_requests
            );
        }
        if p.egress || p.egress_flows + p.egress_refused > 0 {
            let _ = writeln!(
                out,
                "egress: {} flows of other nodes left the mesh here, {} refused{}",
                p.egress_flows,
                p.egress_refused,
                if p.egress { "" } else { " (not an egress)" }
            );
        }
        if let Some(m) = &self.masque {
            let _ = writeln!(
                out,
                "masque: {} CONNECT-UDP, {} CONNECT-IP sessions ({} open){}; {} unauthenticated (answered as the site), {} refused",
                m.udp_sessions,
                m.ip_sessions,
                m.active,
                if m.addresses.is_empty() {
                    String::new()
                } else {
                    format!(", addresses {}", m.addresses.join(" "))
                },
                m.unauthenticated,
                m.refused
            );
            let dropped = [
                (m.bad_capsules, "sessions ended by a malformed capsule"),
                (m.unknown_context, "datagrams of unknown contexts"),
                (m.no_session, "datagrams for no session"),
                (m.oversized, "payloads too large to go on"),
                (m.spoofed, "packets from unassigned sources"),
            ];
            let dropped: Vec<String> = dropped
                .iter()
                .filter(|(n, _)| *n > 0)
                .map(|(n, what)| format!("{n} {what}"))
                .collect();
            if !dropped.is_empty() {
                let _ = writeln!(out, "  dropped: {}", dropped.join(", "));
            }
        }
        if !self.routes.is_empty() {
            let _ = writeln!(out, "routes:");
            for r in &self.routes {
                let _ = writeln!(
                    out,
                    "  {:<12} via {:<12} metric {:<5} path {}  ({})",
                    r.destination,
                    r.next_hop,
                    r.metric,
                    r.path.join(" > "),
                    r.prefixes.join(" ")
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Status {
        Status {
            version: STATUS_VERSION,
            node: "node-a".into(),
            uptime_secs: 3725,
            mode: "private".into(),
            scheduling: "normal (realtime = auto)".into(),
            interfaces: vec![InterfaceStatus {
                name: "quicap0".into(),
                kind: "tun".into(),
                addresses: vec!["10.77.0.1/24".into()],
                mtu: 1400,
                carrier: true,
            }],
            peers: vec![PeerStatus {
                name: "node-b".into(),
                addresses: vec!["10.77.0.2/24".into()],
                subnets: vec!["192.168.5.0/24".into()],
                valid_until: "2027-03-01 12:00:00 UTC".into(),
                refused: 0,
                transport: "quic".into(),
                transport_why: "QUIC answers".into(),
                links: vec![LinkStatus {
                    kind: "quic".into(),
                    remote: "192.0.2.2:4433".into(),
                    direction: "outgoing".into(),
                    in_use: true,
                    alive: true,
                    idle: false,
                    dormant: false,
                    rtt_ms: 0.42,
                    path_mtu: 1472,
                    rx_bytes: 1536,
                    tx_bytes: 3 << 20,
                    uptime_secs: 61,
                }],
            }],
            routes: vec![RouteStatus {
                destination: "node-c".into(),
                next_hop: "node-b".into(),
                metric: 24,
                path: vec!["node-a".into(), "node-b".into(), "node-c".into()],
                prefixes: vec!["10.77.0.3/32".into()],
            }],
            relay: RelayStatus::default(),
            held: HeldStatus::default(),
            proxy: ProxyStatus::default(),
            masque: None,
            handshakes: HandshakeStatus::default(),
            certificate: Some(CertificateStatus {
                serial: "01:ab".into(),
                valid_until: "2027-01-01 00:00:00 UTC".into(),
            }),
        }
    }

    #[test]
    fn refused_packets_are_shown_once_there_are_any() {
        let mut s = sample();
        assert!(!s.render().contains("refused"));
        s.peers[0].refused = 3;
        assert!(s.render().contains(
            "peer node-b (10.77.0.2/24 192.168.5.0/24), certificate until 2027-03-01, 3 packets refused (source not authorized); on quic (QUIC answers)\n"
        ));
    }

    #[test]
    fn held_packets_are_shown_once_there_are_any() {
        let mut s = sample();
        assert!(!s.render().contains("held for links"));
        s.held = HeldStatus {
            packets: 0,
            nodes: 0,
            dropped: 7,
        };
        assert!(s
            .render()
            .contains("held for links being dialed: 0 packets for 0 nodes, 7 dropped"));
    }

    #[test]
    fn relay_counters_are_shown_once_there_are_any() {
        let mut s = sample();
        assert!(!s.render().contains("relay frames"));
        s.relay = RelayStatus {
            forwarded: 1200,
            delivered: 3,
            originated: 4,
            dropped: 5,
        };
        assert!(s.render().contains(
            "relay frames: 1200 forwarded for others, 3 received and 4 sent for relayed links, 5 dropped"
        ));
    }

    #[test]
    fn render_shows_node_interface_and_links() {
        let text = sample().render();
        assert!(
            text.contains(
                "node node-a, up 1h2m5s, private mode, scheduling normal (realtime = auto)\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("interface quicap0 (tun, mtu 1400, carrier on): 10.77.0.1/24"),
            "{text}"
        );
        assert!(
            text.contains("certificate serial 01:ab, valid until 2027-01-01 00:00:00 UTC\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "peer node-b (10.77.0.2/24 192.168.5.0/24), certificate until 2027-03-01; on quic (QUIC answers)\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "* quic         outgoing 192.0.2.2:4433 rtt 0.42 ms  mtu 1472  rx 1.5 KiB  tx 3.0 MiB  up 1m1s"
            ),
            "{text}"
        );
    }

    #[test]
    fn idle_links_are_marked() {
        let mut s = sample();
        assert!(!s.render().contains("idle"));
        s.peers[0].links[0].idle = true;
        assert!(s.render().contains("up 1m1s  idle\n"), "{}", s.render());
        s.peers[0].links[0].dormant = true;
        assert!(s.render().contains("up 1m1s  dormant\n"), "{}", s.render());
    }

    #[test]
    fn render_shows_proxy_listeners_and_egress_only_when_there() {
        let mut s = sample();
        assert!(!s.render().contains("proxy"));
        s.proxy = ProxyStatus {
            listeners: vec!["127.0.0.1:1080 (socks5)".into()],
            flows: 7,
            active: 2,
            failed: vec![("not allowed".into(), 3)],
            bad_requests: 1,
            egress: true,
            egress_flows: 4,
            egress_refused: 0,
        };
        let text = s.render();
        assert!(
            text.contains("proxy 127.0.0.1:1080 (socks5): 7 flows (2 open), failed: 3 not allowed, 1 bad requests"),
            "{text}"
        );
        assert!(
            text.contains("egress: 4 flows of other nodes left the mesh here, 0 refused\n"),
            "{text}"
        );
    }

    #[test]
    fn render_shows_the_masque_proxy_and_its_drops_when_there() {
        let mut s = sample();
        assert!(!s.render().contains("masque"));
        s.masque = Some(MasqueStatus {
            udp_sessions: 2,
            ip_sessions: 1,
            active: 1,
            addresses: vec!["10.77.0.128/25".into()],
            unauthenticated: 3,
            spoofed: 4,
            ..MasqueStatus::default()
        });
        let text = s.render();
        assert!(text.contains("masque: 2 CONNECT-UDP, 1 CONNECT-IP sessions (1 open), addresses 10.77.0.128/25; 3 unauthenticated (answered as the site), 0 refused\n  dropped: 4 packets from unassigned sources\n"), "{text}");
    }

    #[test]
    fn render_shows_routes() {
        let text = sample().render();
        assert!(text.contains("node-c       via node-b       metric 24    path node-a > node-b > node-c  (10.77.0.3/32)"), "{text}");
    }

    #[test]
    fn json_round_trips() {
        let s = sample();
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), s);
    }

    #[test]
    fn formats_units() {
        assert_eq!(fmt_bytes(10), "10 B");
        assert_eq!(fmt_bytes(5 << 30), "5.0 GiB");
        assert_eq!(fmt_secs(59), "59s");
    }
}
