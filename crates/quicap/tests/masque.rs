//! The MASQUE proxy of the HTTP/3 front, end to end, with clients this project did not
//! write: curl_cffi's libcurl as a CONNECT-UDP client making an HTTP/3 request to
//! Caddy behind an egress node, and a CONNECT-IP client written for the tests from RFC
//! 9484 on aioquic (tests/tools/connect_ip.py) that gets an address and pings through
//! the mesh. The client runs in a namespace of its own and reaches only node-a's
//! HTTP/3 front.
//!
//! ```text
//!  client ──198.51.100.0/24── node-a ──192.0.2.0/24── node-b [──203.0.113.0/24── node-c]
//!          (MASQUE, camouflage)        (egress)                 (egress, two hops)
//!                                         └──10.233.0.0/24── web (Caddy, HTTP/3)
//! ```

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

const CONNECT: Duration = Duration::from_secs(20);
const FRONT: &str = "198.51.100.1";
const WEB_ADDR: &str = "10.233.0.2";
const WEB_NAME: &str = "web.masque.test";
const BODY: &str = "through MASQUE";
const TOKEN: &str = "k7Qm2xVd9pLs4RtZ";
/// node-a's CONNECT-IP clients' addresses: inside its TUN's prefixes and its
/// certificate's subnets.
const POOL: &str = "addresses = [\"10.77.0.128/25\", \"fd77::8000/113\"]";

/// Caddy in `ns` on `WEB_ADDR`:8443 (TCP and UDP), answering [`BODY`] over HTTP/3.
fn web_server(ns: &Netns, dir: &Path) -> Background {
    std::fs::create_dir_all(dir).expect("test setup");
    let (cert, key, _) = web_cert(dir);
    let site = format!(
        "https://{WEB_NAME}:8443 {{\n\tbind {WEB_ADDR}\n\ttls {} {}\n\trespond \"{BODY}\"\n}}\n",
        cert.display(),
        key.display()
    );
    let resolve = format!("{WEB_NAME}:8443:{WEB_ADDR}");
    let url = format!("https://{WEB_NAME}:8443/");
    caddy(
        ns,
        dir,
        "masque",
        "h1 h2 h3",
        &site,
        &["--resolve", &resolve, &url],
    )
}

/// The `[masque]` section of node-a, with `extra` lines.
fn masque_section(extra: &str) -> String {
    format!(
        "\n[masque]\ntokens = [\"{TOKEN}\"]\nusers = [{{ username = \"alice\", password = \"s3cret\" }}]\n{POOL}\n{extra}\n"
    )
}

/// The mesh of a test: node-a (camouflage, MASQUE) dialing node-b, node-b the egress
/// with Caddy behind it; with `three`, node-c two hops away is the egress instead.
struct Mesh {
    client: Netns,
    /// The pin of node-a's web certificate.
    pin: String,
    node_a: Node,
    node_b: Node,
    node_c: Option<Node>,
    _ns: Vec<Netns>,
    _hosts: Hosts,
    _web: Background,
    _pki: Pki,
}

const EGRESS: &str = "\n[egress]\nallow = [\"10.233.0.0/24\"]\nports = [8443, 9000]\n";

/// Where MASQUE traffic leaves the mesh in a test.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Exit {
    /// node-b, one hop from node-a.
    B,
    /// node-c, behind node-b.
    C,
    /// node-a itself, which reaches the web server's network through node-b's
    /// namespace as an ordinary router.
    A,
}

fn mesh(masque_extra: &str, exit: Exit) -> Mesh {
    require_root();
    let three = exit == Exit::C;
    let pki = Pki::new("masquenet");
    let (client, a, b, w) = (Netns::new(), Netns::new(), Netns::new(), Netns::new());
    link(&client, "198.51.100.2", &a, FRONT);
    link(&a, "192.0.2.1", &b, "192.0.2.2");
    let c = three.then(Netns::new);
    let web_side = c.as_ref().unwrap_or(&b);
    link(web_side, "10.233.0.1", &w, WEB_ADDR);
    if exit == Exit::A {
        run(&mut b.cmd(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]));
        run(&mut a.cmd(&["ip", "route", "add", "10.233.0.0/24", "via", "192.0.2.2"]));
        run(&mut w.cmd(&["ip", "route", "add", "default", "via", "10.233.0.1"]));
    }
    let resolver = if exit == Exit::A { &a } else { web_side };
    let hosts = Hosts::new(resolver, &format!("{WEB_ADDR} {WEB_NAME}"));
    let web = web_server(&w, &pki.dir.path().join("www"));

    let mut sign_a = vec!["--subnet", "10.77.0.128/25", "--subnet", "fd77::8000/113"];
    if exit == Exit::A {
        sign_a.push("--egress");
    }
    let dir_a = pki.issue("node-a", A_ADDRS, &sign_a);
    let (web_a, pin) = web_section(&dir_a);
    // node-a shows the web site to the world but dials node-b as a private node: flows
    // ride the QUIC streams of a private link.
    let extra_a = web_a
        + &masque_section(masque_extra)
        + if exit == Exit::A { EGRESS } else { "" }
        + "\n[[peer]]\nname = \"node-b\"\nendpoint = \"192.0.2.2:4433\"\nmode = \"private\"\n";
    let cfg_a = write_config(
        &pki,
        &dir_a,
        &NodeSpec {
            node_extra: "mode = \"camouflage\"",
            extra: &extra_a,
            ..NodeSpec::new("node-a", A_ADDRS, "0.0.0.0:4433")
        },
    );
    let node_a = Node::start(&a, "node-a", &cfg_a);

    let b_sign: &[&str] = if exit == Exit::B { &["--egress"] } else { &[] };
    let b_extra = if exit == Exit::B { EGRESS } else { "" };
    let peers_b: Vec<(&str, Option<&str>)> = if three {
        vec![("node-a", None), ("node-c", Some("203.0.113.2:4433"))]
    } else {
        vec![("node-a", None)]
    };
    let cfg_b = node_config(
        &pki,
        b_sign,
        &NodeSpec {
            peers: &peers_b,
            extra: b_extra,
            ..NodeSpec::new("node-b", B_ADDRS, "0.0.0.0:4433")
        },
    );
    let node_b = Node::start(&b, "node-b", &cfg_b);
    let node_c = c.as_ref().map(|c| {
        link(&b, "203.0.113.1", c, "203.0.113.2");
        let peers_c = [("node-b", None)];
        let cfg_c = node_config(
            &pki,
            &["--egress"],
            &NodeSpec {
                peers: &peers_c,
                extra: EGRESS,
                ..NodeSpec::new("node-c", &["10.77.0.3/24", "fd77::3/64"], "0.0.0.0:4433")
            },
        );
        Node::start(c, "node-c", &cfg_c)
    });
    let far = if three { "10.77.0.3" } else { "10.77.0.2" };
    assert!(
        a.wait_ping(far, CONNECT).is_some(),
        "node-a never reached {far} through the mesh"
    );
    let mut ns = vec![a, b, w];
    ns.extend(c);
    Mesh {
        client,
        pin,
        node_a,
        node_b,
        node_c,
        _ns: ns,
        _hosts: hosts,
        _web: web,
        _pki: pki,
    }
}

/// An HTTP/3 request from the client through node-a's CONNECT-UDP proxy to the web
/// server: (status, HTTP version, body, curl's error).
fn via_connect_udp(m: &Mesh, credentials: &str) -> (u64, u64, String, String) {
    via_connect_udp_to(m, 8443, credentials)
}

/// [`via_connect_udp`] to the web server's `port`.
fn via_connect_udp_to(m: &Mesh, port: u16, credentials: &str) -> (u64, u64, String, String) {
    let v = run_tool(
        &m.client,
        "masque_udp.py",
        &[
            &format!("https://{FRONT}:4433"),
            &format!("https://{WEB_NAME}:{port}/"),
            credentials,
        ],
    );
    (
        v["status"].as_u64().unwrap_or(0),
        v["version"].as_u64().unwrap_or(0),
        v["body"].as_str().unwrap_or("").to_owned(),
        v["error"].as_str().unwrap_or("").to_owned(),
    )
}

/// The CONNECT-IP client against node-a's front with `args`.
fn connect_ip(m: &Mesh, args: &[&str]) -> serde_json::Value {
    let mut all = vec![FRONT, "4433"];
    all.extend_from_slice(args);
    run_tool(&m.client, "connect_ip.py", &all)
}

/// The replies of the pings of a CONNECT-IP run, in order.
fn replies(v: &serde_json::Value) -> Vec<String> {
    v["pings"]
        .as_array()
        .map(|p| {
            p.iter()
                .map(|p| p["reply"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn masque_status(node: &Node) -> serde_json::Value {
    json(&node.status(true))["masque"].clone()
}

#[test]
fn curl_makes_an_http3_request_through_connect_udp_to_a_server_behind_the_egress() {
    let m = mesh("egress = [\"node-b\"]", Exit::B);
    // The name resolves at the egress only; the client reaches nothing but node-a.
    let (status, version, body, error) = via_connect_udp(&m, "basic:alice:s3cret");
    assert_eq!((status, body.as_str()), (200, BODY), "{error}");
    assert_eq!(version, 30, "the answer came over HTTP/3");
    let (status, _, body, error) = via_connect_udp(&m, &format!("bearer:{TOKEN}"));
    assert_eq!((status, body.as_str()), (200, BODY), "{error}");
    // A port node-b's [egress] refuses: node-b says so before any payload, and the
    // client gets 403.
    let (status, _, _, error) = via_connect_udp_to(&m, 8444, "basic:alice:s3cret");
    assert_eq!(status, 0);
    assert!(error.contains("403"), "{error}");
    // Without credentials, or with wrong ones, the front is the web site it shows
    // everyone: no tunnel, and no 407 that would tell a proxy is there.
    for credentials in ["none", "basic:alice:wrong", "bearer:0000000000000000"] {
        let (status, _, _, error) = via_connect_udp(&m, credentials);
        assert_eq!(status, 0, "{credentials}: {error}");
        assert!(!error.contains("407"), "{credentials}: {error}");
    }
    let s = masque_status(&m.node_a);
    println!("{s}");
    assert_eq!(s["udp_sessions"], 2, "{s}");
    assert_eq!(s["unauthenticated"], 3, "{s}");
    let egress = json(&m.node_b.status(true));
    assert_eq!(egress["proxy"]["egress_flows"], 2, "{egress}");
    assert_eq!(egress["proxy"]["egress_refused"], 1, "{egress}");
    let text = String::from_utf8_lossy(&m.node_a.status(false).stdout).into_owned();
    assert!(text.contains("masque: 2 CONNECT-UDP"), "{text}");
}

#[test]
fn a_node_that_may_egress_sends_connect_udp_from_its_own_socket_and_refuses_what_its_policy_does() {
    let m = mesh("", Exit::A);
    let (status, version, body, error) = via_connect_udp(&m, "basic:alice:s3cret");
    assert_eq!((status, version, body.as_str()), (200, 30, BODY), "{error}");
    // A port [egress] does not allow: refused at once, with the reason (curl reports
    // the status of the proxy's answer).
    let (status, _, _, error) = via_connect_udp_to(&m, 8444, "basic:alice:s3cret");
    assert_eq!(status, 0);
    assert!(error.contains("403"), "{error}");
    let s = masque_status(&m.node_a);
    assert_eq!(
        (s["udp_sessions"].as_u64(), s["refused"].as_u64()),
        (Some(1), Some(1)),
        "{s}"
    );
    // Nothing went through node-b as a node: it only routed.
    let b = json(&m.node_b.status(true));
    assert_eq!(b["proxy"]["egress_flows"], 0, "{b}");
}

#[test]
fn a_connect_ip_client_gets_an_address_and_pings_across_the_mesh() {
    let m = mesh("", Exit::B);
    let bearer = format!("bearer:{TOKEN}");
    let v = connect_ip(
        &m,
        &[
            &bearer,
            "10.77.0.2:84",
            "10.77.0.1:84",
            "fd77::2:1280",
            "192.0.2.99:84",
            "10.77.0.9:84",
        ],
    );
    println!("{v}");
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(
        v["addresses"],
        serde_json::json!(["10.77.0.129/32", "fd77::8001/128"]),
        "{v}"
    );
    assert_eq!(
        v["routes"],
        serde_json::json!([
            "0.0.0.0-255.255.255.255/0",
            "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/0"
        ]),
        "{v}"
    );
    // node-b through the mesh, node-a itself, node-b over IPv6 with a 1280-byte
    // packet; an address outside the mesh that node-a may not egress to (ICMP
    // administratively prohibited), an overlay address no node has (unreachable).
    assert_eq!(
        replies(&v),
        ["echo", "echo", "echo", "prohibited", "unreachable"],
        "{v}"
    );
    assert_eq!(v["pings"][2]["len"], 1280, "{v}");
    // The same in DATAGRAM capsules: answered in capsules.
    let v = connect_ip(&m, &[&bearer, "--capsules", "10.77.0.2:84", "fd77::2:1280"]);
    assert_eq!(replies(&v), ["echo", "echo"], "{v}");
    assert_eq!(v["capsule_packets"], 2, "{v}");
    // A client whose datagrams cannot carry 1280-byte IPv6 packets is refused.
    let small = connect_ip(&m, &[&bearer, "--max-datagram", "1200"]);
    assert_eq!(small["status"], 502, "{small}");
    // Basic credentials admit too; none get the site's answer.
    let basic = connect_ip(&m, &["basic:alice:s3cret", "10.77.0.2:84"]);
    assert_eq!(replies(&basic), ["echo"], "{basic}");
    let none = connect_ip(&m, &["none"]);
    assert_ne!(none["status"], 200, "{none}");
    assert_ne!(none["status"], 407, "{none}");
    let s = masque_status(&m.node_a);
    assert_eq!(s["ip_sessions"], 3, "{s}");
    assert_eq!(s["refused"], 1, "{s}");
    assert_eq!(s["unauthenticated"], 1, "{s}");
}

#[test]
fn the_egress_two_hops_away_carries_connect_udp_and_connect_ip() {
    let m = mesh("egress = [\"node-c\"]", Exit::C);
    let (status, version, body, error) = via_connect_udp(&m, "basic:alice:s3cret");
    assert_eq!((status, version, body.as_str()), (200, 30, BODY), "{error}");
    let v = connect_ip(
        &m,
        &[&format!("bearer:{TOKEN}"), "10.77.0.3:84", "fd77::3:1280"],
    );
    assert_eq!(replies(&v), ["echo", "echo"], "{v}");
    let c = json(&m.node_c.as_ref().expect("node-c").status(true));
    assert_eq!(c["proxy"]["egress_flows"], 1, "{c}");
    // node-b only relays: nothing left the mesh there.
    let b = json(&m.node_b.status(true));
    assert_eq!(b["proxy"]["egress_flows"], 0, "{b}");
}

#[test]
fn bad_masque_input_is_counted_and_disturbs_nothing_else() {
    let m = mesh("", Exit::B);
    let bearer = format!("bearer:{TOKEN}");
    // A spoofed source and an unknown context ID are dropped; the session goes on; a
    // malformed capsule ends it with a reset stream.
    let v = connect_ip(
        &m,
        &[&bearer, "--spoof", "--context", "--garbage", "10.77.0.2:84"],
    );
    assert_eq!(replies(&v), ["echo"], "{v}");
    assert_eq!(v["reset"], true, "{v}");
    // A packet larger than the link to node-b carries (sent in a capsule, which has
    // room for it): ICMP "fragmentation needed" comes back.
    let v = connect_ip(&m, &[&bearer, "--capsules", "10.77.0.2:1460"]);
    assert_eq!(replies(&v), ["too-big"], "{v}");
    // Paths the proxy does not serve: an admitted client gets 400 and a Proxy-Status.
    for path in [
        "/.well-known/masque/ip/example.com/*/",
        "/.well-known/masque/ip/*/300/",
    ] {
        let v = connect_ip(&m, &[&bearer, "--path", path]);
        assert_eq!(v["status"], 400, "{path}: {v}");
    }
    // A CONNECT-IP scoped to one address: only that one is reachable.
    let v = connect_ip(
        &m,
        &[
            &bearer,
            "--path",
            "/.well-known/masque/ip/10.77.0.2/1/",
            "10.77.0.2:84",
            "10.77.0.1:84",
        ],
    );
    assert_eq!(replies(&v), ["echo", "prohibited"], "{v}");
    assert_eq!(
        v["routes"],
        serde_json::json!(["10.77.0.2-10.77.0.2/1"]),
        "{v}"
    );
    let s = masque_status(&m.node_a);
    println!("{s}");
    assert_eq!(s["spoofed"], 1, "{s}");
    assert_eq!(s["unknown_context"], 1, "{s}");
    assert_eq!(s["bad_capsules"], 1, "{s}");
    assert_eq!(s["oversized"], 1, "{s}");
    assert_eq!(s["refused"], 2, "{s}");
    assert_eq!(s["active"], 0, "{s}");
    // The tunnel between the nodes never noticed.
    assert!(m._ns[0].ping("10.77.0.2"));
    let _ = &m.node_b;
}

/// A CONNECT-UDP session to `WEB_ADDR`:9000 opened with the Concealed proof (RFC 9729)
/// of the member whose config is `member_config`, as a node proves itself: the status
/// of the answer, and the payload echoed back in an HTTP Datagram (empty if none).
fn connect_udp_as_member(m: &Mesh, member_config: &Path) -> (u16, Vec<u8>) {
    use base64::Engine;
    let (loaded, _) = member(member_config);
    let pin_b64 = m.pin.trim_start_matches("sha256//").to_owned();
    let pin: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(pin_b64)
        .expect("pin")
        .try_into()
        .expect("32 bytes");
    block_on_in(&m.client, move || async move {
        let web = quicap::config::PeerWeb {
            server_name: Some(WEB_SITE.to_owned()),
            pin: Some(pin),
            roots: None,
        };
        let endpoint = format!("{FRONT}:4433");
        let dial = quicap::camouflage::client::WebDial::new(&web, &endpoint).expect("dial");
        let crypto =
            quinn::crypto::rustls::QuicClientConfig::try_from(dial.quic.clone()).expect("QUIC TLS");
        let config = quinn::ClientConfig::new(std::sync::Arc::new(crypto));
        let client =
            quinn::Endpoint::client("0.0.0.0:0".parse().expect("address")).expect("endpoint");
        let conn = client
            .connect_with(config, endpoint.parse().expect("address"), WEB_SITE)
            .expect("connect")
            .await
            .expect("QUIC handshake");
        let (mut driver, mut sender) = h3::client::builder()
            .enable_extended_connect(true)
            .enable_datagram(true)
            .build::<_, _, bytes::Bytes>(h3_quinn::Connection::new(conn.clone()))
            .await
            .expect("HTTP/3");
        tokio::spawn(async move {
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        let authority = format!("{WEB_SITE}:4433");
        let proof = quicap::camouflage::auth::prove(
            &conn,
            &loaded.key,
            &loaded.cert,
            &quicap::camouflage::auth::origin(&authority, ""),
        )
        .expect("proof");
        let request = http::Request::builder()
            .method(http::Method::CONNECT)
            .uri(format!(
                "https://{authority}/.well-known/masque/udp/{WEB_ADDR}/9000/"
            ))
            .header("authorization", proof)
            .header("capsule-protocol", "?1")
            .extension(h3::ext::Protocol::CONNECT_UDP)
            .body(())
            .expect("request");
        let mut stream = sender.send_request(request).await.expect("request sent");
        let response = stream.recv_response().await.expect("answer");
        let status = response.status().as_u16();
        if status != 200 {
            return (status, Vec::new());
        }
        let id = stream.id().into_inner();
        let mut datagram = quicap_wire::masque::datagram_prefix(id).expect("prefix");
        let prefix_len = datagram.len();
        datagram.extend_from_slice(b"a member speaks");
        let mut echoed = Vec::new();
        for _ in 0..5 {
            conn.send_datagram(bytes::Bytes::from(datagram.clone()))
                .expect("datagram");
            let read = tokio::time::timeout(Duration::from_secs(1), conn.read_datagram()).await;
            if let Ok(Ok(d)) = read {
                echoed = d[prefix_len..].to_vec();
                break;
            }
        }
        (status, echoed)
    })
}

#[test]
fn a_node_certificate_admits_a_masque_client() {
    let m = mesh("nodes = true\negress = [\"node-b\"]", Exit::B);
    let _echo = background(m._ns[2].cmd(&[
        "socat",
        &format!("UDP-RECVFROM:9000,bind={WEB_ADDR},fork"),
        "PIPE",
    ]));
    // A laptop of the network: a certificate, and no node running.
    let laptop = node_config(
        &m._pki,
        &[],
        &NodeSpec::new("laptop", &["10.77.0.50/24"], "0.0.0.0:4433"),
    );
    let (status, echoed) = connect_udp_as_member(&m, &laptop);
    assert_eq!(status, 200);
    assert_eq!(echoed, b"a member speaks");
    // A certificate of another network proves nothing: the site's answer.
    let other = Pki::new("othernet");
    let stranger = node_config(
        &other,
        &[],
        &NodeSpec::new("laptop", &["10.77.0.50/24"], "0.0.0.0:4433"),
    );
    let (status, _) = connect_udp_as_member(&m, &stranger);
    assert_ne!(status, 200);
    assert_ne!(status, 407);
    let s = masque_status(&m.node_a);
    assert_eq!(
        (s["udp_sessions"].as_u64(), s["unauthenticated"].as_u64()),
        (Some(1), Some(1)),
        "{s}"
    );
}
