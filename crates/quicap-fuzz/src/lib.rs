//! What QUICAP's fuzz targets check, one function per parser of untrusted bytes.
//!
//! ```text
//!  fuzz/fuzz_targets/<name>.rs ──> quicap_fuzz::<name>(bytes)   (cargo fuzz run -s none)
//!  tests/corpus.rs ──────────────> the same, over fuzz/corpus/<name>/*   (cargo test)
//! ```
//!
//! Each function takes any bytes, must never panic on them, and asserts what must hold
//! of whatever the parser accepts (it re-encodes to what it decoded, offsets stay in
//! the input, fragments fit): a panic is a finding. [`TARGETS`] lists them all; a
//! parser added to the project gets a function here, a target in `fuzz/`, and seeds in
//! `fuzz/corpus/` (see `examples/seeds.rs`).

use std::net::IpAddr;

use quicap_wire::control::{ControlError, Message, FRAME_HEADER_LEN};
use quicap_wire::ip::{self, IcmpError};
use quicap_wire::overlay::Header;
use quicap_wire::relay::{self, RelayHeader};

/// The check of one fuzz target: takes any bytes, panics only on a finding.
pub type Check = fn(&[u8]);

/// Every target, by name (the name of its folder in `fuzz/corpus/` and of its file in
/// `fuzz/fuzz_targets/`).
pub const TARGETS: &[(&str, Check)] = &[
    ("overlay", overlay),
    ("control", control),
    ("relay", relay_frame),
    ("stream", stream_records),
    ("ip", ip_packet),
    ("pki", pki),
    ("concealed", concealed),
    ("site", site),
    ("masque", masque),
    ("upgrade", upgrade),
    ("proxy", proxy),
    ("config", config),
    ("text", text),
];

/// What a proxy listener and an egress read from untrusted peers: SOCKS5 messages from
/// applications, HTTP proxy request heads, and flow openings from other nodes. The
/// first byte picks the parser.
pub fn proxy(data: &[u8]) {
    use quicap::proxy::http::{parse_head, Kind};
    use quicap_wire::{flow, socks};
    let Some((&which, data)) = data.split_first() else {
        return;
    };
    match which % 6 {
        0 => {
            if let Ok(Some((methods, n))) = socks::parse_greeting(data) {
                assert_eq!(n, 2 + methods.len());
            }
        }
        1 => {
            if let Ok(Some((c, n))) = socks::parse_userpass(data) {
                assert_eq!(n, 3 + c.username.len() + c.password.len());
            }
        }
        2 => {
            if let Ok(Some((request, n))) = socks::parse_request(data) {
                assert!(n <= data.len());
                // What was read is exactly what the target encodes to, unless a name
                // was an address literal.
                let mut again = Vec::new();
                if request.target.encode(&mut again).is_ok()
                    && matches!(request.target, socks::Target::Name(..))
                {
                    assert_eq!(&data[3..n], &again[..]);
                }
                assert_eq!(socks::parse_request(&data[..n]), Ok(Some((request, n))));
            }
        }
        3 => {
            if let Ok(d) = socks::parse_udp(data) {
                assert!(d.payload.len() < data.len());
            }
        }
        4 => {
            if let Ok(Some((opening, n))) = flow::parse_open(data) {
                assert!(n <= flow::MAX_OPEN && n <= data.len());
                assert_eq!(flow::parse_open(&data[..n]), Ok(Some((opening, n))));
            }
            if let Ok((id, target, rest)) = flow::parse_datagram(data) {
                let mut again = Vec::new();
                if flow::push_datagram_head(id, &target, &mut again).is_ok()
                    && matches!(target, socks::Target::Name(..))
                {
                    assert_eq!(&data[..again.len()], &again[..]);
                    assert_eq!(rest.len(), data.len() - again.len());
                }
            }
        }
        _ => {
            if let Ok(Some(head)) = parse_head(data) {
                assert!(head.len <= data.len());
                assert_eq!(parse_head(&data[..head.len]), Ok(Some(head.clone())));
                if let Kind::Forward(out) = &head.kind {
                    // The request sent on is one HTTP head, and says it is the last.
                    assert!(out.ends_with(b"Connection: close\r\n\r\n"));
                }
            }
        }
    }
}

/// The overlay header of a QUIC datagram from a peer.
pub fn overlay(data: &[u8]) {
    let Ok((header, offset)) = Header::parse(data) else {
        return;
    };
    assert_eq!(offset, header.buffer_len());
    assert!(offset <= data.len());
    let mut out = vec![0u8; header.buffer_len()];
    header.emit(&mut out).expect("a parsed header emits");
    assert_eq!(
        Header::parse(&out).expect("emitted header parses").0,
        header
    );
}

/// A control frame from a peer, and the frames after it.
pub fn control(data: &[u8]) {
    let mut rest = data;
    while let Ok(Some((msg, used))) = Message::decode(rest) {
        assert!(used > FRAME_HEADER_LEN && used <= rest.len());
        let mut out = b"before".to_vec();
        match msg.encode(&mut out) {
            Ok(()) => {
                let (again, len) = Message::decode(&out[6..])
                    .expect("an encoded frame decodes")
                    .expect("an encoded frame is whole");
                assert_eq!(len, out.len() - 6);
                if !matches!(msg, Message::Unknown(_)) {
                    assert_eq!(again, msg);
                }
            }
            Err(ControlError::FrameTooLong(_)) => assert_eq!(out, b"before"),
            Err(e) => panic!("a decoded message does not encode: {e}"),
        }
        if let Message::NodeInfo(info) | Message::LegacyNodeInfo(info) = &msg {
            let _ = info.signed_payload();
        }
        rest = &rest[used..];
    }
}

/// The bytes of a TLS/TCP link as its reader splits them into records, and what each
/// record carries.
pub fn stream_records(data: &[u8]) {
    use quicap_wire::stream::{self, Record};
    let mut rest = data;
    while let Some(Ok(len)) = stream::record_len(rest) {
        assert!(len > stream::LEN_PREFIX);
        let Some(body) = rest.get(stream::LEN_PREFIX..len) else {
            return;
        };
        match stream::parse(body) {
            Ok(Record::Datagram(d)) => {
                assert_eq!(d, body);
                let _ = Header::parse(d);
            }
            Ok(Record::Control(frame)) => {
                let _ = Message::decode_body(frame);
            }
            Ok(Record::Close { reason, .. }) => {
                assert!(reason.len() <= stream::MAX_CLOSE_REASON);
            }
            Ok(Record::Relay(frame)) => {
                assert_eq!(frame, &body[1..]);
                let _ = RelayHeader::read(frame);
            }
            Err(_) => return,
        }
        rest = &rest[len..];
    }
}

/// A relay frame as it arrives on a node's UDP socket.
pub fn relay_frame(data: &[u8]) {
    if let Ok(header) = RelayHeader::read(data) {
        let mut out = [0u8; relay::LEN];
        header.write(&mut out);
        assert_eq!(
            RelayHeader::read(&out).expect("written header reads"),
            header
        );
    }
    let mut frame = data.to_vec();
    let before = frame.get(2).copied();
    if relay::forward_hop(&mut frame).is_ok() {
        assert_eq!(frame.get(2).copied(), before.map(|h| h - 1));
    }
}

/// An IP packet read from the TUN: the addresses the data path routes by, the ICMP
/// errors it may answer with, IPv4 fragmentation at an MTU the input chooses.
pub fn ip_packet(data: &[u8]) {
    let (Some(&a), Some(&b)) = (data.first(), data.get(1)) else {
        return;
    };
    let packet = &data[2..];
    let _ = ip::addresses(packet);
    let mut out = [0u8; 1500];
    let from4: IpAddr = [10, 0, 0, 1].into();
    let from6: IpAddr = "fd00::1".parse().expect("address");
    for from in [from4, from6] {
        for error in [
            IcmpError::Unreachable,
            IcmpError::Prohibited,
            IcmpError::TooBig { mtu: 1280 },
        ] {
            if let Some(len) = ip::icmp_error(packet, error, from, &mut out) {
                assert!(len <= out.len());
                assert!(ip::addresses(&out[..len]).is_some());
            }
        }
    }
    let mtu = usize::from(u16::from_be_bytes([a, b]) % 1600);
    let mut covered = 0;
    let fragmented = ip::fragment_v4(packet, mtu, |f| {
        assert!(f.len() <= mtu.max(20));
        let flags = u16::from_be_bytes([f[6], f[7]]);
        assert_eq!(flags & 0x4000, 0, "a fragment with DF or the reserved bit");
        let ihl = usize::from(f[0] & 0x0f) * 4;
        covered += f.len() - ihl;
    });
    if fragmented {
        let ihl = usize::from(packet[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
        assert_eq!(covered, total - ihl);
    }
}

/// Certificates, CSRs and CRLs in DER (from a peer's handshake, a node info) and in PEM
/// (files): the first byte picks the parser.
pub fn pki(data: &[u8]) {
    let Some((&which, der)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(der);
    let now = time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
    match which % 6 {
        0 => {
            if let Ok(cert) = quicap_pki::NodeCert::from_der(der) {
                let _ = quicap_pki::signature::verify(&cert.spki_der, der, der);
            }
        }
        1 => drop(quicap_pki::cert::CaCert::from_der(der)),
        2 => drop(quicap_pki::ParsedCsr::from_der(der)),
        3 => drop(quicap_pki::Crl::from_der(der)),
        4 => drop(quicap_pki::show::describe(&text, now)),
        _ => {
            let _ = quicap_pki::NodeCert::from_pem(&text);
            let _ = quicap_pki::Crl::from_pem(&text);
            let _ = quicap_pki::ParsedCsr::from_pem(&text);
        }
    }
}

/// An `Authorization` header from a client that may claim to be a node (camouflage
/// mode): what parses must write back to the same credentials, and checking it against
/// any exported bytes must end in a verdict.
pub fn concealed(data: &[u8]) {
    use quicap_pki::concealed::{Credentials, Origin, EXPORTER_LEN};
    let Ok(Some(credentials)) = Credentials::parse(data) else {
        return;
    };
    let again = Credentials::parse(credentials.to_header().as_bytes());
    assert_eq!(again.ok().flatten().as_ref(), Some(&credentials));
    let origin = Origin {
        scheme: "https",
        host: "www.example.org",
        port: 443,
        realm: "",
    };
    let context = credentials.exporter_context(&origin);
    let mut exported = [0u8; EXPORTER_LEN];
    for (i, b) in exported.iter_mut().enumerate() {
        *b = context.get(i).copied().unwrap_or(0);
    }
    // Forged verification values that happen to match reach the certificate parser
    // and the signature check.
    exported[32..].copy_from_slice(&credentials.verification);
    let _ = credentials.verify(&exported);
}

/// A request to the camouflage site: path and headers are the client's. Input: lines
/// of path, Range, If-None-Match and If-Modified-Since; the built-in page serves ranges,
/// a missing directory takes every path through the path decoder.
pub fn site(data: &[u8]) {
    use quicap::camouflage::site::{Body, Site};
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let path = lines.next().unwrap_or("/");
    let mut headers = http::HeaderMap::new();
    for name in ["range", "if-none-match", "if-modified-since"] {
        if let Some(v) = lines
            .next()
            .and_then(|l| http::HeaderValue::from_str(l).ok())
        {
            headers.insert(name, v);
        }
    }
    for site in [
        Site::new(None, Some("web"), Some(443)),
        Site::new(Some("/nonexistent-quicap-fuzz".into()), None, None),
    ] {
        for method in [http::Method::GET, http::Method::HEAD, http::Method::POST] {
            let reply = site.answer(&method, path, &headers, true);
            if let Body::Bytes(b) = &reply.body {
                let len: usize = reply.headers[http::header::CONTENT_LENGTH]
                    .to_str()
                    .ok()
                    .and_then(|l| l.parse().ok())
                    .expect("a body has its length");
                assert_eq!(b.len(), len);
            }
        }
    }
}

/// The first request head of an HTTP/1.1 connection to the HTTPS front (first byte
/// even), or the answer a dialing node reads (odd), as the HTTP/1.1 upgrade of a
/// camouflaged link reads them.
pub fn upgrade(data: &[u8]) {
    use quicap::camouflage::upgrade::{parse_request, parse_response, Request};
    let Some((&which, data)) = data.split_first() else {
        return;
    };
    if which % 2 == 0 {
        let request = parse_request(data);
        if let Request::Node {
            authority,
            head_len,
            ..
        } = &request
        {
            assert!(*head_len <= data.len());
            assert!(!authority.is_empty());
            // What follows the head plays no part in it.
            assert_eq!(parse_request(&data[..*head_len]), request);
        }
    } else if let Ok(Some(response)) = parse_response(data) {
        assert!(response.head_len <= data.len());
        let again = parse_response(&data[..response.head_len]);
        assert_eq!(again.ok().flatten(), Some(response));
    }
}

/// What a camouflaged link or a MASQUE client sends: the first byte picks an HTTP
/// Datagram (the rest is a QUIC DATAGRAM frame's payload), the request stream's bytes
/// read as capsules back to back, a CONNECT-UDP or CONNECT-IP request path, or the
/// value of an address or route capsule.
pub fn masque(data: &[u8]) {
    use quicap_wire::masque::{self, MAX_CAPSULE};
    let Some((&which, data)) = data.split_first() else {
        return;
    };
    match which % 6 {
        2 => {
            let path = String::from_utf8_lossy(data);
            if let Ok(quicap_wire::socks::Target::Name(name, port)) = masque::parse_udp_path(&path)
            {
                assert!(!name.is_empty() && name.len() <= 254 && port > 0);
            }
            return;
        }
        3 => {
            let path = String::from_utf8_lossy(data);
            if let Ok(scope) = masque::parse_ip_path(&path) {
                assert!(scope.target.is_none_or(|t| t == t.trunc()));
            }
            return;
        }
        4 => {
            if let Ok(addresses) = masque::parse_addresses(data) {
                let mut again = Vec::new();
                masque::put_addresses(&addresses, &mut again).expect("parsed addresses encode");
                assert_eq!(masque::parse_addresses(&again).ok(), Some(addresses));
            }
            return;
        }
        5 => {
            if let Ok(routes) = masque::parse_routes(data) {
                let mut again = Vec::new();
                masque::put_routes(&routes, &mut again).expect("parsed routes encode");
                assert_eq!(again.len(), data.len());
            }
            return;
        }
        _ => {}
    }
    if which % 2 == 0 {
        if let Ok(d) = masque::parse_datagram(data) {
            assert!(d.payload.len() <= data.len());
            // The shortest encoding of what was read fits in what was read.
            if let Ok(prefix) = masque::datagram_prefix(d.stream_id) {
                if d.context_id == 0 {
                    assert!(prefix.len() + d.payload.len() <= data.len());
                }
            }
        }
        return;
    }
    let mut rest = data;
    while let Ok(Some(capsule)) = masque::parse_capsule(rest) {
        assert!(capsule.len <= rest.len() && capsule.value.len() as u64 <= MAX_CAPSULE);
        let mut again = Vec::new();
        masque::put_capsule(capsule.kind, capsule.value, &mut again)
            .expect("a parsed capsule encodes");
        let reread = masque::parse_capsule(&again).ok().flatten();
        assert_eq!(
            reread.map(|c| (c.kind, c.value, c.len)),
            Some((capsule.kind, capsule.value, again.len()))
        );
        rest = &rest[capsule.len..];
    }
}

/// A config file.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = quicap::config::Config::parse(&text, std::path::Path::new("/etc/quicap"));
}

/// Text from a peer on its way to a log line.
pub fn text(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let out = quicap_wire::escape(&text);
    assert!(!out.chars().any(char::is_control), "{out:?}");
    let quoted = quicap_wire::Quoted(&text).to_string();
    assert!(quoted.starts_with('"') && quoted.ends_with('"') && quoted.len() >= 2);
}
