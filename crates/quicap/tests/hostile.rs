//! A member of the network that misbehaves: a valid certificate does not let a node
//! send what it is not entitled to. The hostile node here is this test itself, speaking
//! the protocol with QUICAP's own library code from inside a test namespace.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use quicap_wire::control::{Hello, Message, Modes, FRAME_HEADER_LEN};
use quicap_wire::overlay::{PayloadKind, Route};
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

/// What a member does on one visit to node-b.
struct Visit {
    datagrams: Vec<Bytes>,
    /// Written on the control stream after the datagrams.
    control: Vec<u8>,
    /// The protocol versions its hello offers.
    versions: (u8, u8),
    /// Whether it finishes its control stream after the control bytes.
    finish: bool,
}

impl Visit {
    fn new(datagrams: Vec<Bytes>, control: Vec<u8>) -> Visit {
        Visit {
            datagrams,
            control,
            versions: (1, 2),
            finish: false,
        }
    }
}

/// What came of a [`Visit`].
struct Visited {
    /// Why node-b closed the connection, if it did.
    closed_by_peer: Option<quinn::ConnectionError>,
    /// The control messages node-b sent after its hello.
    received: Vec<Message>,
}

/// Connects to node-b at 192.0.2.2 from namespace `ns` as the member whose config is
/// `config`, exchanges hellos, sends the visit's datagrams, then writes its control
/// bytes on the control stream. Returns, once all is sent and a second has passed,
/// what node-b said and whether it closed the connection.
fn visit(ns: &Netns, config: &std::path::Path, visit: Visit) -> Visited {
    let (remote, server): (SocketAddr, _) = ("192.0.2.2:4433".parse().expect("addr"), "node-b");
    let config = config.to_owned();
    let server = server.to_owned();
    block_on_in(ns, move || async move {
        let (loaded, client) = member(&config);
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
            min_version: visit.versions.0,
            max_version: visit.versions.1,
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
        assert!(
            matches!(read_frame(&mut recv).await, Some(Message::Hello(_))),
            "expected a hello"
        );
        let reader = tokio::spawn(async move {
            let mut received = Vec::new();
            while let Some(msg) = read_frame(&mut recv).await {
                received.push(msg);
            }
            received
        });
        // Let the peer add the link before the datagrams arrive.
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Quickly: this member answers no probes, and node-b closes a link that
        // stays silent for 3 s.
        for d in visit.datagrams {
            conn.send_datagram(d).expect("datagram");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if !visit.control.is_empty() {
            // The peer may close the connection on it: that is the point.
            let _ = send.write_all(&visit.control).await;
        }
        if visit.finish {
            let _ = send.finish();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let closed_by_peer = conn.close_reason();
        conn.close(0u32.into(), b"done");
        endpoint.wait_idle().await;
        let received = reader.await.expect("reader");
        Visited {
            closed_by_peer,
            received,
        }
    })
}

/// The next control message on `recv`; None once the stream ends or breaks.
async fn read_frame(recv: &mut quinn::RecvStream) -> Option<Message> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    recv.read_exact(&mut header).await.ok()?;
    let mut body = vec![0u8; Message::frame_len(header).ok()?];
    recv.read_exact(&mut body).await.ok()?;
    Message::decode_body(&body).ok()
}

/// The member visits node-b of `pair` from node-a's namespace (see [`visit`]).
fn send_as_member(
    pair: &Pair,
    config: &std::path::Path,
    datagrams: Vec<Bytes>,
    control: Vec<u8>,
) -> Option<quinn::ConnectionError> {
    visit(&pair.a, config, Visit::new(datagrams, control)).closed_by_peer
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
            source: quicap_pki::node_id("node-a"),
            destination: quicap_pki::node_id("node-b"),
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

/// The prefixes `node`'s status lists for the route to `dest` (none while it does not
/// answer yet).
fn prefixes_at(node: &Node, dest: &str) -> Vec<String> {
    let out = node.status(true);
    if !out.status.success() {
        return Vec::new();
    }
    let status = json(&out);
    status["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["destination"] == dest)
        .flat_map(|r| r["prefixes"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p.as_str().map(str::to_owned))
        .collect()
}

/// A member of the network sends node-b a node info in node-a's name (node-a's own
/// certificate, a newer version, no prefixes), signed with its own key, and replays a
/// real node info of node-a's that it recorded before node-a changed what it
/// advertises: node-b keeps node-a's current prefixes, and says why it ignored the
/// forgery. Before node infos were signed, the forgery took node-a's subnets off the
/// whole mesh.
#[test]
fn a_member_cannot_change_another_nodes_information() {
    require_root();
    let pki = Pki::new("testnet");
    let a = Netns::new();
    let b = Netns::new();
    link(&a, "192.0.2.1", &b, "192.0.2.2");
    let peers_a = [("node-b", Some("192.0.2.2:4433"))];
    let subnets = ["--subnet", "10.99.0.0/24", "--subnet", "10.98.0.0/24"];
    let cfg_a = node_config(
        &pki,
        &subnets,
        &NodeSpec {
            peers: &peers_a,
            node_extra: "advertise = [\"10.99.0.0/24\"]",
            ..NodeSpec::new("node-a", A_ADDRS, "0.0.0.0:4433")
        },
    );
    let cfg_b = node_config(&pki, &[], &NodeSpec::new("node-b", B_ADDRS, "0.0.0.0:4433"));
    let mut node_a = Node::start(&a, "node-a", &cfg_a);
    let node_b = Node::start(&b, "node-b", &cfg_b);
    let member_config = node_config(
        &pki,
        &[],
        &NodeSpec::new("node-m", &["10.77.0.9/24"], "0.0.0.0:4433"),
    );
    let has = |prefix: &str| prefixes_at(&node_b, "node-a").iter().any(|p| p == prefix);
    assert!(
        wait_until(CONNECT, || has("10.99.0.0/24")).is_some(),
        "node-b did not learn node-a's subnet"
    );

    let node_a_id = quicap_pki::node_id("node-a");
    let recorded = visit(&a, &member_config, Visit::new(Vec::new(), Vec::new()))
        .received
        .into_iter()
        .find_map(|m| match m {
            Message::NodeInfo(info) if info.origin == node_a_id => Some(info),
            _ => None,
        })
        .expect("node-b's greeting carries node-a's node info");
    assert_eq!(recorded.prefixes.len(), 1);
    assert!(!recorded.signature.is_empty());

    node_a.stop();
    let text = std::fs::read_to_string(&cfg_a).expect("config");
    let text = text.replace(
        "advertise = [\"10.99.0.0/24\"]",
        "advertise = [\"10.99.0.0/24\", \"10.98.0.0/24\"]",
    );
    std::fs::write(&cfg_a, text).expect("config");
    node_a.restart();
    assert!(
        wait_until(CONNECT, || has("10.98.0.0/24")).is_some(),
        "node-b did not learn node-a's new subnet"
    );

    let key = member(&member_config).0.key;
    let mut forged = recorded.clone();
    forged.version = recorded.version + 3600;
    forged.prefixes.clear();
    forged.signature = key
        .sign(&forged.signed_payload().expect("payload"))
        .expect("signed");
    let mut control = Vec::new();
    Message::NodeInfo(forged)
        .encode(&mut control)
        .expect("frame");
    Message::NodeInfo(recorded)
        .encode(&mut control)
        .expect("frame");
    let visited = visit(&a, &member_config, Visit::new(Vec::new(), control));
    assert!(
        visited.closed_by_peer.is_none(),
        "node-b closed the member's link: {:?}",
        visited.closed_by_peer
    );
    assert_eq!(
        prefixes_at(&node_b, "node-a"),
        [
            "10.77.0.1/32",
            "fd77::1/128",
            "10.99.0.0/24",
            "10.98.0.0/24"
        ],
        "node-a's prefixes changed at node-b"
    );
    assert!(
        node_b.log_count("its signature does not verify with the certificate's key") > 0,
        "node-b did not say why it ignored the forgery"
    );
}

/// Each way of breaking the control protocol closes the member's link with a reason
/// that names it, in the close frame and in node-b's log; node-a keeps its tunnel.
#[test]
fn protocol_violations_are_named() {
    let (pair, config) = pair_and_member();
    let frame = |m: Message| {
        let mut out = Vec::new();
        m.encode(&mut out).expect("frame");
        out
    };
    let hello = frame(Message::Hello(Hello {
        min_version: 1,
        max_version: 2,
        name: "node-m".into(),
        mtu: 1400,
        modes: Modes {
            l3: true,
            l2: false,
        },
    }));
    let unsigned = frame(Message::LegacyNodeInfo(quicap_wire::NodeInfo {
        origin: quicap_pki::node_id("node-m"),
        version: 1,
        modes: Modes::default(),
        certificate: Vec::new(),
        prefixes: Vec::new(),
        signature: Vec::new(),
    }));
    let cases: Vec<(Vec<u8>, bool, &str)> = vec![
        (
            vec![0x20, 0x00],
            false,
            "control frame of 8192 bytes exceeds the 4096-byte limit",
        ),
        (
            vec![0, 10, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 9],
            false,
            "control message type 0x02 has 1 trailing bytes",
        ),
        (
            vec![0, 3, 0x02, 0, 0],
            false,
            "control message type 0x02 is truncated",
        ),
        (
            vec![0, 9, 0x02, 1, 2],
            true,
            "control stream ended inside a frame, after 3 bytes",
        ),
        (hello, false, "a second hello"),
        (
            unsigned,
            false,
            "unsigned node info on a version 2 connection",
        ),
    ];
    for (control, finish, reason) in cases {
        let visited = visit(
            &pair.a,
            &config,
            Visit {
                finish,
                ..Visit::new(Vec::new(), control)
            },
        );
        match &visited.closed_by_peer {
            Some(quinn::ConnectionError::ApplicationClosed(c)) => {
                assert_eq!(c.error_code, 3u32.into(), "{reason}");
                assert!(
                    String::from_utf8_lossy(&c.reason).contains(reason),
                    "closed with {:?}, expected {reason:?}",
                    String::from_utf8_lossy(&c.reason)
                );
            }
            other => panic!("not closed for {reason:?}: {other:?}"),
        }
        assert!(
            pair.node_b.wait_log(
                &["closing link: protocol violation", reason],
                Duration::from_secs(2)
            ),
            "node-b's log does not name {reason:?}"
        );
    }
    assert!(pair.a.ping("10.77.0.2"), "node-b no longer answers node-a");
}
