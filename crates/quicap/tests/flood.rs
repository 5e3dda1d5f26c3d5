//! A handshake flood from a third namespace: QUIC Initials (each of a connection of its
//! own) from forged source addresses and from a real one, and real handshakes from one
//! address, while node-a
//! and node-b carry traffic. node-b answers forged addresses with Retry packets only
//! (never more bytes than it received from them), drops handshakes over the source's
//! budget, and keeps the tunnel up. The CPU time node-b spent is printed; it is
//! recorded in docs/protocol.md, not asserted.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::*;

const CONNECT: Duration = Duration::from_secs(15);
const NODE_B: &str = "198.51.100.1:4433";

/// The first datagrams of `n` QUIC connections to node-b, caught on a local socket:
/// `n` Initials, each with a connection id of its own (an Initial repeated verbatim
/// would only reach the connection it already opened).
async fn capture_initials(client: quinn::ClientConfig, n: usize) -> Vec<Vec<u8>> {
    let catcher = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("socket");
    let target = catcher.local_addr().expect("address");
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
    endpoint.set_default_client_config(client);
    let mut initials = Vec::with_capacity(n);
    let mut buf = vec![0u8; 2048];
    // A few at a time, so that no retransmission is caught instead.
    for _ in 0..n.div_ceil(50) {
        let pending: Vec<_> = (0..50)
            .map(|_| endpoint.connect(target, "node-b").expect("connect"))
            .collect();
        for _ in 0..50 {
            let (len, _) =
                tokio::time::timeout(Duration::from_secs(5), catcher.recv_from(&mut buf))
                    .await
                    .expect("an Initial within 5 s")
                    .expect("recv");
            initials.push(buf[..len].to_vec());
        }
        drop(pending);
    }
    initials.truncate(n);
    initials
}

/// Bytes and packets counted by the rule of `chain` in node-b's table that mentions
/// `needle`.
fn counter(ns: &Netns, chain: &str, needle: &str) -> (u64, u64) {
    let out = ns
        .cmd(&["nft", "list", "chain", "ip", "qtflood", chain])
        .output()
        .expect("nft");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no rule with {needle} in:\n{text}"));
    let field = |name: &str| -> u64 {
        line.split(name)
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (field("packets "), field("bytes "))
}

/// CPU time (user + system) of process `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = stat.rsplit(')').next().expect("stat fields");
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

#[test]
fn a_handshake_flood_is_answered_cheaply_and_the_tunnel_keeps_working() {
    let pair = Pair::start();
    assert!(pair.a.wait_ping("10.77.0.2", CONNECT).is_some());
    let c = Netns::new();
    link(&pair.b, "198.51.100.1", &c, "198.51.100.2");
    run(&mut pair.b.cmd(&[
        "ip",
        "route",
        "add",
        "203.0.113.0/24",
        "via",
        "198.51.100.2",
    ]));
    // What node-b receives from and sends to the forged addresses (203.0.113.0/24,
    // sent from ports 50000-50063 of namespace c and rewritten there), and to c's real
    // address; answers to forged addresses go nowhere.
    nft(
        &pair.b,
        &[
            "add table ip qtflood",
            "add chain ip qtflood in { type filter hook input priority 0 ; }",
            "add rule ip qtflood in ip saddr 203.0.113.0/24 udp dport 4433 counter",
            "add rule ip qtflood in ip saddr 198.51.100.2 udp dport 4433 counter",
            "add chain ip qtflood out { type filter hook output priority 0 ; }",
            "add rule ip qtflood out ip daddr 203.0.113.0/24 counter",
            // Anything but a Retry (QUIC long header type 3: first byte 0xf0-0xff).
            "add rule ip qtflood out ip daddr 203.0.113.0/24 udp sport 4433 @th,64,4 != 15 counter",
            "add rule ip qtflood out ip daddr 203.0.113.0/24 drop",
            "add rule ip qtflood out ip daddr 198.51.100.2 counter",
        ],
    );
    nft(
        &c,
        &[
            "add table ip qtspoof",
            "add chain ip qtspoof post { type nat hook postrouting priority 100 ; }",
            "add rule ip qtspoof post udp sport 50000-50063 snat to 203.0.113.1-203.0.113.254",
        ],
    );
    let member_config = node_config(
        &pair.pki,
        &[],
        &NodeSpec::new("node-m", &["10.77.0.9/24"], "0.0.0.0:4433"),
    );
    let (_, client) = member(&member_config);
    let initials = block_on_in(&c, {
        let client = client.clone();
        move || capture_initials(client, 3500)
    });
    assert!(
        initials.iter().all(|i| i.len() >= 1200),
        "an Initial is padded to 1200 bytes"
    );

    let pid = pair.node_b.pid().expect("node-b runs");
    let ticks_before = cpu_ticks(pid);
    let started = Instant::now();
    let ping = start_ping(&pair.a, "10.77.0.2", 6);

    // 3000 Initials from forged sources (64 ports, each rewritten to an address of
    // 203.0.113.0/24), 500 from c's real address, about 2000 a second.
    let sent = in_namespace(&c, move || {
        let target: SocketAddr = NODE_B.parse().expect("addr");
        let forged: Vec<UdpSocket> = (50000..50064)
            .map(|p| UdpSocket::bind(("198.51.100.2", p)).expect("bind"))
            .collect();
        let real = UdpSocket::bind(("198.51.100.2", 51000)).expect("bind");
        let mut sent = 0u64;
        for (i, initial) in initials.iter().enumerate() {
            let socket = if i < 3000 {
                &forged[i % forged.len()]
            } else {
                &real
            };
            if socket.send_to(initial, target).is_ok() && i < 3000 {
                sent += 1;
            }
            if i % 20 == 19 {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        sent
    });
    // Real handshakes from one address: each answers its Retry and comes back
    // validated; past the source's budget they are dropped.
    block_on_in(&c, move || async move {
        let mut endpoint =
            quinn::Endpoint::client("198.51.100.2:0".parse().expect("addr")).expect("endpoint");
        endpoint.set_default_client_config(client);
        let attempts: Vec<_> = (0..60)
            .map(|_| {
                let connecting = endpoint
                    .connect(NODE_B.parse().expect("addr"), "node-b")
                    .expect("connect");
                tokio::time::timeout(Duration::from_secs(2), connecting)
            })
            .collect();
        for a in futures::future::join_all(attempts).await {
            if let Ok(Ok(conn)) = a {
                conn.close(0u32.into(), b"done");
            }
        }
        endpoint.close(0u32.into(), b"done");
    });
    let elapsed = started.elapsed();
    let ticks = cpu_ticks(pid) - ticks_before;
    let (lost_gap, received) = longest_gap(ping);

    let (forged_in_packets, forged_in) = counter(&pair.b, "in", "203.0.113.0/24");
    let (forged_out_packets, forged_out) = counter(&pair.b, "out", "203.0.113.0/24 counter");
    let (not_retry, _) = counter(&pair.b, "out", "0xf0 != 0xf0");
    let (_, real_in) = counter(&pair.b, "in", "198.51.100.2");
    let (_, real_out) = counter(&pair.b, "out", "198.51.100.2");
    let status = json(&pair.node_b.status(true));
    let handshakes = &status["handshakes"];
    println!(
        "flood: {sent} forged Initials sent, {forged_in_packets} reached node-b ({forged_in} bytes), \
         {forged_out_packets} answers ({forged_out} bytes, {:.3} of what came in); real source: \
         {real_in} bytes in, {real_out} out; node-b's handshakes: {handshakes}; node-b CPU {:.2} s \
         over {:.1} s ({:.0} %); ping: {received} answered, longest gap {lost_gap:?}",
        forged_out as f64 / forged_in.max(1) as f64,
        ticks as f64 / 100.0,
        elapsed.as_secs_f64(),
        ticks as f64 / elapsed.as_secs_f64(),
    );
    assert!(forged_in_packets > 1000, "the flood did not reach node-b");
    assert!(
        forged_out_packets > 0,
        "node-b sent no Retry to the forged addresses"
    );
    // An unvalidated address gets a Retry and nothing else: per address, fewer bytes
    // than the Initial it sent.
    assert_eq!(
        not_retry, 0,
        "node-b sent forged addresses more than Retry packets"
    );
    assert!(
        forged_out * forged_in_packets < forged_in * forged_out_packets,
        "a Retry is not smaller than the Initial it answers: {forged_out} bytes in \
         {forged_out_packets} answers, {forged_in} in {forged_in_packets} Initials"
    );
    assert!(
        handshakes["ignored"].as_u64().unwrap_or(0) > 0,
        "no handshake over the source's budget was dropped: {handshakes}"
    );
    assert!(
        received >= 100,
        "the tunnel stopped carrying pings during the flood: {received} answered"
    );
    assert!(pair.a.ping("10.77.0.2"), "node-b no longer answers node-a");
}
