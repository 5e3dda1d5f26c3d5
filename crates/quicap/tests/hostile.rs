//! A member of the network that misbehaves: a valid certificate does not let a node
//! send what it is not entitled to. The hostile node here is this test itself, speaking
//! the protocol with QUICAP's own library code from inside a test namespace.

mod common;

use std::fs::File;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use quicap_wire::control::{Hello, Message, Modes, FRAME_HEADER_LEN};
use quicap_wire::overlay::{NodeId, PayloadKind, Route};
use quicap_wire::Header;

const CONNECT: Duration = Duration::from_secs(15);

/// An IPv4 UDP packet from `src` to `dst` port 9 (discard), header checksum included.
fn udp_packet(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&u16::try_from(total).expect("size").to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    let checksum = quicap_wire::ip::checksum(&[&p[..20]]);
    p[10..12].copy_from_slice(&checksum.to_be_bytes());
    p[20..22].copy_from_slice(&40000u16.to_be_bytes());
    p[22..24].copy_from_slice(&9u16.to_be_bytes());
    p[24..26].copy_from_slice(
        &u16::try_from(8 + payload.len())
            .expect("size")
            .to_be_bytes(),
    );
    // UDP checksum 0: none, allowed over IPv4.
    p[28..].copy_from_slice(payload);
    p
}

/// `header` and `packet` as one overlay datagram.
fn datagram(header: Header, packet: &[u8]) -> Bytes {
    let mut buf = vec![0u8; header.buffer_len()];
    header.emit(&mut buf).expect("header");
    buf.extend_from_slice(packet);
    Bytes::from(buf)
}

/// Connects to node-b from node-a's namespace as the member whose config is `config`,
/// exchanges hellos, sends `datagrams`, then writes `control` on the control stream.
/// Returns, once all is sent and a second has passed, why node-b closed the connection
/// if it did.
fn send_as_member(
    pair: &Pair,
    config: &std::path::Path,
    datagrams: Vec<Bytes>,
    control: Vec<u8>,
) -> Option<quinn::ConnectionError> {
    let (ns, remote, server): (_, SocketAddr, _) =
        (&pair.a, "192.0.2.2:4433".parse().expect("addr"), "node-b");
    let ns_path = format!("/var/run/netns/{}", ns.name);
    let config = config.to_owned();
    let server = server.to_owned();
    std::thread::spawn(move || {
        // Only this thread enters the namespace; the socket below is created there.
        let netns = File::open(&ns_path).expect("namespace file");
        nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let text = std::fs::read_to_string(&config).expect("config");
            let dir = config.parent().expect("config dir");
            let config = quicap::config::Config::parse(&text, dir).expect("config parses");
            let loaded = quicap::daemon::identity::load(&config, time::OffsetDateTime::now_utc())
                .expect("identity");
            let transport = quicap::transport::transport_config(&config.transport, 1400, false)
                .expect("transport");
            let client =
                quicap::transport::client_config(&loaded.trust(), &loaded.identity, transport)
                    .expect("client config");
            let mut endpoint =
                quinn::Endpoint::client("0.0.0.0:0".parse().expect("addr")).expect("endpoint");
            endpoint.set_default_client_config(client);
            let conn = endpoint
                .connect(remote, &server)
                .expect("connect")
                .await
                .expect("handshake");
            let (mut send, mut recv) = conn.open_bi().await.expect("control stream");
            let hello = Message::Hello(Hello {
                min_version: 1,
                max_version: 1,
                name: loaded.cert.name.clone(),
                mtu: 1400,
                modes: Modes {
                    l3: true,
                    l2: false,
                },
            });
            let mut buf = Vec::new();
            hello.encode(&mut buf).expect("hello");
            send.write_all(&buf).await.expect("hello sent");
            let mut header = [0u8; FRAME_HEADER_LEN];
            recv.read_exact(&mut header).await.expect("hello back");
            let mut body = vec![0u8; Message::frame_len(header).expect("frame")];
            recv.read_exact(&mut body).await.expect("hello back");
            assert!(
                matches!(Message::decode_body(&body), Ok(Message::Hello(_))),
                "expected a hello"
            );
            // Let the peer add the link before the datagrams arrive.
            tokio::time::sleep(Duration::from_millis(300)).await;
            // Quickly: this member answers no probes, and node-b closes a link that
            // stays silent for 3 s.
            for d in datagrams {
                conn.send_datagram(d).expect("datagram");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if !control.is_empty() {
                // The peer may close the connection on it: that is the point.
                let _ = send.write_all(&control).await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let closed_by_peer = conn.close_reason();
            conn.close(0u32.into(), b"done");
            endpoint.wait_idle().await;
            closed_by_peer
        })
    })
    .join()
    .expect("hostile member")
}

/// node-a and node-b up and connected, and the config of node-m (10.77.0.9), a member
/// that only this test process speaks for.
fn pair_and_member() -> (Pair, std::path::PathBuf) {
    let pair = Pair::start();
    assert!(
        pair.a.wait_ping("10.77.0.2", CONNECT).is_some(),
        "pair did not come up"
    );
    let config = node_config(
        &pair.pki,
        &[],
        &NodeSpec::new("node-m", &["10.77.0.9/24"], "0.0.0.0:4433"),
    );
    (pair, config)
}

/// Packets counted by the nftables rule in node-b's test chain that matches `source`.
fn counted(ns: &Netns, source: &str) -> u64 {
    let out = ns
        .cmd(&["nft", "list", "chain", "inet", "qthostile", "input"])
        .output()
        .expect("nft");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.contains(&format!("ip saddr {source} ")))
        .and_then(|l| l.split("packets ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counter for {source} in:\n{text}"))
}

/// A member with a valid certificate connects to node-b and sends datagrams with a
/// routing extension that names node-a as their origin, carrying packets from node-a's
/// address: node-b drops them (they would pass the check against node-a's certificate).
/// The same packet sent as the member's own, from its own certificate's address, is
/// delivered, which shows the counters see delivered packets.
#[test]
fn a_member_cannot_send_packets_in_another_nodes_name() {
    let (pair, config) = pair_and_member();
    nft(
        &pair.b,
        &[
            "add table inet qthostile",
            "add chain inet qthostile input { type filter hook input priority 0 ; }",
            "add rule inet qthostile input iifname quicap0 ip saddr 10.77.0.1 udp dport 9 counter",
            "add rule inet qthostile input iifname quicap0 ip saddr 10.77.0.9 udp dport 9 counter",
        ],
    );
    let b_tun = [10, 77, 0, 2];
    let forged = Header {
        route: Some(Route {
            source: NodeId(quicap::daemon::mesh::node_id("node-a")),
            destination: NodeId(quicap::daemon::mesh::node_id("node-b")),
        }),
        ..Header::direct(PayloadKind::Ip)
    };
    let own = Header::direct(PayloadKind::Ip);
    let mut datagrams = Vec::new();
    for _ in 0..5 {
        datagrams.push(datagram(
            forged,
            &udp_packet([10, 77, 0, 1], b_tun, b"forged"),
        ));
        datagrams.push(datagram(own, &udp_packet([10, 77, 0, 9], b_tun, b"own")));
    }
    let closed = send_as_member(&pair, &config, datagrams, Vec::new());
    assert!(
        closed.is_none(),
        "node-b closed the member's link: {closed:?}"
    );
    assert_eq!(
        counted(&pair.b, "10.77.0.9"),
        5,
        "the member's own packets were not all delivered"
    );
    assert_eq!(
        counted(&pair.b, "10.77.0.1"),
        0,
        "packets in node-a's name from another member were delivered"
    );
    assert!(
        pair.node_b
            .log_count("dropping datagram with a routing extension")
            > 0
    );
    // node-a itself is still fine.
    assert!(pair.a.ping("10.77.0.2"));
}

/// Bytes from a fixed-seed xorshift generator: the same "random" input on every run.
fn noise(seed: &mut u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            (*seed >> 24) as u8
        })
        .collect()
}

/// A member that sends garbage (datagrams of random bytes and lengths, some behind a
/// valid overlay header, then a garbage control frame) neither crashes node-b nor
/// disturbs its traffic with node-a; node-b closes that member's link (protocol
/// violation) instead of keeping a connection whose control stream is dead.
#[test]
fn garbage_from_a_member_leaves_the_node_serving_others() {
    let (pair, config) = pair_and_member();
    let mut seed = 0x9e37_79b9_7f4a_7c15;
    let mut datagrams = Vec::new();
    for i in 0..150usize {
        let len = noise(&mut seed, 2)
            .iter()
            .map(|&b| usize::from(b) * 5)
            .sum::<usize>()
            % 1300;
        let body = noise(&mut seed, len);
        datagrams.push(if i % 3 == 0 {
            // A valid header in front of random bytes: the packet parser's turn.
            datagram(Header::direct(PayloadKind::Ip), &body)
        } else {
            Bytes::from(body)
        });
    }
    // A frame header announcing a long message, then noise.
    let mut control = vec![0xff, 0xff, 0xff, 0xff];
    control.extend(noise(&mut seed, 3000));
    let closed = send_as_member(&pair, &config, datagrams, control);
    assert!(
        matches!(&closed, Some(quinn::ConnectionError::ApplicationClosed(c)) if c.error_code == 3u32.into()),
        "node-b did not close the link with the garbage control stream as a protocol violation: {closed:?}"
    );
    assert!(
        pair.a
            .wait_ping("10.77.0.2", Duration::from_secs(2))
            .is_some(),
        "node-b no longer answers node-a:\n{}",
        pair.node_b.log_text()
    );
    assert!(
        pair.node_b.status(false).status.success(),
        "node-b's status failed"
    );
}
