//! A renewed certificate takes effect without a restart: when the files named by
//! `node.cert` or `node.key` change, the node loads and checks them as at startup,
//! answers new handshakes with them, tells the mesh (a newer version of its node
//! info), and dials every peer once more. The peer sees the new certificate on that
//! link and, once it is proven, closes the links made with the old one (close code
//! SUPERSEDED, `PeerTable::close_renewed`), so traffic
//! moves over without a gap and the old certificate may expire unnoticed.
//!
//! Files that fail a check (half-written, another node's, a key that does not fit)
//! change nothing: the node logs why and keeps its certificate until the next change.

use std::sync::Arc;

use anyhow::{bail, Result};
use tracing::{debug, error, info};

use super::dial::{connect, connect_tcp, dial_relayed};
use super::watchers::{FileWatch, WATCH_INTERVAL};
use super::{identity, session, Node, Own};
use crate::config::Config;
use crate::link::{CloseCode, Link, LinkKind};

/// Watches the node's certificate and key files; see the module documentation.
pub async fn watch(node: Arc<Node>, config: Config) {
    let mut files = FileWatch::new(vec![config.node.cert.clone(), config.node.key.clone()]);
    loop {
        files.changed().await;
        match reload(&node, &config) {
            Ok(true) => redial_all(&node, &config),
            Ok(false) => {}
            Err(e) => error!(
                error = %format!("{e:#}"),
                "keeping the current certificate"
            ),
        }
    }
}

/// Loads the node's certificate and key again; true if a new certificate is in force.
fn reload(node: &Node, config: &Config) -> Result<bool> {
    let trust = node.trust();
    let (cert, identity, key) = identity::load_own(
        config,
        &trust.ca,
        trust.crl.as_ref(),
        time::OffsetDateTime::now_utc(),
    )?;
    let current = node.own_cert();
    if cert.name != current.name {
        bail!(
            "node.cert {}: the certificate is for {:?}, this node is {:?} (a new name needs a restart)",
            config.node.cert.display(),
            cert.name,
            current.name
        );
    }
    if cert.serial == current.serial {
        debug!("certificate files touched, certificate unchanged");
        return Ok(false);
    }
    node.set_tls(&trust.rustls, &identity)?;
    let key = std::sync::Arc::new(key);
    let message = node.mesh.renew_own(&cert.der, key.clone())?;
    info!(
        serial = %cert.serial_hex(),
        previous = %current.serial_hex(),
        valid_until = %quicap_pki::fmt_time(&cert.not_after),
        "certificate reloaded"
    );
    *node.own.write().unwrap_or_else(|p| p.into_inner()) = Own {
        identity,
        cert,
        key,
    };
    node.generation
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    node.peers.send_control_to_all(&message, node.now_ms());
    Ok(true)
}

/// Dials every connected peer once with the new certificate: over a direct link's
/// address, or end to end through the mesh for a peer reached that way only.
///
/// The peer's dial loop, where this node has one (`peer.endpoint` set), takes the new
/// link over once the peer has closed the loop's old one. Where this node only takes
/// the peer's dials, the new link is temporary: it carries the traffic until the peer
/// has dialed in again, then it is closed.
fn redial_all(node: &Arc<Node>, config: &Config) {
    for (name, id, direct) in node.peers.redial_targets(node.now_ms()) {
        let node = node.clone();
        let dials_it = config
            .peers
            .iter()
            .any(|p| p.name == name && p.endpoint.is_some());
        tokio::spawn(async move {
            let dialed = match direct {
                None => {
                    dial_relayed(node, id).await;
                    return;
                }
                Some((addr, LinkKind::Tcp)) => connect_tcp(&node, &name, addr).await,
                Some((addr, _)) => connect(&node, &name, addr).await,
            };
            match dialed {
                Ok(link) => {
                    if !dials_it {
                        tokio::spawn(close_once_replaced(
                            node.clone(),
                            name.clone(),
                            link.clone(),
                        ));
                    }
                    session::run(node, link, true, Some(&name)).await;
                }
                Err(e) => debug!(
                    peer = %name,
                    error = %format!("{e:#}"),
                    "dial with the renewed certificate failed; the links made with the old one stay until it expires"
                ),
            }
        });
    }
}

/// How long a temporary link waits for the peer to dial in again before it stays.
const REPLACE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Closes `link`, a link dialed only to show the peer `name` the renewed certificate,
/// once the peer has another link that came up after it (its dial loop dialing in
/// again). A peer that does not dial in within [`REPLACE_WAIT`] keeps this link.
async fn close_once_replaced(node: Arc<Node>, name: String, link: Link) {
    let deadline = tokio::time::Instant::now() + REPLACE_WAIT;
    while tokio::time::Instant::now() < deadline && !link.is_closed() {
        tokio::time::sleep(WATCH_INTERVAL / 2).await;
        if node.peers.has_newer_link(&name, link.id()) {
            debug!(peer = %name, "the peer dialed in again; closing the link made for the renewal");
            link.close(CloseCode::Superseded, "replaced");
            return;
        }
    }
}
