//! Camouflage mode: to anyone without a node identity, a node is an ordinary web
//! server, HTTP/3 on its UDP port and HTTPS (HTTP/1.1, HTTP/2) on its TCP port, with
//! the operator's web certificate for the name asked for.
//!
//! ```text
//!  QUIC Initial ──> web TLS config (certs by SNI, ALPN h3, no client auth) ──> h3::serve
//!  TCP ──> plaintext HTTP? ── yes ──> 400, as web servers answer it
//!            │ no
//!            └──> web TLS config (ALPN h2, http/1.1) ──> https::serve
//!  every request ──> Site::answer (files of a directory, or the built-in page),
//!                    or proxy::Upstream::forward (a reverse proxy to another site)
//! ```
//!
//! Nothing a client sees before it has proven a node identity names the network CA
//! or QUICAP: no CertificateRequest, no `quicap` ALPN, no node certificate.

pub mod auth;
pub mod certs;
pub mod client;
pub mod h3;
pub mod https;
pub mod proxy;
pub mod site;
pub mod upgrade;

use std::io::SeekFrom;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Result;
use bytes::Bytes;
use rustls::crypto::CryptoProvider;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tracing::debug;

pub use certs::{WebCertFiles, WebCerts};

use crate::config::{NodeSection, SiteContent, WebSection};
pub use site::Site;

/// ALPN of the QUIC front.
pub const ALPN_H3: &[u8] = b"h3";
/// ALPN of HTTP/1.1, the one node links over TCP ride on.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";
/// ALPN of the TCP front, server preference first.
pub const ALPN_TCP: [&[u8]; 2] = [b"h2", ALPN_HTTP1];
/// How long a TCP client may take to start, and to finish, its TLS handshake.
const FIRST_BYTE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Request body bytes taken in (and dropped) before an answer.
const REQUEST_BODY_LIMIT: usize = 1 << 20;
/// How long a request body may pause before the answer goes without the rest.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// Bytes a file body is read and sent in.
const CHUNK: u64 = 64 * 1024;

/// Path of the extended CONNECT that opens a node link (CONNECT-IP's default URI
/// template of RFC 9484, any target and any IP protocol).
pub const NODE_PATH: &str = "/.well-known/masque/ip/*/*/";

/// The header of the server's proof (RFC 9729 section 5).
const AUTHENTICATION_INFO: &str = "authentication-info";
/// How long the server may take to answer a node's request for a link.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The dialer's error when a camouflaged peer answers its request for a link with
/// `status` instead of a link.
fn not_taken(status: u16) -> anyhow::Error {
    anyhow::anyhow!(
        "the web server answered {status} to this node's proof: not a node of this network, or it refused this node (its log says why)"
    )
}

/// What the web fronts and dials ask of the node behind them: proofs of its identity,
/// checks of its peers', and a home for the links that come of them.
pub trait Members: Send + Sync {
    /// This node's proof on `session` to `authority` in `realm` (see [`auth`]).
    fn prove(&self, session: &dyn auth::Exporter, authority: &str, realm: &str) -> Result<String>;

    /// Checks a peer's proof `header` sent on `session` to `authority` in `realm`.
    fn check(
        &self,
        session: &dyn auth::Exporter,
        authority: &str,
        realm: &str,
        header: &[u8],
    ) -> Result<quicap_pki::cert::VerifiedCert, auth::Refused>;

    /// A proof sent from `remote` was refused: the node's log says why (rate-limited
    /// per source); the client got the anonymous answer.
    fn refused(&self, remote: SocketAddr, why: &auth::Refused);

    /// Runs a link whose peer proved its identity (an accepted request).
    fn open(&self, link: crate::link::Link);

    /// Where relay frames arriving on the links go.
    fn relays(&self) -> Arc<crate::relay::RelayTable>;

    /// The node, when it serves a MASQUE proxy on the HTTP/3 front.
    fn masque(&self) -> Option<Arc<crate::daemon::Node>> {
        None
    }
}

/// What the web fronts share: the site and the TLS configs around the certificates.
#[derive(Debug)]
pub struct Front {
    pub site: Arc<Site>,
    pub certs: Arc<WebCerts>,
    quic: Arc<rustls::ServerConfig>,
    tcp: Arc<rustls::ServerConfig>,
}

impl Front {
    /// The fronts of a node's `[web]` section: its certificates loaded and checked,
    /// HTTP/3 advertised on the first UDP port the node listens on.
    pub fn load(web: &WebSection, node: &NodeSection) -> Result<Front> {
        let provider = crate::tls::web_provider();
        let certs = Arc::new(WebCerts::load(web.certs.clone(), provider.clone())?);
        let server = web.server_header.as_deref();
        let h3_port = node.listen.first().map(|a| a.port());
        let site = match &web.content {
            SiteContent::Builtin => Site::new(None, server, h3_port),
            SiteContent::Files(root) => {
                if !root.is_dir() {
                    anyhow::bail!("web.root {}: not a directory", root.display());
                }
                Site::new(Some(root.clone()), server, h3_port)
            }
            SiteContent::Upstream { url, roots } => {
                let upstream = proxy::Upstream::new(url, roots.as_deref())?;
                Site::proxy(upstream, server, h3_port)
            }
        };
        Front::new(site, certs, provider)
    }

    pub fn new(site: Site, certs: Arc<WebCerts>, provider: Arc<CryptoProvider>) -> Result<Front> {
        let config = |alpn: &[&[u8]], versions: &[&'static rustls::SupportedProtocolVersion]| {
            let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(versions)?
                .with_no_client_auth()
                .with_cert_resolver(certs.clone());
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            // 0-RTT data could be replayed: none is taken.
            config.max_early_data_size = 0;
            anyhow::Ok(config)
        };
        Ok(Front {
            site: Arc::new(site),
            quic: Arc::new(config(&[ALPN_H3], &[&rustls::version::TLS13])?),
            tcp: Arc::new(config(
                &ALPN_TCP,
                &[&rustls::version::TLS13, &rustls::version::TLS12],
            )?),
            certs,
        })
    }

    /// The TLS config of the QUIC front, for quinn.
    pub fn quic_tls(&self) -> Arc<rustls::ServerConfig> {
        self.quic.clone()
    }

    /// Takes an accepted TCP connection to the point where HTTPS can be served: the
    /// TLS handshake with the web certificate. A plaintext HTTP request gets the
    /// answer web servers give it on a TLS port; that, a silent client and a failed
    /// handshake end in `None`.
    pub async fn accept_tcp(
        &self,
        mut stream: tokio::net::TcpStream,
        remote: SocketAddr,
    ) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
        match tokio::time::timeout(FIRST_BYTE_TIMEOUT, first_bytes(&stream)).await {
            Ok(Some(Opening::Tls)) => {}
            Ok(Some(Opening::Http)) => {
                let _ = stream.write_all(https::PLAINTEXT_ANSWER).await;
                let _ = stream.shutdown().await;
                return None;
            }
            // Not TLS, not HTTP, or nothing: closed without a word, as the reference
            // server does.
            Ok(Some(Opening::Other) | None) | Err(_) => return None,
        }
        let acceptor = tokio_rustls::TlsAcceptor::from(self.tcp.clone());
        match tokio::time::timeout(FIRST_BYTE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => Some(tls),
            Ok(Err(e)) => {
                debug!(%remote, error = %e, "HTTPS handshake failed");
                None
            }
            Err(_) => None,
        }
    }
}

/// What a TCP client's first bytes look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opening {
    /// A TLS handshake record.
    Tls,
    /// A plaintext HTTP request.
    Http,
    Other,
}

/// Request openings Go's TLS server recognizes as plaintext HTTP (the reference server
/// answers those with [`https::PLAINTEXT_ANSWER`]).
const HTTP_OPENINGS: [&[u8; 5]; 5] = [b"GET /", b"HEAD ", b"POST ", b"PUT /", b"OPTIO"];

/// Peeks at a connection's first five bytes (fewer if the client sends fewer and
/// stops); `None` if it closes first.
async fn first_bytes(stream: &tokio::net::TcpStream) -> Option<Opening> {
    let mut head = [0u8; 5];
    loop {
        let n = stream.peek(&mut head).await.ok()?;
        if n == 0 {
            return None;
        }
        if head[0] == 0x16 {
            return Some(Opening::Tls);
        }
        if n == head.len() {
            return Some(if HTTP_OPENINGS.iter().any(|o| **o == head) {
                Opening::Http
            } else {
                Opening::Other
            });
        }
        if !HTTP_OPENINGS.iter().any(|o| o.starts_with(&head[..n])) {
            return Some(Opening::Other);
        }
        // A prefix of a request line: wait for the rest.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Reads up to [`CHUNK`] bytes of `file` from `offset`, at most `left`.
pub(crate) async fn read_chunk(
    file: &mut tokio::fs::File,
    offset: u64,
    left: u64,
) -> std::io::Result<Bytes> {
    file.seek(SeekFrom::Start(offset)).await?;
    let want = left.min(CHUNK) as usize;
    let mut buf = vec![0u8; want];
    let mut filled = 0;
    while filled < want {
        let n = file.read(&mut buf[filled..]).await?;
        if n == 0 {
            // The file shrank since its length was read.
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        filled += n;
    }
    Ok(Bytes::from(buf))
}
