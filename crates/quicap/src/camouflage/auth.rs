//! Node identity proven inside a camouflaged connection: the `Concealed` credentials of
//! [`quicap_pki::concealed`], bound to this TLS session by its exporter, checked
//! against the network CA as a certificate from a handshake would be.
//!
//! The dialing node proves itself first, in the `Authorization` header of its request,
//! with the realm [`DIALER_REALM`]; only a node whose proof holds gets the server's own,
//! in `Authentication-Info`, with the realm [`SERVER_REALM`]. The realms keep a proof
//! of one direction from passing for one of the other. Every refusal is one
//! [`Refused`], whose reason is for the refusing node's log only: the client gets the
//! answer an anonymous request gets.

use quicap_pki::cert::{CaCert, VerifiedCert};
use quicap_pki::concealed::{Credentials, Origin, Prover, EXPORTER_LABEL, EXPORTER_LEN};
use quicap_pki::{Crl, NodeCert, NodeKey};
use time::OffsetDateTime;

/// Realm of the dialing node's proof.
pub const DIALER_REALM: &str = "";
/// Realm of the server's proof.
pub const SERVER_REALM: &str = "server";

/// A TLS session this end can export keying material from.
pub trait Exporter {
    fn export(&self, context: &[u8]) -> Option<[u8; EXPORTER_LEN]>;
}

impl Exporter for quinn::Connection {
    fn export(&self, context: &[u8]) -> Option<[u8; EXPORTER_LEN]> {
        let mut out = [0u8; EXPORTER_LEN];
        self.export_keying_material(&mut out, EXPORTER_LABEL, context)
            .ok()?;
        Some(out)
    }
}

impl Exporter for rustls::ServerConnection {
    fn export(&self, context: &[u8]) -> Option<[u8; EXPORTER_LEN]> {
        export_tls13(self, context)
    }
}

impl Exporter for rustls::ClientConnection {
    fn export(&self, context: &[u8]) -> Option<[u8; EXPORTER_LEN]> {
        export_tls13(self, context)
    }
}

/// TLS over TCP: a TLS 1.3 session only (the TCP front also speaks TLS 1.2 to web
/// clients; a node's proof needs the exporter of a TLS 1.3 handshake, as on QUIC).
fn export_tls13<Data>(
    tls: &rustls::ConnectionCommon<Data>,
    context: &[u8],
) -> Option<[u8; EXPORTER_LEN]> {
    if tls.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
        return None;
    }
    tls.export_keying_material([0u8; EXPORTER_LEN], EXPORTER_LABEL, Some(context))
        .ok()
}

/// Why a proof was refused; for the log.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// The origin of a request to `authority` (`host` or `host:port`; 443 by default).
pub fn origin<'a>(authority: &'a str, realm: &'a str) -> Origin<'a> {
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
            match port.parse() {
                Ok(port) => (host, port),
                Err(_) => (authority, 443),
            }
        }
        _ => (authority, 443),
    };
    Origin {
        scheme: "https",
        host: host.trim_start_matches('[').trim_end_matches(']'),
        port,
        realm,
    }
}

/// The header value that proves this node's identity on `session` to `origin`.
pub fn prove(
    session: &(impl Exporter + ?Sized),
    key: &NodeKey,
    cert: &NodeCert,
    origin: &Origin<'_>,
) -> anyhow::Result<String> {
    let prover = Prover::new(key, cert)?;
    let exported = session
        .export(&prover.exporter_context(origin))
        .ok_or_else(|| anyhow::anyhow!("the TLS session exports no keying material"))?;
    Ok(prover.prove(&exported)?.to_header())
}

/// Checks a proof sent on `session` to `origin`: the credentials hold for this session
/// and the certificate is the network's, valid at `now` and not revoked.
pub fn check(
    session: &(impl Exporter + ?Sized),
    header: &[u8],
    origin: &Origin<'_>,
    (ca, crl): (&CaCert, Option<&Crl>),
    now: OffsetDateTime,
) -> Result<VerifiedCert, Refused> {
    let credentials = Credentials::parse(header)
        .map_err(|e| Refused(e.to_string()))?
        .ok_or_else(|| Refused("not Concealed credentials".into()))?;
    let exported = session
        .export(&credentials.exporter_context(origin))
        .ok_or_else(|| Refused("the TLS session exports no keying material".into()))?;
    let cert = credentials
        .verify(&exported)
        .map_err(|e| Refused(e.to_string()))?;
    // What the CA signed is a fact; a name in a certificate it did not sign is only a
    // claim, and the log says so.
    let who = match cert.check_issuer(ca) {
        Ok(()) => format!("node certificate of {}", quicap_wire::Escaped(&cert.name)),
        Err(_) => format!(
            "certificate naming {} (unverified)",
            quicap_wire::Quoted(&cert.name)
        ),
    };
    cert.verify(ca, crl, now)
        .map_err(|e| Refused(format!("{who}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use quicap_pki::{Authorization, Ca, NodeRequest, ParsedCsr, SignRequest};
    use rand::SeedableRng;
    use time::Duration;

    const AUTHORITY: &str = "www.example.test:4433";

    struct Network {
        ca: CaCert,
        crl: Crl,
        nodes: Vec<(NodeKey, NodeCert)>,
    }

    fn network(seed: u64, names: &[&str]) -> Network {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let now = OffsetDateTime::now_utc();
        let files = Ca::create("testnet", now, 30, &mut rng).unwrap();
        let ca = Ca::load(&files.cert_pem, &files.key_pem).unwrap();
        let nodes: Vec<_> = names
            .iter()
            .map(|name| {
                let request = NodeRequest::generate(name).unwrap();
                let csr = ParsedCsr::from_pem(&request.csr_pem).unwrap();
                let authorization = Authorization {
                    addresses: vec!["10.0.0.1/32".parse().unwrap()],
                    subnets: vec![],
                    egress: false,
                };
                let sign = SignRequest::from_csr(
                    &csr,
                    None,
                    authorization,
                    now - Duration::minutes(1),
                    now + Duration::days(1),
                )
                .unwrap();
                let cert = NodeCert::from_pem(&ca.sign(&sign, &mut rng).unwrap()).unwrap();
                (NodeKey::from_pem(&request.key_pem).unwrap(), cert)
            })
            .collect();
        let revoked = [nodes.last().unwrap().1.serial.clone()];
        let crl = Crl::from_pem(&ca.issue_crl(None, &revoked, now).unwrap()).unwrap();
        Network {
            ca: ca.cert().clone(),
            crl,
            nodes,
        }
    }

    /// TLS configs of a web server with a self-signed certificate and of a client that
    /// trusts it, with `version` only and `alpn`.
    fn tls_configs(
        version: &'static rustls::SupportedProtocolVersion,
        alpn: &[u8],
    ) -> (rustls::ServerConfig, rustls::ClientConfig) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["www.example.test".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let provider = crate::tls::web_provider();
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[version])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        server.alpn_protocols = vec![alpn.to_vec()];
        client.alpn_protocols = vec![alpn.to_vec()];
        (server, client)
    }

    /// A real QUIC connection on loopback to a web front: (client end, server end).
    async fn connection() -> (quinn::Connection, quinn::Connection, quinn::Endpoint) {
        let (server, client) = tls_configs(&rustls::version::TLS13, b"h3");
        let server = quinn::ServerConfig::with_crypto(Arc::new(
            quinn::crypto::rustls::QuicServerConfig::try_from(server).unwrap(),
        ));
        let endpoint = quinn::Endpoint::server(server, "127.0.0.1:0".parse().unwrap()).unwrap();
        let client = quinn::ClientConfig::new(Arc::new(
            quinn::crypto::rustls::QuicClientConfig::try_from(client).unwrap(),
        ));
        let addr = endpoint.local_addr().unwrap();
        let accept = endpoint.accept();
        let dial = endpoint
            .connect_with(client, addr, "www.example.test")
            .unwrap();
        let (server_end, dialed) = tokio::join!(async { accept.await.unwrap().await }, dial);
        (dialed.unwrap(), server_end.unwrap(), endpoint)
    }

    #[tokio::test]
    async fn a_proof_holds_on_its_connection_only_and_in_its_direction_only() {
        let net = network(1, &["node-a", "node-r"]);
        let (key, cert) = &net.nodes[0];
        let trust = (&net.ca, Some(&net.crl));
        let now = OffsetDateTime::now_utc();
        let (client, server, _endpoint) = connection().await;
        let dialer = origin(AUTHORITY, DIALER_REALM);
        let header = prove(&client, key, cert, &dialer).unwrap();
        let proven = check(&server, header.as_bytes(), &dialer, trust, now).unwrap();
        assert_eq!(proven.name(), "node-a");
        // The same header on another connection, or as the server's proof.
        let (_, other, _endpoint2) = connection().await;
        let e = check(&other, header.as_bytes(), &dialer, trust, now).unwrap_err();
        assert!(e.0.contains("another connection"), "{e}");
        let as_server = origin(AUTHORITY, SERVER_REALM);
        assert!(check(&server, header.as_bytes(), &as_server, trust, now).is_err());
        // And the server's proof, checked by the dialer.
        let reply = prove(&server, key, cert, &as_server).unwrap();
        assert!(check(&client, reply.as_bytes(), &as_server, trust, now).is_ok());
    }

    #[tokio::test]
    async fn another_ca_an_expired_or_revoked_certificate_is_refused_with_its_reason() {
        let net = network(2, &["node-a", "node-r"]);
        let stranger = network(3, &["node-x"]);
        let (client, server, _endpoint) = connection().await;
        let dialer = origin(AUTHORITY, DIALER_REALM);
        let now = OffsetDateTime::now_utc();
        let trust = (&net.ca, Some(&net.crl));
        let refused = |key: &NodeKey, cert: &NodeCert, now| {
            let header = prove(&client, key, cert, &dialer).unwrap();
            check(&server, header.as_bytes(), &dialer, trust, now)
                .unwrap_err()
                .0
        };
        let (key, cert) = &stranger.nodes[0];
        assert!(refused(key, cert, now).contains("not issued by this CA"));
        let (key, cert) = &net.nodes[0];
        assert!(refused(key, cert, now + Duration::days(2)).contains("expired"));
        let (key, cert) = &net.nodes[1];
        assert!(refused(key, cert, now).contains("revoked"));
        for junk in [&b"Basic dXNlcjpwYXNz"[..], b"Concealed k=AAAA", b"\xff"] {
            assert!(check(&server, junk, &dialer, trust, now).is_err());
        }
    }

    /// A TLS connection over an in-memory pipe with `version`: (client, server).
    async fn tls_pair(
        version: &'static rustls::SupportedProtocolVersion,
    ) -> (
        tokio_rustls::client::TlsStream<tokio::io::DuplexStream>,
        tokio_rustls::server::TlsStream<tokio::io::DuplexStream>,
    ) {
        let (server, client) = tls_configs(version, b"http/1.1");
        let (a, b) = tokio::io::duplex(64 * 1024);
        let name = rustls::pki_types::ServerName::try_from("www.example.test").unwrap();
        let (client, server) = tokio::join!(
            tokio_rustls::TlsConnector::from(Arc::new(client)).connect(name, a),
            tokio_rustls::TlsAcceptor::from(Arc::new(server)).accept(b)
        );
        (client.unwrap(), server.unwrap())
    }

    #[tokio::test]
    async fn over_tcp_a_proof_needs_tls_1_3() {
        let net = network(4, &["node-a", "node-r"]);
        let (key, cert) = &net.nodes[0];
        let trust = (&net.ca, Some(&net.crl));
        let now = OffsetDateTime::now_utc();
        let dialer = origin(AUTHORITY, DIALER_REALM);
        let (client, server) = tls_pair(&rustls::version::TLS13).await;
        let header = prove(client.get_ref().1, key, cert, &dialer).unwrap();
        let proven = check(server.get_ref().1, header.as_bytes(), &dialer, trust, now).unwrap();
        assert_eq!(proven.name(), "node-a");
        let (client, server) = tls_pair(&rustls::version::TLS12).await;
        assert!(prove(client.get_ref().1, key, cert, &dialer).is_err());
        let e = check(server.get_ref().1, header.as_bytes(), &dialer, trust, now).unwrap_err();
        assert!(e.0.contains("exports no keying material"), "{e}");
    }

    #[test]
    fn origins_come_from_the_authority() {
        let o = origin("www.example.test:8443", "");
        assert_eq!((o.host, o.port), ("www.example.test", 8443));
        let o = origin("www.example.test", "");
        assert_eq!((o.host, o.port), ("www.example.test", 443));
        let o = origin("[2001:db8::1]:443", "");
        assert_eq!((o.host, o.port), ("2001:db8::1", 443));
        let o = origin("example.test:x", "");
        assert_eq!(o.port, 443);
    }
}
