//! The SOCKS5 listener: RFC 1928 with no authentication, or RFC 1929's username and
//! password when the listener has credentials. CONNECT opens a flow at an egress node
//! (see [`super::open`]); every failure gets the reply code that fits and is counted.

use std::net::SocketAddr;

use quicap_wire::socks::{self, Command, Reply, SocksError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::debug;

use super::{Active, REQUEST_TIMEOUT};
use crate::config::ProxyListener;
use crate::daemon::Node;

/// The longest message a client sends before its flow: a request with a 255-byte
/// name, or credentials of 255 bytes each.
const MAX_MESSAGE: usize = 3 + 255 + 255;

/// Why a client's exchange stopped before its flow.
enum Stop {
    /// Unreadable: the reply that fits, if any is sent.
    Bad(SocksError),
    /// Refused, its answer sent.
    Refused(&'static str),
    /// The client went away or was too slow.
    Gone,
}

pub(super) async fn serve(
    node: &Node,
    listener: &ProxyListener,
    mut client: TcpStream,
    from: SocketAddr,
) {
    let counters = &node.proxy;
    match handshake(listener, &mut client).await {
        Ok(request) => {
            let target = request.target;
            match request.command {
                Command::Connect => {}
                Command::UdpAssociate => {
                    return super::udp::associate(node, listener, &mut client).await;
                }
                _ => {
                    counters.count_failure(Reply::CommandNotSupported);
                    let _ = client
                        .write_all(&socks::reply(Reply::CommandNotSupported, unspecified()))
                        .await;
                    return;
                }
            }
            let io = match super::open(node, listener, &target).await {
                Ok(io) => io,
                Err(reply) => {
                    counters.count_failure(reply);
                    debug!(%from, %target, reply = reply.as_str(), "SOCKS5 flow not opened");
                    let _ = client.write_all(&socks::reply(reply, unspecified())).await;
                    return;
                }
            };
            let bound = client.local_addr().unwrap_or_else(|_| unspecified());
            if !succeeded(&mut client, bound).await {
                return;
            }
            let _active = Active::new(counters);
            super::carry(&mut client, io).await;
        }
        Err(Stop::Refused(why)) => {
            counters
                .bad_requests
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            debug!(%from, reason = why, "SOCKS5 client refused");
        }
        Err(Stop::Bad(e)) => {
            counters
                .bad_requests
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            debug!(%from, error = %e, "SOCKS5 request refused");
            if let Some(reply) = reply_for(&e) {
                let _ = client.write_all(&socks::reply(reply, unspecified())).await;
            }
        }
        Err(Stop::Gone) => {}
    }
}

/// The reply to a request that could not be read, once the request stage is reached.
fn reply_for(e: &SocksError) -> Option<Reply> {
    match e {
        SocksError::AddressType(_) | SocksError::NameNotUtf8 | SocksError::EmptyName => {
            Some(Reply::AddressTypeNotSupported)
        }
        SocksError::Reserved => Some(Reply::GeneralFailure),
        _ => None,
    }
}

/// Tells the client its request succeeded, `bound` being the address the node uses for
/// it; false if the client is gone.
pub(super) async fn succeeded(client: &mut TcpStream, bound: SocketAddr) -> bool {
    client
        .write_all(&socks::reply(Reply::Succeeded, bound))
        .await
        .is_ok()
}

pub(super) fn unspecified() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

/// The greeting, authentication and request.
async fn handshake(
    listener: &ProxyListener,
    client: &mut TcpStream,
) -> Result<socks::Request, Stop> {
    let mut buf = Vec::with_capacity(64);
    let methods = read(client, &mut buf, |b| {
        socks::parse_greeting(b).map(|m| m.map(|(m, n)| (m.to_vec(), n)))
    })
    .await?;
    let wanted = match listener.credentials {
        Some(_) => socks::METHOD_USERPASS,
        None => socks::METHOD_NONE,
    };
    if !methods.contains(&wanted) {
        let _ = client
            .write_all(&[socks::VERSION, socks::METHOD_UNACCEPTABLE])
            .await;
        return Err(Stop::Refused("no acceptable authentication method"));
    }
    client
        .write_all(&[socks::VERSION, wanted])
        .await
        .map_err(|_| Stop::Gone)?;
    if let Some((user, password)) = &listener.credentials {
        let (u, p) = read(client, &mut buf, |b| {
            socks::parse_userpass(b)
                .map(|c| c.map(|(c, n)| ((c.username.to_vec(), c.password.to_vec()), n)))
        })
        .await?;
        let ok = same(&u, user.as_bytes()) & same(&p, password.as_bytes());
        let _ = client
            .write_all(&[socks::USERPASS_VERSION, if ok { 0 } else { 1 }])
            .await;
        if !ok {
            return Err(Stop::Refused("wrong username or password"));
        }
    }
    read(client, &mut buf, socks::parse_request).await
}

/// Compares in time that does not depend on where the bytes differ.
pub(super) fn same(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (x, y) in a.iter().zip(b.iter().cycle()) {
        diff |= usize::from(x ^ y);
    }
    diff == 0 && !b.is_empty()
}

/// Reads until `parse` finds a message at the start of `buf`, then removes it.
async fn read<T>(
    client: &mut TcpStream,
    buf: &mut Vec<u8>,
    parse: impl Fn(&[u8]) -> Result<Option<(T, usize)>, SocksError>,
) -> Result<T, Stop> {
    let work = async {
        loop {
            if let Some((message, n)) = parse(buf).map_err(Stop::Bad)? {
                buf.drain(..n);
                return Ok(message);
            }
            if buf.len() >= MAX_MESSAGE {
                return Err(Stop::Bad(SocksError::Truncated));
            }
            let mut chunk = [0u8; 256];
            match client.read(&mut chunk).await {
                Ok(0) | Err(_) => return Err(Stop::Gone),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(REQUEST_TIMEOUT, work)
        .await
        .map_err(|_| Stop::Gone)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_compare_whole() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secre", b"secret"));
        assert!(!same(b"secretx", b"secret"));
        assert!(!same(b"Secret", b"secret"));
        assert!(!same(b"", b""));
    }
}
