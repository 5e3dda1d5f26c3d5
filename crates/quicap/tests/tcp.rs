//! Links over TLS/TCP: the tunnel where UDP does not pass.

mod common;

use std::time::Duration;

use common::*;

/// Two nodes with UDP dropped between them; node-a dials node-b over TCP
/// (`transport = "tcp"`), node-b only takes dials. `tun_extra` goes into both [tun]
/// sections.
fn tcp_pair(tun_extra: &str) -> Pair {
    let pair = Pair::start_with_peers(
        tun_extra,
        "[[peer]]\nname = \"node-b\"\nendpoint = \"192.0.2.2:4433\"\ntransport = \"tcp\"\n",
        "[[peer]]\nname = \"node-a\"\n",
    );
    for ns in [&pair.a, &pair.b] {
        nft(
            ns,
            &[
                "add table inet noudp",
                "add chain inet noudp in { type filter hook input priority 0 ; }",
                "add rule inet noudp in udp dport 4433 drop",
                "add rule inet noudp in udp sport 4433 drop",
            ],
        );
    }
    pair
}

#[test]
fn a_tcp_link_carries_the_tunnel_where_udp_is_blocked() {
    let pair = tcp_pair("");
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
    let pair = tcp_pair("mtu = 1500");
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
    let pair = tcp_pair("");
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
    assert!(
        pair.node_a.log_count("peer connected") >= 2,
        "the link was dialed again:\n{}",
        pair.node_a.log_text()
    );
}
