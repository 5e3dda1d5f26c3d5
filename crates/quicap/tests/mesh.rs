//! End-to-end: nodes that are not directly connected reach each other through others.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const CONNECT: Duration = Duration::from_secs(20);

/// Starts node `name` in `ns` with one overlay address, dialing `peers`.
fn start(
    pki: &Pki,
    ns: &Netns,
    name: &str,
    addr: &'static str,
    peers: &[(&str, Option<&str>)],
    sign: &[&str],
    node_extra: &str,
) -> Node {
    let addrs = [addr];
    let dir = pki.issue(name, &addrs, sign);
    let cfg = write_config(
        pki,
        &dir,
        &NodeSpec {
            peers,
            ..NodeSpec::new(name, &addrs, "0.0.0.0:4433")
        },
    );
    if !node_extra.is_empty() {
        let text = std::fs::read_to_string(&cfg).expect("config");
        std::fs::write(
            &cfg,
            text.replacen("[node]\n", &format!("[node]\n{node_extra}\n"), 1),
        )
        .expect("config");
    }
    Node::start(ns, name, &cfg)
}

#[test]
fn line_a_b_c_reaches_c_only_through_b() {
    require_root();
    let pki = Pki::new("testnet");
    let (a, b, c) = (Netns::new(), Netns::new(), Netns::new());
    link(&a, "192.0.2.1", &b, "192.0.2.2");
    link(&b, "198.51.100.2", &c, "198.51.100.3");
    let node_b = start(&pki, &b, "node-b", "10.77.0.2/24", &[], &[], "");
    let _node_a = start(
        &pki,
        &a,
        "node-a",
        "10.77.0.1/24",
        &[("node-b", Some("192.0.2.2:4433"))],
        &[],
        "",
    );
    let _node_c = start(
        &pki,
        &c,
        "node-c",
        "10.77.0.3/24",
        &[("node-b", Some("198.51.100.2:4433"))],
        &[],
        "",
    );
    assert!(
        a.wait_ping("10.77.0.3", CONNECT).is_some(),
        "node-a never reached node-c through node-b"
    );
    assert!(c.wait_ping("10.77.0.1", Duration::from_secs(5)).is_some());
    // A 20 MB TCP transfer through the intermediate node arrives intact.
    let dir = pki.dir.path();
    let input = dir.join("input.bin");
    let received = dir.join("received.bin");
    run(Command::new("head")
        .args(["-c", "20971520", "/dev/urandom"])
        .stdout(std::fs::File::create(&input).expect("input")));
    let mut server = c
        .cmd(&["socat", "-u", "TCP-LISTEN:5001,bind=10.77.0.3,reuseaddr"])
        .arg(format!("CREATE:{}", received.display()))
        .spawn()
        .expect("socat");
    wait_until(Duration::from_secs(5), || {
        c.cmd(&["ss", "-ltn", "sport = :5001"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("5001"))
            .unwrap_or(false)
    })
    .expect("listening");
    run(a
        .cmd(&["socat", "-u"])
        .arg(format!("OPEN:{}", input.display()))
        .arg("TCP:10.77.0.3:5001"));
    assert!(server.wait().expect("socat").success());
    assert_eq!(
        std::fs::read(&input).expect("in"),
        std::fs::read(&received).expect("out")
    );
    drop(node_b);
}
