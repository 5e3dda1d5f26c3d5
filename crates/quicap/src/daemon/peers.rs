//! The table of connected peers and the forwarding decision for outgoing packets.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use quicap_pki::cert::VerifiedCert;

/// One live, authenticated QUIC connection to a peer.
#[derive(Debug, Clone)]
pub struct Link {
    pub conn: quinn::Connection,
    /// True if this node dialed the connection.
    pub outgoing: bool,
    pub since: Instant,
}

#[derive(Debug)]
struct Peer {
    cert: VerifiedCert,
    links: Vec<Link>,
}

/// Connected peers by name. Each peer may have several links (one dialed by each side);
/// a peer without links is removed.
#[derive(Debug, Default)]
pub struct PeerTable {
    peers: Mutex<BTreeMap<String, Peer>>,
}

impl PeerTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Peer>> {
        // A panic while holding the lock cannot leave the map inconsistent: every
        // mutation is a single insert or retain.
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a link; the certificate replaces any older one of the same peer.
    pub fn add(&self, cert: VerifiedCert, link: Link) {
        let mut peers = self.lock();
        let peer = peers.entry(cert.name().to_owned()).or_insert_with(|| Peer {
            cert: cert.clone(),
            links: Vec::new(),
        });
        peer.cert = cert;
        peer.links.push(link);
    }

    /// Removes the link with QUIC connection id `stable_id`; returns how many links the
    /// peer has left.
    pub fn remove(&self, name: &str, stable_id: usize) -> usize {
        let mut peers = self.lock();
        let left = match peers.get_mut(name) {
            Some(peer) => {
                peer.links.retain(|l| l.conn.stable_id() != stable_id);
                peer.links.len()
            }
            None => return 0,
        };
        if left == 0 {
            peers.remove(name);
        }
        left
    }

    /// The connection to send a packet for `destination` on: the peer whose certificate
    /// authorizes the longest prefix containing it, over its newest link.
    pub fn route(&self, destination: IpAddr) -> Option<quinn::Connection> {
        let peers = self.lock();
        let mut best: Option<(u8, &Peer)> = None;
        for peer in peers.values() {
            let auth = peer.cert.authorization();
            let host_len = if destination.is_ipv4() { 32 } else { 128 };
            let hosts = auth
                .addresses
                .iter()
                .filter(|a| a.addr() == destination)
                .map(|_| host_len);
            let nets = auth
                .subnets
                .iter()
                .filter(|s| s.contains(&destination))
                .map(|s| s.prefix_len());
            if let Some(len) = hosts.chain(nets).max() {
                if best.is_none_or(|(l, _)| len > l) {
                    best = Some((len, peer));
                }
            }
        }
        let (_, peer) = best?;
        peer.links
            .iter()
            .max_by_key(|l| l.since)
            .map(|l| l.conn.clone())
    }

    /// Closes every link of every peer for which `reason` returns a reason.
    pub fn close_where(&self, code: u32, reason: impl Fn(&VerifiedCert) -> Option<String>) {
        let peers = self.lock();
        for (name, peer) in peers.iter() {
            if let Some(why) = reason(&peer.cert) {
                tracing::warn!(peer = %name, reason = %why, "closing peer");
                for link in &peer.links {
                    link.conn.close(code.into(), why.as_bytes());
                }
            }
        }
    }

    /// Every connection, for shutdown.
    pub fn all_connections(&self) -> Vec<quinn::Connection> {
        self.lock()
            .values()
            .flat_map(|p| p.links.iter().map(|l| l.conn.clone()))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
