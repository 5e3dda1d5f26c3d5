//! The accept paths: incoming QUIC handshakes (after admission: Retry, per-source
//! budgets) and incoming TLS/TCP connections, each handed to a session.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::members::NodeMembers;
use super::{admission, session, Node};
use crate::camouflage;
use crate::link::{tcp, Link};
use crate::tls::RefusalSlot;
use crate::transport;

pub(super) async fn accept_loop(node: Arc<Node>, endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        let remote = incoming.remote_address();
        // A relayed node's virtual address is reached only through authenticated
        // peers: nothing to validate.
        let validated =
            incoming.remote_address_validated() || node.relays.node_at(remote).is_some();
        let verdict = node
            .admission()
            .handle_incoming(remote.ip(), validated, Instant::now());
        match verdict {
            admission::Verdict::Accept => {}
            admission::Verdict::Retry => {
                if let Err(e) = incoming.retry() {
                    e.into_incoming().ignore();
                }
                continue;
            }
            admission::Verdict::Ignore => {
                debug!(%remote, "ignoring a handshake: too many in flight, or from this source");
                incoming.ignore();
                continue;
            }
        }
        let node = node.clone();
        tokio::spawn(async move {
            let in_flight = InFlight(node.clone());
            // Each connection gets a config of its own, whose verifier records why it
            // refused the peer's certificate; an end-to-end connection through relays
            // gets the relayed transport parameters.
            let refusal = RefusalSlot::default();
            let config = match node.server_config(remote, refusal.clone()) {
                Ok(config) => config,
                Err(e) => {
                    warn!(%remote, error = %format!("{e:#}"), "cannot accept a connection");
                    return;
                }
            };
            let connecting = match incoming.accept_with(Arc::new(config)) {
                Ok(c) => c,
                Err(e) => {
                    debug!(%remote, error = %e, "incoming connection not accepted");
                    return;
                }
            };
            let handshake = connecting.await;
            drop(in_flight);
            match handshake {
                Ok(conn) => match node.front_for(remote) {
                    Some(front) => {
                        let members = Arc::new(NodeMembers(node.clone()));
                        camouflage::h3::serve(conn, front.site.clone(), Some(members)).await
                    }
                    None => {
                        let relayed = node.relays.node_at(remote).is_some();
                        session::run(node, Link::quic(conn, relayed), false, None).await;
                    }
                },
                Err(e) => match refusal.take() {
                    Some(r) => node.refusals.incoming(remote, &r, &node.trust()),
                    None => debug!(%remote, error = %e, "incoming handshake failed"),
                },
            }
        });
    }
}

/// Accepts links over TLS/TCP: the same trust, the same admission budgets per source
/// as QUIC (the TCP handshake has validated the address).
pub(super) async fn accept_tcp_loop(node: Arc<Node>, listener: tokio::net::TcpListener) {
    let mut failures = 0u64;
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, say: wait rather than spin.
                failures += 1;
                if failures.is_power_of_two() {
                    warn!(error = %e, failures, "accepting a TCP connection failed");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let remote = transport::unmapped(remote);
        let verdict = node
            .admission()
            .handle_incoming(remote.ip(), true, Instant::now());
        if verdict != admission::Verdict::Accept {
            debug!(%remote, "refusing a TCP connection: too many handshakes in flight, or from this source");
            continue;
        }
        let node = node.clone();
        tokio::spawn(async move {
            let in_flight = InFlight(node.clone());
            if let Some(front) = node.front.clone() {
                let tls = front.accept_tcp(stream, remote).await;
                drop(in_flight);
                if let Some(tls) = tls {
                    let members: Arc<dyn camouflage::Members> = Arc::new(NodeMembers(node.clone()));
                    camouflage::upgrade::serve(tls, front.site.clone(), remote, Some(members))
                        .await;
                }
                return;
            }
            let refusal = RefusalSlot::default();
            let config = Arc::new(node.tls().server(refusal.clone()));
            let handshake = tcp::accept(stream, remote, config, node.relays.clone()).await;
            drop(in_flight);
            match handshake {
                Ok(link) => {
                    session::run(node, Link::Tcp(link), false, None).await;
                }
                Err(e) => match refusal.take() {
                    Some(r) => node.refusals.incoming(remote, &r, &node.trust()),
                    None => {
                        debug!(%remote, error = %format!("{e:#}"), "incoming TLS/TCP handshake failed")
                    }
                },
            }
        });
    }
}

/// An accepted handshake, counted in flight by the admission state until dropped.
pub(super) struct InFlight(Arc<Node>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.admission().handle_handshake_done();
    }
}
