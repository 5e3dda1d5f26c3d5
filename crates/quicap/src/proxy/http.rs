//! The HTTP proxy listener: `CONNECT host:port` opens a flow and then carries bytes
//! both ways; a request with an absolute `http://` URI opens a flow to that host and
//! goes there in origin form (`GET /path`), with `Connection: close`, and the answer
//! comes back as it is. With credentials, `Proxy-Authorization: Basic` must carry them
//! (`407` otherwise). Every failure is one short answer and a counter.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use base64::Engine as _;
use quicap_wire::socks::{Reply, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::debug;

use super::{Active, REQUEST_TIMEOUT};
use crate::config::ProxyListener;
use crate::daemon::Node;

/// The longest request head read.
pub const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

/// A proxy request's head, read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub target: Target,
    pub kind: Kind,
    /// `Proxy-Authorization`, if given.
    pub authorization: Option<Vec<u8>>,
    /// Bytes of the head, its blank line included.
    pub len: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `CONNECT host:port`: a tunnel.
    Connect,
    /// A request for an `http://` URI: the head to send to the origin.
    Forward(Vec<u8>),
}

/// Why a head is refused: the status it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `400`: unreadable, or not for a proxy.
    BadRequest(&'static str),
    /// `431`: headers too long.
    TooLarge,
}

/// Reads a request head from what has arrived: `Ok(None)` asks for more.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => return Err(Refusal::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::TooLarge),
        Err(_) => return Err(Refusal::BadRequest("not an HTTP request")),
    };
    if len > MAX_HEAD {
        return Err(Refusal::TooLarge);
    }
    let (Some(method), Some(path)) = (request.method, request.path) else {
        return Err(Refusal::BadRequest("not an HTTP request"));
    };
    let authorization = request
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("proxy-authorization"))
        .map(|h| h.value.to_vec());
    if method == "CONNECT" {
        let target = authority(path, None).ok_or(Refusal::BadRequest("CONNECT to no host:port"))?;
        return Ok(Some(Head {
            target,
            kind: Kind::Connect,
            authorization,
            len,
        }));
    }
    let Some(rest) = strip_prefix_ignore_case(path, "http://") else {
        return Err(Refusal::BadRequest("not a request for an http:// URI"));
    };
    let (host, origin) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let origin = if origin.starts_with('?') {
        format!("/{origin}")
    } else {
        origin.to_owned()
    };
    if host.contains('@') {
        return Err(Refusal::BadRequest("a URI with user information"));
    }
    let target = authority(host, Some(80)).ok_or(Refusal::BadRequest("a URI with no host"))?;
    let mut out = Vec::with_capacity(len + 32);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(origin.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut has_host = false;
    for h in request.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        match name.as_str() {
            "proxy-authorization" | "proxy-connection" | "connection" | "keep-alive" => continue,
            "host" => has_host = true,
            _ => {}
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    if !has_host {
        out.extend_from_slice(b"Host: ");
        out.extend_from_slice(host.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    Ok(Some(Head {
        target,
        kind: Kind::Forward(out),
        authorization,
        len,
    }))
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// `host:port`, `[v6]:port`, or with `default` a host without a port.
fn authority(text: &str, default: Option<u16>) -> Option<Target> {
    if text.is_empty() || text.len() > 255 + 7 {
        return None;
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default?,
            None => return None,
        };
        return Some(Target::Addr(SocketAddr::new(v6.parse().ok()?, port)));
    } else {
        match text.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().ok()?),
            None => (text, default?),
        }
    };
    if port == 0 || host.is_empty() || host.len() > 255 {
        return None;
    }
    if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
        return Some(Target::Addr(SocketAddr::new(ip.into(), port)));
    }
    let valid = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    valid.then(|| Target::Name(host.to_ascii_lowercase(), port))
}

pub(super) async fn serve(
    node: &Node,
    listener: &ProxyListener,
    mut client: TcpStream,
    from: SocketAddr,
) {
    let counters = &node.proxy;
    let mut buf = Vec::with_capacity(1024);
    let head = tokio::time::timeout(REQUEST_TIMEOUT, async {
        loop {
            match parse_head(&buf) {
                Ok(Some(head)) => return Some(Ok(head)),
                Ok(None) => {}
                Err(refusal) => return Some(Err(refusal)),
            }
            let mut chunk = [0u8; 4096];
            match client.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    let head = match head {
        Ok(Some(Ok(head))) => head,
        Ok(Some(Err(refusal))) => {
            counters.bad_requests.fetch_add(1, Ordering::Relaxed);
            let (status, why) = match refusal {
                Refusal::BadRequest(why) => ("400 Bad Request", why),
                Refusal::TooLarge => ("431 Request Header Fields Too Large", "head too long"),
            };
            debug!(%from, reason = why, "HTTP proxy request refused");
            let _ = client.write_all(answer(status).as_bytes()).await;
            return;
        }
        Ok(None) | Err(_) => return,
    };
    if let Some((user, password)) = &listener.credentials {
        if !authorized(head.authorization.as_deref(), user, password) {
            counters.bad_requests.fetch_add(1, Ordering::Relaxed);
            debug!(%from, "HTTP proxy client without the right credentials");
            let _ = client
                .write_all(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"proxy\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
            return;
        }
    }
    let io = match super::open(node, listener, &head.target).await {
        Ok(io) => io,
        Err(reply) => {
            counters.count_failure(reply);
            debug!(%from, target = %head.target, reply = reply.as_str(), "HTTP proxy flow not opened");
            let _ = client.write_all(answer(status_for(reply)).as_bytes()).await;
            return;
        }
    };
    let _active = Active::new(counters);
    let early = buf.split_off(head.len);
    let mut io = io;
    let first = match &head.kind {
        Kind::Connect => {
            if client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await
                .is_err()
            {
                return;
            }
            early
        }
        Kind::Forward(request) => {
            let mut first = request.clone();
            first.extend_from_slice(&early);
            first
        }
    };
    if !first.is_empty() && super::write_flow(&mut io, &first).await.is_err() {
        return;
    }
    super::carry(&mut client, io).await;
}

fn authorized(given: Option<&[u8]>, user: &str, password: &str) -> bool {
    let Some(given) = given else {
        return false;
    };
    let Some(encoded) = std::str::from_utf8(given)
        .ok()
        .and_then(|g| strip_prefix_ignore_case(g.trim(), "basic "))
    else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let expected = format!("{user}:{password}");
    super::socks::same(&decoded, expected.as_bytes())
}

/// The status a flow's failure gets.
fn status_for(reply: Reply) -> &'static str {
    match reply {
        Reply::NotAllowed => "403 Forbidden",
        Reply::TtlExpired => "504 Gateway Timeout",
        _ => "502 Bad Gateway",
    }
}

fn answer(status: &str) -> String {
    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_and_absolute_uris() {
        let head =
            parse_head(b"CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\nxyz")
                .unwrap()
                .unwrap();
        assert_eq!(head.target, Target::Name("example.org".into(), 443));
        assert_eq!(head.kind, Kind::Connect);
        assert_eq!(head.len, 59);
        let head = parse_head(
            b"GET http://10.0.0.1:8080/a?b HTTP/1.1\r\nHost: 10.0.0.1:8080\r\nProxy-Connection: keep-alive\r\nProxy-Authorization: Basic eA==\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(head.target, Target::Addr("10.0.0.1:8080".parse().unwrap()));
        assert_eq!(head.authorization.as_deref(), Some(&b"Basic eA=="[..]));
        let Kind::Forward(out) = head.kind else {
            panic!("not forwarded");
        };
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /a?b HTTP/1.1\r\nHost: 10.0.0.1:8080\r\nConnection: close\r\n\r\n"
        );
        let head = parse_head(b"GET http://Web.Example HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.target, Target::Name("web.example".into(), 80));
        let Kind::Forward(out) = head.kind else {
            panic!("not forwarded");
        };
        assert!(String::from_utf8(out)
            .unwrap()
            .starts_with("GET / HTTP/1.1\r\nHost: Web.Example\r\n"));
        let head = parse_head(b"CONNECT [fd00::1]:22 HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.target, Target::Addr("[fd00::1]:22".parse().unwrap()));
    }

    #[test]
    fn refusals() {
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\n"), Ok(None));
        for bad in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"GET https://example.org/ HTTP/1.1\r\n\r\n",
            b"CONNECT example.org HTTP/1.1\r\n\r\n",
            b"CONNECT example.org:0 HTTP/1.1\r\n\r\n",
            b"CONNECT exa mple.org:80 HTTP/1.1\r\n\r\n",
            b"GET http://user@example.org/ HTTP/1.1\r\n\r\n",
            b"\x16\x03\x01\x00\x05hello\r\n\r\n",
        ] {
            assert!(
                matches!(parse_head(bad), Err(Refusal::BadRequest(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut long = b"GET http://a/ HTTP/1.1\r\n".to_vec();
        long.extend(std::iter::repeat_n(b'x', MAX_HEAD));
        assert_eq!(parse_head(&long), Err(Refusal::TooLarge));
    }

    #[test]
    fn basic_credentials() {
        let good = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("bob:pw")
        );
        assert!(authorized(Some(good.as_bytes()), "bob", "pw"));
        assert!(!authorized(Some(good.as_bytes()), "bob", "px"));
        assert!(!authorized(Some(b"Bearer x"), "bob", "pw"));
        assert!(!authorized(None, "bob", "pw"));
    }
}
