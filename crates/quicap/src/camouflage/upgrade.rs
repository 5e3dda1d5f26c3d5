//! Node links on the HTTPS front: an HTTP/1.1 upgrade to CONNECT-IP (RFC 9484 section
//! 3 over HTTP/1.1) whose `Authorization` proves a node identity bound to this TLS
//! session, as the HTTP/3 front's extended CONNECT does. After the `101` the
//! connection carries the TCP fallback's records ([`crate::link::tcp`]).
//!
//! ```text
//!  dialer (ALPN http/1.1, TLS 1.3)                server
//!  GET NODE_PATH HTTP/1.1
//!    Connection: Upgrade, Upgrade: connect-ip
//!    Authorization: Concealed <proof, realm "">  ──>  check: CA, CRL, expiry, this
//!                                                     session's exporter
//!                                          <──  101, Upgrade: connect-ip,
//!  check: the same, realm "server"              Authentication-Info: <proof, "server">
//!  records of the TCP link, both ways
//! ```
//!
//! The server reads an HTTP/1.1 connection's first request head itself; anything but
//! a node's upgrade with a proof that holds (a refused proof included) goes to the
//! site with the bytes read, and gets the answer any client gets.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use bytes::{Buf, Bytes, BytesMut};
use http::HeaderValue;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsStream;
use tracing::{debug, warn};

use super::auth::{DIALER_REALM, SERVER_REALM};
use super::client::WebDial;
use super::site::Site;
use super::{
    https, not_taken, Members, ALPN_HTTP1, AUTHENTICATION_INFO, CONNECT_TIMEOUT, NODE_PATH,
};
use crate::link::tcp::{self, TcpLink};
use crate::link::Link;

/// The upgrade token of CONNECT-IP over HTTP/1.1.
pub const PROTOCOL: &str = "connect-ip";
/// The longest request or response head read before it goes to the site unparsed.
const MAX_HEAD: usize = 16 * 1024;
/// Headers a head may have to be a node's.
const MAX_HEADERS: usize = 32;
/// How long a client may take to send its first request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// What an HTTP/1.1 connection's first bytes hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Not a whole request head yet.
    Partial,
    /// Anything but a node's upgrade: for the site.
    Other,
    /// A node's upgrade to CONNECT-IP with a proof, in the first `head_len` bytes.
    Node {
        authority: String,
        proof: Vec<u8>,
        head_len: usize,
    },
}

/// Reads a request head: a node's upgrade is `GET` [`NODE_PATH`] over HTTP/1.1 with one
/// `Host`, `Connection: upgrade`, `Upgrade: connect-ip`, `Capsule-Protocol: ?1` and one
/// `Authorization`.
pub fn parse_request(buf: &[u8]) -> Request {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Request::Partial,
        Err(_) => return Request::Other,
    };
    let for_node = request.method == Some("GET")
        && request.path == Some(NODE_PATH)
        && request.version == Some(1)
        && has_token(request.headers, "connection", "upgrade")
        && has_token(request.headers, "upgrade", PROTOCOL)
        && only(request.headers, "capsule-protocol").is_some_and(|v| v.trim_ascii() == b"?1");
    let host = only(request.headers, "host").and_then(|h| std::str::from_utf8(h).ok());
    let proof = only(request.headers, "authorization");
    match (for_node, host, proof) {
        (true, Some(host), Some(proof)) if !host.is_empty() => Request::Node {
            authority: host.to_owned(),
            proof: proof.to_vec(),
            head_len,
        },
        _ => Request::Other,
    }
}

/// What the server answered a node's upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Its `Authentication-Info`, the server's proof.
    pub proof: Option<Vec<u8>>,
    pub head_len: usize,
}

/// Reads a response head: `Ok(None)` while it is incomplete.
pub fn parse_response(buf: &[u8]) -> Result<Option<Response>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(anyhow!("malformed HTTP response from the web server: {e}")),
    };
    Ok(Some(Response {
        status: response.code.unwrap_or(0),
        proof: only(response.headers, AUTHENTICATION_INFO).map(<[u8]>::to_vec),
        head_len,
    }))
}

/// The value of header `name` if it is there exactly once.
fn only<'h>(headers: &'h [httparse::Header<'_>], name: &str) -> Option<&'h [u8]> {
    let mut found = headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name));
    let first = found.next()?;
    found.next().is_none().then_some(first.value)
}

/// Whether header `name`, a comma-separated list, holds `token` (case-insensitively).
fn has_token(headers: &[httparse::Header<'_>], name: &str, token: &str) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Serves an accepted HTTPS connection: a node's upgrade becomes a link for `members`,
/// everything else the site answers.
pub async fn serve(
    mut tls: tokio_rustls::server::TlsStream<TcpStream>,
    site: Arc<Site>,
    remote: SocketAddr,
    members: Option<Arc<dyn Members>>,
) {
    let label = remote.to_string();
    let members = members.filter(|_| tls.get_ref().1.alpn_protocol() == Some(ALPN_HTTP1));
    let Some(members) = members else {
        return https::serve(tls, site, label).await;
    };
    let mut read = BytesMut::new();
    let request = tokio::time::timeout(HEAD_TIMEOUT, read_request(&mut tls, &mut read))
        .await
        .unwrap_or(Request::Other);
    if let Request::Node {
        authority,
        proof,
        head_len,
    } = request
    {
        // A node sends nothing past its request before the answer.
        if read.len() == head_len {
            match accept(&mut tls, &site, remote, &*members, &authority, &proof).await {
                Ok(Some(peer)) => return open(tls, remote, &*members, peer),
                Ok(None) => {}
                Err(e) => {
                    debug!(%remote, error = %format!("{e:#}"), "node link lost before its answer");
                    return;
                }
            }
        }
    }
    https::serve(Rewind::new(read.freeze(), tls), site, label).await
}

/// Reads into `read` until it holds a whole request head, or something that cannot be
/// one of a node.
async fn read_request<IO: AsyncRead + Unpin>(io: &mut IO, read: &mut BytesMut) -> Request {
    loop {
        match parse_request(read) {
            Request::Partial => {}
            request => return request,
        }
        if read.len() >= MAX_HEAD {
            return Request::Other;
        }
        read.reserve(4096);
        match io.read_buf(read).await {
            Ok(0) | Err(_) => return Request::Other,
            Ok(_) => {}
        }
    }
}

/// Checks the node's proof and answers it with the server's: the peer's certificate if
/// the link may start, `None` if the site answers instead.
async fn accept(
    tls: &mut tokio_rustls::server::TlsStream<TcpStream>,
    site: &Site,
    remote: SocketAddr,
    members: &dyn Members,
    authority: &str,
    proof: &[u8],
) -> Result<Option<CertificateDer<'static>>> {
    let session = tls.get_ref().1;
    let peer = match members.check(session, authority, DIALER_REALM, proof) {
        Ok(peer) => peer,
        Err(why) => {
            members.refused(remote, &why);
            return Ok(None);
        }
    };
    let ours = match members
        .prove(session, authority, SERVER_REALM)
        .and_then(|p| HeaderValue::from_str(&p).map_err(anyhow::Error::from))
    {
        Ok(ours) => ours,
        Err(e) => {
            warn!(%remote, error = %format!("{e:#}"), "cannot prove this node's identity");
            return Ok(None);
        }
    };
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\n");
    if let Some(server) = site.server_header() {
        push_header(&mut head, "server", server.as_bytes());
    }
    push_header(&mut head, "connection", b"upgrade");
    push_header(&mut head, "upgrade", PROTOCOL.as_bytes());
    push_header(&mut head, "capsule-protocol", b"?1");
    push_header(&mut head, AUTHENTICATION_INFO, ours.as_bytes());
    head.extend_from_slice(b"\r\n");
    tls.write_all(&head).await?;
    tls.flush().await?;
    Ok(Some(CertificateDer::from(peer.cert().der.clone())))
}

fn push_header(head: &mut Vec<u8>, name: &str, value: &[u8]) {
    head.extend_from_slice(name.as_bytes());
    head.extend_from_slice(b": ");
    head.extend_from_slice(value);
    head.extend_from_slice(b"\r\n");
}

/// Runs the upgraded connection as a link of `peer`.
fn open(
    tls: tokio_rustls::server::TlsStream<TcpStream>,
    remote: SocketAddr,
    members: &dyn Members,
    peer: CertificateDer<'static>,
) {
    if let Err(e) = tcp::set_socket_options(tls.get_ref().0) {
        debug!(%remote, error = %format!("{e:#}"), "socket options not set");
    }
    let link = TcpLink::start_upgraded(
        TlsStream::Server(tls),
        remote,
        members.relays(),
        vec![peer],
        BytesMut::new(),
    );
    match link {
        Ok(link) => members.open(Link::Tcp(link)),
        Err(e) => debug!(%remote, error = %format!("{e:#}"), "node link not opened"),
    }
}

/// Dials a camouflaged peer at `addr` over TCP as a web client (its web certificate
/// checked, no client certificate), then upgrades the connection to a node link: this
/// node proves its identity, then checks the peer's proof in the answer.
pub async fn dial(addr: SocketAddr, web: &WebDial, members: &dyn Members) -> Result<TcpLink> {
    let server_name = web.server_name.to_str().into_owned();
    let handshake = async {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr} over TCP"))?;
        tcp::set_socket_options(&stream)?;
        tokio_rustls::TlsConnector::from(web.tcp.clone())
            .connect(web.server_name.clone(), stream)
            .await
            .map_err(|e| anyhow!("web connection to {server_name} over TCP: {e}"))
    };
    let mut tls = tokio::time::timeout(tcp::HANDSHAKE_TIMEOUT, handshake)
        .await
        .map_err(|_| {
            anyhow!(
                "no TLS handshake over TCP with {addr} within {:?}",
                tcp::HANDSHAKE_TIMEOUT
            )
        })??;
    let authority = web.authority(addr.port());
    let proof = members.prove(tls.get_ref().1, &authority, DIALER_REALM)?;
    let head = format!(
        "GET {NODE_PATH} HTTP/1.1\r\nHost: {authority}\r\nConnection: Upgrade\r\nUpgrade: {PROTOCOL}\r\nCapsule-Protocol: ?1\r\nAuthorization: {proof}\r\n\r\n"
    );
    let exchange = async {
        tls.write_all(head.as_bytes()).await?;
        tls.flush().await?;
        let mut read = BytesMut::with_capacity(4096);
        loop {
            if let Some(response) = parse_response(&read)? {
                return anyhow::Ok((response, read));
            }
            if read.len() >= MAX_HEAD {
                anyhow::bail!("the web server's answer has no end of its head");
            }
            read.reserve(4096);
            if tls.read_buf(&mut read).await? == 0 {
                anyhow::bail!("the web server closed the connection without an answer");
            }
        }
    };
    let (response, mut read) = tokio::time::timeout(CONNECT_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow!("no answer to this node's upgrade within {CONNECT_TIMEOUT:?}"))??;
    if response.status != 101 {
        return Err(not_taken(response.status));
    }
    let theirs = response
        .proof
        .ok_or_else(|| anyhow!("the server took this node's proof but sent none of its own"))?;
    let peer = members
        .check(tls.get_ref().1, &authority, SERVER_REALM, &theirs)
        .map_err(|why| anyhow!("refused the server's proof: {why}"))?;
    read.advance(response.head_len);
    let der = CertificateDer::from(peer.cert().der.clone());
    TcpLink::start_upgraded(
        TlsStream::Client(tls),
        addr,
        members.relays(),
        vec![der],
        read,
    )
}

/// A stream whose first bytes were read already: they are read again first.
struct Rewind<IO> {
    read: Bytes,
    inner: IO,
}

impl<IO> Rewind<IO> {
    fn new(read: Bytes, inner: IO) -> Rewind<IO> {
        Rewind { read, inner }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Rewind<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.read.is_empty() {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let n = self.read.len().min(buf.remaining());
        buf.put_slice(&self.read[..n]);
        self.read.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Rewind<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE_REQUEST: &str = "GET /.well-known/masque/ip/*/*/ HTTP/1.1\r\nHost: www.example.test:443\r\nConnection: keep-alive, Upgrade\r\nUpgrade: connect-ip\r\nCapsule-Protocol: ?1\r\nAuthorization: Concealed k=1\r\n\r\n";

    #[test]
    fn a_node_upgrade_is_recognized_and_everything_else_is_the_sites() {
        let Request::Node {
            authority,
            proof,
            head_len,
        } = parse_request(NODE_REQUEST.as_bytes())
        else {
            panic!("not recognized");
        };
        assert_eq!(authority, "www.example.test:443");
        assert_eq!(proof, b"Concealed k=1");
        assert_eq!(head_len, NODE_REQUEST.len());
        assert_eq!(
            parse_request(&NODE_REQUEST.as_bytes()[..40]),
            Request::Partial
        );
        let others = [
            NODE_REQUEST.replace("GET", "POST"),
            NODE_REQUEST.replace("/ip/*/*/", "/ip/*/*"),
            NODE_REQUEST.replace("HTTP/1.1", "HTTP/1.0"),
            NODE_REQUEST.replace("connect-ip", "websocket"),
            NODE_REQUEST.replace("keep-alive, Upgrade", "keep-alive"),
            NODE_REQUEST.replace("?1", "?0"),
            NODE_REQUEST.replace("Authorization: Concealed k=1\r\n", ""),
            NODE_REQUEST.replace("Host: www.example.test:443\r\n", ""),
            // Two proofs, or two hosts: which one would be checked is not clear.
            NODE_REQUEST.replace("\r\n\r\n", "\r\nAuthorization: Concealed k=2\r\n\r\n"),
            NODE_REQUEST.replace("\r\n\r\n", "\r\nHost: other.test\r\n\r\n"),
            "\x16\x03\x01 not http\r\n\r\n".to_owned(),
            "GET / HTTP/1.1\r\nHost: www.example.test\r\n\r\n".to_owned(),
        ];
        for other in others {
            assert_eq!(parse_request(other.as_bytes()), Request::Other, "{other}");
        }
    }

    #[test]
    fn the_answer_gives_status_proof_and_the_end_of_its_head() {
        let answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: connect-ip\r\nAuthentication-Info: Concealed s=1\r\n\r\nrecords";
        let response = parse_response(answer).unwrap().unwrap();
        assert_eq!(response.status, 101);
        assert_eq!(response.proof.as_deref(), Some(&b"Concealed s=1"[..]));
        assert_eq!(&answer[response.head_len..], b"records");
        assert_eq!(parse_response(&answer[..20]).unwrap(), None);
        let site = parse_response(b"HTTP/1.1 404 Not Found\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((site.status, site.proof), (404, None));
        assert!(parse_response(b"\x00\x01garbage\r\n\r\n").is_err());
    }

    #[tokio::test]
    async fn bytes_read_ahead_are_read_again_first() {
        let (mut near, far) = tokio::io::duplex(64);
        let mut rewound = Rewind::new(Bytes::from_static(b"head "), far);
        near.write_all(b"rest").await.unwrap();
        drop(near);
        let mut all = Vec::new();
        rewound.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"head rest");
    }
}
