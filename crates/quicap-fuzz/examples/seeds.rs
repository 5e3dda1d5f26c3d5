//! Writes the seed corpus of every fuzz target into `fuzz/corpus/<target>/`: valid
//! inputs of each kind, which the fuzzer mutates from. Run from the repository root:
//! `cargo run -p quicap-fuzz --example seeds`. The seeds are committed; the test suite
//! replays them (and whatever the fuzzer added) through the same checks. With target
//! names as arguments (`-- concealed`), only those targets' seeds are rewritten.

use std::path::Path;

use quicap_pki::concealed::{Prover, EXPORTER_LEN};
use quicap_pki::{Authorization, Ca, NodeCert, NodeKey, NodeRequest, ParsedCsr, SignRequest};
use quicap_wire::control::{Hello, Message, Modes, NodeInfo, Prefix, RouteEntry};
use quicap_wire::overlay::{Header, NodeId, PayloadKind, Route};
use quicap_wire::relay::{self, RelayHeader};
use quicap_wire::stream;

fn main() {
    let root = Path::new("fuzz/corpus");
    let now = time::OffsetDateTime::now_utc();
    let files = Ca::create("seednet", now, 3650, &mut rand::rng()).expect("CA");
    let ca = Ca::load(&files.cert_pem, &files.key_pem).expect("CA");
    let req = NodeRequest::generate("node-a").expect("key");
    let csr = ParsedCsr::from_pem(&req.csr_pem).expect("CSR");
    let sign = SignRequest::from_csr(
        &csr,
        None,
        Authorization {
            addresses: vec!["10.77.0.1/24".parse().expect("prefix")],
            subnets: vec!["192.168.7.0/24".parse().expect("prefix")],
            egress: false,
        },
        now,
        now + time::Duration::days(365),
    )
    .expect("sign request");
    let cert_pem = ca.sign(&sign, &mut rand::rng()).expect("signed");
    let cert = NodeCert::from_pem(&cert_pem).expect("cert");
    let crl_pem = ca
        .issue_crl(None, std::slice::from_ref(&cert.serial), now)
        .expect("CRL");
    let der = |text: &str| pem::parse(text).expect("PEM").into_contents();

    let key = NodeKey::from_pem(&req.key_pem).expect("key");
    let mut info = NodeInfo {
        origin: NodeId(0x3c5e_1a2b_0000_0001),
        version: 1_790_000_000,
        modes: Modes { l3: true, l2: true },
        certificate: cert.der.clone(),
        prefixes: vec![
            Prefix {
                addr: [192, 168, 7, 0].into(),
                len: 24,
            },
            Prefix {
                addr: "fd77::".parse().expect("address"),
                len: 64,
            },
        ],
        signature: Vec::new(),
    };
    info.signature = key
        .sign(&info.signed_payload().expect("payload"))
        .expect("signature");
    let messages = vec![
        Message::Hello(Hello {
            min_version: 1,
            max_version: 2,
            name: "node-a".into(),
            mtu: 1400,
            modes: Modes {
                l3: true,
                l2: false,
            },
        }),
        Message::Ping(7),
        Message::Pong(7),
        Message::Goodbye("peer shutting down".into()),
        Message::Routes(vec![RouteEntry {
            dest: NodeId(9),
            seqno: 3,
            metric: 120,
            path: vec![NodeId(4), NodeId(9)],
        }]),
        Message::Request {
            dest: NodeId(9),
            seqno: 4,
            hops: 16,
        },
        Message::NodeInfo(info.clone()),
        Message::LegacyNodeInfo(info),
        Message::HostDrops([5; 16]),
        Message::Instance(0x1234_5678_9abc_def1),
    ];
    let mut control = Vec::new();
    let mut all = Vec::new();
    for m in &messages {
        let mut frame = Vec::new();
        m.encode(&mut frame).expect("frame");
        all.extend_from_slice(&frame);
        control.push(frame);
    }
    control.push(all);
    control.push(vec![0, 3, 0x7f, 1, 2]);
    write(root, "control", &control);

    let routed = Header {
        route: Some(Route {
            source: NodeId(1),
            destination: NodeId(2),
        }),
        ..Header::direct(PayloadKind::Ip)
    };
    let overlay: Vec<Vec<u8>> = [
        Header::direct(PayloadKind::Ip),
        Header::direct(PayloadKind::Ethernet),
        routed,
    ]
    .iter()
    .map(|h| {
        let mut out = vec![0u8; h.buffer_len()];
        h.emit(&mut out).expect("header");
        out.extend_from_slice(&udp_v4(40, false));
        out
    })
    .collect();
    write(root, "overlay", &overlay);

    let mut frame = vec![0u8; relay::LEN];
    RelayHeader::new(NodeId(2), NodeId(1)).write(&mut frame);
    frame.extend_from_slice(&[0xc0, 0, 0, 0, 1]);
    write(root, "relay", std::slice::from_ref(&frame));

    let mut ping = Vec::new();
    Message::Ping(1).encode(&mut ping).expect("ping");
    let mut records = Vec::new();
    stream::push_control(&ping, &mut records).expect("control record");
    for datagram in &overlay {
        let mut room = [0u8; stream::LEN_PREFIX];
        stream::frame_datagram(&mut room, datagram.len()).expect("datagram record");
        records.extend_from_slice(&room);
        records.extend_from_slice(datagram);
    }
    records.extend_from_slice(&stream::relay_prefix(frame.len()).expect("relay record"));
    records.extend_from_slice(&frame);
    stream::push_close(6, "direct link up", &mut records);
    write(root, "stream", &[records]);

    let mtu = |m: u16, p: Vec<u8>| [&m.to_be_bytes()[..], &p].concat();
    let mut fragment = udp_v4(1000, false);
    fragment[6..8].copy_from_slice(&0x2010u16.to_be_bytes());
    let mut echo = udp_v4(64, true);
    echo[9] = 1;
    echo[20] = 8;
    write(
        root,
        "ip",
        &[
            mtu(1200, udp_v4(3000, false)),
            mtu(1200, udp_v4(3000, true)),
            mtu(576, fragment),
            mtu(1280, echo),
            mtu(1280, udp_v6(200)),
        ],
    );

    let pki_inputs = [
        [&[0u8][..], &cert.der].concat(),
        [&[1u8][..], &der(&files.cert_pem)].concat(),
        [&[2u8][..], &der(&req.csr_pem)].concat(),
        [&[3u8][..], &der(&crl_pem)].concat(),
        [&[4u8][..], cert_pem.as_bytes()].concat(),
        [&[4u8][..], req.csr_pem.as_bytes()].concat(),
        [&[4u8][..], crl_pem.as_bytes()].concat(),
        [&[5u8][..], files.cert_pem.as_bytes()].concat(),
    ];
    write(root, "pki", &pki_inputs);

    let prover = Prover::new(&key, &cert).expect("prover");
    let mut exported = [0u8; EXPORTER_LEN];
    exported[..8].copy_from_slice(b"exported");
    let credentials = prover.prove(&exported).expect("proof");
    write(
        root,
        "concealed",
        &[
            credentials.to_header().into_bytes(),
            b"Concealed k=AAAA, a=AAAA, p=AAAA, s=1027, v=AAAAAAAAAAAAAAAAAAAAAA".to_vec(),
            b"Basic dXNlcjpwYXNz".to_vec(),
        ],
    );

    write(
        root,
        "site",
        &[
            b"/\nbytes=0-8".to_vec(),
            b"/index.html\nbytes=-5\n\"1a2b\"".to_vec(),
            b"/docs/%61.txt?x=1\n\n\nMon, 01 Jan 2001 00:00:00 GMT".to_vec(),
            b"/../etc/passwd\nbytes=5-2,7-".to_vec(),
        ],
    );

    let node = b"GET /.well-known/masque/ip/*/*/ HTTP/1.1\r\nHost: www.example.test:443\r\nConnection: Upgrade\r\nUpgrade: connect-ip\r\nCapsule-Protocol: ?1\r\nAuthorization: Concealed k=AAAA, a=AAAA, p=AAAA, s=1027, v=AAAA\r\n\r\n";
    let answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: connect-ip\r\nAuthentication-Info: Concealed k=AAAA\r\n\r\n\x00\x05records";
    write(
        root,
        "upgrade",
        &[
            [&[0u8][..], node].concat(),
            [&[1u8][..], answer].concat(),
            b"\x00GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            b"\x01HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
        ],
    );

    let mut datagram = vec![0u8];
    datagram.extend(quicap_wire::masque::datagram_prefix(4).expect("prefix"));
    datagram.extend_from_slice(&udp_v4(64, false));
    let mut capsules = vec![1u8];
    quicap_wire::masque::put_capsule(0, b"datagram", &mut capsules).expect("capsule");
    quicap_wire::masque::put_capsule(0x2028d7ee, &[0; 70], &mut capsules).expect("capsule");
    use quicap_wire::masque::{put_addresses, put_routes, AssignedAddress, IpRange};
    let mut addresses = vec![4u8];
    put_addresses(
        &[
            AssignedAddress {
                request_id: 0,
                prefix: "10.9.0.5/32".parse().expect("prefix"),
            },
            AssignedAddress {
                request_id: 3,
                prefix: "fd00::5/128".parse().expect("prefix"),
            },
        ],
        &mut addresses,
    )
    .expect("addresses");
    let mut routes = vec![5u8];
    put_routes(
        &[IpRange::of("0.0.0.0/0".parse().expect("prefix"), 0)],
        &mut routes,
    )
    .expect("routes");
    write(
        root,
        "masque",
        &[
            datagram,
            capsules,
            vec![1, 0x80, 0, 0, 1, 0xc0],
            b"\x02/.well-known/masque/udp/2001%3Adb8%3A%3A1/443/".to_vec(),
            b"\x02/.well-known/masque/udp/www.example.test/443/".to_vec(),
            b"\x03/.well-known/masque/ip/192.0.2.0%2F24/17/".to_vec(),
            addresses,
            routes,
        ],
    );

    let example = std::fs::read("examples/node.toml").expect("examples/node.toml");
    let minimal = b"[node]\ncert = \"a.crt\"\nkey = \"a.key\"\nca = \"ca.crt\"\nlisten = [\"0.0.0.0:4433\"]\n\n[tun]\naddresses = [\"10.77.0.1/24\"]\n".to_vec();
    write(root, "config", &[example, minimal]);

    write(
        root,
        "text",
        &[
            b"node-a".to_vec(),
            b"node-x\n2026-01-01T00:00:00Z ERROR forged\x1b[2J".to_vec(),
            "abc\u{202e}fed \"quoted\" \\u{a}".as_bytes().to_vec(),
        ],
    );
}

/// Writes `inputs` as `seed-N` files of `root/target`, replacing earlier seeds, unless
/// the command line names other targets only.
fn write(root: &Path, target: &str, inputs: &[Vec<u8>]) {
    let only: Vec<String> = std::env::args().skip(1).collect();
    if !only.is_empty() && !only.iter().any(|t| t == target) {
        return;
    }
    let dir = root.join(target);
    std::fs::create_dir_all(&dir).expect("corpus folder");
    for (i, input) in inputs.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i}")), input).expect("seed");
    }
}

/// An IPv4 UDP packet of `len` bytes from 10.77.0.1 to 10.77.0.2.
fn udp_v4(len: usize, df: bool) -> Vec<u8> {
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&u16::try_from(len).expect("length").to_be_bytes());
    p[6] = if df { 0x40 } else { 0 };
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, 77, 0, 1]);
    p[16..20].copy_from_slice(&[10, 77, 0, 2]);
    let sum = quicap_wire::ip::checksum(&[&p[..20]]);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p
}

/// An IPv6 UDP packet of `len` bytes from fd77::1 to fd77::2.
fn udp_v6(len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&u16::try_from(len - 40).expect("length").to_be_bytes());
    p[6] = 17;
    p[7] = 64;
    p[8..24].copy_from_slice(
        &"fd77::1"
            .parse::<std::net::Ipv6Addr>()
            .expect("address")
            .octets(),
    );
    p[24..40].copy_from_slice(
        &"fd77::2"
            .parse::<std::net::Ipv6Addr>()
            .expect("address")
            .octets(),
    );
    p
}
