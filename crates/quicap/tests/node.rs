//! End-to-end: the live control channel, dual connections, carrier state, migration,
//! `quicap status`, and Layer 2 (TAP) across the tunnel.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const CONNECT: Duration = Duration::from_secs(15);

fn carrier_off(ns: &Netns, dev: &str) -> bool {
    let out = run(&mut ns.cmd(&["ip", "link", "show", dev]));
    String::from_utf8_lossy(&out.stdout).contains("NO-CARRIER")
}

#[test]
fn status_shows_node_interfaces_peers_and_links() {
    let pair = Pair::start();
    assert!(pair.a.wait_ping("10.77.0.2", CONNECT).is_some());
    // Both sides dial: wait for the second link too.
    assert!(wait_until(CONNECT, || {
        let s = json(&pair.node_a.status(true));
        s["peers"][0]["links"].as_array().map(|l| l.len()) == Some(2)
    })
    .is_some());
    let s = json(&pair.node_a.status(true));
    assert_eq!(s["node"], "node-a");
    assert_eq!(s["interfaces"][0]["name"], "quicap0");
    assert_eq!(s["interfaces"][0]["kind"], "tun");
    assert_eq!(s["interfaces"][0]["carrier"], true);
    let peer = &s["peers"][0];
    assert_eq!(peer["name"], "node-b");
    assert_eq!(peer["addresses"][0], "10.77.0.2/24");
    let links = peer["links"].as_array().expect("links");
    let in_use: Vec<_> = links.iter().filter(|l| l["in_use"] == true).collect();
    assert_eq!(in_use.len(), 1, "exactly one link in use: {links:?}");
    assert_eq!(
        in_use[0]["direction"], "outgoing",
        "a node sends on the link it dialed"
    );
    for l in links {
        assert!(l["rx_bytes"].as_u64() > Some(0) && l["tx_bytes"].as_u64() > Some(0));
        assert!(l["rtt_ms"].as_f64() > Some(0.0));
        assert_eq!(l["remote"], "192.0.2.2:4433");
        assert_eq!(l["kind"], "quic", "a direct QUIC link");
    }

    let text = pair.node_a.status(false);
    let text = String::from_utf8_lossy(&text.stdout);
    for needle in [
        "node node-a, up ",
        "interface quicap0 (tun, mtu 1400, carrier on)",
        "peer node-b (10.77.0.2/24 fd77::2/64)",
        "* quic         outgoing",
        "  quic         incoming",
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }

    let socket = pair.node_a.config.with_file_name("control.sock");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&socket).expect("socket").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "control socket must be root-only");
}

#[test]
fn a_removed_interface_stops_the_node_with_a_one_line_reason() {
    let mut pair = Pair::start();
    assert!(pair.a.wait_ping("10.77.0.2", CONNECT).is_some());
    run(&mut pair.a.cmd(&["ip", "link", "del", "quicap0"]));
    let status = pair
        .node_a
        .wait_exit(Duration::from_secs(5))
        .expect("node-a kept running without its interface");
    assert!(!status.success(), "node-a exited with {status}");
    let log = pair.node_a.log_text();
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: interface quicap0 was removed"),
        "last line: {last}"
    );
    assert!(
        log.matches("reading from the interface failed").count() <= 1,
        "{log}"
    );
    // Its peers are told, as on SIGTERM.
    assert!(
        pair.node_b.wait_log(
            &["peer disconnected", "node-a", "shutting down"],
            Duration::from_secs(5)
        ),
        "node-b was not told"
    );
}

#[test]
fn sighup_does_not_stop_the_node() {
    let pair = Pair::start();
    assert!(pair.a.wait_ping("10.77.0.2", CONNECT).is_some());
    let pid = pair.node_a.pid().expect("running").to_string();
    assert!(run(Command::new("kill").args(["-HUP", &pid]))
        .status
        .success());
    assert!(
        pair.node_a.wait_log(&["SIGHUP"], Duration::from_secs(5)),
        "no answer to SIGHUP in the log"
    );
    assert!(
        pair.a.ping("10.77.0.2"),
        "node-a stopped serving after SIGHUP"
    );
    assert!(!pair.node_a.log_text().contains("shutting down"));
}

#[test]
fn status_without_a_node_says_so_in_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(quicap())
        .args(["status", "--socket"])
        .arg(dir.path().join("none.sock"))
        .output()
        .expect("quicap status");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: no quicap node running"), "{err}");
}

#[test]
fn carrier_is_off_while_no_peer_is_connected() {
    let mut pair = Pair::start();
    assert!(pair.a.wait_ping("10.77.0.2", CONNECT).is_some());
    assert!(!carrier_off(&pair.a, "quicap0"));
    pair.node_b.kill();
    let lost = wait_until(Duration::from_secs(6), || carrier_off(&pair.a, "quicap0"));
    assert!(lost.is_some(), "carrier stayed on without peers");
    assert_eq!(
        json(&pair.node_a.status(true))["interfaces"][0]["carrier"],
        false
    );
    pair.node_b.restart();
    assert!(
        wait_until(Duration::from_secs(10), || !carrier_off(&pair.a, "quicap0")).is_some(),
        "carrier did not come back with the peer"
    );
    assert!(pair
        .a
        .wait_ping("10.77.0.2", Duration::from_secs(5))
        .is_some());
}

#[test]
fn carrier_stays_on_when_no_carrier_is_disabled() {
    require_root();
    let pki = Pki::new("testnet");
    let ns = Netns::new();
    let cfg = node_config(
        &pki,
        &[],
        &NodeSpec {
            node_extra: "no-carrier = false",
            ..NodeSpec::new("node-a", A_ADDRS, "0.0.0.0:4433")
        },
    );
    let node = Node::start(&ns, "node-a", &cfg);
    assert!(wait_until(CONNECT, || node.status(true).status.success()).is_some());
    assert!(!carrier_off(&ns, "quicap0"));
    // And with the default, a lone node has no carrier.
    let ns2 = Netns::new();
    let cfg2 = node_config(&pki, &[], &NodeSpec::new("node-b", B_ADDRS, "0.0.0.0:4433"));
    let node2 = Node::start(&ns2, "node-b", &cfg2);
    assert!(wait_until(CONNECT, || node2.status(true).status.success()).is_some());
    assert!(carrier_off(&ns2, "quicap0"));
}

/// The scheduling policy `chrt` reports for the node's process.
fn policy(node: &Node) -> String {
    let pid = node.pid().expect("node running").to_string();
    let out = run(Command::new("chrt").args(["-p", &pid]));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn data_path_runs_with_realtime_scheduling_when_always() {
    require_root();
    let pki = Pki::new("testnet");
    let ns = Netns::new();
    let cfg = node_config(&pki, &[], &NodeSpec::new("node-a", A_ADDRS, "0.0.0.0:4433"));
    let node = Node::start(&ns, "node-a", &cfg);
    assert!(wait_until(CONNECT, || node.status(true).status.success()).is_some());
    let p = policy(&node);
    assert!(p.contains("SCHED_OTHER"), "default: {p}");

    let ns2 = Netns::new();
    let cfg2 = node_config(
        &pki,
        &[],
        &NodeSpec {
            node_extra: "realtime = \"always\"",
            ..NodeSpec::new("node-b", B_ADDRS, "0.0.0.0:4433")
        },
    );
    let node2 = Node::start(&ns2, "node-b", &cfg2);
    assert!(wait_until(CONNECT, || node2.status(true).status.success()).is_some());
    let p = policy(&node2);
    assert!(
        p.contains("SCHED_RR") && p.contains("priority: 1"),
        "realtime = always: {p}"
    );
}

/// The tests of [`contended_realtime_pair`] run one at a time: each pins a CPU hog to
/// CPU 0 and floods pings, which would promote and keep busy the nodes of another
/// such test that is still waiting for its own nodes to fall idle.
static CONTENDED: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Starts node-a and node-b (realtime = "auto") and waits until node-a runs real-time:
/// it shares CPU 0 with a CPU hog while pings flood through the tunnel. Returns the
/// turn of this test among those that contend for CPU 0 (keep it to the end, bound
/// first so that it is dropped last), the pair and the background programs that keep
/// it so.
fn contended_realtime_pair() -> (std::sync::MutexGuard<'static, ()>, Pair, [Background; 2]) {
    let turn = CONTENDED.lock().unwrap_or_else(|e| e.into_inner());
    let pair = Pair::start();
    assert!(pair.a.wait_ping("10.77.0.2", CONNECT).is_some());
    let node = &pair.node_a;
    let pid = node.pid().expect("node running").to_string();
    let rr = || policy(node).contains("SCHED_RR");
    // Idle (keepalives only): normal scheduling.
    assert!(wait_until(Duration::from_secs(10), || !rr()).is_some());
    let s = json(&node.status(true));
    assert_eq!(s["scheduling"], "normal (realtime = auto)", "{s}");

    let pinned = run(Command::new("taskset").args(["-a", "-p", "-c", "0", &pid]));
    assert!(pinned.status.success(), "taskset: {pinned:?}");
    let mut hog = Command::new("taskset");
    hog.args(["-c", "0", "sh", "-c", "while :; do :; done"]);
    let hog = background(hog);
    let load = background(pair.a.cmd(&["ping", "-f", "-q", "-w", "60", "10.77.0.2"]));
    assert!(
        wait_until(Duration::from_secs(10), rr).is_some(),
        "busy and waiting, still {}",
        policy(node)
    );
    let s = json(&node.status(true));
    assert_eq!(s["scheduling"], "real-time (realtime = auto)", "{s}");
    (turn, pair, [hog, load])
}

/// Makes the kernel drop packets in `ns` (a UDP socket whose program stopped reading
/// overflows, in bursts) and checks that node-a of `pair`, running real-time, goes back
/// to normal scheduling while that lasts and takes real-time again after. Returns node-a's
/// status from while it was normal.
fn yields_to_drops_in(pair: &Pair, ns: &Netns) -> serde_json::Value {
    let node = &pair.node_a;
    let rr = || policy(node).contains("SCHED_RR");
    let _sink = background(ns.cmd(&["socat", "-u", "UDP-RECV:9999", "EXEC:sleep 60"]));
    std::thread::sleep(Duration::from_millis(300));
    let flood = background(ns.cmd(&[
        "sh",
        "-c",
        "for i in $(seq 20); do head -c 1000000 /dev/zero | socat -u - UDP-SENDTO:127.0.0.1:9999; sleep 0.2; done",
    ]));
    assert!(
        wait_until(Duration::from_secs(5), || !rr()).is_some(),
        "drops, still {}",
        policy(node)
    );
    let status = json(&node.status(true));
    drop(flood);
    assert!(
        wait_until(Duration::from_secs(15), rr).is_some(),
        "drops over, still {}",
        policy(node)
    );
    status
}

#[test]
fn auto_realtime_follows_cpu_contention_and_yields_to_drops() {
    let (_turn, pair, _load) = contended_realtime_pair();
    // Drops in the node's own namespace.
    yields_to_drops_in(&pair, &pair.a);
}

#[test]
fn auto_realtime_yields_to_drops_of_a_node_on_the_same_machine() {
    let (_turn, pair, _load) = contended_realtime_pair();
    // Drops in node-b's namespace, which node-a's counters do not cover: node-b
    // reports them and node-a, on the same machine, counts them as its own.
    let s = yields_to_drops_in(&pair, &pair.b);
    let scheduling = s["scheduling"].as_str().unwrap_or_default();
    assert!(
        scheduling.contains("drop reports from nodes on this machine"),
        "{s}"
    );
}

/// Drops the kernel counted at the UDP socket bound to `port` in `ns` (the last column
/// of its line in /proc/net/udp).
fn socket_drops(ns: &Netns, port: u16) -> u64 {
    let out = run(&mut ns.cmd(&["cat", "/proc/net/udp"]));
    let local = format!(":{port:04X}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|a| a.ends_with(&local))
        })
        .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn auto_realtime_keeps_priority_when_its_own_socket_overflows() {
    let (_turn, pair, _load) = contended_realtime_pair();
    let node = &pair.node_a;
    let pid = node.pid().expect("node running").to_string();
    let rr = || policy(node).contains("SCHED_RR");
    // node-a stops reading while its own socket gets a burst (20 MB, over the 4 MiB
    // receive buffer QUICAP asks for): the
    // kernel drops datagrams there (and counts them namespace-wide too). Those drops
    // say the node was too slow, not that it starves another program.
    let before = socket_drops(&pair.a, 4433);
    assert!(run(Command::new("kill").args(["-STOP", &pid]))
        .status
        .success());
    run(&mut pair.a.cmd(&[
        "sh",
        "-c",
        "head -c 20000000 /dev/zero | socat -u - UDP-SENDTO:127.0.0.1:4433",
    ]));
    std::thread::sleep(Duration::from_millis(300));
    assert!(run(Command::new("kill").args(["-CONT", &pid]))
        .status
        .success());
    let dropped = socket_drops(&pair.a, 4433) - before;
    assert!(dropped > 0, "the burst overflowed nothing");
    for _ in 0..30 {
        assert!(
            rr(),
            "gave real-time up after {dropped} drops at its own socket: {}",
            policy(node)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// UDP datagrams sent so far in the namespace (where only the node sends any).
fn udp_datagrams_sent(ns: &Netns) -> u64 {
    let out = run(&mut ns.cmd(&["cat", "/proc/net/snmp"]));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next().unwrap_or(""), udp.next().unwrap_or(""));
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "OutDatagrams")
        .and_then(|(_, v)| v.parse().ok())
        .expect("OutDatagrams in /proc/net/snmp")
}

/// Links without tunnel traffic are probed once a second instead of four times: an
/// idle pair (two links) sends a few datagrams a second, and still answers at once. The
/// first packet on an idle link, sent or received, puts it back to the full probe rate
/// at once, not at its next idle probe up to a second later (a link failing under new
/// traffic is then found as fast as a busy one). Each node sends on the link it
/// dialed, so node-a sends the ping on one link and gets the answer on the other.
#[test]
fn idle_links_are_probed_once_a_second() {
    let pair = Pair::start();
    assert!(pair.a.wait_ping("10.77.0.2", CONNECT).is_some());
    // Links probe at the full rate for 5 s after they last carried traffic.
    std::thread::sleep(Duration::from_secs(6));
    let before = udp_datagrams_sent(&pair.a);
    std::thread::sleep(Duration::from_secs(5));
    let per_second = (udp_datagrams_sent(&pair.a) - before) / 5;
    assert!(
        per_second <= 10,
        "an idle node with one peer sent {per_second} datagrams a second"
    );
    let s = json(&pair.node_a.status(true));
    let links = s["peers"][0]["links"].as_array().expect("links").clone();
    assert_eq!(links.len(), 2, "{s}");
    assert!(links.iter().all(|l| l["alive"] == true), "{s}");
    assert!(links.iter().all(|l| l["idle"] == true), "{s}");
    assert!(
        pair.a.ping("10.77.0.2"),
        "an idle pair did not answer at once"
    );
    let busy = || {
        json(&pair.node_a.status(true))["peers"][0]["links"]
            .as_array()
            .is_some_and(|links| links.iter().all(|l| l["idle"] == false))
    };
    assert!(
        wait_until(Duration::from_millis(200), busy).is_some(),
        "a link still probed at the idle rate 200 ms after an answered ping: {}",
        json(&pair.node_a.status(true))
    );
}

#[test]
fn dual_connection_fails_over_to_the_other_link_within_1_s() {
    require_root();
    let pki = Pki::new("testnet");
    let a = Netns::new();
    let b = Netns::new();
    // Two paths: node-a dials node-b over the first, node-b dials node-a over the second.
    link(&a, "192.0.2.1", &b, "192.0.2.2");
    link(&a, "198.51.100.1", &b, "198.51.100.2");
    let peers_a = [("node-b", Some("192.0.2.2:4433"))];
    let peers_b = [("node-a", Some("198.51.100.1:4433"))];
    let cfg_a = node_config(
        &pki,
        &[],
        &NodeSpec {
            peers: &peers_a,
            ..NodeSpec::new("node-a", A_ADDRS, "0.0.0.0:4433")
        },
    );
    let cfg_b = node_config(
        &pki,
        &[],
        &NodeSpec {
            peers: &peers_b,
            ..NodeSpec::new("node-b", B_ADDRS, "0.0.0.0:4433")
        },
    );
    let node_a = Node::start(&a, "node-a", &cfg_a);
    let node_b = Node::start(&b, "node-b", &cfg_b);
    assert!(b.wait_ping("10.77.0.1", CONNECT).is_some());
    assert!(wait_until(CONNECT, || node_b.log_count("peer connected") == 2).is_some());
    let s = json(&node_b.status(true));
    let used: Vec<_> = s["peers"][0]["links"]
        .as_array()
        .expect("links")
        .iter()
        .filter(|l| l["in_use"] == true)
        .cloned()
        .collect();
    assert_eq!(used[0]["direction"], "outgoing");
    assert_eq!(used[0]["remote"], "198.51.100.1:4433");

    // Cut node-b's own connection: everything node-b sends to 198.51.100.1 is dropped.
    let ping = start_ping(&b, "10.77.0.1", 5);
    std::thread::sleep(Duration::from_millis(1500));
    nft(
        &b,
        &[
            "add table inet cut",
            "add chain inet cut out { type filter hook output priority 0; }",
            "add rule inet cut out ip daddr 198.51.100.1 drop",
        ],
    );
    let (gap, answered) = longest_gap(ping);
    assert!(answered > 40, "only {answered} pings answered");
    assert!(
        gap <= Duration::from_secs(1),
        "traffic interrupted for {gap:?}"
    );
    let s = json(&node_b.status(true));
    let used: Vec<_> = s["peers"][0]["links"]
        .as_array()
        .expect("links")
        .iter()
        .filter(|l| l["in_use"] == true)
        .cloned()
        .collect();
    assert_eq!(used[0]["direction"], "incoming", "{s}");
    drop(node_a);
}

#[test]
fn one_connection_serves_both_directions_when_only_one_side_dials() {
    let pair = Pair::start_with(true, false);
    assert!(pair.a.wait_ping("10.77.0.2", CONNECT).is_some());
    assert!(pair.b.wait_ping("10.77.0.1", CONNECT).is_some());
    let s = json(&pair.node_b.status(true));
    let links = s["peers"][0]["links"].as_array().expect("links");
    assert_eq!(links.len(), 1);
    assert_eq!(links[0]["direction"], "incoming");
    assert_eq!(links[0]["in_use"], true);
}

#[test]
fn incompatible_peer_is_refused_with_the_reason_on_both_sides() {
    require_root();
    let pki = Pki::new("testnet");
    let a = Netns::new();
    let b = Netns::new();
    link(&a, "192.0.2.1", &b, "192.0.2.2");
    let dir_b = pki.issue("node-b", B_ADDRS, &[]);
    let peers_a = [("node-b", Some("192.0.2.2:4433"))];
    let cfg_a = node_config(
        &pki,
        &[],
        &NodeSpec {
            peers: &peers_a,
            ..NodeSpec::new("node-a", A_ADDRS, "0.0.0.0:4433")
        },
    );
    let cfg_b = write_config(
        &pki,
        &dir_b,
        &NodeSpec::new("node-b", B_ADDRS, "0.0.0.0:4433"),
    );
    let node_a = Node::start(&a, "node-a", &cfg_a);
    let node_b = Node::start_with_args(&b, "node-b", &cfg_b, &["--offer-versions", "3-4"]);
    let reason = "incompatible protocol versions";
    assert!(
        node_a.wait_log(&[reason, "peer speaks 3..=4"], Duration::from_secs(10)),
        "node-a did not log the reason"
    );
    assert!(
        node_b.wait_log(&[reason], Duration::from_secs(10)),
        "node-b did not log the reason"
    );
    assert!(!a.ping("10.77.0.2"));
    assert_eq!(node_a.log_count("peer connected"), 0);
}

#[test]
fn dead_path_is_detected_within_3_s() {
    let pair = Pair::start_with(true, false);
    assert!(pair.a.wait_ping("10.77.0.2", CONNECT).is_some());
    let cut = Instant::now();
    nft(
        &pair.b,
        &[
            "add table inet cut",
            "add chain inet cut in { type filter hook input priority 0; }",
            "add rule inet cut in udp dport 4433 drop",
        ],
    );
    // Either the probes or QUIC's idle timer may notice first.
    let detected = wait_until(Duration::from_secs(6), || {
        pair.node_a.log_count("closing dead link") + pair.node_a.log_count("peer disconnected") > 0
    });
    assert!(detected.is_some(), "dead path not detected");
    let took = cut.elapsed();
    assert!(
        took <= Duration::from_millis(3500),
        "dead path detected after {took:?}"
    );
}

/// A link that has carried nothing for 15 s is probed every 5 s ("dormant"), and
/// QUIC sends no keepalives beside the probes: a node with one dormant link sends a
/// datagram or two a second at most. Yet when traffic starts on it towards a peer that
/// is gone, the dead link is found within the bound of a link busy all along
/// ([`dead_path_is_detected_within_3_s`]), counted from the first packet.
#[test]
fn dormant_links_are_probed_every_5_s_and_found_dead_as_fast_once_used() {
    let pair = Pair::start_with(true, false);
    assert!(pair.a.wait_ping("10.77.0.2", CONNECT).is_some());
    let dormant = || {
        json(&pair.node_a.status(true))["peers"][0]["links"]
            .as_array()
            .is_some_and(|links| !links.is_empty() && links.iter().all(|l| l["dormant"] == true))
    };
    assert!(
        wait_until(Duration::from_secs(25), dormant).is_some(),
        "the link never went dormant: {}",
        json(&pair.node_a.status(true))
    );
    let before = udp_datagrams_sent(&pair.a);
    std::thread::sleep(Duration::from_secs(10));
    let sent = udp_datagrams_sent(&pair.a) - before;
    println!("a node with one dormant link sent {sent} datagrams in 10 s");
    assert!(
        sent <= 20,
        "a node with one dormant link sent {sent} datagrams in 10 s"
    );
    assert!(dormant(), "{}", json(&pair.node_a.status(true)));

    // Traffic starts just before the next probe (they go out at multiples of 5 s on
    // the wall clock), when the last answer is 4.5 s old: a link whose silence were
    // counted from that answer would be closed at once.
    wait_for_wall_phase(4_500, 5_000);
    assert!(
        pair.a.ping("10.77.0.2"),
        "a dormant link did not carry a ping"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(pair.node_a.log_count("closing dead link"), 0);
    assert!(
        wait_until(Duration::from_secs(25), dormant).is_some(),
        "the link never went dormant again"
    );

    nft(
        &pair.b,
        &[
            "add table inet cut",
            "add chain inet cut in { type filter hook input priority 0; }",
            "add rule inet cut in udp dport 4433 drop",
        ],
    );
    let start = Instant::now();
    assert!(
        !pair.a.ping("10.77.0.2"),
        "the cut path still carried a ping"
    );
    let detected = wait_until(Duration::from_secs(10), || {
        pair.node_a.log_count("closing dead link") + pair.node_a.log_count("peer disconnected") > 0
    });
    assert!(detected.is_some(), "dead path not detected");
    let took = start.elapsed();
    println!("dead dormant link found {took:?} after traffic started");
    assert!(
        took <= Duration::from_millis(3500),
        "dead path detected {took:?} after the first packet"
    );
}

/// Waits until the wall clock is `phase` ms past a multiple of `period` ms.
fn wait_for_wall_phase(phase: u64, period: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64;
    let wait = (phase + period - now % period) % period;
    std::thread::sleep(Duration::from_millis(wait));
}

#[test]
fn connection_migrates_when_the_address_changes() {
    // Only node-a dials, so node-a is the QUIC client and may migrate.
    let pair = Pair::start_with(true, false);
    assert!(pair.a.wait_ping("10.77.0.2", CONNECT).is_some());
    let connected = pair.node_a.log_count("peer connected");
    let out = run(&mut pair
        .a
        .cmd(&["ip", "-o", "-4", "addr", "show", "to", "192.0.2.1"]));
    let dev = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .expect("veth")
        .to_owned();
    let ping = start_ping(&pair.a, "10.77.0.2", 6);
    std::thread::sleep(Duration::from_millis(1500));
    run(&mut pair.a.cmd(&[
        "sysctl",
        "-qw",
        &format!("net.ipv4.conf.{dev}.promote_secondaries=1"),
    ]));
    run(&mut pair
        .a
        .cmd(&["ip", "addr", "add", "192.0.2.11/24", "dev", &dev]));
    run(&mut pair
        .a
        .cmd(&["ip", "addr", "del", "192.0.2.1/24", "dev", &dev]));
    let (gap, answered) = longest_gap(ping);
    assert!(answered > 50, "only {answered} pings answered");
    assert!(
        gap <= Duration::from_secs(2),
        "traffic interrupted for {gap:?}"
    );
    assert_eq!(
        pair.node_a.log_count("peer connected"),
        connected,
        "a new handshake happened"
    );
    let s = json(&pair.node_b.status(true));
    assert_eq!(
        s["peers"][0]["links"][0]["remote"], "192.0.2.11:4433",
        "{s}"
    );
}

#[test]
fn tap_carries_layer_2_to_a_bridged_host() {
    require_root();
    let pki = Pki::new("testnet");
    let a = Netns::new();
    let b = Netns::new();
    let host = Netns::new();
    link(&a, "192.0.2.1", &b, "192.0.2.2");
    // node-b's LAN: a bridge with a host on a veth.
    run(&mut b.cmd(&["ip", "link", "add", "br0", "type", "bridge"]));
    run(&mut b.cmd(&["ip", "link", "set", "br0", "up"]));
    run(Command::new("ip").args([
        "link", "add", "qtlanb", "netns", &b.name, "type", "veth", "peer", "name", "eth0", "netns",
        &host.name,
    ]));
    run(&mut b.cmd(&["ip", "link", "set", "qtlanb", "master", "br0", "up"]));
    run(&mut host.cmd(&["ip", "addr", "add", "10.99.0.3/24", "dev", "eth0"]));
    run(&mut host.cmd(&["ip", "addr", "add", "fd99::3/64", "dev", "eth0", "nodad"]));
    run(&mut host.cmd(&["ip", "link", "set", "eth0", "up"]));
    run(&mut host.cmd(&["sysctl", "-qw", "net.ipv4.icmp_echo_ignore_broadcasts=0"]));

    let a_ips = ["10.77.0.1/24", "10.99.0.1/24", "fd99::1/64"];
    let dir_a = pki.issue("node-a", &a_ips, &[]);
    let dir_b = pki.issue("node-b", B_ADDRS, &[]);
    let peers_a = [("node-b", Some("192.0.2.2:4433"))];
    let peers_b = [("node-a", Some("192.0.2.1:4433"))];
    let tap_a = "\n[tap]\nname = \"qtap\"\naddresses = [\"10.99.0.1/24\", \"fd99::1/64\"]\n";
    let tap_b = "\n[tap]\nname = \"qtap\"\nbridge = \"br0\"\n";
    let cfg_a = write_config(
        &pki,
        &dir_a,
        &NodeSpec {
            peers: &peers_a,
            extra: tap_a,
            ..NodeSpec::new("node-a", &["10.77.0.1/24"], "0.0.0.0:4433")
        },
    );
    let cfg_b = write_config(
        &pki,
        &dir_b,
        &NodeSpec {
            peers: &peers_b,
            extra: tap_b,
            ..NodeSpec::new("node-b", B_ADDRS, "0.0.0.0:4433")
        },
    );
    let node_a = Node::start(&a, "node-a", &cfg_a);
    let _node_b = Node::start(&b, "node-b", &cfg_b);

    // Layer 3 over the TUN and Layer 2 over the TAP share the connections.
    assert!(a.wait_ping("10.77.0.2", CONNECT).is_some(), "TUN traffic");
    assert!(
        a.wait_ping("10.99.0.3", CONNECT).is_some(),
        "no ping to the bridged host"
    );
    let neigh = run(&mut a.cmd(&["ip", "neigh", "show", "10.99.0.3", "dev", "qtap"]));
    let host_mac = run(&mut host.cmd(&["cat", "/sys/class/net/eth0/address"]));
    let host_mac = String::from_utf8_lossy(&host_mac.stdout).trim().to_owned();
    assert!(
        String::from_utf8_lossy(&neigh.stdout).contains(&host_mac),
        "ARP did not resolve across the tunnel"
    );
    // The host reaches node-a too (ARP from the LAN side), IPv6 neighbour discovery
    // crosses, and a broadcast ping is answered from across the tunnel.
    assert!(host
        .wait_ping("10.99.0.1", Duration::from_secs(5))
        .is_some());
    assert!(
        wait_until(Duration::from_secs(10), || a
            .cmd(&["ping", "-6", "-c", "1", "-W", "1", "fd99::3"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false))
        .is_some(),
        "IPv6 over the TAP"
    );
    let bcast = a
        .cmd(&[
            "ping",
            "-b",
            "-c",
            "2",
            "-W",
            "1",
            "-I",
            "qtap",
            "10.99.0.255",
        ])
        .output()
        .expect("ping");
    assert!(
        String::from_utf8_lossy(&bcast.stdout).contains("10.99.0.3"),
        "broadcast not answered: {}",
        String::from_utf8_lossy(&bcast.stdout)
    );
    let s = json(&node_a.status(true));
    let kinds: Vec<_> = s["interfaces"]
        .as_array()
        .expect("interfaces")
        .iter()
        .map(|i| i["kind"].clone())
        .collect();
    assert_eq!(kinds, ["tun", "tap"]);
}

#[test]
fn tap_check_sources_drops_frames_from_addresses_outside_the_certificate() {
    let (_pki, a, _b, _node_a, node_b) = tap_only_pair("check-sources = true", "");
    assert!(
        a.wait_ping("10.99.0.2", CONNECT).is_some(),
        "no ping from the certificate's own address"
    );
    // An address node-a's certificate does not list, on node-a's TAP: node-b drops
    // what comes from it (by default it would answer: L2 is not filtered).
    run(&mut a.cmd(&["ip", "addr", "add", "10.99.0.50/24", "dev", "quicaptap0"]));
    let spoofed = a
        .cmd(&[
            "ping",
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "1",
            "-I",
            "10.99.0.50",
            "10.99.0.2",
        ])
        .output()
        .expect("ping");
    assert!(
        !spoofed.status.success(),
        "a ping from 10.99.0.50 was answered:\n{}",
        String::from_utf8_lossy(&spoofed.stdout)
    );
    assert!(
        node_b.wait_log(
            &["dropping frame", "10.99.0.50", "tap.check-sources"],
            Duration::from_secs(5)
        ),
        "node-b did not log the dropped frame"
    );
    assert!(
        a.ping("10.99.0.2"),
        "the authorized address stopped working"
    );
}

#[test]
fn tap_only_nodes_carry_layer_2() {
    let (_pki, a, _b, node_a, _node_b) = tap_only_pair("", "");
    assert!(
        a.wait_ping("10.99.0.2", CONNECT).is_some(),
        "no ping over TAP-only nodes"
    );
    assert!(
        !a.interface_exists("quicap0"),
        "a TAP-only node created a TUN"
    );
    let s = json(&node_a.status(true));
    assert_eq!(s["interfaces"][0]["kind"], "tap");
    assert_eq!(s["interfaces"][0]["name"], "quicaptap0");
}
