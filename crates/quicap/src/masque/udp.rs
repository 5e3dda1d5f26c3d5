//! CONNECT-UDP (RFC 9298): a client's UDP payloads to one target, in HTTP Datagrams
//! of context 0, leave the mesh at this node (a UDP socket of its own) or at an egress
//! node, over the mesh as a SOCKS5 UDP association's do (see [`crate::proxy::udp`]).

use std::net::SocketAddr;

use http::StatusCode;
use quicap_wire::flow;
use quicap_wire::masque as wire;
use quicap_wire::socks::{Reply, Target};
use quicap_wire::NodeId;
use tokio::net::UdpSocket;
use tracing::debug;

use super::{count, Active, In, Masque, Tunnel};
use crate::daemon::Node;
use crate::proxy::udp::{self as assoc, Leg};

/// The largest UDP payload read from a socket.
const MAX_PAYLOAD: usize = 65_535;

/// Where a session's payloads go.
enum Egress<'a> {
    /// A UDP socket of this node, connected to the target.
    Local(UdpSocket),
    /// An association at an egress node.
    Mesh(Leg<'a>),
}

/// Serves one admitted CONNECT-UDP request to `path` until either side ends it.
pub async fn serve(node: &Node, masque: &Masque, who: &str, path: &str, tunnel: Tunnel) {
    let Tunnel {
        mut out,
        mut incoming,
    } = tunnel;
    let counters = &masque.counters;
    let target = match wire::parse_udp_path(path) {
        Ok(t) => t,
        Err(e) => {
            out.refuse(
                (counters, who),
                StatusCode::BAD_REQUEST,
                "http_request_error",
                &e.to_string(),
            )
            .await;
            return;
        }
    };
    let mut egress = match open(node, masque, &target).await {
        Ok(e) => e,
        Err(reply) => {
            let (status, error) = status_of(reply);
            let details = format!("{target}: {}", reply.as_str());
            out.refuse((counters, who), status, error, &details).await;
            return;
        }
    };
    if !out.accept().await {
        return;
    }
    count(&counters.udp_sessions);
    let _active = Active::new(&counters.active);
    debug!(%who, %target, "CONNECT-UDP session");
    let mut buf = vec![0u8; MAX_PAYLOAD];
    loop {
        tokio::select! {
            got = incoming.next() => match got {
                In::Payload(payload) => {
                    match &egress {
                        Egress::Local(socket) => {
                            if socket.send(&payload).await.is_err() {
                                count(&counters.oversized);
                            }
                        }
                        Egress::Mesh(leg) => {
                            let sent = assoc::datagram(leg.id, &target, &payload)
                                .is_some_and(|d| assoc::send(&leg.link, d));
                            if !sent {
                                count(&counters.oversized);
                            }
                        }
                    }
                }
                In::Capsule(..) => {}
                In::End => break,
                In::Malformed(e) => {
                    out.abort(counters, who, &e);
                    return;
                }
            },
            reply = reply(&mut egress, &mut buf) => {
                let Some(payload) = reply else { break };
                if out.payload(&payload).await.is_err() {
                    break;
                }
            }
        }
    }
    if let Egress::Mesh(mut leg) = egress {
        leg.finish();
    }
    out.finish().await;
}

/// The next payload from the target (`None`: the egress is gone).
async fn reply(egress: &mut Egress<'_>, buf: &mut [u8]) -> Option<Vec<u8>> {
    match egress {
        Egress::Local(socket) => loop {
            match socket.recv(buf).await {
                Ok(n) => return Some(buf[..n].to_vec()),
                // An ICMP error from the target: UDP goes on.
                Err(_) => continue,
            }
        },
        Egress::Mesh(leg) => loop {
            let d = leg.route.rx.recv().await?;
            if let Ok((_, Target::Addr(_), data)) = flow::parse_datagram(&d) {
                return Some(data.to_vec());
            }
        },
    }
}

/// The egress of a session to `target`: the `[masque]` egress nodes in order; without
/// them, this node if it may egress, else the node that advertises the destination.
async fn open<'a>(node: &'a Node, masque: &Masque, target: &Target) -> Result<Egress<'a>, Reply> {
    let candidates: Vec<NodeId> = if masque.config.egress.is_empty() {
        if node.own_cert().authorization.egress && node.egress.is_some() {
            vec![node.mesh.id]
        } else {
            vec![crate::proxy::owner(node, target).await?]
        }
    } else {
        masque
            .config
            .egress
            .iter()
            .map(|n| quicap_pki::node_id(n))
            .collect()
    };
    let mut last = Reply::NetworkUnreachable;
    for id in candidates {
        let opened = if id == node.mesh.id {
            local(node, target).await.map(Egress::Local)
        } else {
            assoc::open_leg(node, id, Some(target))
                .await
                .map(Egress::Mesh)
        };
        match opened {
            Ok(e) => return Ok(e),
            Err(r @ (Reply::NotAllowed | Reply::HostUnreachable)) if id == node.mesh.id => {
                return Err(r)
            }
            Err(r) => last = r,
        }
    }
    Err(last)
}

/// A UDP socket of this node connected to `target`, if this node may egress there.
async fn local(node: &Node, target: &Target) -> Result<UdpSocket, Reply> {
    if !node.own_cert().authorization.egress {
        return Err(Reply::NotAllowed);
    }
    let policy = node.egress.as_ref().ok_or(Reply::NotAllowed)?;
    let addrs = tokio::time::timeout(
        crate::proxy::CONNECT_TIMEOUT,
        crate::proxy::resolve(policy, target),
    )
    .await
    .map_err(|_| Reply::HostUnreachable)??;
    let to: SocketAddr = *addrs.first().ok_or(Reply::HostUnreachable)?;
    let socket = UdpSocket::bind("[::]:0")
        .await
        .map_err(|_| Reply::GeneralFailure)?;
    socket
        .connect(assoc::mapped(to))
        .await
        .map_err(|_| Reply::NetworkUnreachable)?;
    Ok(socket)
}

/// The answer to a target that cannot be reached, with its Proxy-Status error
/// (RFC 9209 section 2.3).
fn status_of(reply: Reply) -> (StatusCode, &'static str) {
    match reply {
        Reply::NotAllowed => (StatusCode::FORBIDDEN, "destination_ip_prohibited"),
        Reply::HostUnreachable => (StatusCode::BAD_GATEWAY, "dns_error"),
        Reply::TtlExpired => (StatusCode::GATEWAY_TIMEOUT, "connection_timeout"),
        _ => (StatusCode::BAD_GATEWAY, "destination_ip_unroutable"),
    }
}
