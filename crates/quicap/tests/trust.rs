//! End-to-end: nodes refuse peers the PKI does not vouch for, and say why.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const CONNECT: Duration = Duration::from_secs(15);

fn rfc3339_in(secs: i64) -> String {
    let t = time::OffsetDateTime::now_utc() + time::Duration::seconds(secs);
    t.replace_nanosecond(0)
        .expect("valid")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format")
}

/// A third namespace `c` joined to `a` (192.0.2.1) at 198.51.100.1/.2, running a node
/// from `pki` named `name` with overlay address 10.77.0.3, dialing node-a.
fn third_node(pair: &Pair, pki: &Pki, name: &str, sign_extra: &[&str]) -> (Netns, Node) {
    let c = Netns::new();
    link(&pair.a, "198.51.100.1", &c, "198.51.100.2");
    let addrs = ["10.77.0.3/24"];
    let peers = [("node-a", Some("198.51.100.1:4433"))];
    let cfg = node_config(
        pki,
        sign_extra,
        &NodeSpec {
            peers: &peers,
            ..NodeSpec::new(name, &addrs, "0.0.0.0:4433")
        },
    );
    let node = Node::start(&c, name, &cfg);
    (c, node)
}

#[test]
fn node_from_another_ca_is_refused() {
    let pair = Pair::start();
    assert!(pair.a.wait_ping("10.77.0.2", CONNECT).is_some());
    let other = Pki::new("othernet");
    let (c, node_c) = third_node(&pair, &other, "node-c", &[]);
    assert!(
        node_c.wait_log(&["dial failed", "unknown issuer"], Duration::from_secs(10)),
        "node-c did not log why it refused node-a"
    );
    // node-c trusts only its own CA, so node-a never gets to see node-c's certificate;
    // either way no tunnel may form.
    assert!(!c.ping("10.77.0.1"));
    assert!(!pair.node_a.log_text().contains("peer=node-c remote"));
}

#[test]
fn node_refuses_to_start_with_a_certificate_of_another_ca() {
    // A node holding a certificate from another CA but configured to trust ours.
    let pair = Pair::start();
    assert!(pair.a.wait_ping("10.77.0.2", CONNECT).is_some());
    let other = Pki::new("othernet");
    let c = Netns::new();
    link(&pair.a, "198.51.100.1", &c, "198.51.100.2");
    let addrs = ["10.77.0.3/24"];
    // Issued by the other CA before the node is told to trust ours.
    let dir = other.issue("node-c", &addrs, &[]);
    std::fs::copy(
        pair.pki.ca_dir().join("ca.crt"),
        other.ca_dir().join("ca.crt"),
    )
    .expect("copy");
    std::fs::copy(
        pair.pki.ca_dir().join("crl.pem"),
        other.ca_dir().join("crl.pem"),
    )
    .expect("copy");
    let peers = [("node-a", Some("198.51.100.1:4433"))];
    let cfg = write_config(
        &other,
        &dir,
        &NodeSpec {
            peers: &peers,
            ..NodeSpec::new("node-c", &addrs, "0.0.0.0:4433")
        },
    );
    // The node itself refuses to start with a certificate its CA did not issue.
    let out = c
        .cmd(&[quicap(), "up", "--config"])
        .arg(&cfg)
        .output()
        .expect("quicap");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not issued by this CA"));
}

#[test]
fn expired_node_is_disconnected_and_refused() {
    let pair = Pair::start();
    assert!(pair.a.wait_ping("10.77.0.2", CONNECT).is_some());
    let until = rfc3339_in(8);
    let (c, node_c) = third_node(&pair, &pair.pki, "node-c", &["--valid-until", &until]);
    assert!(
        c.wait_ping("10.77.0.1", Duration::from_secs(6)).is_some(),
        "node-c never connected while its certificate was valid"
    );
    assert!(
        pair.node_a.wait_log(
            &["closing peer", "node-c", "certificate expired"],
            Duration::from_secs(15)
        ),
        "node-a kept the expired peer"
    );
    assert!(
        pair.node_a.wait_log(
            &["refused", "node-c", "certificate expired"],
            Duration::from_secs(10)
        ),
        "node-a did not log refusing the expired node"
    );
    assert!(!c.ping("10.77.0.1"), "expired node still reaches node-a");
    drop(node_c);
}

#[test]
fn revoked_node_is_disconnected_and_refused() {
    let pair = Pair::start();
    assert!(pair.a.wait_ping("10.77.0.2", CONNECT).is_some());
    let crt = pair.pki.dir.path().join("node-b").join("node-b.crt");
    run(Command::new(quicap())
        .args(["ca", "revoke", "--ca"])
        .arg(pair.pki.ca_dir())
        .arg(&crt));
    assert!(
        pair.node_a.wait_log(
            &["closing peer", "node-b", "certificate revoked"],
            Duration::from_secs(10)
        ),
        "node-a did not drop the revoked peer"
    );
    assert!(
        pair.node_a.wait_log(
            &["refused", "node-b", "certificate revoked"],
            Duration::from_secs(10)
        ),
        "node-a did not log refusing the revoked node on redial"
    );
    assert!(!pair.a.ping("10.77.0.2"), "revoked node still reachable");
}

#[test]
fn packets_from_unauthorized_source_addresses_are_dropped() {
    let pair = Pair::start();
    assert!(pair.a.wait_ping("10.77.0.2", CONNECT).is_some());
    // node-a's host adds an address its certificate does not authorize and uses it.
    run(&mut pair
        .a
        .cmd(&["ip", "addr", "add", "10.77.0.99/32", "dev", "quicap0"]));
    assert!(!pair.a.ping_from("10.77.0.99", "10.77.0.2"));
    assert!(
        pair.node_b.wait_log(
            &["source address not authorized", "source=10.77.0.99"],
            Duration::from_secs(5)
        ),
        "node-b did not log the unauthorized source"
    );
    assert!(
        pair.a.ping("10.77.0.2"),
        "authorized traffic must still pass"
    );
    // The echo requests from 10.77.0.99 show in node-b's status, under node-a.
    let refused = pair.node_b.peer_status("node-a")["refused"].as_u64();
    assert!(refused.is_some_and(|n| n >= 1), "refused: {refused:?}");
    let text = String::from_utf8_lossy(&pair.node_b.status(false).stdout).into_owned();
    assert!(
        text.contains("packets refused (source not authorized)"),
        "{text}"
    );
}

/// node-c's certificate, as its `quicap status` reports it: (serial, valid until).
fn own_certificate(node: &Node) -> (String, String) {
    let s = json(&node.status(true));
    let c = &s["certificate"];
    (
        c["serial"].as_str().unwrap_or_default().to_owned(),
        c["valid_until"].as_str().unwrap_or_default().to_owned(),
    )
}

/// How many links `node` has to `peer`, as its status reports them.
fn link_count(node: &Node, peer: &str) -> usize {
    node.peer_status(peer)["links"]
        .as_array()
        .map_or(0, Vec::len)
}

/// The end of validity of `peer`'s certificate, as `node`'s status reports it.
fn peer_valid_until(node: &Node, peer: &str) -> String {
    node.peer_status(peer)["valid_until"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn renewed_certificate_takes_over_without_a_restart_or_a_gap() {
    let pair = Pair::start();
    assert!(pair.a.wait_ping("10.77.0.2", CONNECT).is_some());
    // node-c starts with a certificate that expires in 20 s.
    let expires = std::time::Instant::now() + Duration::from_secs(20);
    let (c, node_c) = third_node(
        &pair,
        &pair.pki,
        "node-c",
        &["--valid-until", &rfc3339_in(20)],
    );
    assert!(
        c.wait_ping("10.77.0.1", Duration::from_secs(8)).is_some(),
        "node-c never connected"
    );
    let (first, first_until) = own_certificate(&node_c);
    assert_eq!(peer_valid_until(&pair.node_a, "node-c"), first_until);
    let dir = pair.pki.dir.path().join("node-c");
    let crt = dir.join("node-c.crt");

    // Another node's certificate over node-c's: refused, node-c carries on with its own.
    std::fs::copy(pair.pki.dir.path().join("node-b").join("node-b.crt"), &crt).expect("copy");
    assert!(
        node_c.wait_log(
            &["keeping the current certificate", "does not belong"],
            Duration::from_secs(5)
        ),
        "node-c did not refuse node-b's certificate"
    );
    assert_eq!(own_certificate(&node_c).0, first);
    assert!(c.ping("10.77.0.1"));

    // The renewal: the same CSR signed again for a day, moved over the file.
    pair.pki.renew("node-c", &["10.77.0.3/24"]);
    assert!(
        node_c.wait_log(&["certificate reloaded"], Duration::from_secs(5)),
        "node-c did not reload its certificate"
    );
    let (second, until) = own_certificate(&node_c);
    assert_ne!(second, first, "status still shows the first certificate");
    assert!(!until.is_empty());
    assert!(
        pair.node_a.wait_log(
            &["peer renewed its certificate", "node-c"],
            Duration::from_secs(5)
        ),
        "node-a never saw node-c's new certificate"
    );
    assert_eq!(peer_valid_until(&pair.node_a, "node-c"), until);

    // Across the first certificate's expiry (and node-a's check a second later),
    // node-c's traffic flows on.
    let left = expires.saturating_duration_since(std::time::Instant::now());
    assert!(
        left > Duration::ZERO,
        "the steps above outlasted the first certificate"
    );
    let secs = u32::try_from(left.as_secs()).unwrap_or(20) + 4;
    let ping = start_ping(&c, "10.77.0.1", secs);
    let (gap, answered) = longest_gap(ping);
    println!("longest gap across the old certificate's expiry: {gap:?}");
    assert!(
        answered as u64 > u64::from(secs) * 15,
        "only {answered} pings answered in {secs} s"
    );
    assert!(
        gap < Duration::from_millis(500),
        "traffic stopped for {gap:?}"
    );
    assert_eq!(
        pair.node_a.log_count("certificate expired"),
        0,
        "node-a refused or closed node-c for an expired certificate"
    );
    // node-c dials node-a: its dial loop took over the link made for the renewal, and
    // the two are back to one link.
    let one_link = |x: &Node, y: &Node, y_name: &str, x_name: &str| {
        wait_until(Duration::from_secs(5), || {
            link_count(x, y_name) == 1 && link_count(y, x_name) == 1
        })
        .is_some()
    };
    assert!(
        one_link(&node_c, &pair.node_a, "node-a", "node-c"),
        "links after node-c's renewal: {} / {}",
        link_count(&node_c, "node-a"),
        link_count(&pair.node_a, "node-c")
    );

    // node-a, which only takes node-c's dials, renews too: its link to node-c is
    // temporary and closed once node-c has dialed in again.
    let until_a = peer_valid_until(&node_c, "node-a");
    let ping = start_ping(&c, "10.77.0.1", 6);
    pair.pki.renew("node-a", A_ADDRS);
    assert!(
        wait_until(Duration::from_secs(5), || peer_valid_until(
            &node_c, "node-a"
        ) != until_a)
        .is_some(),
        "node-c never saw node-a's new certificate"
    );
    let (gap, _) = longest_gap(ping);
    assert!(
        gap < Duration::from_millis(500),
        "traffic stopped for {gap:?}"
    );
    assert!(
        one_link(&node_c, &pair.node_a, "node-a", "node-c"),
        "links after node-a's renewal: {} / {}",
        link_count(&node_c, "node-a"),
        link_count(&pair.node_a, "node-c")
    );
}

#[test]
fn two_running_nodes_with_one_certificate_are_reported() {
    let pair = Pair::start();
    assert!(pair.a.wait_ping("10.77.0.2", CONNECT).is_some());
    let warning = "two running nodes hold the certificate";
    // A restart is no second node.
    let mut pair = pair;
    pair.node_b.kill();
    pair.node_b.restart();
    assert!(pair.a.wait_ping("10.77.0.2", CONNECT).is_some());
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        pair.node_a.log_count(warning),
        0,
        "a restart was taken for a copy"
    );

    // A second machine started from a copy of node-b's files, dialing node-a.
    let c = Netns::new();
    link(&pair.a, "198.51.100.1", &c, "198.51.100.2");
    let from = pair.pki.dir.path().join("node-b");
    let dir = pair.pki.dir.path().join("node-b-copy");
    std::fs::create_dir_all(&dir).expect("mkdir");
    for file in ["node-b.crt", "node-b.key"] {
        std::fs::copy(from.join(file), dir.join(file)).expect("copy");
    }
    let peers = [("node-a", Some("198.51.100.1:4433"))];
    let cfg = write_config(
        &pair.pki,
        &dir,
        &NodeSpec {
            peers: &peers,
            ..NodeSpec::new("node-b", B_ADDRS, "0.0.0.0:4433")
        },
    );
    let _copy = Node::start(&c, "node-b", &cfg);
    assert!(
        pair.node_a
            .wait_log(&[warning, "node-b"], Duration::from_secs(15)),
        "node-a did not report the copy"
    );
}

/// A TLS client that takes any server certificate: a stranger probing a node does not
/// care whom it talks to.
#[derive(Debug)]
struct AnyServer(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A node certificate, with QUICAP's authorization extension, whose common name is
/// `name`, issued by a CA of the stranger's own making; returns the certificate's DER
/// and its key's PKCS #8 DER.
fn strangers_certificate(name: &str) -> (Vec<u8>, Vec<u8>) {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "stranger's CA");
    let ca_cert = ca.self_signed(&ca_key).expect("CA");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["node-x".to_owned()]).expect("params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let authorization = quicap_pki::Authorization {
        addresses: vec!["10.77.0.66/24".parse().expect("prefix")],
        subnets: Vec::new(),
        egress: false,
    };
    params.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
        quicap_pki::authorization::OID,
        authorization.to_der(),
    )];
    let cert = params.signed_by(&key, &issuer).expect("certificate");
    drop(ca_cert);
    (cert.der().to_vec(), key.serialize_der())
}

/// A stranger whose self-made certificate's name carries a newline, a forged log line
/// and terminal escape codes knocks at node-b five times: node-b logs one line per
/// refusal it logs, at powers of two of the attempts from that address (1, 2, 4), each
/// with the remote address, the reason, and the name escaped and labelled unverified;
/// nothing the stranger wrote starts a line or reaches the log as a control character.
#[test]
fn a_strangers_certificate_cannot_forge_log_lines() {
    let pair = Pair::start();
    assert!(pair.a.wait_ping("10.77.0.2", CONNECT).is_some());
    let forged = "2026-12-01T00:00:00.000000Z ERROR quicap: forged line";
    let name = format!("node-x\n{forged}\u{1b}[2J");
    let (cert, key) = strangers_certificate(&name);
    block_on_in(&pair.a, move || async move {
        let provider = quicap::tls::provider();
        let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .dangerous()
            .with_custom_certificate_verifier(std::sync::Arc::new(AnyServer(provider)))
            .with_client_auth_cert(
                vec![rustls::pki_types::CertificateDer::from(cert)],
                rustls::pki_types::PrivateKeyDer::try_from(key).expect("key"),
            )
            .expect("client config");
        tls.alpn_protocols = vec![quicap::tls::ALPN.to_vec()];
        let transport = std::sync::Arc::new(quinn::TransportConfig::default());
        let client = quicap::transport::quic_client(tls, transport).expect("client");
        let mut endpoint =
            quinn::Endpoint::client("0.0.0.0:0".parse().expect("addr")).expect("endpoint");
        endpoint.set_default_client_config(client);
        for _ in 0..5 {
            let conn = endpoint
                .connect("192.0.2.2:4433".parse().expect("addr"), "node-b")
                .expect("connect")
                .await;
            // With TLS 1.3 the refusal arrives after the client's handshake is done.
            if let Ok(conn) = conn {
                let _ = conn.closed().await;
            }
        }
        endpoint.wait_idle().await;
    });
    assert!(
        pair.node_b
            .wait_log(&["refused incoming peer"], Duration::from_secs(5)),
        "node-b did not log the refusal"
    );
    std::thread::sleep(Duration::from_millis(500));
    let log = pair.node_b.log_text();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("refused incoming peer"))
        .collect();
    assert_eq!(
        refusals.len(),
        3,
        "expected lines for attempts 1, 2 and 4:\n{log}"
    );
    for line in &refusals {
        assert!(line.contains("remote=192.0.2.1:"), "{line}");
        assert!(line.contains("unknown issuer"), "{line}");
        assert!(
            line.contains(&format!(
                "claimed_name_unverified=\"node-x\\u{{a}}{forged}\\u{{1b}}[2J\""
            )),
            "{line}"
        );
    }
    assert!(
        !log.lines().any(|l| l.starts_with(forged)),
        "a forged line made it into the log:\n{log}"
    );
    assert!(!log.contains('\u{1b}'), "an escape code reached the log");
}
