//! The HTTP/3 front: every QUIC connection accepted in camouflage mode is an HTTP/3
//! connection (h3 over quinn), and each of its requests is answered by the site,
//! except a node's: an extended CONNECT (CONNECT-IP) to [`NODE_PATH`] whose
//! `Authorization` proves a node identity bound to this connection opens a link
//! ([`H3Link`]). The dialing side of that exchange is [`dial`].
//!
//! ```text
//!  dialer                                         server
//!  CONNECT :protocol=connect-ip NODE_PATH
//!    Authorization: Concealed <proof, realm "">  ──>  check: CA, CRL, expiry, this
//!                                                     connection's exporter
//!                                          <──  200, capsule-protocol: ?1,
//!  check: the same, realm "server"              Authentication-Info: <proof, "server">
//! ```
//!
//! A refused proof gets the answer an anonymous request to the path gets (the site's),
//! and only the server's log says why.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use bytes::{Buf, Bytes};
use h3::ext::Protocol;
use h3::server::RequestStream;
use http::{header, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Frame, SizeHint};
use rustls::pki_types::CertificateDer;
use tracing::debug;

use super::auth::{DIALER_REALM, SERVER_REALM};
use super::proxy::{self, BoxError, Upstream};
use super::site::{Body, Reply, Site};
use super::{
    not_taken, read_chunk, Members, AUTHENTICATION_INFO, BODY_TIMEOUT, CONNECT_TIMEOUT, NODE_PATH,
    REQUEST_BODY_LIMIT,
};
use crate::link::{H3Link, Link};

/// How long a request may take to send its headers.
const HEADERS_TIMEOUT: Duration = Duration::from_secs(10);

type Stream = RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

/// Serves HTTP/3 on `conn` until the client goes away; `members` takes node links
/// (`None`: a site only).
pub async fn serve(conn: quinn::Connection, site: Arc<Site>, members: Option<Arc<dyn Members>>) {
    let remote = conn.remote_address();
    let mut h3 = match h3::server::builder()
        .enable_extended_connect(true)
        .enable_datagram(true)
        .build::<_, Bytes>(h3_quinn::Connection::new(conn.clone()))
        .await
    {
        Ok(h3) => h3,
        Err(e) => {
            debug!(%remote, error = %e, "HTTP/3 connection not set up");
            return;
        }
    };
    // One node link per connection: a second CONNECT gets the site's answer. A
    // connection with MASQUE sessions carries no node link, and the other way round.
    let linked = Arc::new(AtomicBool::new(false));
    let sessions = Arc::new(crate::masque::Sessions::default());
    loop {
        match h3.accept().await {
            Ok(Some(resolver)) => {
                let site = site.clone();
                let gate = members.clone().map(|m| Gate {
                    masque: m.masque().map(|node| crate::masque::Front {
                        node,
                        conn: conn.clone(),
                        sessions: sessions.clone(),
                        linked: linked.clone(),
                        server: site.server_header().cloned(),
                    }),
                    members: m,
                    conn: conn.clone(),
                    linked: linked.clone(),
                });
                tokio::spawn(async move {
                    let resolved =
                        tokio::time::timeout(HEADERS_TIMEOUT, resolver.resolve_request()).await;
                    match resolved {
                        Ok(Ok((request, stream))) => {
                            answer(&site, gate.as_ref(), request, stream).await
                        }
                        Ok(Err(e)) => debug!(%remote, error = %e, "HTTP/3 request refused"),
                        Err(_) => debug!(%remote, "HTTP/3 request headers too slow"),
                    }
                });
            }
            Ok(None) => return,
            Err(e) => {
                debug!(%remote, error = %e, "HTTP/3 connection ended");
                return;
            }
        }
    }
}

/// What a request needs to open a node link: the connection it came on.
struct Gate {
    members: Arc<dyn Members>,
    masque: Option<crate::masque::Front>,
    conn: quinn::Connection,
    linked: Arc<AtomicBool>,
}

impl Gate {
    /// Opens a link if `parts` is a node's CONNECT with a valid proof; gives the stream
    /// back otherwise, for the site's answer.
    async fn try_link(
        &self,
        site: &Site,
        parts: &http::request::Parts,
        mut stream: Stream,
    ) -> Option<Stream> {
        let remote = self.conn.remote_address();
        let Some(authority) = node_request(parts) else {
            return Some(stream);
        };
        // Only a Concealed proof asks for a node link; other credentials are a MASQUE
        // client's.
        let Some(proof) = parts.headers.get(header::AUTHORIZATION).filter(|p| {
            p.as_bytes()
                .get(..10)
                .is_some_and(|s| s.eq_ignore_ascii_case(b"concealed "))
        }) else {
            return Some(stream);
        };
        let peer = match self
            .members
            .check(&self.conn, authority, DIALER_REALM, proof.as_bytes())
        {
            Ok(peer) => peer,
            Err(why) => {
                self.members.refused(remote, &why);
                return Some(stream);
            }
        };
        if self.linked.swap(true, Ordering::AcqRel) {
            debug!(%remote, "a second node link on one connection: answered as the site");
            return Some(stream);
        }
        let ours = match self
            .members
            .prove(&self.conn, authority, SERVER_REALM)
            .and_then(|p| HeaderValue::from_str(&p).map_err(anyhow::Error::from))
        {
            Ok(ours) => ours,
            Err(e) => {
                tracing::warn!(%remote, error = %format!("{e:#}"), "cannot prove this node's identity");
                return Some(stream);
            }
        };
        let mut response = http::Response::new(());
        if let Some(server) = site.server_header() {
            response
                .headers_mut()
                .insert(header::SERVER, server.clone());
        }
        response
            .headers_mut()
            .insert("capsule-protocol", HeaderValue::from_static("?1"));
        response.headers_mut().insert(AUTHENTICATION_INFO, ours);
        if let Err(e) = stream.send_response(response).await {
            debug!(%remote, error = %e, "node link lost before its answer");
            return None;
        }
        let der = CertificateDer::from(peer.cert().der.clone());
        match H3Link::server(self.conn.clone(), stream, der, self.members.relays()) {
            Ok(link) => self.members.open(Link::H3(link)),
            Err(e) => debug!(%remote, error = %format!("{e:#}"), "node link not opened"),
        }
        None
    }
}

/// The authority of a request that asks for a node link: an extended CONNECT with
/// `:protocol` connect-ip to [`NODE_PATH`].
fn node_request(parts: &http::request::Parts) -> Option<&str> {
    let connect_ip = parts.method == Method::CONNECT
        && parts.extensions.get::<Protocol>() == Some(&Protocol::CONNECT_IP)
        && parts.uri.path() == NODE_PATH;
    connect_ip.then(|| parts.uri.authority().map(|a| a.as_str()))?
}

async fn answer(site: &Site, gate: Option<&Gate>, request: http::Request<()>, stream: Stream) {
    let (parts, ()) = request.into_parts();
    let mut stream = match gate {
        Some(gate) => match gate.try_link(site, &parts, stream).await {
            Some(stream) => stream,
            None => return,
        },
        None => stream,
    };
    if let Some(front) = gate.and_then(|g| g.masque.as_ref()) {
        if crate::masque::is_request(&parts) {
            stream = match front.serve(&parts, stream).await {
                Some(stream) => stream,
                None => return,
            };
        }
    }
    if let (Some(upstream), true) = (site.upstream(), proxy::forwarded(&parts.method)) {
        return forward(site, upstream, parts, stream).await;
    }
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let reply = site.answer(&parts.method, path, &parts.headers, false);
    take_body(&mut stream).await;
    let _ = send(&mut stream, reply).await;
}

/// Sends a request on to the upstream site, its body as it comes, and the answer back
/// as it comes.
async fn forward(site: &Site, upstream: &Upstream, parts: http::request::Parts, stream: Stream) {
    let (mut stream, recv) = stream.split();
    let body = RequestBody::new(recv, &parts.headers).await;
    let response = match upstream.forward(parts, body.boxed_unsync()).await {
        Ok(response) => response,
        Err(e) => {
            debug!(error = %format!("{e:#}"), "upstream site gave no answer");
            let _ = send(&mut stream, site.bad_gateway(false)).await;
            return;
        }
    };
    let (mut head, mut body) = response.into_parts();
    site.forwarded(&mut head.headers, false);
    if stream
        .send_response(http::Response::from_parts(head, ()))
        .await
        .is_err()
    {
        return;
    }
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    if stream.send_data(data).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                // Cut short, so that the client does not take a part for the whole.
                debug!(error = %e, "upstream answer broke off");
                stream.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
                return;
            }
        }
    }
    let _ = stream.finish().await;
}

/// A request body read from its HTTP/3 stream as the upstream takes it.
struct RequestBody {
    recv: RequestStream<h3_quinn::RecvStream, Bytes>,
    /// Data read to learn whether there is a body at all.
    first: Option<Bytes>,
    done: bool,
    /// `Content-Length`, when the request gave one.
    len: Option<u64>,
}

impl RequestBody {
    async fn new(
        recv: RequestStream<h3_quinn::RecvStream, Bytes>,
        headers: &http::HeaderMap,
    ) -> RequestBody {
        let len = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let mut body = RequestBody {
            recv,
            first: None,
            done: len == Some(0),
            len,
        };
        if len.is_none() {
            // A request without a body ends its stream after the headers: then none is
            // sent upstream (rather than an empty chunked one).
            match tokio::time::timeout(BODY_TIMEOUT, body.recv.recv_data()).await {
                Ok(Ok(Some(mut chunk))) => {
                    body.first = Some(chunk.copy_to_bytes(chunk.remaining()));
                }
                Ok(Ok(None) | Err(_)) => body.done = true,
                Err(_) => {}
            }
        }
        body
    }
}

impl hyper::body::Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        if this.done {
            return Poll::Ready(None);
        }
        match ready!(this.recv.poll_recv_data(cx)) {
            Ok(Some(mut chunk)) => Poll::Ready(Some(Ok(Frame::data(
                chunk.copy_to_bytes(chunk.remaining()),
            )))),
            Ok(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Err(e) => {
                this.done = true;
                Poll::Ready(Some(Err(e.into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.first.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        self.len.map(SizeHint::with_exact).unwrap_or_default()
    }
}

/// Takes in a small request body before the answer, as the HTTPS front does; a larger
/// one is stopped with H3_NO_ERROR (RFC 9114 section 4.1.2), a stalled one left to the
/// stream's end. (h3-quinn's `stop_sending` must not follow a read that did not
/// finish: its stream is inside the read then.)
async fn take_body(stream: &mut Stream) {
    let mut taken = 0usize;
    loop {
        match tokio::time::timeout(BODY_TIMEOUT, stream.recv_data()).await {
            Ok(Ok(Some(chunk))) => {
                taken += chunk.remaining();
                if taken > REQUEST_BODY_LIMIT {
                    stream.stop_sending(h3::error::Code::H3_NO_ERROR);
                    return;
                }
            }
            Ok(Ok(None) | Err(_)) | Err(_) => return,
        }
    }
}

async fn send<S>(stream: &mut RequestStream<S, Bytes>, reply: Reply) -> anyhow::Result<()>
where
    S: h3::quic::SendStream<Bytes>,
{
    let mut response = http::Response::new(());
    *response.status_mut() = reply.status;
    *response.headers_mut() = reply.headers;
    stream.send_response(response).await?;
    match reply.body {
        Body::Empty => {}
        Body::Bytes(bytes) => stream.send_data(bytes).await?,
        Body::File { path, offset, len } => {
            let mut file = tokio::fs::File::open(&path).await?;
            let mut left = len;
            let mut from = offset;
            while left > 0 {
                let chunk = read_chunk(&mut file, from, left).await?;
                left -= chunk.len() as u64;
                from += chunk.len() as u64;
                stream.send_data(chunk).await?;
            }
        }
    }
    stream.finish().await?;
    Ok(())
}

/// Opens a node link on `conn`, a QUIC connection to a camouflaged peer at `authority`
/// whose web certificate the handshake checked: this node proves its identity, then
/// checks the peer's proof in the answer.
pub async fn dial(
    conn: quinn::Connection,
    authority: &str,
    members: &dyn Members,
) -> Result<H3Link> {
    let (mut driver, mut sender) = h3::client::builder()
        .enable_extended_connect(true)
        .enable_datagram(true)
        .build::<_, _, Bytes>(h3_quinn::Connection::new(conn.clone()))
        .await
        .context("HTTP/3 connection not set up")?;
    // The driver reads the server's control stream; it ends with the connection.
    tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    let proof = members.prove(&conn, authority, DIALER_REALM)?;
    let request = http::Request::builder()
        .method(Method::CONNECT)
        .uri(format!("https://{authority}{NODE_PATH}"))
        .header(header::AUTHORIZATION, proof)
        .header("capsule-protocol", "?1")
        .extension(Protocol::CONNECT_IP)
        .body(())?;
    let exchange = async {
        let mut stream = sender.send_request(request).await?;
        let response = stream.recv_response().await?;
        anyhow::Ok((stream, response))
    };
    let (stream, response) = tokio::time::timeout(CONNECT_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow!("no answer to this node's CONNECT within {CONNECT_TIMEOUT:?}"))??;
    if response.status() != StatusCode::OK {
        return Err(not_taken(response.status().as_u16()));
    }
    let theirs = response
        .headers()
        .get(AUTHENTICATION_INFO)
        .ok_or_else(|| anyhow!("the server took this node's proof but sent none of its own"))?;
    let peer = members
        .check(&conn, authority, SERVER_REALM, theirs.as_bytes())
        .map_err(|why| anyhow!("refused the server's proof: {why}"))?;
    let der = CertificateDer::from(peer.cert().der.clone());
    H3Link::client(conn, stream, sender, der, members.relays())
}
