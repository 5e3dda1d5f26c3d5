//! The node daemon (`quicap up`): a tokio shell that wires the interfaces, the
//! listeners (QUIC and TLS/TCP) and the peer table together. Each file has one role:
//!
//! ```text
//!            +------------------------- Node -------------------------+
//!  TUN ----> | datapath::tun_to_peers -> route / PeerTable -----------| --> links (QUIC
//!  TAP ----> | datapath::tap_to_peers -> MacTable / flood to L2 peers -| -->  datagrams,
//!  TUN/TAP <-| session::receive_datagrams (IP source checked) <-------| <--  TCP records)
//!            | dialer: each dialed peer's link core, fed by sessions  |
//!            | dial: the cores' drivers; QUIC, TCP and relayed dials  |
//!            | accept: one loop per QUIC endpoint and TCP listener    |
//!            | session: hello, control loop, probes, goodbye          |
//!            | routing: the routing core's driver, relay next hops    |
//!            | watchers (expiry, CRL), renew, carrier task, control   |
//!            +--------------------------------------------------------+
//! ```
//!
//! The files depend on each other in one direction: session on datapath, dialer, mesh
//! and peers; datapath on peers; dial on session; none of those back. Dialing and the
//! transport choice, the link ranking, liveness, relayed dials and routes are decided
//! in `quicap_mesh`; the peer table still closes superseded relayed links and links of
//! a renewed certificate itself. `Node` holds the state they all share.
mod accept;
mod admission;
mod control;
pub mod datapath;
mod dial;
mod dialer;
mod frames;
mod held;
pub mod identity;
mod l2;
mod limit;
mod members;
pub mod mesh;
mod peers;
mod refusal;
mod renew;
mod routing;
mod scheduling;
mod session;
mod watchers;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use quicap_mesh::relayed::RelayedDials;
use quicap_pki::cert::CaCert;
use quicap_pki::Crl;
use quicap_wire::control::Modes;
use quicap_wire::NodeId;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use crate::camouflage;
use crate::config::{self, Config, PeerTransport, SiteContent};
use crate::device::{Interface, Kind, Netlink, Spec};
use crate::relay::{RelayCounters, RelayTable};
use crate::tls::{Identity, RefusalSlot, Tls, Trust};
use crate::transport;

use crate::link::CloseCode;
use l2::MacTable;
use peers::PeerTable;

const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Knobs of `quicap up` that are not in the config file.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Protocol versions to offer; only changed to test version negotiation.
    pub versions: RangeInclusive<u8>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            versions: quicap_wire::PROTOCOL_VERSIONS,
        }
    }
}

/// What the node currently trusts; replaced as a whole when the CRL file changes.
#[derive(Debug, Clone)]
pub struct TrustState {
    pub ca: CaCert,
    pub crl: Option<Crl>,
    pub rustls: Trust,
}

/// This node's certificate and the key that goes with it.
#[derive(Debug)]
struct Own {
    identity: Identity,
    cert: quicap_pki::NodeCert,
    /// The certificate's key: it signs this node's node info and, in camouflage
    /// mode, its proofs of identity.
    key: Arc<quicap_pki::NodeKey>,
}

/// The wait until the next multiple of `period` on the wall clock (at least 1 ms).
/// The timers an idle node runs (its links' idle probes, the routing core's idle pace,
/// the scheduling governor's idle samples) wait for such boundaries, so that they fire
/// together, in one wake-up, and two idle peers' probes cross each other at the same
/// moment rather than each waking the other at its own.
pub(crate) fn aligned_pause(period: std::time::Duration) -> std::time::Duration {
    let (period_ms, now_ms) = (millis(period).max(1), wall_ms());
    std::time::Duration::from_millis((period_ms - now_ms % period_ms).max(1))
}

/// Milliseconds of the wall clock since the Unix epoch (0 before it).
fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, millis)
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `pause`, lengthened to end just after the next multiple of `period` on the wall
/// clock that follows it: a deadline an idle node can meet late, met when the aligned
/// timers (see [`aligned_pause`]) and the probe answers they bring have run.
pub(crate) fn aligned_after(
    pause: std::time::Duration,
    period: std::time::Duration,
) -> std::time::Duration {
    /// After the boundary: the idle probes' answers arrive within it.
    const SLACK: std::time::Duration = std::time::Duration::from_millis(20);
    let (period_ms, now_ms) = (millis(period).max(1), wall_ms());
    let due = now_ms.saturating_add(millis(pause));
    let boundary = due.div_ceil(period_ms).saturating_mul(period_ms);
    std::time::Duration::from_millis(boundary - now_ms) + SLACK
}

/// Shared state of a running node.
pub struct Node {
    pub name: String,
    pub mtu: u16,
    pub modes: Modes,
    pub versions: RangeInclusive<u8>,
    /// Drawn at start and sent on every connection (control message Instance): two
    /// connections of one peer name with different values are two running nodes with
    /// the same certificate. Never 0.
    pub instance: u64,
    /// `tap.check-sources`: frames from a node must carry a source address its
    /// certificate authorizes.
    pub tap_check_sources: bool,
    /// This node's certificate and key; replaced when their files change (see
    /// [`renew`]).
    own: RwLock<Own>,
    /// How many times `own` was replaced: links record it (`peers::Link::generation`)
    /// to tell those made with the current certificate.
    pub generation: std::sync::atomic::AtomicU64,
    trust: RwLock<TrustState>,
    /// The TLS verifiers and certified key of `trust` and `own`, shared by the configs
    /// of all connections.
    tls: RwLock<Arc<Tls>>,
    /// Certificates refused, for the log.
    refusals: refusal::Refusals,
    /// Which incoming handshakes are taken on (Retry, per-source budgets).
    admission: Mutex<admission::Admission>,
    /// Seals this node's Retry tokens.
    token_key: transport::TokenKey,
    transport: Arc<quinn::TransportConfig>,
    /// Transport parameters of end-to-end connections carried in relay frames.
    transport_relayed: Arc<quinn::TransportConfig>,
    /// Camouflage mode: the web fronts every direct connection meets, and their
    /// transport parameters.
    front: Option<Arc<camouflage::Front>>,
    transport_web: Arc<quinn::TransportConfig>,
    pub peers: PeerTable,
    pub mesh: mesh::Mesh,
    pub macs: MacTable,
    pub tun: Option<Interface>,
    pub tap: Option<Interface>,
    endpoints: Vec<quinn::Endpoint>,
    /// Where relay frames go; shared by the endpoints' sockets.
    pub relays: Arc<RelayTable>,
    /// Relay frame counters, one per endpoint.
    pub relay_counters: Vec<Arc<RelayCounters>>,
    /// Drops at the endpoints' own UDP sockets, which the scheduling governor tells
    /// apart from drops at other programs' sockets.
    pub socket_drops: transport::SocketDrops,
    epoch: Instant,
    /// A link whose probes have gone unanswered this long is closed.
    pub dead_after_ms: u64,
    no_carrier: bool,
    carrier: watch::Sender<bool>,
    scheduling: scheduling::Scheduling,
    /// When to dial end-to-end relayed links; the relay dialer carries them out.
    relayed: Mutex<RelayedDials>,
    relay_wake: tokio::sync::Notify,
    /// Packets for nodes that are no neighbours, waiting for a link to them.
    pub held: held::Held,
    /// The link cores of the peers this node dials, by name.
    dialers: dialer::Dialers,
    /// How this node dials its camouflaged peers, by name.
    web_dials: HashMap<String, Arc<camouflage::client::WebDial>>,
    dial_errors: dial::DialErrors,
    /// What the proxy listeners and the egress did.
    pub proxy: crate::proxy::ProxyCounters,
    /// Where the UDP payloads of proxied associations that links bring go.
    pub udp: crate::proxy::udp::UdpFlows,
    /// The flows open with each peer (which relayed links they keep).
    pub flow_peers: Arc<crate::proxy::FlowPeers>,
    /// Woken when a peer connects or goes (the certificate expiry watch).
    peers_moved: tokio::sync::Notify,
    /// Woken when a link that was idle carries tunnel traffic again (the scheduling
    /// governor, asleep while the node is idle).
    pub traffic_resumed: tokio::sync::Notify,
    /// The proxy listeners, as `quicap status` names them.
    proxy_listeners: Vec<String>,
    /// Where flows of other nodes may leave the mesh here (`[egress]`).
    pub egress: Option<crate::config::EgressSection>,
    /// The MASQUE proxy of the HTTP/3 front (`[masque]`).
    pub masque: Option<crate::masque::Masque>,
    /// Set when the node cannot go on (its interface was removed): `run` then stops
    /// as on SIGTERM and exits with this error.
    fatal: watch::Sender<Option<String>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Node {
    pub fn trust(&self) -> TrustState {
        self.trust.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The certificate and key this node presents in new handshakes.
    pub fn identity(&self) -> Identity {
        self.own
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .identity
            .clone()
    }

    /// This node's certificate and its key, as one pair.
    pub fn own_key(&self) -> (quicap_pki::NodeCert, Arc<quicap_pki::NodeKey>) {
        let own = self.own.read().unwrap_or_else(|p| p.into_inner());
        (own.cert.clone(), own.key.clone())
    }

    /// This node's certificate.
    pub fn own_cert(&self) -> quicap_pki::NodeCert {
        self.own
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .cert
            .clone()
    }

    fn proxy_status(&self) -> crate::status::ProxyStatus {
        use quicap_wire::socks::Reply;
        let p = &self.proxy;
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        crate::status::ProxyStatus {
            listeners: self.proxy_listeners.clone(),
            flows: load(&p.flows),
            active: load(&p.active),
            failed: p
                .failed
                .iter()
                .enumerate()
                .filter(|(_, n)| load(n) > 0)
                .map(|(code, n)| {
                    let code = u8::try_from(code).unwrap_or(1);
                    (Reply::from_code(code).as_str().to_owned(), load(n))
                })
                .collect(),
            bad_requests: load(&p.bad_requests),
            egress: self.egress.is_some() && self.own_cert().authorization.egress,
            egress_flows: load(&p.egress_flows),
            egress_refused: load(&p.egress_refused),
        }
    }

    /// Asks for an end-to-end relayed connection to `dest`, a node reached through
    /// others; the relayed-dial core ([`RelayedDials`]) paces the dials.
    pub fn want_relayed(&self, dest: NodeId, now_ms: u64) {
        if self.relayed_dials().handle_wanted(dest, now_ms) {
            self.relay_wake.notify_one();
        }
    }

    fn relayed_dials(&self) -> std::sync::MutexGuard<'_, RelayedDials> {
        self.relayed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Milliseconds since the node started: the clock of liveness and MAC ageing.
    /// Takes a packet for a CONNECT-IP client of this node (false: not for one).
    pub fn masque_deliver(&self, destination: std::net::IpAddr, packet: &[u8]) -> bool {
        self.masque
            .as_ref()
            .is_some_and(|m| m.pool.deliver(destination, packet))
    }

    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Transport parameters for a connection with `remote`: the relayed ones when it
    /// is a relayed node's virtual address.
    fn transport_for(&self, remote: SocketAddr) -> Arc<quinn::TransportConfig> {
        if self.relays.node_at(remote).is_some() {
            self.transport_relayed.clone()
        } else {
            self.transport.clone()
        }
    }

    fn admission(&self) -> std::sync::MutexGuard<'_, admission::Admission> {
        self.admission.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tls(&self) -> Arc<Tls> {
        self.tls.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The QUIC client config of a dial to `remote`; a refusal of the certificate it
    /// presents is recorded in `refusal`.
    fn client_config(
        &self,
        remote: SocketAddr,
        refusal: RefusalSlot,
    ) -> Result<quinn::ClientConfig> {
        transport::quic_client(self.tls().client(refusal), self.transport_for(remote))
    }

    /// The QUIC server config of an incoming connection from `remote`; a refusal of the
    /// certificate it presents is recorded in `refusal`.
    fn server_config(
        &self,
        remote: SocketAddr,
        refusal: RefusalSlot,
    ) -> Result<quinn::ServerConfig> {
        if let Some(front) = self.front_for(remote) {
            return transport::quic_server(
                front.quic_tls(),
                self.transport_web.clone(),
                self.token_key.clone(),
            );
        }
        transport::quic_server(
            self.tls().server(refusal),
            self.transport_for(remote),
            self.token_key.clone(),
        )
    }

    /// The web front a connection from `remote` meets: in camouflage mode, every one
    /// but the end-to-end connections carried in relay frames, which only nodes of the
    /// mesh can reach.
    fn front_for(&self, remote: SocketAddr) -> Option<&Arc<camouflage::Front>> {
        self.front
            .as_ref()
            .filter(|_| self.relays.node_at(remote).is_none())
    }

    /// The server config endpoints start handshakes with unless the accept path picks
    /// another.
    fn default_server_config(&self, tls: &Tls) -> Result<quinn::ServerConfig> {
        match &self.front {
            Some(front) => transport::quic_server(
                front.quic_tls(),
                self.transport_web.clone(),
                self.token_key.clone(),
            ),
            None => transport::quic_server(
                tls.server(RefusalSlot::default()),
                self.transport.clone(),
                self.token_key.clone(),
            ),
        }
    }

    /// Stops the node with `reason` as its error (see the `fatal` field); the first reason
    /// wins.
    pub fn fail(&self, reason: String) {
        self.fatal.send_if_modified(|f| {
            if f.is_some() {
                return false;
            }
            error!(%reason, "stopping");
            *f = Some(reason);
            true
        });
    }

    /// Makes new handshakes, both ways, use `identity` and trust `trust`.
    fn set_tls(&self, trust: &Trust, identity: &Identity) -> Result<()> {
        let tls = Tls::new(trust, identity)?;
        let server = self.default_server_config(&tls)?;
        for endpoint in &self.endpoints {
            endpoint.set_server_config(Some(server.clone()));
        }
        *self.tls.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(tls);
        Ok(())
    }

    /// Called after every change of the peer table with the number of connected peers.
    pub fn peers_changed(&self, connected: usize) {
        self.peers_moved.notify_one();
        if self.no_carrier {
            self.carrier.send_if_modified(|on| {
                let want = connected > 0;
                let changed = *on != want;
                *on = want;
                changed
            });
        }
    }

    fn interfaces(&self) -> impl Iterator<Item = &Interface> {
        self.tun.iter().chain(self.tap.iter())
    }

    /// Relay frames this node forwarded for other nodes so far.
    pub fn relay_forwarded(&self) -> u64 {
        self.relay_status().forwarded
    }

    fn relay_status(&self) -> crate::status::RelayStatus {
        use std::sync::atomic::Ordering::Relaxed;
        let mut r = crate::status::RelayStatus::default();
        for c in &self.relay_counters {
            r.forwarded += c.forwarded.load(Relaxed);
            r.delivered += c.delivered.load(Relaxed);
            r.originated += c.originated.load(Relaxed);
            r.dropped += c.dropped.load(Relaxed);
        }
        r
    }

    /// Peers (with `relayed_only`, those with a relayed link) that the mesh routes
    /// through another node rather than over a direct link.
    pub fn routed_around(&self, relayed_only: bool) -> Vec<NodeId> {
        self.peers
            .ids(relayed_only)
            .into_iter()
            .filter(|&id| self.mesh.next_hop(id).is_some_and(|hop| hop != id))
            .collect()
    }

    /// The report `quicap status` prints.
    pub fn status(&self) -> crate::status::Status {
        let carrier = *self.carrier.borrow();
        crate::status::Status {
            version: crate::status::STATUS_VERSION,
            node: self.name.clone(),
            uptime_secs: self.epoch.elapsed().as_secs(),
            mode: if self.front.is_some() {
                crate::config::Mode::Camouflage
            } else {
                crate::config::Mode::Private
            }
            .as_str()
            .into(),
            scheduling: self.scheduling.describe(),
            interfaces: self
                .interfaces()
                .map(|i| crate::status::InterfaceStatus {
                    name: i.spec.name.clone(),
                    kind: i.spec.kind.as_str().into(),
                    addresses: i.spec.addresses.iter().map(ToString::to_string).collect(),
                    mtu: i.spec.mtu,
                    carrier,
                })
                .collect(),
            peers: {
                let now = self.now_ms();
                let mut peers = self.peers.snapshot(now, &self.routed_around(false));
                for p in &mut peers {
                    if let Some(d) = self.dialers.get(&p.name) {
                        let c = d.choice(now);
                        p.transport = c.transport.map_or("none", |t| t.as_str()).into();
                        p.transport_why = c.why.into();
                    }
                }
                peers
            },
            routes: self
                .mesh
                .routes()
                .into_iter()
                .map(|r| {
                    let name = |id| self.mesh.name_of(id).unwrap_or_else(|| id.to_string());
                    let (dest, hop) = (name(r.dest), name(r.next_hop));
                    let path = std::iter::once(self.name.clone())
                        .chain(r.path.iter().map(|id| name(*id)))
                        .collect();
                    crate::status::RouteStatus {
                        destination: dest,
                        next_hop: hop,
                        metric: r.metric,
                        path,
                        prefixes: self
                            .mesh
                            .prefixes(r.dest)
                            .iter()
                            .map(ToString::to_string)
                            .collect(),
                    }
                })
                .collect(),
            relay: self.relay_status(),
            held: self.held.status(),
            proxy: self.proxy_status(),
            masque: self.masque.as_ref().map(|m| m.status()),
            handshakes: {
                let a = self.admission();
                crate::status::HandshakeStatus {
                    retried: a.retried,
                    ignored: a.ignored,
                }
            },
            certificate: {
                let cert = self.own_cert();
                Some(crate::status::CertificateStatus {
                    serial: cert.serial_hex(),
                    valid_until: quicap_pki::fmt_time(&cert.not_after),
                })
            },
        }
    }
}

/// What a node with `config` and `cert` should be warned about at startup (and
/// `quicap up --check` prints): a certificate that expires within 14 days, prefixes
/// of `node.advertise` the certificate does not authorize (peers ignore them).
fn startup_warnings(config: &Config, cert: &quicap_pki::NodeCert) -> Vec<String> {
    let expiring = days_left(cert).filter(|d| *d < 14).map(|days| {
        format!("the certificate expires in {days} days (renew it with quicap ca sign)")
    });
    let unauthorized = config
        .node
        .advertise
        .iter()
        .filter(|p| !cert.authorization.permits_prefix(p))
        .map(|p| {
            format!("node.advertise {p} is not in the certificate's subnets; peers will ignore it (quicap ca sign --subnet)")
        });
    let egress = (config.egress.is_some() && !cert.authorization.egress).then(|| {
        "[egress] is set but the certificate grants no egress; flows of other nodes are refused (quicap ca sign --egress)".to_owned()
    });
    let masque = config
        .masque
        .iter()
        .flat_map(|m| m.addresses.iter())
        .filter(|p| !cert.authorization.permits_prefix(p))
        .map(|p| {
            format!("masque.addresses {p} is not in the certificate's subnets; peers will drop CONNECT-IP clients' packets (quicap ca sign --subnet)")
        });
    expiring
        .into_iter()
        .chain(unauthorized)
        .chain(egress)
        .chain(masque)
        .collect()
}

/// What `quicap up --check` prints: the checks `run` makes before it touches the
/// network, passed, and what the node would run with. Errors as `run` would.
pub fn check(path: &std::path::Path, config: &Config) -> Result<String> {
    use std::fmt::Write;
    let now = time::OffsetDateTime::now_utc();
    let loaded = identity::load(config, now)?;
    let mut out = String::new();
    let cert = &loaded.cert;
    let _ = writeln!(out, "{}: OK", path.display());
    let _ = writeln!(
        out,
        "node {}: certificate serial {}, valid until {} ({} days), issued by {:?}{}",
        cert.name,
        cert.serial_hex(),
        quicap_pki::fmt_time(&cert.not_after),
        days_left(cert).unwrap_or(0),
        loaded.ca.name,
        match &loaded.crl {
            Some(crl) => format!(
                ", CRL number {} ({} revoked)",
                crl.number,
                crl.revoked.len()
            ),
            None => ", no CRL".to_owned(),
        }
    );
    if let Some(t) = &config.tun {
        let addrs: Vec<String> = t.addresses.iter().map(ToString::to_string).collect();
        let _ = writeln!(out, "tun {} (mtu {}): {}", t.name, t.mtu, addrs.join(" "));
    }
    if let Some(t) = &config.tap {
        let addrs: Vec<String> = t.addresses.iter().map(ToString::to_string).collect();
        let _ = writeln!(out, "tap {} (mtu {}): {}", t.name, t.mtu, addrs.join(" "));
    }
    let listen: Vec<String> = config.node.listen.iter().map(ToString::to_string).collect();
    let peers: Vec<String> = config
        .peers
        .iter()
        .map(|p| match &p.endpoint {
            Some(e) => format!(
                "{} at {e}{}",
                p.name,
                match p.transport {
                    PeerTransport::Auto => "",
                    PeerTransport::Quic => " over QUIC only",
                    PeerTransport::Tcp => " over TCP",
                }
            ),
            None => format!("{} (dials in)", p.name),
        })
        .collect();
    let _ = writeln!(
        out,
        "listen {}; peers: {}",
        listen.join(" "),
        if peers.is_empty() {
            "none configured".to_owned()
        } else {
            peers.join(", ")
        }
    );
    if let Some(web) = &config.web {
        let front = camouflage::Front::load(web, &config.node)?;
        let _ = writeln!(
            out,
            "camouflage: a web site for {} ({})",
            front.certs.names().join(" "),
            match &web.content {
                SiteContent::Files(root) => format!("files of {}", root.display()),
                SiteContent::Builtin => "the built-in page".to_owned(),
                SiteContent::Upstream { url, .. } => format!("a reverse proxy to {url}"),
            }
        );
    }
    for (name, dial) in web_dials(config)? {
        let _ = writeln!(
            out,
            "camouflaged peer {name}: dialed as a web client of {}",
            dial.host
        );
    }
    for warning in startup_warnings(config, cert) {
        let _ = writeln!(out, "warning: {warning}");
    }
    Ok(out)
}

/// How this node dials each camouflaged peer it dials, checked at startup.
fn web_dials(config: &Config) -> Result<HashMap<String, Arc<camouflage::client::WebDial>>> {
    config
        .peers
        .iter()
        .filter(|p| p.mode == config::Mode::Camouflage)
        .filter_map(|p| Some((p, p.endpoint.as_deref()?)))
        .map(|(p, endpoint)| {
            let dial = camouflage::client::WebDial::new(&p.web, endpoint)
                .with_context(|| format!("peer {}", p.name))?;
            Ok((p.name.clone(), Arc::new(dial)))
        })
        .collect()
}

/// Takes the open-file limit up to its hard limit: every proxied flow holds a socket
/// at each end (a soft limit of 1024 would stop a node at a few hundred), as Go's
/// runtime does for its programs.
fn raise_descriptor_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => debug!(from = soft, to = hard, "open-file limit raised"),
            Err(e) => debug!(error = %e, "open-file limit not raised"),
        }
    }
}

/// Runs a node until SIGINT or SIGTERM.
pub async fn run(config: Config, options: RunOptions) -> Result<()> {
    let loaded = identity::load(&config, time::OffsetDateTime::now_utc())?;
    raise_descriptor_limit();
    // The runtime is single-threaded: this thread moves every packet.
    let scheduling = scheduling::Scheduling::start(config.node.realtime);
    let trust = TrustState {
        rustls: loaded.trust(),
        ca: loaded.ca.clone(),
        crl: loaded.crl.clone(),
    };
    let transport_config =
        transport::transport_config(&config.transport, config.mtu(), transport::Carried::Direct)?;
    // Relay frames ride inside the links to camouflaged peers.
    let nested = config.node.mode == crate::config::Mode::Camouflage
        || config
            .peers
            .iter()
            .any(|p| p.mode == crate::config::Mode::Camouflage);
    let transport_relayed = transport::transport_config(
        &config.transport,
        config.mtu(),
        transport::Carried::Relayed { nested },
    )?;
    let transport_web = transport::web_transport_config(&config.transport, config.mtu());
    let tls = Tls::new(&trust.rustls, &loaded.identity)?;
    let token_key = transport::token_key();
    let front = match &config.web {
        Some(web) => Some(Arc::new(camouflage::Front::load(web, &config.node)?)),
        None => None,
    };
    let web_dials = web_dials(&config)?;
    let server = match &front {
        Some(front) => {
            transport::quic_server(front.quic_tls(), transport_web.clone(), token_key.clone())?
        }
        None => transport::quic_server(
            tls.server(RefusalSlot::default()),
            transport_config.clone(),
            token_key.clone(),
        )?,
    };
    let relays = RelayTable::new(quicap_pki::node_id(&loaded.cert.name));
    let mut socket_drops = transport::SocketDrops::default();
    let (endpoints, relay_counters): (Vec<_>, Vec<_>) = config
        .node
        .listen
        .iter()
        .map(|addr| transport::endpoint(*addr, server.clone(), relays.clone(), &mut socket_drops))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .unzip();
    let tcp_listeners = config
        .node
        .listen_tcp
        .iter()
        .map(|addr| transport::tcp_listener(*addr, "node.listen-tcp"))
        .collect::<Result<Vec<_>>>()?;
    let proxy_listeners = config
        .proxies
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let socket = transport::tcp_listener(p.listen, &format!("proxy[{i}].listen"))?;
            Ok((Arc::new(p.clone()), socket))
        })
        .collect::<Result<Vec<_>>>()?;
    let control = control::bind(&config.node.control_socket)?;

    let netlink = Netlink::open()?;
    let initial_carrier = !config.node.no_carrier;
    let tun = match &config.tun {
        Some(t) => Some(
            netlink
                .create(
                    &Spec {
                        kind: Kind::Tun,
                        name: t.name.clone(),
                        mtu: t.mtu,
                        addresses: t.addresses.clone(),
                        routes: t.routes.clone(),
                        bridge: None,
                        offload: t.offload,
                    },
                    initial_carrier,
                )
                .await?,
        ),
        None => None,
    };
    let tap = match &config.tap {
        Some(t) => Some(
            netlink
                .create(
                    &Spec {
                        kind: Kind::Tap,
                        name: t.name.clone(),
                        mtu: t.mtu,
                        addresses: t.addresses.clone(),
                        routes: Vec::new(),
                        bridge: t.bridge.clone(),
                        offload: false,
                    },
                    initial_carrier,
                )
                .await?,
        ),
        None => None,
    };
    let interface_names: Vec<&str> = tun
        .iter()
        .chain(tap.iter())
        .map(|i| i.spec.name.as_str())
        .collect();
    info!(
        node = %loaded.cert.name,
        interfaces = ?interface_names,
        listen = ?config.node.listen,
        listen_tcp = ?config.node.listen_tcp,
        mode = config.node.mode.as_str(),
        peers = config.peers.len(),
        control = %config.node.control_socket.display(),
        versions = ?options.versions,
        scheduling = %scheduling.describe(),
        "node up"
    );
    for warning in startup_warnings(&config, &loaded.cert) {
        warn!("{warning}");
    }

    let (carrier, carrier_rx) = watch::channel(initial_carrier);
    let modes = Modes {
        l3: tun.is_some(),
        l2: tap.is_some(),
    };
    let id = quicap_pki::node_id(&loaded.cert.name);
    // The addresses of CONNECT-IP clients are reached through this node.
    let advertise: Vec<ipnet::IpNet> = config
        .node
        .advertise
        .iter()
        .chain(config.masque.iter().flat_map(|m| m.addresses.iter()))
        .copied()
        .collect();
    let own_info = mesh::own_info(id, &loaded.cert.der, modes, &advertise);
    let key = Arc::new(loaded.key);
    let node = Arc::new(Node {
        name: loaded.cert.name.clone(),
        mtu: config.mtu(),
        modes,
        versions: options.versions,
        instance: rand::random::<u64>() | 1,
        tap_check_sources: config.tap.as_ref().is_some_and(|t| t.check_sources),
        own: RwLock::new(Own {
            identity: loaded.identity,
            cert: loaded.cert.clone(),
            key: key.clone(),
        }),
        generation: std::sync::atomic::AtomicU64::new(0),
        trust: RwLock::new(trust),
        tls: RwLock::new(Arc::new(tls)),
        refusals: refusal::Refusals::default(),
        admission: Mutex::new(admission::Admission::new(
            config.transport.retry_above,
            match front {
                Some(_) => admission::WEB,
                None => admission::PRIVATE,
            },
            Instant::now(),
        )),
        token_key,
        transport: transport_config,
        transport_relayed,
        front,
        transport_web,
        peers: PeerTable::default(),
        mesh: mesh::Mesh::new(id, loaded.cert.name.clone(), own_info, key, 0)?,
        macs: MacTable::default(),
        tun,
        tap,
        endpoints,
        relays,
        relay_counters,
        socket_drops,
        epoch: Instant::now(),
        dead_after_ms: u64::try_from(config.transport.idle_timeout.as_millis()).unwrap_or(u64::MAX),
        no_carrier: config.node.no_carrier,
        carrier,
        scheduling,
        relayed: Mutex::default(),
        relay_wake: tokio::sync::Notify::new(),
        held: held::Held::default(),
        dialers: config
            .peers
            .iter()
            .filter(|p| p.endpoint.is_some())
            .map(|p| (p.name.clone(), dialer::Dialer::new(p, 0)))
            .collect(),
        web_dials,
        dial_errors: dial::DialErrors::default(),
        proxy: crate::proxy::ProxyCounters::default(),
        udp: crate::proxy::udp::UdpFlows::default(),
        flow_peers: Arc::default(),
        peers_moved: tokio::sync::Notify::new(),
        traffic_resumed: tokio::sync::Notify::new(),
        proxy_listeners: config
            .proxies
            .iter()
            .map(|p| format!("{} ({})", p.listen, p.protocol.as_str()))
            .collect(),
        egress: config.egress.clone(),
        masque: config.masque.clone().map(|m| {
            let own = config.addresses().iter().map(|a| a.addr()).collect();
            crate::masque::Masque::new(m, own)
        }),
        fatal: watch::channel(None).0,
    });

    let mut tasks = JoinSet::new();
    for endpoint in &node.endpoints {
        tasks.spawn(accept::accept_loop(node.clone(), endpoint.clone()));
    }
    for listener in tcp_listeners {
        tasks.spawn(accept::accept_tcp_loop(node.clone(), listener));
    }
    for (listener, socket) in proxy_listeners {
        info!(listen = %listener.listen, protocol = listener.protocol.as_str(), "proxy listening");
        tasks.spawn(crate::proxy::run(node.clone(), listener, socket));
    }
    for peer in config.peers.iter().filter(|p| p.endpoint.is_some()) {
        if let Some(d) = node.dialers.get(&peer.name) {
            tasks.spawn(dial::drive(node.clone(), peer.clone(), d.clone()));
        }
    }
    if node.tun.is_some() {
        tasks.spawn(datapath::tun_to_peers(node.clone()));
    }
    if node.tap.is_some() {
        tasks.spawn(datapath::tap_to_peers(node.clone()));
    }
    tasks.spawn(scheduling::govern(node.clone()));
    tasks.spawn(watchers::watch_expiry(node.clone()));
    tasks.spawn(routing::mesh_task(node.clone()));
    tasks.spawn(dial::relay_dialer(node.clone()));
    tasks.spawn(carrier_task(node.clone(), netlink, carrier_rx));
    tasks.spawn(control::serve(node.clone(), control));
    if let Some(path) = config.node.crl.clone() {
        tasks.spawn(watchers::watch_crl(node.clone(), path));
    }
    if let Some(front) = node.front.clone() {
        tasks.spawn(watchers::watch_web_certs(front.certs.clone()));
    }
    tasks.spawn(renew::watch(node.clone(), config.clone()));

    let mut fatal = node.fatal.subscribe();
    let failed = tokio::select! {
        r = wait_for_signal() => {
            r?;
            None
        }
        _ = fatal.wait_for(Option::is_some) => node.fatal.borrow().clone(),
    };
    info!("shutting down");
    tasks.abort_all();
    for link in node.peers.all_links() {
        link.close(CloseCode::Shutdown, "peer shutting down");
    }
    for endpoint in &node.endpoints {
        endpoint.close(CloseCode::Shutdown.code().into(), b"peer shutting down");
    }
    for endpoint in &node.endpoints {
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, endpoint.wait_idle()).await;
    }
    while tasks.join_next().await.is_some() {}
    let _ = std::fs::remove_file(&config.node.control_socket);
    drop(node);
    info!("stopped");
    match failed {
        Some(reason) => Err(anyhow!(reason)),
        None => Ok(()),
    }
}

/// Applies carrier changes to the interfaces, in order, latest state winning.
async fn carrier_task(node: Arc<Node>, netlink: Netlink, mut rx: watch::Receiver<bool>) {
    while rx.changed().await.is_ok() {
        let on = *rx.borrow_and_update();
        for iface in node.interfaces() {
            if let Err(e) = netlink.set_carrier(iface.index, on).await {
                warn!(interface = %iface.spec.name, error = %format!("{e:#}"), "could not change carrier");
            }
        }
        info!(carrier = if on { "on" } else { "off" }, "carrier changed");
    }
}

fn days_left(cert: &quicap_pki::NodeCert) -> Option<i64> {
    Some((cert.not_after - time::OffsetDateTime::now_utc()).whole_days())
}

/// Returns at SIGTERM or SIGINT. SIGHUP (what `systemctl reload` and many scripts send
/// to ask a daemon to reload) would otherwise end the process without telling the
/// peers: it is answered in the log instead.
async fn wait_for_signal() -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => info!(
                "SIGHUP: nothing to do; the certificate, key and CRL are re-read whenever their files change, other settings need a restart"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    fn wall_ms() -> u128 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis()
    }

    #[test]
    fn aligned_waits_end_at_the_boundaries_of_their_period() {
        let second = Duration::from_secs(1);
        for _ in 0..20 {
            let before = wall_ms();
            let pause = super::aligned_pause(second);
            let after = wall_ms();
            assert!(
                pause >= Duration::from_millis(1) && pause <= second,
                "{pause:?}"
            );
            // The end lies on a whole second (the clock may tick between the reads).
            let (lo, hi) = (before + pause.as_millis(), after + pause.as_millis());
            assert!(lo.div_ceil(1000) * 1000 <= hi, "{lo}..{hi}");

            let wanted = Duration::from_millis(1_300);
            let late = super::aligned_after(wanted, second);
            assert!(late >= wanted, "{late:?}");
            assert!(
                late <= wanted + second + Duration::from_millis(20),
                "{late:?}"
            );
            std::thread::sleep(Duration::from_millis(7));
        }
    }
}
