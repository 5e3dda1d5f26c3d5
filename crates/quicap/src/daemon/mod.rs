//! The node daemon (`quicap up`): a tokio shell that wires the interfaces, the QUIC
//! endpoints and the peer table together.
//!
//! ```text
//!            +------------------------- Node -------------------------+
//!  TUN ----> | datapath::tun_to_peers -> PeerTable::route -------------| --> QUIC datagrams
//!  TAP ----> | datapath::tap_to_peers -> MacTable / flood to L2 peers -| -->
//!  TUN/TAP <-| session::receive_datagrams (IP source checked) <-------| <-- QUIC datagrams
//!            | dial loops (one per peer with an endpoint)             |
//!            | accept loops (one per listen address)                  |
//!            | session control loops: hello, probes, goodbye          |
//!            | carrier task, control socket, CRL and expiry watchers  |
//!            +--------------------------------------------------------+
//! ```

mod admission;
mod control;
mod datapath;
mod dialer;
mod frames;
mod held;
pub mod identity;
mod l2;
mod limit;
pub mod mesh;
mod peers;
mod refusal;
mod renew;
mod scheduling;
mod session;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use quicap_mesh::links::Transport;
use quicap_mesh::RouteInfo;
use quicap_pki::cert::CaCert;
use quicap_pki::Crl;
use quicap_wire::control::Modes;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use crate::config::{Config, PeerTransport};
use crate::device::{Interface, Kind, Netlink, Spec};
use crate::relay::{RelayCounters, RelayTable};
use crate::tls::{Identity, RefusalSlot, Tls, Trust};
use crate::transport;

use crate::link::{tcp, CloseCode, Link};
use l2::MacTable;
use peers::PeerTable;

/// Least time between two attempts at a relayed connection to the same node; longer
/// than a dial may take, so that attempts never overlap.
const RELAY_RETRY_MS: u64 = 6_000;
/// After a relayed dial failed, the next may start this much later.
const RELAY_REDIAL_MS: u64 = 1_000;
const WATCH_INTERVAL: Duration = Duration::from_secs(1);
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
const MESH_TICK: Duration = Duration::from_millis(100);
/// The routing core's pace while every link is idle (probed once a second, see
/// [`peers::IDLE_PROBE_INTERVAL_MS`]) and the router has nothing due sooner.
const MESH_QUIET_TICK: Duration = Duration::from_millis(500);

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
    /// When a relayed connection to each node may be asked for again.
    relay_next_ask: Mutex<HashMap<u64, u64>>,
    /// Nodes waiting for the relay dialer.
    relay_queue: Mutex<Vec<u64>>,
    relay_wake: tokio::sync::Notify,
    /// Packets for nodes that are no neighbours, waiting for a link to them.
    pub held: held::Held,
    /// The link cores of the peers this node dials, by name.
    dialers: dialer::Dialers,
    dial_errors: dialer::DialErrors,
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

    /// This node's certificate.
    pub fn own_cert(&self) -> quicap_pki::NodeCert {
        self.own
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .cert
            .clone()
    }

    /// Asks for an end-to-end relayed connection to `dest`, a node reached through
    /// others; at most once per `RELAY_RETRY_MS` per node.
    pub fn want_relayed(&self, dest: u64, now_ms: u64) {
        let mut next_ask = self
            .relay_next_ask
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if next_ask.get(&dest).is_some_and(|&t| now_ms < t) {
            return;
        }
        next_ask.insert(dest, now_ms + RELAY_RETRY_MS);
        drop(next_ask);
        self.relay_queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(dest);
        self.relay_wake.notify_one();
    }

    /// Lets the next [`Node::want_relayed`] for `dest` through `RELAY_REDIAL_MS`
    /// from now: a dial that failed (routes were converging, say) is tried again
    /// while packets for `dest` keep coming.
    pub fn retry_relayed_soon(&self, dest: u64) {
        let earliest = self.now_ms() + RELAY_REDIAL_MS;
        self.relay_next_ask
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(dest, earliest);
    }

    /// Milliseconds since the node started: the clock of liveness and MAC ageing.
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
        transport::quic_server(
            self.tls().server(refusal),
            self.transport_for(remote),
            self.token_key.clone(),
        )
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
        let server = transport::quic_server(
            tls.server(RefusalSlot::default()),
            self.transport.clone(),
            self.token_key.clone(),
        )?;
        for endpoint in &self.endpoints {
            endpoint.set_server_config(Some(server.clone()));
        }
        *self.tls.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(tls);
        Ok(())
    }

    /// Called after every change of the peer table with the number of connected peers.
    pub fn peers_changed(&self, connected: usize) {
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
    pub fn routed_around(&self, relayed_only: bool) -> Vec<u64> {
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
                        (p.transport, p.transport_why) = d.choice(now);
                    }
                }
                peers
            },
            routes: self
                .mesh
                .routes()
                .into_iter()
                .map(|r| {
                    let name = |id| {
                        self.mesh
                            .name_of(id)
                            .unwrap_or_else(|| format!("{id:016x}"))
                    };
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
    expiring.into_iter().chain(unauthorized).collect()
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
    for warning in startup_warnings(config, cert) {
        let _ = writeln!(out, "warning: {warning}");
    }
    Ok(out)
}

/// Runs a node until SIGINT or SIGTERM.
pub async fn run(config: Config, options: RunOptions) -> Result<()> {
    let loaded = identity::load(&config, time::OffsetDateTime::now_utc())?;
    // The runtime is single-threaded: this thread moves every packet.
    let scheduling = scheduling::Scheduling::start(config.node.realtime);
    let trust = TrustState {
        rustls: loaded.trust(),
        ca: loaded.ca.clone(),
        crl: loaded.crl.clone(),
    };
    let transport_config = transport::transport_config(&config.transport, config.mtu(), false)?;
    let transport_relayed = transport::transport_config(&config.transport, config.mtu(), true)?;
    let tls = Tls::new(&trust.rustls, &loaded.identity)?;
    let token_key = transport::token_key();
    let server = transport::quic_server(
        tls.server(RefusalSlot::default()),
        transport_config.clone(),
        token_key.clone(),
    )?;
    let relays = RelayTable::new(quicap_wire::NodeId(mesh::node_id(&loaded.cert.name)));
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
        .map(|addr| transport::tcp_listener(*addr))
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
    let id = mesh::node_id(&loaded.cert.name);
    let own_info = mesh::own_info(id, &loaded.cert.der, modes, &config.node.advertise);
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
        }),
        generation: std::sync::atomic::AtomicU64::new(0),
        trust: RwLock::new(trust),
        tls: RwLock::new(Arc::new(tls)),
        refusals: refusal::Refusals::default(),
        admission: Mutex::new(admission::Admission::new(
            config.transport.retry_above,
            Instant::now(),
        )),
        token_key,
        transport: transport_config,
        transport_relayed,
        peers: PeerTable::default(),
        mesh: mesh::Mesh::new(id, loaded.cert.name.clone(), own_info, loaded.key, 0)?,
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
        relay_next_ask: Mutex::default(),
        relay_queue: Mutex::default(),
        relay_wake: tokio::sync::Notify::new(),
        held: held::Held::default(),
        dialers: config
            .peers
            .iter()
            .filter(|p| p.endpoint.is_some())
            .map(|p| (p.name.clone(), dialer::Dialer::new(p, 0)))
            .collect(),
        dial_errors: dialer::DialErrors::default(),
        fatal: watch::channel(None).0,
    });

    let mut tasks = JoinSet::new();
    for endpoint in &node.endpoints {
        tasks.spawn(accept_loop(node.clone(), endpoint.clone()));
    }
    for listener in tcp_listeners {
        tasks.spawn(accept_tcp_loop(node.clone(), listener));
    }
    for peer in config.peers.iter().filter(|p| p.endpoint.is_some()) {
        if let Some(d) = node.dialers.get(&peer.name) {
            tasks.spawn(dialer::drive(node.clone(), peer.clone(), d.clone()));
        }
    }
    if node.tun.is_some() {
        tasks.spawn(datapath::tun_to_peers(node.clone()));
    }
    if node.tap.is_some() {
        tasks.spawn(datapath::tap_to_peers(node.clone()));
    }
    tasks.spawn(scheduling::govern(node.clone()));
    tasks.spawn(watch_expiry(node.clone()));
    tasks.spawn(mesh_task(node.clone()));
    tasks.spawn(relay_dialer(node.clone()));
    tasks.spawn(carrier_task(node.clone(), netlink, carrier_rx));
    tasks.spawn(control::serve(node.clone(), control));
    if let Some(path) = config.node.crl.clone() {
        tasks.spawn(watch_crl(node.clone(), path));
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

/// Drives the routing core: re-evaluates neighbors and timers every
/// [`MESH_TICK`] ([`MESH_QUIET_TICK`] while all links are idle) or when a session
/// signals a change, and sends what the router wants sent.
async fn mesh_task(node: Arc<Node>) {
    let mut pause = MESH_TICK;
    // Next hop per destination, to log changes.
    let mut hops: HashMap<u64, u64> = HashMap::new();
    loop {
        tokio::select! {
            _ = node.mesh.notify.notified() => {}
            _ = tokio::time::sleep(pause) => {}
        }
        let now = node.now_ms();
        mesh_step(&node, now);
        let routes = node.mesh.routes();
        log_route_changes(&node, &routes, &mut hops);
        update_relays(&node, &routes, now);
        node.held.expire(now);
        // A neighbor the mesh routes through another node keeps its relayed link: the
        // data path sends on it rather than routed through that node.
        let keep = node.routed_around(true);
        let generation = node.generation.load(std::sync::atomic::Ordering::Relaxed);
        let closed = node.peers.close_superseded_relays(now, &keep, generation);
        if closed > 0 {
            debug!(
                closed,
                "closed relayed links that a direct link or another relayed link supersedes"
            );
        }
        let closed = node.peers.close_renewed(now);
        if closed > 0 {
            debug!(
                closed,
                "closed links made with a certificate its peer renewed"
            );
        }
        pause = if node.peers.all_idle() {
            let due = node.mesh.poll_timeout().saturating_sub(node.now_ms());
            MESH_QUIET_TICK
                .min(Duration::from_millis(due))
                .max(MESH_TICK)
        } else {
            MESH_TICK
        };
    }
}

/// Brings the routing core up to date with the peer table, runs its timers and sends
/// what it wants sent.
fn mesh_step(node: &Node, now: u64) {
    for (peer, message) in node.mesh.tick(&node.peers, now) {
        if !node.peers.send_control(&peer, message, now) {
            debug!(%peer, "routing message not queued");
        }
    }
}

/// Logs (at debug) each destination whose next hop changed since the last call.
fn log_route_changes(node: &Node, routes: &[RouteInfo], hops: &mut HashMap<u64, u64>) {
    let name = |id: u64| {
        node.mesh
            .name_of(id)
            .unwrap_or_else(|| format!("{id:016x}"))
    };
    let now: HashMap<u64, u64> = routes.iter().map(|r| (r.dest, r.next_hop)).collect();
    for r in routes {
        if hops.get(&r.dest) != Some(&r.next_hop) {
            debug!(dest = %name(r.dest), next_hop = %name(r.next_hop), metric = r.metric, "route changed");
        }
    }
    for dest in hops.keys().filter(|d| !now.contains_key(d)) {
        debug!(dest = %name(*dest), "route lost");
    }
    *hops = now;
}

/// Opens the end-to-end relayed connections the data path asks for.
async fn relay_dialer(node: Arc<Node>) {
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
async fn dial_relayed(node: Arc<Node>, dest: u64) {
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

/// Points relay frames at the mesh's current next hops, and accepts them from the
/// direct peers only.
fn update_relays(node: &Node, routes: &[RouteInfo], now_ms: u64) {
    let next_hops = routes.iter().filter_map(|route| {
        let hop = node.peers.relay_next_hop(route.next_hop, now_ms)?;
        Some((quicap_wire::NodeId(route.dest), hop))
    });
    node.relays.update(next_hops, node.peers.direct_remotes());
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

async fn accept_loop(node: Arc<Node>, endpoint: quinn::Endpoint) {
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
                Ok(conn) => {
                    let relayed = node.relays.node_at(remote).is_some();
                    session::run(node, Link::quic(conn, relayed), false, None).await;
                }
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
async fn accept_tcp_loop(node: Arc<Node>, listener: tokio::net::TcpListener) {
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
            let refusal = RefusalSlot::default();
            let config = Arc::new(node.tls().server(refusal.clone()));
            let handshake = tcp::accept(stream, remote, config).await;
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
struct InFlight(Arc<Node>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.admission().handle_handshake_done();
    }
}

async fn dial(node: &Node, name: &str, target: &str, over: Transport) -> Result<Link> {
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
async fn connect_tcp(node: &Node, name: &str, addr: SocketAddr) -> Result<Link> {
    let refusal = RefusalSlot::default();
    let config = Arc::new(node.tls().client(refusal.clone()));
    let link = tcp::connect(addr, name, config)
        .await
        .map_err(|e| match refusal.take() {
            Some(r) => anyhow!(refusal::dial_error(&r, &node.trust())),
            None => e,
        })?;
    Ok(Link::Tcp(link))
}

/// Connects to node `name` at `addr` (a real address or a relayed node's virtual one,
/// which every endpoint can reach) from an endpoint of a fitting family.
async fn connect(node: &Node, name: &str, addr: SocketAddr) -> Result<Link> {
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

/// Closes connections of peers whose certificate has expired since they connected.
async fn watch_expiry(node: Arc<Node>) {
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    loop {
        tick.tick().await;
        let now = time::OffsetDateTime::now_utc();
        node.peers
            .close_where(CloseCode::CertificateInvalidated, |cert| {
                (now > cert.cert().not_after).then(|| "certificate expired".to_owned())
            });
    }
}

/// Files watched for changes by their modification time, every [`WATCH_INTERVAL`].
struct FileWatch {
    paths: Vec<std::path::PathBuf>,
    last: Vec<Option<std::time::SystemTime>>,
    tick: tokio::time::Interval,
}

impl FileWatch {
    fn new(paths: Vec<std::path::PathBuf>) -> FileWatch {
        let mut watch = FileWatch {
            last: Vec::new(),
            paths,
            tick: tokio::time::interval(WATCH_INTERVAL),
        };
        watch.last = watch.stamps();
        watch
    }

    fn stamps(&self) -> Vec<Option<std::time::SystemTime>> {
        self.paths
            .iter()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }

    /// Returns once any of the files changed (appeared, went or was written) since the
    /// last time.
    async fn changed(&mut self) {
        loop {
            self.tick.tick().await;
            let now = self.stamps();
            if now != self.last {
                self.last = now;
                return;
            }
        }
    }
}

/// Re-reads the CRL when its file changes: new handshakes use it at once, and live
/// connections of newly revoked peers are closed.
async fn watch_crl(node: Arc<Node>, path: std::path::PathBuf) {
    let mut files = FileWatch::new(vec![path.clone()]);
    loop {
        files.changed().await;
        let ca = node.trust().ca;
        let crl = match identity::load_crl(&path, &ca) {
            Ok(crl) => crl,
            Err(e) => {
                error!(error = %format!("{e:#}"), "keeping the previous CRL");
                continue;
            }
        };
        let state = TrustState {
            rustls: identity::trust_of(&ca, Some(&crl)),
            ca,
            crl: Some(crl.clone()),
        };
        if let Err(e) = node.set_tls(&state.rustls, &node.identity()) {
            error!(error = %format!("{e:#}"), "keeping the previous CRL");
            continue;
        }
        *node.trust.write().unwrap_or_else(|p| p.into_inner()) = state;
        info!(
            number = crl.number,
            revoked = crl.revoked.len(),
            "CRL reloaded"
        );
        node.peers
            .close_where(CloseCode::CertificateInvalidated, |cert| {
                crl.is_revoked(&cert.cert().serial)
                    .then(|| "certificate revoked".to_owned())
            });
    }
}
