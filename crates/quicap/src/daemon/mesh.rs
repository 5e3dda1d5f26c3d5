//! Glue between the routing core (`quicap-mesh`) and the running node: who the nodes of
//! the mesh are (their verified certificates and the prefixes they may claim), which
//! neighbors are up and at what cost, and the messages the router wants sent.
//!
//! Node information (certificate + claimed prefixes) is flooded: a node sends its own
//! and everything it knows to each new peer, and relays every newer version it accepts
//! to its other peers. A claim is accepted only if the certificate verifies against the
//! CA and CRL and the claimed prefix is one of the certificate's addresses or inside one
//! of its subnets; other claims are logged and ignored.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;

use ipnet::IpNet;
use quicap_mesh::{
    link_cost, Config, Message as MeshMessage, NodeId, RouteInfo, RouteUpdate, Router, WindowedMin,
};
use quicap_pki::cert::VerifiedCert;
use quicap_pki::NodeCert;
use quicap_wire::control::{route_frames, Modes, NodeInfo, Prefix, RouteEntry};
use quicap_wire::Message;
use tracing::{info, warn};

use super::peers::PeerTable;
use super::TrustState;

/// The node id of a node name: the first 8 bytes of its SHA-256, big-endian.
pub fn node_id(name: &str) -> NodeId {
    let digest = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_be_bytes(id)
}

/// A node of the mesh whose information was verified.
#[derive(Debug, Clone)]
pub struct MeshNode {
    pub name: String,
    pub cert: VerifiedCert,
    /// Accepted prefixes: host routes for its addresses, and its claimed subnets.
    pub prefixes: Vec<IpNet>,
    pub modes: Modes,
    pub info: NodeInfo,
}

#[derive(Debug)]
struct Inner {
    router: Router,
    nodes: BTreeMap<NodeId, MeshNode>,
    /// Neighbors the router knows as up, with the cost in use.
    up: BTreeMap<NodeId, u16>,
    /// The lowest RTT of each neighbor's link over [`RTT_WINDOW_MS`], in µs.
    rtt_floor: BTreeMap<NodeId, WindowedMin>,
}

/// How long a link's RTT must stay higher before its cost follows: longer than the
/// stalls of a loaded host (a late probe answer lifts QUIC's smoothed RTT for a few
/// seconds), short enough that a path that really got slower loses its routes soon.
const RTT_WINDOW_MS: u64 = 10_000;

/// The mesh state of a node.
#[derive(Debug)]
pub struct Mesh {
    pub id: NodeId,
    own_name: String,
    /// This node's own node info; a new version when its certificate is renewed.
    own: Mutex<NodeInfo>,
    inner: Mutex<Inner>,
    pub notify: tokio::sync::Notify,
}

impl Mesh {
    pub fn new(id: NodeId, own_name: String, own: NodeInfo, now_ms: u64) -> Mesh {
        Mesh {
            id,
            own_name,
            own: Mutex::new(own),
            inner: Mutex::new(Inner {
                router: Router::new(id, Config::default(), now_ms),
                nodes: BTreeMap::new(),
                up: BTreeMap::new(),
                rtt_floor: BTreeMap::new(),
            }),
            notify: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Each method leaves the state consistent before it can panic.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The node owning the longest prefix that contains `destination`, other than us.
    pub fn owner(&self, destination: IpAddr) -> Option<NodeId> {
        let inner = self.lock();
        inner
            .nodes
            .iter()
            .filter(|(id, _)| **id != self.id)
            .flat_map(|(id, n)| {
                n.prefixes
                    .iter()
                    .filter(|p| p.contains(&destination))
                    .map(move |p| (p.prefix_len(), *id))
            })
            .max()
            .map(|(_, id)| id)
    }

    /// Adds to `out` every known node, other than us, that runs a TAP.
    pub fn extend_l2_nodes(&self, out: &mut Vec<NodeId>) {
        out.extend(
            self.lock()
                .nodes
                .iter()
                .filter(|(id, n)| **id != self.id && n.modes.l2)
                .map(|(id, _)| *id),
        );
    }

    pub fn next_hop(&self, dest: NodeId) -> Option<NodeId> {
        self.lock().router.next_hop(dest)
    }

    /// When the router next has timed work (milliseconds on the node's clock).
    pub fn poll_timeout(&self) -> u64 {
        self.lock().router.poll_timeout()
    }

    /// Accepted prefixes of node `id`.
    pub fn prefixes(&self, id: NodeId) -> Vec<IpNet> {
        self.lock()
            .nodes
            .get(&id)
            .map(|n| n.prefixes.clone())
            .unwrap_or_default()
    }

    pub fn name_of(&self, id: NodeId) -> Option<String> {
        if id == self.id {
            return Some(self.own_name.clone());
        }
        self.lock().nodes.get(&id).map(|n| n.name.clone())
    }

    /// The routing table.
    pub fn routes(&self) -> Vec<RouteInfo> {
        self.lock().router.routes()
    }

    /// Replaces the certificate in this node's own node info, under a newer version
    /// (seconds since the epoch, or one more than before), and returns the message for
    /// every peer.
    pub fn renew_own(&self, cert_der: &[u8]) -> Message {
        let mut own = self.own.lock().unwrap_or_else(|p| p.into_inner());
        own.certificate = cert_der.to_vec();
        own.version = epoch_version().max(own.version.saturating_add(1));
        Message::NodeInfo(own.clone())
    }

    /// Messages for a peer that just connected: our node info and all we know.
    pub fn greeting(&self) -> Vec<Message> {
        let inner = self.lock();
        let own = self.own.lock().unwrap_or_else(|p| p.into_inner()).clone();
        std::iter::once(Message::NodeInfo(own))
            .chain(
                inner
                    .nodes
                    .values()
                    .map(|n| Message::NodeInfo(n.info.clone())),
            )
            .collect()
    }

    /// Verifies and stores node information; returns true if it was new (and must be
    /// relayed).
    pub fn accept_node_info(&self, info: &NodeInfo, trust: &TrustState, from: &str) -> bool {
        if info.origin == self.id {
            return false;
        }
        let cert = match NodeCert::from_der(&info.certificate).and_then(|c| {
            c.verify(
                &trust.ca,
                trust.crl.as_ref(),
                time::OffsetDateTime::now_utc(),
            )
        }) {
            Ok(c) => c,
            Err(e) => {
                warn!(via = %from, error = %e, "ignoring node info with an unacceptable certificate");
                return false;
            }
        };
        if node_id(cert.name()) != info.origin {
            warn!(via = %from, node = %cert.name(), "ignoring node info whose id does not match its certificate");
            return false;
        }
        {
            let inner = self.lock();
            if inner
                .nodes
                .get(&info.origin)
                .is_some_and(|n| n.info.version >= info.version)
            {
                return false;
            }
        }
        let auth = cert.authorization();
        let mut prefixes: Vec<IpNet> = auth
            .addresses
            .iter()
            .map(|a| IpNet::new(a.addr(), if a.addr().is_ipv4() { 32 } else { 128 }).unwrap_or(*a))
            .collect();
        for p in &info.prefixes {
            let Ok(net) = IpNet::new(p.addr, p.len) else {
                continue;
            };
            let allowed = auth.permits_prefix(&net);
            let net = net.trunc();
            if allowed {
                if !prefixes.contains(&net) {
                    prefixes.push(net);
                }
            } else {
                warn!(node = %cert.name(), prefix = %net, "ignoring a prefix the node's certificate does not authorize");
            }
        }
        info!(node = %cert.name(), prefixes = ?prefixes.iter().map(ToString::to_string).collect::<Vec<_>>(), "mesh node known");
        self.lock().nodes.insert(
            info.origin,
            MeshNode {
                name: cert.name().to_owned(),
                cert,
                prefixes,
                modes: info.modes,
                info: info.clone(),
            },
        );
        true
    }

    /// A routing message from neighbor `from`.
    pub fn handle_message(&self, from: NodeId, message: &Message, now_ms: u64) {
        let msg = match message {
            Message::Routes(routes) => MeshMessage::Updates(
                routes
                    .iter()
                    .map(|r| RouteUpdate {
                        dest: r.dest,
                        seqno: r.seqno,
                        metric: r.metric,
                        path: r.path.clone(),
                    })
                    .collect(),
            ),
            Message::Request { dest, seqno, hops } => MeshMessage::Request {
                dest: *dest,
                seqno: *seqno,
                hops: *hops,
            },
            _ => return,
        };
        self.lock().router.handle_message(from, msg, now_ms);
        self.notify.notify_one();
    }

    /// Brings the router up to date with the peer table (which neighbors answer, at what
    /// RTT), runs its timers, and returns the messages to send, by peer name.
    pub fn tick(&self, peers: &PeerTable, now_ms: u64) -> Vec<(String, Message)> {
        let state = peers.neighbor_state(now_ms);
        let mut inner = self.lock();
        let mut names: BTreeMap<NodeId, String> = BTreeMap::new();
        for (name, alive, rtt, loss) in &state {
            let id = node_id(name);
            names.insert(id, name.clone());
            let rtt_us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
            let cost = if *alive {
                let floor = inner
                    .rtt_floor
                    .entry(id)
                    .or_insert_with(|| WindowedMin::new(RTT_WINDOW_MS))
                    .update(now_ms, rtt_us);
                link_cost(floor, *loss)
            } else {
                inner.rtt_floor.remove(&id);
                link_cost(rtt_us, *loss)
            };
            match (inner.up.contains_key(&id), *alive) {
                (false, true) => {
                    inner.router.handle_link_up(id, cost, now_ms);
                    inner.up.insert(id, cost);
                }
                (true, false) => {
                    inner.router.handle_link_down(id, now_ms);
                    inner.up.remove(&id);
                }
                (true, true) => inner.router.handle_link_cost(id, cost, now_ms),
                (false, false) => {}
            }
        }
        let gone: Vec<NodeId> = inner
            .up
            .keys()
            .filter(|id| !names.contains_key(id))
            .copied()
            .collect();
        for id in gone {
            inner.router.handle_link_down(id, now_ms);
            inner.up.remove(&id);
        }
        inner.rtt_floor.retain(|id, _| names.contains_key(id));
        if inner.router.poll_timeout() <= now_ms {
            inner.router.handle_timeout(now_ms);
        }
        let mut out = Vec::new();
        while let Some((to, msg)) = inner.router.poll_transmit() {
            let Some(name) = names.get(&to) else {
                continue;
            };
            match msg {
                MeshMessage::Updates(updates) => {
                    let routes = updates
                        .into_iter()
                        .map(|u| RouteEntry {
                            dest: u.dest,
                            seqno: u.seqno,
                            metric: u.metric,
                            path: u.path,
                        })
                        .collect();
                    for frame in route_frames(routes) {
                        out.push((name.clone(), frame));
                    }
                }
                MeshMessage::Request { dest, seqno, hops } => {
                    out.push((name.clone(), Message::Request { dest, seqno, hops }));
                }
            }
        }
        out
    }
}

/// Seconds since the epoch: the version of a node info made now, so that a restarted
/// node's info replaces its older one.
fn epoch_version() -> u32 {
    u32::try_from(time::OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(u32::MAX)
}

/// This node's own node info.
pub fn own_info(id: NodeId, cert_der: &[u8], modes: Modes, advertise: &[IpNet]) -> NodeInfo {
    NodeInfo {
        origin: id,
        version: epoch_version(),
        modes,
        certificate: cert_der.to_vec(),
        prefixes: advertise
            .iter()
            .map(|p| Prefix {
                addr: p.addr(),
                len: p.prefix_len(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_is_sha256_prefix() {
        // SHA-256("node-a") = 3c5e...; the id is its first 8 bytes.
        let digest = ring::digest::digest(&ring::digest::SHA256, b"node-a");
        let expected = u64::from_be_bytes(digest.as_ref()[..8].try_into().unwrap());
        assert_eq!(node_id("node-a"), expected);
        assert_ne!(node_id("node-a"), node_id("node-b"));
    }
}
