//! Links over TLS/TCP: the tunnel where UDP does not pass.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const DIALS_B: &str = "[[peer]]\nname = \"node-b\"\nendpoint = \"192.0.2.2:4433\"\n";
const DIALS_A: &str = "[[peer]]\nname = \"node-a\"\nendpoint = \"192.0.2.1:4433\"\n";
const TAKES_A: &str = "[[peer]]\nname = \"node-a\"\n";

/// Two nodes with UDP dropped between them; node-a dials node-b with `a_peer_extra`
/// in its [[peer]] section, node-b only takes dials. `tun_extra` goes into both
/// [tun] sections.
fn tcp_pair(tun_extra: &str, a_peer_extra: &str) -> Pair {
    Pair::start_prepared(
        tun_extra,
        &format!("{DIALS_B}{a_peer_extra}\n"),
        TAKES_A,
        |a, b| {
            block_udp(a, "drop");
            block_udp(b, "drop");
        },
    )
}

/// The peer's links' kinds, in the order status lists them.
fn kinds(node: &Node, peer: &str) -> Vec<String> {
    node.peer_status(peer)["links"]
        .as_array()
        .map(|links| {
            links
                .iter()
                .map(|l| l["kind"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_tcp_link_carries_the_tunnel_where_udp_is_blocked() {
    let pair = tcp_pair("", "transport = \"tcp\"");
    pair.a
        .wait_ping("10.77.0.2", Duration::from_secs(10))
        .expect("tunnel over TCP up");
    assert!(pair.a.ping("fd77::2"), "IPv6 over the TCP link");
    assert!(pair.b.ping("10.77.0.1"), "and back");

    let peer = pair.node_a.peer_status("node-b");
    let links = peer["links"].as_array().expect("links");
    assert_eq!(links.len(), 1, "{peer}");
    assert_eq!(links[0]["kind"], "tcp", "{peer}");
    assert_eq!(links[0]["direction"], "outgoing");
    assert_eq!(links[0]["remote"], "192.0.2.2:4433");
    assert!(links[0]["rtt_ms"].as_f64() > Some(0.0), "{peer}");
    let peer = pair.node_b.peer_status("node-a");
    assert_eq!(peer["links"][0]["kind"], "tcp", "{peer}");
    assert_eq!(peer["links"][0]["direction"], "incoming");
    let text = String::from_utf8_lossy(&pair.node_a.status(false).stdout).into_owned();
    assert!(
        text.contains("* tcp          outgoing 192.0.2.2:4433"),
        "{text}"
    );

    transfer_intact(
        &pair.a,
        &pair.b,
        pair.pki.ca_dir().as_path(),
        "10.77.0.2",
        50 << 20,
    );
    let rx = pair.node_b.peer_status("node-a")["links"][0]["rx_bytes"]
        .as_u64()
        .unwrap_or(0);
    assert!(rx > 50 << 20, "50 MB went over the TCP link: {rx} bytes");
}

#[test]
fn packets_too_big_for_a_tcp_link_are_answered_with_icmp() {
    // A TUN larger than the link: the link carries 1420-byte packets over IPv4 at most
    // (one packet and its framing fit one segment of a 1500-byte path, see
    // docs/protocol.md).
    let pair = tcp_pair("mtu = 1500", "transport = \"tcp\"");
    pair.a
        .wait_ping("10.77.0.2", Duration::from_secs(10))
        .expect("tunnel over TCP up");
    let ping = |size: &str| {
        pair.a
            .cmd(&[
                "ping",
                "-c",
                "1",
                "-W",
                "2",
                "-M",
                "do",
                "-s",
                size,
                "10.77.0.2",
            ])
            .output()
            .expect("ping")
    };
    assert!(ping("1392").status.success(), "a 1420-byte packet fits");
    let too_big = ping("1400");
    let text = String::from_utf8_lossy(&too_big.stdout).into_owned()
        + &String::from_utf8_lossy(&too_big.stderr);
    assert!(!too_big.status.success(), "{text}");
    assert!(
        text.contains("mtu = 1420") || text.contains("mtu=1420"),
        "a 1428-byte packet gets 'fragmentation needed' with the link's MTU: {text}"
    );
    // IPv6 gets "packet too big" the same way (the link is IPv4: 1420 here too).
    let out = pair
        .a
        .cmd(&[
            "ping", "-c", "2", "-W", "2", "-M", "do", "-s", "1400", "fd77::2",
        ])
        .output()
        .expect("ping6");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("mtu=1420") || text.contains("mtu = 1420"),
        "{text}"
    );
}

#[test]
fn a_reset_tcp_connection_is_dialed_again_at_once() {
    // transport = "auto": UDP is dropped, so the TCP link carries the traffic.
    let pair = tcp_pair("", "");
    pair.a
        .wait_ping("10.77.0.2", Duration::from_secs(10))
        .expect("tunnel over TCP up");
    let ping = start_ping(&pair.a, "10.77.0.2", 8);
    std::thread::sleep(Duration::from_secs(2));
    // Every segment of the connection is answered with a reset for a moment.
    nft(
        &pair.b,
        &[
            "add table inet cut",
            "add chain inet cut in { type filter hook input priority -10 ; }",
            "add rule inet cut in tcp dport 4433 reject with tcp reset",
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    nft(&pair.b, &["delete table inet cut"]);
    let (gap, answered) = longest_gap(ping);
    assert!(answered > 100, "{answered} pings answered");
    assert!(
        gap < Duration::from_secs(2),
        "traffic again within 2 s of the reset (longest gap {gap:?})"
    );
    let tcp_links = pair
        .node_a
        .log_text()
        .lines()
        .filter(|l| l.contains("peer connected") && l.contains("kind=tcp"))
        .count();
    assert!(
        tcp_links >= 2,
        "the TCP link was dialed again:\n{}",
        pair.node_a.log_text()
    );
}

#[test]
fn auto_falls_back_to_tcp_when_udp_is_dropped_from_the_start() {
    let started = std::time::Instant::now();
    let pair = tcp_pair("", "");
    pair.a
        .wait_ping("10.77.0.2", Duration::from_secs(10))
        .expect("tunnel up");
    let up = started.elapsed();
    println!("UDP dropped from the start: tunnel up over TCP after {up:?}");
    assert!(
        up < Duration::from_secs(5),
        "traffic within 5 s of start: {up:?}"
    );
    let peer = pair.node_a.peer_status("node-b");
    assert_eq!(peer["transport"], "tcp", "{peer}");
    assert_eq!(
        peer["transport_why"], "QUIC does not answer; on TCP",
        "{peer}"
    );
    assert!(kinds(&pair.node_a, "node-b").contains(&"tcp".to_owned()));
    for why in [
        "no answer over QUIC: falling back to TCP",
        "QUIC does not answer; on TCP",
    ] {
        assert!(
            pair.node_a.log_text().contains(why),
            "the log says why ({why}):\n{}",
            pair.node_a.log_text()
        );
    }
}

/// A pair dialing each other in auto mode with UDP working; then UDP fails with `how`
/// (nft `drop` or `reject`): returns the pair once its traffic flows over TCP, and how
/// long that took.
fn udp_fails_mid_session(how: &str) -> (Pair, Duration) {
    let pair = Pair::start_with_peers("", DIALS_B, DIALS_A);
    pair.a
        .wait_ping("10.77.0.2", Duration::from_secs(10))
        .expect("tunnel up");
    assert_eq!(pair.node_a.peer_status("node-b")["transport"], "quic");
    let ping = start_ping(&pair.a, "10.77.0.2", 12);
    std::thread::sleep(Duration::from_secs(2));
    block_udp(&pair.a, how);
    block_udp(&pair.b, how);
    let (gap, answered) = longest_gap(ping);
    println!("UDP {how} mid-session: longest gap {gap:?}, {answered} pings answered");
    assert_eq!(pair.node_a.peer_status("node-b")["transport"], "tcp");
    (pair, gap)
}

#[test]
fn auto_moves_to_tcp_when_udp_is_dropped_and_back_when_it_returns() {
    let (pair, gap) = udp_fails_mid_session("drop");
    assert!(gap < Duration::from_secs(10), "on TCP within 10 s: {gap:?}");
    // UDP back: on QUIC again within 60 s, with no gap over 1 s at the switch, and
    // the TCP links closed.
    let ping = start_ping(&pair.a, "10.77.0.2", 75);
    let restored = std::time::Instant::now();
    allow_udp(&pair.a);
    allow_udp(&pair.b);
    let back = wait_until(Duration::from_secs(70), || {
        pair.node_a.peer_status("node-b")["transport"] == "quic"
            && !kinds(&pair.node_a, "node-b").contains(&"tcp".to_owned())
            && !kinds(&pair.node_b, "node-a").contains(&"tcp".to_owned())
    });
    let back_after = restored.elapsed();
    let back = back.unwrap_or_else(|| {
        panic!(
            "not back on QUIC with the TCP links closed after {back_after:?}:\n{}",
            pair.node_a.log_text()
        )
    });
    println!("UDP back: on QUIC, TCP closed, after {back:?}");
    assert!(back < Duration::from_secs(60), "{back:?}");
    std::thread::sleep(Duration::from_secs(1));
    // SIGINT: ping prints what it has and stops.
    run(Command::new("kill").args(["-INT", &ping.id().to_string()]));
    let (gap, answered) = longest_gap(ping);
    assert!(answered > 20, "{answered}");
    assert!(
        gap <= Duration::from_secs(1),
        "no gap over 1 s at the switch back: {gap:?}"
    );
}

#[test]
fn auto_moves_to_tcp_within_2_s_when_udp_is_rejected() {
    let (_pair, gap) = udp_fails_mid_session("reject");
    assert!(gap < Duration::from_secs(2), "on TCP within 2 s: {gap:?}");
}

#[test]
fn auto_rides_out_a_120_s_udp_cut_with_two_switches() {
    let pair = Pair::start_with_peers("", DIALS_B, DIALS_A);
    pair.a
        .wait_ping("10.77.0.2", Duration::from_secs(10))
        .expect("tunnel up");
    let switches = || pair.node_a.log_count("traffic takes this transport");
    let before = switches();
    block_udp(&pair.a, "drop");
    block_udp(&pair.b, "drop");
    let ping = start_ping(&pair.a, "10.77.0.2", 120);
    let (gap, answered) = longest_gap(ping);
    println!("during the 120 s cut: longest gap {gap:?}, {answered} pings answered");
    assert!(gap < Duration::from_secs(10), "{gap:?}");
    assert_eq!(pair.node_a.peer_status("node-b")["transport"], "tcp");
    allow_udp(&pair.a);
    allow_udp(&pair.b);
    let back = wait_until(Duration::from_secs(60), || {
        pair.node_a.peer_status("node-b")["transport"] == "quic"
    });
    assert!(
        back.is_some(),
        "back on QUIC within 60 s:\n{}",
        pair.node_a.log_text()
    );
    std::thread::sleep(Duration::from_secs(4));
    let switched = switches() - before;
    println!("UDP back after 120 s: on QUIC after {back:?}, {switched} switches");
    assert_eq!(
        switched,
        2,
        "to TCP and back, nothing else:\n{}",
        pair.node_a.log_text()
    );
}

#[test]
fn layer_2_crosses_a_tcp_link() {
    let (_pki, a, b, node_a, _node_b) = tap_only_pair("", "transport = \"tcp\"");
    a.wait_ping("10.99.0.2", Duration::from_secs(10))
        .expect("ping over TAP through a TCP link");
    assert!(b.ping("10.99.0.1"), "and back");
    assert_eq!(kinds(&node_a, "node-b"), ["tcp"]);
    let frames = node_a.peer_status("node-b")["links"][0]["tx_bytes"]
        .as_u64()
        .unwrap_or(0);
    assert!(frames > 0, "the frames went over the TCP link");
}
