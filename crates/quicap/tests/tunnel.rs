//! End-to-end: two real nodes in network namespaces carry IPv4 and IPv6 between their
//! TUN interfaces.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

const CONNECT: Duration = Duration::from_secs(15);

#[test]
fn ping_over_ipv4_and_ipv6() {
    let pair = Pair::start();
    assert!(
        pair.a.wait_ping("10.77.0.2", CONNECT).is_some(),
        "no IPv4 ping through the tunnel"
    );
    let out = run(&mut pair.a.cmd(&["ping", "-c", "3", "-i", "0.2", "10.77.0.2"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 received"));
    let out = run(&mut pair
        .b
        .cmd(&["ping", "-6", "-c", "3", "-i", "0.2", "fd77::1"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 received"));
    assert!(pair.node_a.log_text().contains("peer connected"));
}

#[test]
fn tcp_transfer_of_50_mb_arrives_intact() {
    // With offloads (the default) the sender's TUN hands over TSO super-packets that
    // are split here, and the receiver's writes are GRO-coalesced: both must keep every
    // byte and checksum right.
    let pair = Pair::start();
    assert!(pair.a.wait_ping("10.77.0.2", CONNECT).is_some());
    assert!(tso(&pair.a) && tso(&pair.b), "offloads are on by default");
    transfer_intact(
        &pair.a,
        &pair.b,
        pair.pki.dir.path(),
        "10.77.0.2",
        52_428_800,
    );
}

#[test]
fn tcp_transfer_over_ipv6_arrives_intact() {
    let pair = Pair::start();
    assert!(pair.a.wait_ping("fd77::2", CONNECT).is_some());
    transfer_intact(&pair.a, &pair.b, pair.pki.dir.path(), "fd77::2", 20_971_520);
}

#[test]
fn tcp_transfer_without_offloads_arrives_intact() {
    let pair = Pair::start_with_tun(true, true, "offload = false");
    assert!(pair.a.wait_ping("10.77.0.2", CONNECT).is_some());
    assert!(
        !tso(&pair.a) && !tso(&pair.b),
        "tun.offload = false is honoured"
    );
    transfer_intact(
        &pair.a,
        &pair.b,
        pair.pki.dir.path(),
        "10.77.0.2",
        20_971_520,
    );
}

#[test]
fn udp_datagrams_arrive_intact_over_ipv4_and_ipv6() {
    // With offloads the sender's TUN hands over each UDP datagram with its checksum
    // left to the device (NEEDS_CSUM), and the node completes it where it was read;
    // the receiver's kernel drops any datagram whose checksum is wrong.
    let pair = Pair::start();
    assert!(pair.a.wait_ping("10.77.0.2", CONNECT).is_some());
    assert!(pair.a.wait_ping("fd77::2", CONNECT).is_some());
    // 64 datagrams of 1200 bytes, each different.
    let data: Vec<u8> = (0..64 * 1200u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    for (listen, target) in [
        (
            "UDP4-RECV:5002,bind=10.77.0.2",
            "UDP4-SENDTO:10.77.0.2:5002",
        ),
        (
            "UDP6-RECV:5002,bind=[fd77::2]",
            "UDP6-SENDTO:[fd77::2]:5002",
        ),
    ] {
        let dir = pair.pki.dir.path();
        let (input, received) = (dir.join("udp-in"), dir.join("udp-out"));
        std::fs::write(&input, &data).expect("input file");
        let _ = std::fs::remove_file(&received);
        // Ends 2 s after the last datagram.
        let mut server = pair
            .b
            .cmd(&["socat", "-u", "-T", "2", listen])
            .arg(format!("CREATE:{}", received.display()))
            .spawn()
            .expect("socat receiver");
        std::thread::sleep(Duration::from_millis(300));
        run(pair
            .a
            .cmd(&["socat", "-u", "-b", "1200"])
            .arg(format!("OPEN:{}", input.display()))
            .arg(target));
        server.wait().expect("socat receiver exit");
        let got = std::fs::read(&received).unwrap_or_default();
        assert_eq!(
            got.len(),
            data.len(),
            "{target}: {} of {} bytes arrived",
            got.len(),
            data.len()
        );
        assert!(got == data, "{target}: the datagrams arrived changed");
    }
}

/// Whether the kernel may hand the namespace's TUN TCP super-packets (TSO), as
/// `ethtool -k` reports it.
fn tso(ns: &Netns) -> bool {
    let out = run(&mut ns.cmd(&["ethtool", "-k", "quicap0"]));
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .any(|l| l.trim() == "tcp-segmentation-offload: on")
}

#[test]
fn restarted_peer_carries_traffic_again_within_5_s() {
    // Only node-a knows node-b's endpoint: after node-b crashes, node-a must notice the
    // dead connection and redial on its own.
    let mut pair = Pair::start_with(true, false);
    assert!(pair.a.wait_ping("10.77.0.2", CONNECT).is_some());
    pair.node_b.kill();
    assert!(!pair.a.ping("10.77.0.2"), "ping answered by a killed node");
    // Give node-b's interface time to go away, as after a real crash and restart.
    wait_until(Duration::from_secs(5), || {
        !pair.b.interface_exists("quicap0")
    })
    .expect("quicap0 removed after the crash");
    let restarted = Instant::now();
    pair.node_b.restart();
    let took = pair
        .a
        .wait_ping("10.77.0.2", Duration::from_secs(15))
        .map(|_| restarted.elapsed())
        .expect("traffic never recovered after the restart");
    assert!(
        took <= Duration::from_secs(5),
        "traffic recovered only {took:?} after the restart"
    );
}

#[test]
fn both_sides_dialing_recover_from_a_restart() {
    let mut pair = Pair::start();
    assert!(pair.a.wait_ping("10.77.0.2", CONNECT).is_some());
    pair.node_a.kill();
    wait_until(Duration::from_secs(5), || {
        !pair.a.interface_exists("quicap0")
    })
    .expect("quicap0 removed after the crash");
    let restarted = Instant::now();
    pair.node_a.restart();
    pair.b
        .wait_ping("10.77.0.1", Duration::from_secs(15))
        .expect("traffic never recovered");
    let took = restarted.elapsed();
    assert!(took <= Duration::from_secs(5), "recovered after {took:?}");
}

#[test]
fn sigterm_tells_the_peer_and_removes_the_interface() {
    let mut pair = Pair::start();
    assert!(pair.a.wait_ping("10.77.0.2", CONNECT).is_some());
    assert!(pair.b.interface_exists("quicap0"));
    let status = pair.node_b.stop();
    assert!(status.success(), "quicap exited with {status}");
    assert!(!pair.b.interface_exists("quicap0"), "interface left behind");
    assert!(
        pair.node_a.wait_log(
            &["peer disconnected", "peer shutting down"],
            Duration::from_secs(5)
        ),
        "node-a was not told"
    );
    assert!(pair.node_b.log_text().contains("stopped"));
}

#[test]
fn too_big_packets_get_icmp_or_are_fragmented() {
    let pair = Pair::start();
    assert!(pair.a.wait_ping("10.77.0.2", CONNECT).is_some());
    // Shrink the underlay so that QUIC datagrams hold less than the tunnel MTU (1400).
    for ns in [&pair.a, &pair.b] {
        let out = run(&mut ns.cmd(&["ip", "-o", "link", "show", "type", "veth"]));
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let dev = text
            .split(':')
            .nth(1)
            .and_then(|s| s.trim().split('@').next())
            .expect("veth name")
            .to_owned();
        run(&mut ns.cmd(&["ip", "link", "set", &dev, "mtu", "1280"]));
    }
    // Don't-fragment IPv4 of 1378 bytes fits the tunnel but not the path: the sender
    // must learn a smaller MTU from an ICMP "fragmentation needed".
    let mut learned = false;
    for _ in 0..40 {
        let out = pair
            .a
            .cmd(&[
                "ping",
                "-c",
                "1",
                "-W",
                "1",
                "-M",
                "do",
                "-s",
                "1350",
                "10.77.0.2",
            ])
            .output()
            .expect("ping");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        if text.contains("Frag needed")
            || text.contains("mtu =")
            || text.contains("message too long")
        {
            learned = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        learned,
        "no ICMP fragmentation-needed for an oversized DF packet"
    );
    // The same size without DF is fragmented (by the sending kernel once it learned the
    // MTU, or by the node) and arrives; the reply direction learns its MTU the same way.
    let fragmented = wait_until(Duration::from_secs(20), || {
        pair.a
            .cmd(&[
                "ping",
                "-c",
                "1",
                "-W",
                "1",
                "-M",
                "dont",
                "-s",
                "1350",
                "10.77.0.2",
            ])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    });
    assert!(
        fragmented.is_some(),
        "oversized packets without DF never got through"
    );
    // IPv6 never fragments in the network: a packet-too-big must come back.
    let mut learned6 = false;
    for _ in 0..20 {
        let out = pair
            .a
            .cmd(&["ping", "-6", "-c", "1", "-W", "1", "-s", "1300", "fd77::2"])
            .output()
            .expect("ping");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        if text.contains("Packet too big") || text.contains("mtu=") || text.contains("1 received") {
            learned6 = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(learned6, "no ICMPv6 packet-too-big for an oversized packet");
}

/// A packet for an overlay address that no node has is answered at once with ICMP
/// "host unreachable" (ICMPv6 "address unreachable"), as WireGuard does, instead of
/// vanishing; an address a node has still answers.
#[test]
fn unowned_overlay_addresses_are_unreachable_at_once() {
    let pair = Pair::start();
    assert!(pair.a.wait_ping("10.77.0.2", CONNECT).is_some());
    let out = pair
        .a
        .cmd(&["ping", "-c", "1", "-W", "5", "10.77.0.99"])
        .output()
        .expect("ping");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        text.contains("From 10.77.0.99") && text.contains("Destination Host Unreachable"),
        "{text}"
    );
    let out = pair
        .a
        .cmd(&["ping", "-6", "-c", "1", "-W", "5", "fd77::99"])
        .output()
        .expect("ping");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("From fd77::99") && text.contains("Address unreachable"),
        "{text}"
    );
    assert!(
        pair.a.ping("10.77.0.2"),
        "an owned address stopped answering"
    );
}
