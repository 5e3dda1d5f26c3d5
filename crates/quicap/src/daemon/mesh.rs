//! Glue between the routing core (`quicap-mesh`) and the running node: who the nodes of
//! the mesh are (their verified certificates and the prefixes they may claim), which
//! neighbors are up and at what cost, and the messages the router wants sent.
//!
//! Node information (certificate + claimed prefixes, signed by the certificate's key) is
//! flooded: a node sends its own and everything it knows to each new peer, and relays
//! every newer version it accepts to its other peers. A node info is accepted only if
//! its certificate verifies against the CA and CRL, names the origin, and signed it; if
//! its version is not more than [`MAX_VERSION_AHEAD_SECS`] ahead of this node's clock;
//! and each claimed prefix only if it is one of the certificate's addresses or inside
//! one of its subnets. Other claims are logged (per neighbour at powers of two) and
//! ignored, and none of them is relayed: a member cannot speak for another node.
//!
//! A node that sees its own information with a version at least as new as the one it
//! holds and other contents (a copy from before a restart, or from before its clock
//! stepped back) signs its own again with a newer version, so that the real node
//! always has the last word.
//!
//! Protocol version 1 carried node information unsigned. On a link of that version a
//! node sends what it knows unsigned and accepts unsigned information only about the
//! peer itself (which TLS authenticated), keeps it from every other link, and relays
//! it to no one.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};

use ipnet::IpNet;
use quicap_mesh::{
    link_cost, Config, Message as MeshMessage, NodeId, PrefixTable, RouteInfo, RouteUpdate, Router,
    WindowedMin,
};
use quicap_pki::cert::VerifiedCert;
use quicap_pki::{node_id, NodeCert, NodeKey, PkiError};
use quicap_wire::control::{route_frames, Modes, NodeInfo, Prefix, RouteEntry};
use quicap_wire::{Message, Quoted};
use thiserror::Error;
use tracing::{info, warn};

use super::limit::LogLimit;
use super::TrustState;

/// How far ahead of this node's clock (seconds since the epoch) a node info's version
/// may be: more than any clock error that leaves certificates usable, little enough
/// that a version cannot be put out of the real node's reach.
pub const MAX_VERSION_AHEAD_SECS: u32 = 86_400;

/// The first protocol version whose node information is signed.
pub const SIGNED_NODE_INFO_VERSION: u8 = 2;

/// A direct peer as the routing core sees it: its name, whether its preferred link
/// answers probes, the RTT to it and that link's probe loss in permille (see
/// `PeerTable::neighbor_state`).
pub type NeighborState = (String, bool, std::time::Duration, u16);

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

/// This node's own node info, signed, and the key that signs it.
#[derive(Debug)]
struct Own {
    info: NodeInfo,
    key: Arc<NodeKey>,
}

impl Own {
    /// Signs `info` and takes it as this node's own.
    fn new(mut info: NodeInfo, key: Arc<NodeKey>) -> anyhow::Result<Own> {
        sign(&mut info, &key)?;
        Ok(Own { info, key })
    }

    /// A newer version of the same information: `at_least` or later, and at least the
    /// clock's second.
    fn bump(&mut self, at_least: u32) -> anyhow::Result<Message> {
        let mut info = self.info.clone();
        info.version = epoch_version().max(at_least);
        sign(&mut info, &self.key)?;
        self.info = info;
        Ok(Message::NodeInfo(self.info.clone()))
    }
}

/// Why a node info was not accepted.
#[derive(Debug, Error)]
pub enum Refusal {
    #[error("its certificate is not acceptable: {0}")]
    Certificate(PkiError),
    #[error("its origin id is not that of the certificate's name")]
    WrongOrigin,
    #[error("its signature does not verify with the certificate's key")]
    BadSignature,
    #[error("it is unsigned, and its origin is not the neighbour that sent it")]
    UnsignedFromOther,
    #[error("its version is {0} s ahead of this node's clock")]
    TooNew(u32),
}

/// What became of a node info.
#[derive(Debug)]
pub enum Accepted {
    /// Not new (or refused, which is logged): nothing to do.
    Ignored,
    /// New: relay it to the other neighbours.
    Relay,
    /// A copy of this node's own, newer than the one it held: the node's own, signed
    /// with a newer version still, for every neighbour.
    OwnRenewed(Message),
}

/// The link a node info arrived on.
#[derive(Debug, Clone, Copy)]
pub struct Via<'a> {
    /// The neighbour's name (its certificate's).
    pub peer: &'a str,
    /// The link's protocol version.
    pub version: u8,
}

/// The mesh state of a node.
#[derive(Debug)]
pub struct Mesh {
    pub id: NodeId,
    own_name: String,
    /// This node's own node info; a new version when its certificate is renewed.
    own: Mutex<Own>,
    inner: Mutex<Inner>,
    /// Who owns which prefix, rebuilt whenever a node's accepted prefixes change.
    owners: RwLock<PrefixTable>,
    /// Refused node infos, per neighbour, for the log.
    refused: LogLimit<String>,
    pub notify: tokio::sync::Notify,
}

impl Mesh {
    /// The mesh state of node `id`, whose node info `own` is signed with `key`.
    pub fn new(
        id: NodeId,
        own_name: String,
        own: NodeInfo,
        key: Arc<NodeKey>,
        now_ms: u64,
    ) -> anyhow::Result<Mesh> {
        Ok(Mesh {
            id,
            own_name,
            own: Mutex::new(Own::new(own, key)?),
            inner: Mutex::new(Inner {
                router: Router::new(id, Config::default(), now_ms),
                nodes: BTreeMap::new(),
                up: BTreeMap::new(),
                rtt_floor: BTreeMap::new(),
            }),
            owners: RwLock::new(PrefixTable::default()),
            refused: LogLimit::default(),
            notify: tokio::sync::Notify::new(),
        })
    }

    fn own(&self) -> std::sync::MutexGuard<'_, Own> {
        self.own.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Each method leaves the state consistent before it can panic.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The node owning the longest prefix that contains `destination`, other than us:
    /// a lookup in the snapshot of the accepted prefixes, no lock on the mesh state.
    pub fn owner(&self, destination: IpAddr) -> Option<NodeId> {
        self.owners
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .lookup(destination)
    }

    /// Rebuilds the snapshot [`Mesh::owner`] reads from the nodes' accepted prefixes.
    fn rebuild_owners(&self, inner: &Inner) {
        let table = PrefixTable::new(
            inner
                .nodes
                .iter()
                .filter(|(id, _)| **id != self.id)
                .flat_map(|(id, n)| n.prefixes.iter().map(|p| (p.addr(), p.prefix_len(), *id))),
        );
        *self.owners.write().unwrap_or_else(|p| p.into_inner()) = table;
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

    /// Replaces the certificate (and key) in this node's own node info, under a newer
    /// version (seconds since the epoch, or one more than before), and returns the
    /// message for every peer.
    pub fn renew_own(&self, cert_der: &[u8], key: Arc<NodeKey>) -> anyhow::Result<Message> {
        let mut own = self.own();
        let mut renewed = Own {
            info: NodeInfo {
                certificate: cert_der.to_vec(),
                ..own.info.clone()
            },
            key,
        };
        let message = renewed.bump(own.info.version.saturating_add(1))?;
        *own = renewed;
        Ok(message)
    }

    /// Messages for a peer that just connected: our node info and all we know that
    /// its origin signed.
    pub fn greeting(&self) -> Vec<Message> {
        let inner = self.lock();
        let own = self.own().info.clone();
        std::iter::once(Message::NodeInfo(own))
            .chain(
                inner
                    .nodes
                    .values()
                    .filter(|n| !n.info.signature.is_empty())
                    .map(|n| Message::NodeInfo(n.info.clone())),
            )
            .collect()
    }

    /// Verifies and stores node information that arrived `via` a neighbour's link.
    pub fn accept_node_info(&self, info: &NodeInfo, trust: &TrustState, via: Via<'_>) -> Accepted {
        if info.origin == self.id {
            return self.own_seen(info, via);
        }
        let cert = match self.check(info, trust, via, time::OffsetDateTime::now_utc()) {
            Ok(cert) => cert,
            Err(refusal) => {
                if let Some(refused) = self.refused.hit(via.peer.to_owned()) {
                    let claimed = NodeCert::from_der(&info.certificate).map(|c| c.name);
                    warn!(
                        via = %via.peer,
                        origin = %info.origin,
                        claimed_name_unverified = %Quoted(claimed.as_deref().unwrap_or("?")),
                        version = info.version,
                        reason = %refusal,
                        refused,
                        "ignoring node info"
                    );
                }
                return Accepted::Ignored;
            }
        };
        {
            let inner = self.lock();
            if inner
                .nodes
                .get(&info.origin)
                .is_some_and(|n| n.info.version >= info.version)
            {
                return Accepted::Ignored;
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
        let signed = !info.signature.is_empty();
        let mut inner = self.lock();
        let changed = inner
            .nodes
            .get(&info.origin)
            .is_none_or(|n| n.prefixes != prefixes);
        inner.nodes.insert(
            info.origin,
            MeshNode {
                name: cert.name().to_owned(),
                cert,
                prefixes,
                modes: info.modes,
                info: info.clone(),
            },
        );
        if changed {
            self.rebuild_owners(&inner);
        }
        drop(inner);
        if signed {
            Accepted::Relay
        } else {
            Accepted::Ignored
        }
    }

    /// The checks of [`Mesh::accept_node_info`] that make a node info acceptable at all.
    fn check(
        &self,
        info: &NodeInfo,
        trust: &TrustState,
        via: Via<'_>,
        now: time::OffsetDateTime,
    ) -> Result<VerifiedCert, Refusal> {
        let cert = NodeCert::from_der(&info.certificate)
            .and_then(|c| c.verify(&trust.ca, trust.crl.as_ref(), now))
            .map_err(Refusal::Certificate)?;
        if node_id(cert.name()) != info.origin {
            return Err(Refusal::WrongOrigin);
        }
        let clock = u32::try_from(now.unix_timestamp()).unwrap_or(u32::MAX);
        if too_far_ahead(info.version, clock) {
            return Err(Refusal::TooNew(info.version - clock));
        }
        if info.signature.is_empty() {
            // Only protocol version 1 sends node information unsigned, and only the
            // neighbour itself is then an authority on it.
            if via.version >= SIGNED_NODE_INFO_VERSION || node_id(via.peer) != info.origin {
                return Err(Refusal::UnsignedFromOther);
            }
            return Ok(cert);
        }
        let payload = info.signed_payload().map_err(|_| Refusal::BadSignature)?;
        cert.verify_signature(&payload, &info.signature)
            .map_err(|_| Refusal::BadSignature)?;
        Ok(cert)
    }

    /// A node info of this node's own came back: if it is at least as new as the one
    /// in force and says something else, ours gets a newer version still.
    fn own_seen(&self, info: &NodeInfo, via: Via<'_>) -> Accepted {
        let mut own = self.own();
        let same = |a: &NodeInfo, b: &NodeInfo| {
            (a.version, a.modes, &a.certificate, &a.prefixes)
                == (b.version, b.modes, &b.certificate, &b.prefixes)
        };
        if info.version < own.info.version || same(info, &own.info) {
            return Accepted::Ignored;
        }
        // Only a copy we signed ourselves counts: anything else would let a member
        // make this node re-sign and flood at will.
        let signed_by_us = info.signed_payload().is_ok_and(|payload| {
            quicap_pki::signature::verify(&own.key.spki_der(), &payload, &info.signature).is_ok()
        });
        if !signed_by_us || too_far_ahead(info.version, epoch_version()) {
            return Accepted::Ignored;
        }
        match own.bump(info.version.saturating_add(1)) {
            Ok(message) => {
                info!(
                    via = %via.peer,
                    seen = info.version,
                    version = own.info.version,
                    "an older copy of this node's information went round with a newer version; sending ours again, newer still"
                );
                Accepted::OwnRenewed(message)
            }
            Err(e) => {
                warn!(error = %format!("{e:#}"), "could not sign this node's information");
                Accepted::Ignored
            }
        }
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

    /// Brings the router up to date with the direct peers' `state` (which answer, at
    /// what RTT), runs its timers, and returns the messages to send, by peer name.
    pub fn tick(&self, state: &[NeighborState], now_ms: u64) -> Vec<(String, Message)> {
        let mut inner = self.lock();
        let mut names: BTreeMap<NodeId, String> = BTreeMap::new();
        for (name, alive, rtt, loss) in state {
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

/// Whether a node info's `version` is more than [`MAX_VERSION_AHEAD_SECS`] ahead of
/// `clock` (seconds since the epoch).
fn too_far_ahead(version: u32, clock: u32) -> bool {
    version > clock.saturating_add(MAX_VERSION_AHEAD_SECS)
}

/// Signs `info` with `key` (the key of the certificate it carries).
fn sign(info: &mut NodeInfo, key: &NodeKey) -> anyhow::Result<()> {
    let payload = info.signed_payload()?;
    info.signature = key.sign(&payload)?;
    Ok(())
}

/// This node's own node info, not yet signed.
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
        signature: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quicap_pki::{Authorization, Ca, NodeRequest, ParsedCsr, SignRequest};

    /// A CA and certificates of the nodes it signed, with their keys.
    struct TestNet {
        trust: TrustState,
        certs: BTreeMap<&'static str, (Vec<u8>, String)>,
    }

    impl TestNet {
        /// node-a may route 10.99.0.0/24; node-b and node-m have addresses only.
        fn new() -> TestNet {
            let now = time::OffsetDateTime::now_utc();
            let files = Ca::create("mesh-test", now, 2, &mut rand::rng()).unwrap();
            let ca = Ca::load(&files.cert_pem, &files.key_pem).unwrap();
            let mut certs = BTreeMap::new();
            for (i, name) in ["node-a", "node-b", "node-m"].into_iter().enumerate() {
                let req = NodeRequest::generate(name).unwrap();
                let csr = ParsedCsr::from_pem(&req.csr_pem).unwrap();
                let subnets = if name == "node-a" {
                    vec!["10.99.0.0/24".parse().unwrap()]
                } else {
                    Vec::new()
                };
                let auth = Authorization {
                    addresses: vec![format!("10.77.0.{}/24", i + 1).parse().unwrap()],
                    subnets,
                    egress: false,
                };
                let sign = SignRequest::from_csr(
                    &csr,
                    None,
                    auth,
                    now - time::Duration::hours(1),
                    now + time::Duration::days(1),
                )
                .unwrap();
                let pem = ca.sign(&sign, &mut rand::rng()).unwrap();
                certs.insert(name, (NodeCert::from_pem(&pem).unwrap().der, req.key_pem));
            }
            let trust = TrustState {
                rustls: super::super::identity::trust_of(ca.cert(), None),
                ca: ca.cert().clone(),
                crl: None,
            };
            TestNet { trust, certs }
        }

        fn key(&self, name: &str) -> NodeKey {
            NodeKey::from_pem(&self.certs[name].1).unwrap()
        }

        /// `name`'s node info claiming `prefixes` at `version`, signed by `signer`.
        fn info(&self, name: &str, version: u32, prefixes: &[&str], signer: &str) -> NodeInfo {
            let nets: Vec<IpNet> = prefixes.iter().map(|p| p.parse().unwrap()).collect();
            let mut info = own_info(node_id(name), &self.certs[name].0, Modes::default(), &nets);
            info.version = version;
            sign(&mut info, &self.key(signer)).unwrap();
            info
        }

        /// The mesh state of node-b.
        fn mesh(&self) -> Mesh {
            let own = own_info(
                node_id("node-b"),
                &self.certs["node-b"].0,
                Modes::default(),
                &[],
            );
            Mesh::new(
                node_id("node-b"),
                "node-b".into(),
                own,
                Arc::new(self.key("node-b")),
                0,
            )
            .unwrap()
        }
    }

    const FROM_M: Via<'static> = Via {
        peer: "node-m",
        version: 2,
    };

    fn prefixes_of(mesh: &Mesh, name: &str) -> Vec<String> {
        mesh.prefixes(node_id(name))
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_members_forgery_of_another_nodes_info_changes_nothing() {
        let net = TestNet::new();
        let mesh = net.mesh();
        let now = epoch_version();
        let real = net.info("node-a", now, &["10.99.0.0/24"], "node-a");
        assert!(matches!(
            mesh.accept_node_info(&real, &net.trust, FROM_M),
            Accepted::Relay
        ));
        let want = ["10.77.0.1/32", "10.99.0.0/24"];
        assert_eq!(prefixes_of(&mesh, "node-a"), want);

        let forged = net.info("node-a", now + 100, &[], "node-m");
        let mut unsigned = forged.clone();
        unsigned.signature.clear();
        let mut changed = real.clone();
        changed.prefixes.clear();
        changed.version += 1;
        let far_ahead = net.info("node-a", now + MAX_VERSION_AHEAD_SECS + 60, &[], "node-a");
        for bad in [forged, unsigned, changed, far_ahead] {
            assert!(matches!(
                mesh.accept_node_info(&bad, &net.trust, FROM_M),
                Accepted::Ignored
            ));
            assert_eq!(prefixes_of(&mesh, "node-a"), want, "{bad:?}");
        }
        let subnet_host = "10.99.0.7".parse().unwrap();
        assert_eq!(mesh.owner(subnet_host), Some(node_id("node-a")));
    }

    #[test]
    fn a_replayed_older_info_loses_to_the_newer() {
        let net = TestNet::new();
        let mesh = net.mesh();
        let now = epoch_version();
        let old = net.info("node-a", now - 10, &["10.99.0.0/24"], "node-a");
        let new = net.info("node-a", now, &[], "node-a");
        assert!(matches!(
            mesh.accept_node_info(&old, &net.trust, FROM_M),
            Accepted::Relay
        ));
        assert!(matches!(
            mesh.accept_node_info(&new, &net.trust, FROM_M),
            Accepted::Relay
        ));
        assert!(matches!(
            mesh.accept_node_info(&old, &net.trust, FROM_M),
            Accepted::Ignored
        ));
        assert_eq!(prefixes_of(&mesh, "node-a"), ["10.77.0.1/32"]);
        assert_eq!(
            mesh.owner("10.99.0.7".parse().unwrap()),
            None,
            "the table follows"
        );
        let host = "10.77.0.1".parse().unwrap();
        assert_eq!(mesh.owner(host), Some(node_id("node-a")));
    }

    #[test]
    fn unsigned_info_counts_only_from_its_origin_on_a_version_1_link() {
        let net = TestNet::new();
        let mesh = net.mesh();
        let mut info = net.info("node-a", epoch_version(), &["10.99.0.0/24"], "node-a");
        info.signature.clear();
        let from_a_v2 = Via {
            peer: "node-a",
            version: 2,
        };
        let from_m_v1 = Via {
            peer: "node-m",
            version: 1,
        };
        for via in [from_a_v2, from_m_v1] {
            mesh.accept_node_info(&info, &net.trust, via);
            assert!(prefixes_of(&mesh, "node-a").is_empty(), "{via:?}");
        }
        let from_a_v1 = Via {
            peer: "node-a",
            version: 1,
        };
        assert!(
            matches!(
                mesh.accept_node_info(&info, &net.trust, from_a_v1),
                Accepted::Ignored
            ),
            "stored but relayed to no one"
        );
        assert_eq!(
            prefixes_of(&mesh, "node-a"),
            ["10.77.0.1/32", "10.99.0.0/24"]
        );
        assert_eq!(
            mesh.greeting().len(),
            1,
            "not passed on to new peers either"
        );
    }

    #[test]
    fn a_newer_copy_of_its_own_info_makes_a_node_sign_a_newer_one() {
        let net = TestNet::new();
        let mesh = net.mesh();
        let ours = mesh.own().info.version;
        let copy = net.info("node-b", ours + 5, &[], "node-b");
        let forged = net.info("node-b", ours + 5, &[], "node-m");
        assert!(matches!(
            mesh.accept_node_info(&forged, &net.trust, FROM_M),
            Accepted::Ignored
        ));
        assert_eq!(mesh.own().info.version, ours);
        let Accepted::OwnRenewed(Message::NodeInfo(renewed)) =
            mesh.accept_node_info(&copy, &net.trust, FROM_M)
        else {
            panic!("own info not renewed");
        };
        assert!(renewed.version > copy.version);
        let payload = renewed.signed_payload().unwrap();
        quicap_pki::signature::verify(&net.key("node-b").spki_der(), &payload, &renewed.signature)
            .unwrap();
        assert!(matches!(
            mesh.accept_node_info(&copy, &net.trust, FROM_M),
            Accepted::Ignored
        ));
    }
}
