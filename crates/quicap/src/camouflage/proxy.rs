//! The reverse-proxy site: every request that is not a node's goes on to an upstream
//! web site and its answer comes back, as Hysteria 2's masquerade proxy and Caddy's
//! `reverse_proxy` do. To a visitor the node is then that site.
//!
//! ```text
//!  client ──HTTP/3, HTTP/2, HTTP/1.1──> node ──HTTP/1.1 (over TLS for https://)──> upstream
//!           Host: anything                    Host: the upstream's, hop-by-hop headers dropped
//! ```
//!
//! Requests go to the upstream over HTTP/1.1 connections kept for the next request (at
//! most [`IDLE_CONNECTIONS`] idle ones). Nothing is added to a request (no
//! `X-Forwarded-For`: the upstream learns no more than a visitor's request says), and
//! the upstream's answer comes back as it is, hop-by-hop headers aside. An upstream that
//! does not answer gets the visitor a `502`, as reverse proxies answer it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{request, Method, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

/// An error of a body on its way through.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body on its way to the upstream.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// Idle upstream connections kept for the next requests.
const IDLE_CONNECTIONS: usize = 16;
/// How long a TCP connection and TLS handshake to the upstream may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the upstream may take to start its answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// The upstream site and the connections to it.
pub struct Upstream {
    /// Host and port connected to.
    host: String,
    port: u16,
    /// The `Host` of every request sent.
    authority: HeaderValue,
    /// TLS for an `https://` upstream: the connector and the name asked for and checked.
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    idle: Arc<Mutex<Vec<SendRequest<ProxyBody>>>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Upstream {
    /// The upstream at `url` (`http://host[:port]` or `https://host[:port]`, as the
    /// config checked it); an `https://` upstream's certificate is checked against
    /// `roots`, or the system's roots.
    pub fn new(url: &Uri, roots: Option<&std::path::Path>) -> Result<Upstream> {
        let authority = url
            .authority()
            .ok_or_else(|| anyhow!("web.upstream {url}: no host"))?;
        let https = url.scheme_str() == Some("https");
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let name = ServerName::try_from(host.to_owned()).map_err(|_| {
                anyhow!("web.upstream {url}: {host:?} is not a DNS name or an IP address")
            })?;
            let roots = super::client::upstream_roots(roots)?;
            let provider = crate::tls::web_provider();
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![super::ALPN_HTTP1.to_vec()];
            Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        Ok(Upstream {
            host: host.to_owned(),
            port,
            authority: HeaderValue::from_str(authority.as_str())?,
            tls,
            idle: Arc::default(),
        })
    }

    /// Sends a visitor's request on to the upstream: its method, path, headers and body,
    /// with the upstream's `Host` and without hop-by-hop headers. The answer's
    /// hop-by-hop headers are dropped too.
    pub async fn forward(
        &self,
        parts: request::Parts,
        body: ProxyBody,
    ) -> Result<http::Response<Incoming>> {
        let mut request = http::Request::from_parts(self.outgoing(parts), body);
        // An idle connection first; one the upstream closed meanwhile gives the request
        // back, unsent, for the next.
        while let Some(mut sender) = self.take_idle() {
            match tokio::time::timeout(ANSWER_TIMEOUT, sender.try_send_request(request)).await {
                Err(_) => return Err(anyhow!("no answer within {ANSWER_TIMEOUT:?}")),
                Ok(Ok(response)) => return Ok(self.answered(sender, response)),
                Ok(Err(mut e)) => match e.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(e.into_error().into()),
                },
            }
        }
        let mut sender = tokio::time::timeout(CONNECT_TIMEOUT, self.connect())
            .await
            .map_err(|_| anyhow!("no connection within {CONNECT_TIMEOUT:?}"))??;
        let response = tokio::time::timeout(ANSWER_TIMEOUT, sender.send_request(request))
            .await
            .map_err(|_| anyhow!("no answer within {ANSWER_TIMEOUT:?}"))??;
        Ok(self.answered(sender, response))
    }

    /// The request as it goes upstream.
    fn outgoing(&self, parts: request::Parts) -> request::Parts {
        let (mut out, ()) = http::Request::new(()).into_parts();
        let mut uri = http::uri::Parts::default();
        uri.path_and_query = parts.uri.path_and_query().cloned();
        out.uri = Uri::from_parts(uri).unwrap_or_else(|_| Uri::from_static("/"));
        if out.uri.path().is_empty() {
            out.uri = Uri::from_static("/");
        }
        out.method = parts.method;
        out.headers = parts.headers;
        drop_hop_by_hop(&mut out.headers);
        // HTTP/2 and HTTP/3 may split cookies over several fields; HTTP/1.1 takes one.
        let cookies: Vec<HeaderValue> = match out.headers.entry(header::COOKIE) {
            header::Entry::Occupied(e) if e.iter().count() > 1 => e.remove_entry_mult().1.collect(),
            _ => Vec::new(),
        };
        if !cookies.is_empty() {
            let joined: Vec<&[u8]> = cookies.iter().map(|c| c.as_bytes()).collect();
            if let Ok(v) = HeaderValue::from_bytes(&joined.join(&b"; "[..])) {
                out.headers.insert(header::COOKIE, v);
            }
        }
        out.headers.insert(header::HOST, self.authority.clone());
        out
    }

    /// The upstream's answer for the visitor; the connection goes back to the idle
    /// ones once the answer has been read to its end.
    fn answered(
        &self,
        mut sender: SendRequest<ProxyBody>,
        mut response: http::Response<Incoming>,
    ) -> http::Response<Incoming> {
        drop_hop_by_hop(response.headers_mut());
        let idle = self.idle.clone();
        tokio::spawn(async move {
            if sender.ready().await.is_ok() {
                let mut idle = idle.lock().unwrap_or_else(|e| e.into_inner());
                if idle.len() < IDLE_CONNECTIONS {
                    idle.push(sender);
                }
            }
        });
        response
    }

    fn take_idle(&self) -> Option<SendRequest<ProxyBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(sender) = idle.pop() {
            if sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    async fn connect(&self) -> Result<SendRequest<ProxyBody>> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .with_context(|| format!("connecting to {}:{}", self.host, self.port))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => handshake(tcp).await,
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .context("TLS with the upstream")?;
                handshake(tls).await
            }
        }
    }
}

async fn handshake<IO>(io: IO) -> Result<SendRequest<ProxyBody>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            debug!(error = %e, "upstream connection ended");
        }
    });
    Ok(sender)
}

/// Whether a request is one a reverse proxy does not pass on: CONNECT, plain or
/// extended, opens a tunnel rather than asking for a page.
pub fn forwarded(method: &Method) -> bool {
    *method != Method::CONNECT
}

/// Drops the headers that belong to one connection (RFC 9110 section 7.6.1): those
/// named in `Connection` and the well-known ones.
fn drop_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(url: &str) -> Upstream {
        Upstream::new(&url.parse().unwrap(), None).unwrap()
    }

    #[test]
    fn a_request_goes_upstream_with_its_host_and_without_hop_by_hop_headers() {
        let up = upstream("http://127.0.0.1:8080");
        let request = http::Request::builder()
            .method(Method::POST)
            .uri("https://www.example.org/a/b?c=d")
            .header("connection", "keep-alive, x-private")
            .header("x-private", "1")
            .header("keep-alive", "timeout=5")
            .header("upgrade", "connect-ip")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .header("accept", "*/*")
            .body(())
            .unwrap();
        let out = up.outgoing(request.into_parts().0);
        assert_eq!(out.uri.to_string(), "/a/b?c=d");
        assert_eq!(out.method, Method::POST);
        assert_eq!(out.headers["host"], "127.0.0.1:8080");
        assert_eq!(out.headers["cookie"], "a=1; b=2");
        assert_eq!(out.headers["accept"], "*/*");
        for gone in ["connection", "x-private", "keep-alive", "upgrade"] {
            assert!(!out.headers.contains_key(gone), "{gone}");
        }
    }

    #[test]
    fn the_default_ports_and_an_ip_host() {
        let up = upstream("http://[::1]");
        assert_eq!((up.host.as_str(), up.port), ("::1", 80));
        assert_eq!(up.authority, "[::1]");
        let request = http::Request::builder().uri("/").body(()).unwrap();
        assert_eq!(up.outgoing(request.into_parts().0).uri, "/");
    }
}
