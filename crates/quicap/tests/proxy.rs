//! The application-layer proxy, end to end: real `quicap` nodes in namespaces, curl as
//! the SOCKS5 and HTTP proxy client on one node, a web server (Python's http.server)
//! in a namespace behind the egress node, reached by a name only the egress can
//! resolve.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

const CONNECT: Duration = Duration::from_secs(20);
/// The web server behind the egress, and its name (known only in the egress's
/// namespace).
const WEB_ADDR: &str = "10.233.0.2";
const WEB_NAME: &str = "web.proxy.test";
const BODY: &str = "through the mesh\n";

/// A UDP echo server in `ns` on `WEB_ADDR` port `port`.
fn udp_echo(ns: &Netns, port: u16) -> Background {
    background(ns.cmd(&[
        "socat",
        &format!("UDP-RECVFROM:{port},bind={WEB_ADDR},fork"),
        "PIPE",
    ]))
}

/// A UDP exchange through the SOCKS5 listener at `proxy` (tests/tools/socks_udp.py,
/// PySocks): (sent, echoed intact, source address the proxy reported).
fn socks_udp(
    ns: &Netns,
    proxy: u16,
    host: &str,
    port: u16,
    count: u32,
    size: usize,
) -> (u64, u64, String) {
    let v = run_tool(
        ns,
        "socks_udp.py",
        &[
            "127.0.0.1",
            &proxy.to_string(),
            host,
            &port.to_string(),
            &count.to_string(),
            &size.to_string(),
        ],
    );
    (
        v["sent"].as_u64().unwrap_or(0),
        v["echoed"].as_u64().unwrap_or(0),
        v["source"].as_str().unwrap_or("").to_owned(),
    )
}

/// A web server in `ns` on `WEB_ADDR` ports 8000 and 8001 serving `dir`.
fn web_server(ns: &Netns, dir: &Path) -> (Background, Background) {
    std::fs::create_dir_all(dir).expect("test setup");
    std::fs::write(dir.join("file.txt"), BODY).expect("test setup");
    let serve = |port: &str| {
        let mut cmd = ns.cmd(&[
            "python3",
            "-m",
            "http.server",
            port,
            "--bind",
            WEB_ADDR,
            "--directory",
        ]);
        cmd.arg(dir);
        background(cmd)
    };
    let servers = (serve("8000"), serve("8001"));
    let up = wait_until(Duration::from_secs(10), || {
        ns.cmd(&[
            "curl",
            "-sf",
            "-o",
            "/dev/null",
            &format!("http://{WEB_ADDR}:8000/file.txt"),
        ])
        .status()
        .is_ok_and(|s| s.success())
            && ns
                .cmd(&[
                    "curl",
                    "-sf",
                    "-o",
                    "/dev/null",
                    &format!("http://{WEB_ADDR}:8001/file.txt"),
                ])
                .status()
                .is_ok_and(|s| s.success())
    });
    assert!(up.is_some(), "the web server did not start");
    servers
}

/// curl in `ns` with `args`, errors shown on stderr.
fn curl_run(ns: &Netns, args: &[&str]) -> std::process::Output {
    let mut all = vec!["curl", "-sS", "--max-time", "15"];
    all.extend_from_slice(args);
    ns.cmd(&all).output().expect("curl")
}

/// curl in `ns` with `args`: (exit code, body).
fn curl(ns: &Netns, args: &[&str]) -> (i32, String) {
    let out = curl_run(ns, args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// curl in `ns` with `args`: (exit code, what it printed on stderr).
fn curl_error(ns: &Netns, args: &[&str]) -> (Option<i32>, String) {
    let out = curl_run(ns, args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn url(host: &str, port: u16) -> String {
    format!("http://{host}:{port}/file.txt")
}

/// Starts `name` in `ns` with `extra` TOML at the end of its config.
fn start(
    pki: &Pki,
    ns: &Netns,
    name: &str,
    addr: &'static str,
    sign: &[&str],
    peers: &[(&str, Option<&str>)],
    extra: &str,
) -> Node {
    let addrs = [addr];
    let cfg = node_config(
        pki,
        sign,
        &NodeSpec {
            peers,
            extra,
            ..NodeSpec::new(name, &addrs, "0.0.0.0:4433")
        },
    );
    Node::start(ns, name, &cfg)
}

/// node-a in `ns`, dialing node-b at 192.0.2.2, with the proxy listeners `listeners`.
fn ingress(pki: &Pki, ns: &Netns, listeners: &str) -> Node {
    let peers = [("node-b", Some("192.0.2.2:4433"))];
    start(pki, ns, "node-a", "10.77.0.1/24", &[], &peers, listeners)
}

const LISTENERS: &str = "
[[proxy]]
listen = \"127.0.0.1:1080\"
protocol = \"socks5\"
egress = [\"node-b\"]

[[proxy]]
listen = \"127.0.0.1:1081\"
protocol = \"http\"
egress = [\"node-b\"]

[[proxy]]
listen = \"127.0.0.1:1082\"
protocol = \"socks5\"
egress = [\"node-b\"]
username = \"alice\"
password = \"s3cret\"
";

const EGRESS: &str = "
[egress]
allow = [\"10.233.0.0/24\"]
ports = [8000, 9000]
";

/// node-a with the proxy listeners, node-b its egress (certificate with `egress_sign`)
/// with the web server's namespace behind it.
struct TwoNodes {
    node_a: Node,
    node_b: Node,
    a: Netns,
    _b: Netns,
    _w: Netns,
    _hosts: Hosts,
    _web: (Background, Background),
    _pki: Pki,
}

fn two_nodes(egress_sign: &[&str]) -> TwoNodes {
    two_nodes_over(egress_sign, "auto")
}

/// [`two_nodes`] with node-a dialing node-b over `transport` (`"auto"`, `"tcp"`).
fn two_nodes_over(egress_sign: &[&str], transport: &str) -> TwoNodes {
    require_root();
    let pki = Pki::new("proxynet");
    let (a, b, w) = (Netns::new(), Netns::new(), Netns::new());
    link(&a, "192.0.2.1", &b, "192.0.2.2");
    link(&b, "10.233.0.1", &w, WEB_ADDR);
    let hosts = Hosts::new(&b, &format!("{WEB_ADDR} {WEB_NAME}"));
    let web = web_server(&w, &pki.dir.path().join("www"));
    let node_b = start(&pki, &b, "node-b", "10.77.0.2/24", egress_sign, &[], EGRESS);
    let dial = format!(
        "{LISTENERS}\n[[peer]]\nname = \"node-b\"\nendpoint = \"192.0.2.2:4433\"\ntransport = \"{transport}\"\n"
    );
    let node_a = start(&pki, &a, "node-a", "10.77.0.1/24", &[], &[], &dial);
    assert!(
        wait_until(CONNECT, || node_a.peer_status("node-b")["links"]
            .as_array()
            .is_some_and(|l| !l.is_empty()))
        .is_some(),
        "node-a never linked to node-b"
    );
    TwoNodes {
        node_a,
        node_b,
        a,
        _b: b,
        _w: w,
        _hosts: hosts,
        _web: web,
        _pki: pki,
    }
}

#[test]
fn curl_reaches_a_web_server_behind_the_egress_through_socks5_and_http_proxies() {
    let t = two_nodes(&["--egress"]);
    // The name resolves only at the egress: node-a's namespace knows nothing of it.
    assert_ne!(curl(&t.a, &[&url(WEB_NAME, 8000)]).0, 0);
    let socks = curl(
        &t.a,
        &["--socks5-hostname", "127.0.0.1:1080", &url(WEB_NAME, 8000)],
    );
    assert_eq!(socks, (0, BODY.to_owned()), "SOCKS5 CONNECT by name");
    let socks_ip = curl(&t.a, &["--socks5", "127.0.0.1:1080", &url(WEB_ADDR, 8000)]);
    assert_eq!(socks_ip, (0, BODY.to_owned()), "SOCKS5 CONNECT by address");
    let absolute = curl(&t.a, &["-x", "http://127.0.0.1:1081", &url(WEB_NAME, 8000)]);
    assert_eq!(absolute, (0, BODY.to_owned()), "HTTP proxy, absolute URI");
    let tunnel = curl(
        &t.a,
        &["-p", "-x", "http://127.0.0.1:1081", &url(WEB_NAME, 8000)],
    );
    assert_eq!(tunnel, (0, BODY.to_owned()), "HTTP CONNECT");
    // Credentials: the right ones, wrong ones, none.
    let with = curl(
        &t.a,
        &[
            "--socks5-hostname",
            "alice:s3cret@127.0.0.1:1082",
            &url(WEB_NAME, 8000),
        ],
    );
    assert_eq!(
        with,
        (0, BODY.to_owned()),
        "SOCKS5 with username and password"
    );
    assert_ne!(
        curl(
            &t.a,
            &[
                "--socks5-hostname",
                "alice:wrong@127.0.0.1:1082",
                &url(WEB_NAME, 8000)
            ]
        )
        .0,
        0
    );
    assert_ne!(
        curl(
            &t.a,
            &["--socks5-hostname", "127.0.0.1:1082", &url(WEB_NAME, 8000)]
        )
        .0,
        0
    );
    // The egress's policy: port 8001 and addresses outside 10.233.0.0/24 are refused
    // with SOCKS5's "not allowed" (curl: exit 97, "connection not allowed by ruleset").
    let (code, stderr) = curl_error(
        &t.a,
        &["--socks5-hostname", "127.0.0.1:1080", &url(WEB_NAME, 8001)],
    );
    assert_eq!(code, Some(97), "{stderr}");
    assert_eq!(
        curl(
            &t.a,
            &["--socks5", "127.0.0.1:1080", &url("192.0.2.2", 8000)]
        )
        .0,
        97
    );
    assert_eq!(
        curl(&t.a, &["-x", "http://127.0.0.1:1081", &url(WEB_NAME, 8001)]).1,
        ""
    );
    let status = String::from_utf8_lossy(&t.node_a.status(false).stdout).into_owned();
    println!("{status}");
    assert!(status.contains("127.0.0.1:1080 (socks5)"), "{status}");
    assert!(status.contains("not allowed"), "{status}");
    let egress = String::from_utf8_lossy(&t.node_b.status(false).stdout).into_owned();
    println!("{egress}");
    assert!(
        egress.contains("egress: 5 flows of other nodes left the mesh here, 3 refused"),
        "{egress}"
    );
}

#[test]
fn flows_and_udp_cross_a_tls_tcp_link_on_a_relayed_quic_link_through_it() {
    let t = two_nodes_over(&["--egress"], "tcp");
    let kinds = |node: &Node| -> Vec<String> {
        node.peer_status("node-b")["links"]
            .as_array()
            .map(|l| {
                l.iter()
                    .map(|l| l["kind"].as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(kinds(&t.node_a), ["tcp"]);
    let socks = curl(
        &t.a,
        &["--socks5-hostname", "127.0.0.1:1080", &url(WEB_NAME, 8000)],
    );
    assert_eq!(
        socks,
        (0, BODY.to_owned()),
        "SOCKS5 CONNECT over a TCP link"
    );
    let _echo = udp_echo(&t._w, 9000);
    assert_eq!(
        socks_udp(&t.a, 1080, WEB_ADDR, 9000, 5, 32),
        (5, 5, format!("{WEB_ADDR}:9000"))
    );
    // The flows rode a relayed QUIC link inside the TCP one, which stays while they
    // may come again; the tunnel goes on over the TCP link.
    let mut now = kinds(&t.node_a);
    now.sort();
    assert_eq!(now, ["quic-relayed", "tcp"]);
    assert!(t.a.ping("10.77.0.2"));
    let s = json(&t.node_b.status(true));
    assert_eq!(s["proxy"]["egress_flows"], 2, "{s}");
}

#[test]
fn udp_goes_through_socks5_udp_associate_to_a_server_behind_the_egress() {
    let t = two_nodes(&["--egress"]);
    let _echo = (udp_echo(&t._w, 9000), udp_echo(&t._w, 9001));
    let source = format!("{WEB_ADDR}:9000");
    // By name (resolved at the egress), by address, and datagrams of 1200 bytes.
    assert_eq!(
        socks_udp(&t.a, 1080, WEB_NAME, 9000, 20, 32),
        (20, 20, source.clone())
    );
    assert_eq!(
        socks_udp(&t.a, 1080, WEB_ADDR, 9000, 5, 32),
        (5, 5, source.clone())
    );
    assert_eq!(
        socks_udp(&t.a, 1080, WEB_ADDR, 9000, 5, 1200),
        (5, 5, source)
    );
    // A port the egress does not allow: nothing comes back.
    let (sent, echoed, _) = socks_udp(&t.a, 1080, WEB_ADDR, 9001, 2, 32);
    assert_eq!((sent, echoed), (2, 0));
    let s = json(&t.node_b.status(true));
    assert_eq!(s["proxy"]["egress_flows"], 4, "{s}");
    assert!(
        s["proxy"]["egress_refused"].as_u64().unwrap_or(0) >= 2,
        "{s}"
    );
    // Associations end with their clients: none is left open.
    assert!(
        wait_until(Duration::from_secs(5), || json(&t.node_a.status(true))
            ["proxy"]["active"]
            == 0)
        .is_some(),
        "{}",
        json(&t.node_a.status(true))
    );
}

#[test]
fn garbage_to_the_listeners_gets_a_clear_refusal_and_disturbs_nothing() {
    let t = two_nodes(&["--egress"]);
    let send = |port: u16, bytes: &[u8]| {
        let input = t._pki.dir.path().join("garbage");
        std::fs::write(&input, bytes).expect("input");
        let out =
            t.a.cmd(&[
                "sh",
                "-c",
                &format!(
                    "timeout 5 socat -t2 - TCP:127.0.0.1:{port} < {}",
                    input.display()
                ),
            ])
            .output()
            .expect("socat");
        out.stdout
    };
    // SOCKS4, an unknown address type, a nonzero reserved byte, BIND, random bytes.
    assert_eq!(send(1080, b"\x04\x01\x00\x50\x0a\x00\x00\x01\x00"), b"");
    assert_eq!(
        send(1080, b"\x05\x01\x00\x05\x01\x00\x07\x00\x00"),
        b"\x05\x00\x05\x08\x00\x01\x00\x00\x00\x00\x00\x00"
    );
    assert_eq!(
        send(
            1080,
            b"\x05\x01\x00\x05\x01\x01\x01\x0a\x00\x00\x01\x00\x50"
        ),
        b"\x05\x00\x05\x01\x00\x01\x00\x00\x00\x00\x00\x00"
    );
    assert_eq!(
        send(
            1080,
            b"\x05\x01\x00\x05\x02\x00\x01\x0a\x00\x00\x01\x00\x50"
        ),
        b"\x05\x00\x05\x07\x00\x01\x00\x00\x00\x00\x00\x00"
    );
    assert_eq!(
        send(1080, b"\x05\x01\x02"),
        b"\x05\xff",
        "no acceptable method"
    );
    assert_eq!(
        send(1081, b"\x16\x03\x01\x00\x05hello\r\n\r\n"),
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    assert!(
        String::from_utf8_lossy(&send(1081, b"GET /relative HTTP/1.1\r\nHost: x\r\n\r\n"))
            .starts_with("HTTP/1.1 400 ")
    );
    let status = t.node_a.status(true);
    let s = json(&status);
    assert!(s["proxy"]["bad_requests"].as_u64().unwrap_or(0) >= 5, "{s}");
    // The listeners serve on.
    let socks = curl(
        &t.a,
        &["--socks5-hostname", "127.0.0.1:1080", &url(WEB_NAME, 8000)],
    );
    assert_eq!(socks, (0, BODY.to_owned()));
}

#[test]
fn a_node_whose_certificate_grants_no_egress_carries_no_flow() {
    let t = two_nodes(&[]);
    assert!(t
        .node_b
        .wait_log(&["certificate grants no egress"], Duration::from_secs(5)));
    let (code, stderr) = curl_error(
        &t.a,
        &["--socks5-hostname", "127.0.0.1:1080", &url(WEB_NAME, 8000)],
    );
    assert_eq!(code, Some(97), "{stderr}");
}

#[test]
fn flows_reach_an_egress_two_hops_away_by_name_by_prefix_and_after_a_failed_first_choice() {
    require_root();
    let pki = Pki::new("proxynet");
    let (a, b, c, w) = (Netns::new(), Netns::new(), Netns::new(), Netns::new());
    link(&a, "192.0.2.1", &b, "192.0.2.2");
    link(&b, "198.51.100.2", &c, "198.51.100.3");
    link(&c, "10.233.0.1", &w, WEB_ADDR);
    let _hosts = Hosts::new(&c, &format!("{WEB_ADDR} {WEB_NAME}"));
    let _web = web_server(&w, &pki.dir.path().join("www"));
    let listeners = "
[[proxy]]
listen = \"127.0.0.1:1080\"
protocol = \"socks5\"
egress = [\"node-x\", \"node-c\"]

[[proxy]]
listen = \"127.0.0.1:1081\"
protocol = \"socks5\"
";
    let _node_b = start(&pki, &b, "node-b", "10.77.0.2/24", &[], &[], "");
    let node_a = ingress(&pki, &a, listeners);
    let egress = "
[egress]
allow = [\"10.233.0.0/24\"]
";
    let cfg_c = node_config(
        &pki,
        &["--egress", "--subnet", "10.233.0.0/24"],
        &NodeSpec {
            peers: &[("node-b", Some("198.51.100.2:4433"))],
            node_extra: "advertise = [\"10.233.0.0/24\"]",
            extra: egress,
            ..NodeSpec::new("node-c", &["10.77.0.3/24"], "0.0.0.0:4433")
        },
    );
    let node_c = Node::start(&c, "node-c", &cfg_c);
    assert!(
        wait_until(CONNECT, || {
            let s = json(&node_a.status(true));
            s["routes"].as_array().is_some_and(|r| {
                r.iter().any(|r| {
                    r["destination"] == "node-c"
                        && r["prefixes"]
                            .as_array()
                            .is_some_and(|p| p.iter().any(|p| p == "10.233.0.0/24"))
                })
            })
        })
        .is_some(),
        "node-a learned no route to node-c's prefix"
    );
    // By name, node-x (unknown) first: the flow goes to node-c, end to end over a
    // relayed link through node-b.
    let by_name = curl(
        &a,
        &["--socks5-hostname", "127.0.0.1:1080", &url(WEB_NAME, 8000)],
    );
    assert_eq!(by_name, (0, BODY.to_owned()));
    let relayed = node_a.peer_status("node-c")["links"]
        .as_array()
        .is_some_and(|l| l.iter().any(|l| l["kind"] == "quic-relayed"));
    assert!(relayed, "{}", node_a.peer_status("node-c"));
    // Without a configured egress: the node that advertises the destination's prefix.
    let by_prefix = curl(&a, &["--socks5", "127.0.0.1:1081", &url(WEB_ADDR, 8000)]);
    assert_eq!(by_prefix, (0, BODY.to_owned()));
    // An address nobody advertises: network unreachable (curl: 97 for any refusal).
    assert_ne!(
        curl(&a, &["--socks5", "127.0.0.1:1081", &url("203.0.113.9", 80)]).0,
        0
    );
    let s = json(&node_c.status(true));
    assert_eq!(s["proxy"]["egress_flows"], 2, "{s}");
    // A large transfer arrives whole: 20 MB through the relayed flow.
    let big = pki.dir.path().join("www/big.bin");
    let data: Vec<u8> = (0..20_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&big, &data).expect("test setup");
    let out = a
        .cmd(&[
            "curl",
            "-s",
            "--max-time",
            "60",
            "--socks5-hostname",
            "127.0.0.1:1080",
            &format!("http://{WEB_NAME}:8000/big.bin"),
        ])
        .output()
        .expect("curl");
    assert!(out.status.success());
    assert_eq!(out.stdout.len(), data.len());
    assert!(out.stdout == data, "the 20 MB arrived changed");
}
