//! Dialing: a peer's endpoint over QUIC or TLS/TCP (for the link cores' drivers, see
//! [`super::dialer`]), and the end-to-end relayed connections the data path asks for.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use quicap_mesh::links::Transport;
use tracing::debug;

use super::{refusal, session, Node};
use crate::link::{tcp, Link};
use crate::tls::RefusalSlot;
use crate::transport;

/// Opens the end-to-end relayed connections the data path asks for.
pub(super) async fn relay_dialer(node: Arc<Node>) {
    loop {
        node.relay_wake.notified().await;
        let wanted =
            std::mem::take(&mut *node.relay_queue.lock().unwrap_or_else(|e| e.into_inner()));
        for dest in wanted {
            if !node.peers.has_relayed(dest) {
                tokio::spawn(dial_relayed(node.clone(), dest));
            }
        }
    }
}

/// Dials `dest` at its virtual address: the handshake and everything after it travel
/// in relay frames along the mesh's routes, end to end encrypted.
pub(super) async fn dial_relayed(node: Arc<Node>, dest: u64) {
    let Some(name) = node.mesh.name_of(dest) else {
        return;
    };
    let addr = node.relays.virtual_addr(quicap_wire::NodeId(dest));
    match connect(&node, &name, addr).await {
        Ok(link) => {
            session::run(node, link, true, Some(&name)).await;
        }
        Err(e) => {
            debug!(peer = %name, error = %format!("{e:#}"), "relayed dial failed");
            // Packets may be waiting for this link: the next one may ask again a
            // second from now rather than a whole retry interval after the first ask.
            node.retry_relayed_soon(dest);
        }
    }
}

pub(super) async fn dial(node: &Node, name: &str, target: &str, over: Transport) -> Result<Link> {
    let addr = tokio::net::lookup_host(target)
        .await
        .with_context(|| format!("resolving {target}"))?
        .next()
        .ok_or_else(|| anyhow!("{target} resolves to no address"))?;
    match over {
        Transport::Quic => connect(node, name, addr).await,
        Transport::Tcp => connect_tcp(node, name, addr).await,
    }
}

/// Connects to node `name` at `addr` over TLS/TCP.
pub(super) async fn connect_tcp(node: &Node, name: &str, addr: SocketAddr) -> Result<Link> {
    let refusal = RefusalSlot::default();
    let config = Arc::new(node.tls().client(refusal.clone()));
    let link = tcp::connect(addr, name, config, node.relays.clone())
        .await
        .map_err(|e| match refusal.take() {
            Some(r) => anyhow!(refusal::dial_error(&r, &node.trust())),
            None => e,
        })?;
    Ok(Link::Tcp(link))
}

/// Connects to node `name` at `addr` (a real address or a relayed node's virtual one,
/// which every endpoint can reach) from an endpoint of a fitting family.
pub(super) async fn connect(node: &Node, name: &str, addr: SocketAddr) -> Result<Link> {
    let endpoint = node
        .endpoints
        .iter()
        .find(|e| {
            e.local_addr()
                .map(|l| l.is_ipv6() || addr.is_ipv4())
                .unwrap_or(false)
        })
        .ok_or_else(|| anyhow!("no listen address of {addr}'s family to dial from"))?;
    let refusal = RefusalSlot::default();
    let connecting =
        endpoint.connect_with(node.client_config(addr, refusal.clone())?, addr, name)?;
    let conn = tokio::time::timeout(transport::DIAL_TIMEOUT, connecting)
        .await
        .map_err(|_| anyhow!("no answer from {addr} within {:?}", transport::DIAL_TIMEOUT))?;
    let conn = conn.map_err(|e| match refusal.take() {
        Some(r) => anyhow!(refusal::dial_error(&r, &node.trust())),
        None => anyhow::Error::from(e),
    })?;
    Ok(Link::quic(conn, node.relays.node_at(addr).is_some()))
}
