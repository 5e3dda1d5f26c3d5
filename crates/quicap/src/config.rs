//! Node configuration: kebab-case TOML in, a validated [`Config`] out. No IO here: the
//! caller reads the file and passes its text and directory.
//!
//! See `examples/node.toml` for a commented example and `docs/config.md` for the
//! reference.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use thiserror::Error;

mod masque;
mod proxy;

pub use masque::MasqueSection;
pub use proxy::{EgressSection, ProxyListener, ProxyProtocol};

/// Default UDP port a node listens on.
pub const DEFAULT_PORT: u16 = 4433;
/// Default MTU of the tunnel interface; fits a 1500-byte path with room for the
/// IPv6, UDP, QUIC and overlay headers.
pub const DEFAULT_MTU: u16 = 1400;
/// Smallest MTU allowed: IPv6 requires 1280 on every link.
pub const MIN_MTU: u16 = 1280;
/// Largest MTU allowed.
pub const MAX_MTU: u16 = 9000;

/// A configuration error, with the position in the file where one is known.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("line {line}, column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// A validated node configuration; paths are absolute or relative to the working
/// directory, already resolved against the config file's directory.
#[derive(Debug, Clone)]
pub struct Config {
    pub node: NodeSection,
    /// Layer 3 interface; at least one of `tun` and `tap` is present.
    pub tun: Option<TunSection>,
    /// Layer 2 interface.
    pub tap: Option<TapSection>,
    pub transport: TransportSection,
    pub peers: Vec<PeerConfig>,
    /// The web site of camouflage mode; present exactly when `node.mode` is camouflage.
    pub web: Option<WebSection>,
    /// Proxy listeners whose flows leave the mesh at egress nodes.
    pub proxies: Vec<ProxyListener>,
    /// Where flows of other nodes may leave the mesh here; `None`: nowhere.
    pub egress: Option<EgressSection>,
    /// The MASQUE proxy of the HTTP/3 front (camouflage mode); `None`: not served.
    pub masque: Option<MasqueSection>,
}

impl Config {
    /// MTU announced to peers: the smallest of the configured interfaces'.
    pub fn mtu(&self) -> u16 {
        [
            self.tun.as_ref().map(|t| t.mtu),
            self.tap.as_ref().map(|t| t.mtu),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(DEFAULT_MTU)
    }

    /// Every overlay address configured on an interface.
    pub fn addresses(&self) -> Vec<IpNet> {
        let tun = self.tun.iter().flat_map(|t| t.addresses.iter());
        let tap = self.tap.iter().flat_map(|t| t.addresses.iter());
        tun.chain(tap).copied().collect()
    }
}

#[derive(Debug, Clone)]
pub struct NodeSection {
    /// Expected node name; when set, it must equal the certificate's.
    pub name: Option<String>,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    pub crl: Option<PathBuf>,
    pub listen: Vec<SocketAddr>,
    /// TCP addresses for links over TLS/TCP (by default those of `listen`); empty:
    /// none.
    pub listen_tcp: Vec<SocketAddr>,
    /// Turn the interfaces' carrier off while no peer is connected.
    pub no_carrier: bool,
    /// When the data path runs with real-time scheduling (SCHED_RR, lowest priority).
    pub realtime: Realtime,
    /// Unix socket `quicap status` talks to.
    pub control_socket: PathBuf,
    /// Subnets this node announces to the mesh as reachable through it; peers accept
    /// only those inside the certificate's subnets.
    pub advertise: Vec<IpNet>,
    /// How the node shows itself to the network.
    pub mode: Mode,
}

/// How a node's listeners show themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Mutual TLS with node certificates: only nodes of the network get an answer.
    Private,
    /// An ordinary web site (HTTP/3 and HTTPS) to everyone else; nodes prove their
    /// identity inside the connection.
    Camouflage,
}

impl Mode {
    /// The mode as `node.mode` names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Private => "private",
            Mode::Camouflage => "camouflage",
        }
    }
}

/// The web site of camouflage mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSection {
    /// Web certificates, chosen by SNI; the first also answers unknown names.
    pub certs: Vec<crate::camouflage::WebCertFiles>,
    /// What the site serves.
    pub content: SiteContent,
    /// `Server` header of every answer; `None`: none sent (or, for an upstream site,
    /// the upstream's).
    pub server_header: Option<String>,
}

/// What the site of camouflage mode serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteContent {
    /// A built-in page that names no software.
    Builtin,
    /// The files of a directory (`web.root`).
    Files(PathBuf),
    /// Every request forwarded to an upstream web site (`web.upstream`), as a reverse
    /// proxy does.
    Upstream {
        /// `http://host[:port]` or `https://host[:port]`.
        url: http::Uri,
        /// Roots the upstream's certificate is checked against; `None`: the system's.
        roots: Option<PathBuf>,
    },
}

/// When the packet thread runs with real-time scheduling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Realtime {
    /// While the thread is busy and kept waiting for a CPU, unless the kernel is
    /// dropping packets nearby (see `crate::sched::Governor`).
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone)]
pub struct TunSection {
    pub name: String,
    pub addresses: Vec<IpNet>,
    pub mtu: u16,
    pub routes: Vec<IpNet>,
    /// virtio-net offloads on the TUN (TSO reads, GRO-coalesced writes).
    pub offload: bool,
}

#[derive(Debug, Clone)]
pub struct TapSection {
    pub name: String,
    /// Addresses on the TAP itself; may be empty for a TAP that is only bridged.
    pub addresses: Vec<IpNet>,
    pub mtu: u16,
    /// Existing Linux bridge to enslave the TAP to.
    pub bridge: Option<String>,
    /// Accept from each node only frames whose source address its certificate
    /// authorizes (see `daemon::l2::frame_source`).
    pub check_sources: bool,
}

#[derive(Debug, Clone)]
pub struct TransportSection {
    /// QUIC keepalives on node links, beside the liveness probes; none by default.
    pub keepalive: Option<Duration>,
    /// Silence after which a link is closed (see `quicap_mesh::liveness::dead`).
    pub idle_timeout: Duration,
    /// UDP generic segmentation offload for the QUIC socket.
    pub gso: bool,
    /// Handshakes in flight (or started in the current second) from which an address
    /// not yet validated gets a QUIC Retry first; 0: always.
    pub retry_above: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub name: String,
    /// `host:port` to dial; `None` for a peer that only dials in.
    pub endpoint: Option<String>,
    /// The transport this node dials the peer over.
    pub transport: PeerTransport,
    /// How the peer's listeners show themselves: this node dials a camouflaged peer as
    /// a web client and proves its identity inside the connection.
    pub mode: Mode,
    /// How a camouflaged peer's web certificate is checked.
    pub web: PeerWeb,
}

/// The web side of a camouflaged peer, as its dialer sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerWeb {
    /// The name asked for (SNI) and checked in the web certificate; `None`: the
    /// endpoint's host.
    pub server_name: Option<String>,
    /// SHA-256 of the web certificate's public key (SubjectPublicKeyInfo), as
    /// `curl --pinnedpubkey` takes it: the certificate is trusted for its key alone.
    pub pin: Option<[u8; 32]>,
    /// PEM file of the roots that must issue the web certificate; `None` (and no pin):
    /// the system's roots.
    pub roots: Option<PathBuf>,
}

/// How a node dials a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerTransport {
    /// QUIC, and TLS/TCP only while QUIC fails (see `quicap_mesh::links`).
    Auto,
    /// QUIC over UDP only.
    Quic,
    /// TLS 1.3 over TCP, to the same host and port number.
    Tcp,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    node: RawNode,
    tun: Option<RawTun>,
    tap: Option<RawTap>,
    #[serde(default)]
    transport: RawTransport,
    #[serde(default, rename = "peer")]
    peers: Vec<RawPeer>,
    web: Option<RawWeb>,
    #[serde(default, rename = "proxy")]
    proxies: Vec<proxy::RawProxy>,
    egress: Option<proxy::RawEgress>,
    masque: Option<masque::RawMasque>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawWeb {
    certs: Vec<RawWebCert>,
    root: Option<PathBuf>,
    upstream: Option<String>,
    upstream_roots: Option<PathBuf>,
    server_header: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawWebCert {
    cert: PathBuf,
    key: PathBuf,
}

/// `realtime = "auto" | "always" | "never"`; `true` and `false` mean always and never.
enum RawRealtime {
    Bool(bool),
    Mode(String),
}

impl<'de> Deserialize<'de> for RawRealtime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RawRealtime;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(r#""auto", "always", "never", true or false"#)
            }
            fn visit_bool<E>(self, v: bool) -> Result<RawRealtime, E> {
                Ok(RawRealtime::Bool(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<RawRealtime, E> {
                Ok(RawRealtime::Mode(v.to_owned()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawNode {
    name: Option<String>,
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
    crl: Option<PathBuf>,
    listen: Option<Vec<String>>,
    listen_tcp: Option<Vec<String>>,
    #[serde(default = "default_true")]
    no_carrier: bool,
    #[serde(default)]
    realtime: Option<RawRealtime>,
    control_socket: Option<PathBuf>,
    #[serde(default)]
    advertise: Vec<String>,
    mode: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawTap {
    #[serde(default = "default_tap_name")]
    name: String,
    #[serde(default)]
    addresses: Vec<String>,
    #[serde(default = "default_mtu")]
    mtu: u16,
    bridge: Option<String>,
    #[serde(default)]
    check_sources: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawTun {
    #[serde(default = "default_tun_name")]
    name: String,
    addresses: Vec<String>,
    #[serde(default = "default_mtu")]
    mtu: u16,
    #[serde(default)]
    routes: Vec<String>,
    #[serde(default = "default_true")]
    offload: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawTransport {
    #[serde(default = "default_keepalive_ms")]
    keepalive_ms: u64,
    #[serde(default = "default_idle_timeout_ms")]
    idle_timeout_ms: u64,
    #[serde(default = "default_true")]
    gso: bool,
    #[serde(default)]
    retry_above: usize,
}

impl Default for RawTransport {
    fn default() -> Self {
        RawTransport {
            keepalive_ms: default_keepalive_ms(),
            idle_timeout_ms: default_idle_timeout_ms(),
            gso: true,
            retry_above: 0,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawPeer {
    name: String,
    endpoint: Option<String>,
    transport: Option<String>,
    mode: Option<String>,
    server_name: Option<String>,
    web_pin: Option<String>,
    web_roots: Option<PathBuf>,
}

/// `node.mode` or a peer's `mode`: `None` if not given.
fn parse_mode(key: &str, value: Option<&str>) -> Result<Option<Mode>, ConfigError> {
    match value {
        None => Ok(None),
        Some("private") => Ok(Some(Mode::Private)),
        Some("camouflage") => Ok(Some(Mode::Camouflage)),
        Some(other) => Err(invalid(
            key,
            format!("{other:?} is not \"private\" or \"camouflage\""),
        )),
    }
}

/// `web.upstream`: `http://` or `https://`, a host and an optional port, nothing else
/// (requests keep their own paths).
fn parse_upstream(value: &str) -> Result<http::Uri, String> {
    let url: http::Uri = value
        .parse()
        .map_err(|_| format!("{value:?} is not a URL"))?;
    match url.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("{value:?}: give an http:// or https:// URL")),
    }
    let Some(authority) = url.authority() else {
        return Err(format!("{value:?} names no host"));
    };
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return Err(format!("{value:?}: give a host and a port, no user name"));
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() {
        return Err(format!(
            "{value:?}: give the site only (scheme, host, port); requests keep their own paths"
        ));
    }
    Ok(url)
}

/// A public key pin as curl takes it: `sha256//` and the base64 of the SHA-256 of the
/// SubjectPublicKeyInfo.
fn parse_pin(value: &str) -> Result<[u8; 32], String> {
    use base64::Engine;
    let encoded = value.strip_prefix("sha256//").ok_or_else(|| {
        format!("{value:?} does not start with \"sha256//\" (the form curl's --pinnedpubkey takes)")
    })?;
    let hash = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| format!("not base64 after \"sha256//\": {e}"))?;
    hash.try_into()
        .map_err(|h: Vec<u8>| format!("a SHA-256 hash has 32 bytes, this one {}", h.len()))
}

fn default_tun_name() -> String {
    "quicap0".into()
}
fn default_tap_name() -> String {
    "quicaptap0".into()
}
fn default_mtu() -> u16 {
    DEFAULT_MTU
}
fn default_keepalive_ms() -> u64 {
    0
}
fn default_idle_timeout_ms() -> u64 {
    3000
}
fn default_true() -> bool {
    true
}

impl Config {
    /// Parses and validates `text`; relative paths are resolved against `base_dir`.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| syntax_error(text, &e))?;
        let resolve = |p: PathBuf| {
            if p.is_absolute() {
                p
            } else {
                base_dir.join(p)
            }
        };

        if let Some(name) = &raw.node.name {
            quicap_pki::validate_node_name(name)
                .map_err(|e| invalid("node.name", e.to_string()))?;
        }
        let listen = match raw.node.listen {
            None => vec![SocketAddr::from(([0u16; 8], DEFAULT_PORT))],
            Some(list) if list.is_empty() => {
                return Err(invalid("node.listen", "needs at least one address"))
            }
            Some(list) => parse_addresses("node.listen", &list)?,
        };
        let listen_tcp = match raw.node.listen_tcp {
            None => listen.clone(),
            Some(list) => parse_addresses("node.listen-tcp", &list)?,
        };
        let node = NodeSection {
            name: raw.node.name,
            cert: resolve(raw.node.cert),
            key: resolve(raw.node.key),
            ca: resolve(raw.node.ca),
            crl: raw.node.crl.map(resolve),
            listen,
            listen_tcp,
            no_carrier: raw.node.no_carrier,
            realtime: match raw.node.realtime {
                None => Realtime::Auto,
                Some(RawRealtime::Bool(true)) => Realtime::Always,
                Some(RawRealtime::Bool(false)) => Realtime::Never,
                Some(RawRealtime::Mode(m)) => match m.as_str() {
                    "auto" => Realtime::Auto,
                    "always" => Realtime::Always,
                    "never" => Realtime::Never,
                    _ => {
                        return Err(invalid(
                            "node.realtime",
                            format!("{m:?} is not one of \"auto\", \"always\", \"never\""),
                        ))
                    }
                },
            },
            control_socket: PathBuf::new(),
            advertise: parse_nets("node.advertise", &raw.node.advertise)?
                .into_iter()
                .map(|n| n.trunc())
                .collect(),
            mode: parse_mode("node.mode", raw.node.mode.as_deref())?.unwrap_or(Mode::Private),
        };

        if raw.tun.is_none() && raw.tap.is_none() {
            return Err(invalid(
                "tun",
                "configure a [tun] (Layer 3) or a [tap] (Layer 2) section, or both",
            ));
        }
        let tun = match raw.tun {
            None => None,
            Some(tun) => {
                check_interface("tun", &tun.name, tun.mtu)?;
                let addresses = parse_nets("tun.addresses", &tun.addresses)?;
                if addresses.is_empty() {
                    return Err(invalid("tun.addresses", "needs at least one address"));
                }
                let routes = parse_nets("tun.routes", &tun.routes)?
                    .into_iter()
                    .map(|n| n.trunc())
                    .collect();
                Some(TunSection {
                    name: tun.name,
                    addresses,
                    mtu: tun.mtu,
                    routes,
                    offload: tun.offload,
                })
            }
        };
        let tap = match raw.tap {
            None => None,
            Some(tap) => {
                check_interface("tap", &tap.name, tap.mtu)?;
                if let Some(bridge) = &tap.bridge {
                    check_name("tap.bridge", bridge)?;
                }
                Some(TapSection {
                    addresses: parse_nets("tap.addresses", &tap.addresses)?,
                    name: tap.name,
                    mtu: tap.mtu,
                    bridge: tap.bridge,
                    check_sources: tap.check_sources,
                })
            }
        };
        if let (Some(a), Some(b)) = (&tun, &tap) {
            if a.name == b.name {
                return Err(invalid(
                    "tap.name",
                    format!("{:?} is also the TUN's name", b.name),
                ));
            }
        }
        let first = tun
            .as_ref()
            .map(|t| t.name.clone())
            .or_else(|| tap.as_ref().map(|t| t.name.clone()))
            .unwrap_or_default();
        let node = NodeSection {
            control_socket: raw
                .node
                .control_socket
                .map(resolve)
                .unwrap_or_else(|| default_control_socket(&first)),
            ..node
        };

        let t = raw.transport;
        if t.idle_timeout_ms <= t.keepalive_ms {
            return Err(invalid(
                "transport.idle-timeout-ms",
                format!(
                    "must be larger than transport.keepalive-ms ({} ms)",
                    t.keepalive_ms
                ),
            ));
        }
        let transport = TransportSection {
            keepalive: (t.keepalive_ms > 0).then(|| Duration::from_millis(t.keepalive_ms)),
            idle_timeout: Duration::from_millis(t.idle_timeout_ms),
            gso: t.gso,
            retry_above: t.retry_above,
        };

        let mut peers: Vec<PeerConfig> = Vec::new();
        for (i, p) in raw.peers.into_iter().enumerate() {
            quicap_pki::validate_node_name(&p.name)
                .map_err(|e| invalid(format!("peer[{i}].name"), e.to_string()))?;
            if peers.iter().any(|q| q.name == p.name) {
                return Err(invalid(
                    format!("peer[{i}].name"),
                    format!("peer {:?} is listed twice", p.name),
                ));
            }
            if let Some(ep) = &p.endpoint {
                validate_endpoint(ep).map_err(|m| invalid(format!("peer[{i}].endpoint"), m))?;
            }
            let transport = match p.transport.as_deref() {
                None | Some("auto") => PeerTransport::Auto,
                Some("quic") => PeerTransport::Quic,
                Some("tcp") => PeerTransport::Tcp,
                Some(other) => {
                    return Err(invalid(
                        format!("peer[{i}].transport"),
                        format!("{other:?} is not \"auto\", \"quic\" or \"tcp\""),
                    ))
                }
            };
            let mode =
                parse_mode(&format!("peer[{i}].mode"), p.mode.as_deref())?.unwrap_or(node.mode);
            let web = PeerWeb {
                server_name: p.server_name,
                pin: p
                    .web_pin
                    .as_deref()
                    .map(parse_pin)
                    .transpose()
                    .map_err(|m| invalid(format!("peer[{i}].web-pin"), m))?,
                roots: p.web_roots.map(resolve),
            };
            if mode == Mode::Private && web != PeerWeb::default() {
                return Err(invalid(
                    format!("peer[{i}]"),
                    "server-name, web-pin and web-roots are for a peer in camouflage mode (mode = \"camouflage\")",
                ));
            }
            if web.pin.is_some() && web.roots.is_some() {
                return Err(invalid(
                    format!("peer[{i}].web-pin"),
                    "give web-pin or web-roots, not both",
                ));
            }
            if let Some(name) = &web.server_name {
                if rustls::pki_types::ServerName::try_from(name.as_str()).is_err() {
                    return Err(invalid(
                        format!("peer[{i}].server-name"),
                        format!("{name:?} is not a DNS name or an IP address"),
                    ));
                }
            }
            peers.push(PeerConfig {
                name: p.name,
                endpoint: p.endpoint,
                transport,
                mode,
                web,
            });
        }

        let web = match (node.mode, raw.web) {
            (Mode::Private, None) => None,
            (Mode::Private, Some(_)) => {
                return Err(invalid(
                    "web",
                    "a [web] site is only served with node.mode = \"camouflage\"",
                ))
            }
            (Mode::Camouflage, None) => {
                return Err(invalid(
                    "web",
                    "node.mode = \"camouflage\" needs a [web] section with the web certificates (web.certs)",
                ))
            }
            (Mode::Camouflage, Some(web)) => {
                if web.certs.is_empty() {
                    return Err(invalid("web.certs", "needs at least one certificate"));
                }
                if let Some(value) = &web.server_header {
                    if value.is_empty()
                        || value.len() > 100
                        || !value.bytes().all(|b| (0x20..0x7f).contains(&b))
                    {
                        return Err(invalid(
                            "web.server-header",
                            "must be 1-100 printable ASCII characters",
                        ));
                    }
                }
                let content = match (web.root, web.upstream) {
                    (Some(_), Some(_)) => {
                        return Err(invalid(
                            "web.upstream",
                            "give web.root or web.upstream, not both",
                        ))
                    }
                    (None, Some(upstream)) => {
                        let url =
                            parse_upstream(&upstream).map_err(|m| invalid("web.upstream", m))?;
                        if web.upstream_roots.is_some() && url.scheme_str() != Some("https") {
                            return Err(invalid(
                                "web.upstream-roots",
                                "is for an https:// web.upstream",
                            ));
                        }
                        SiteContent::Upstream {
                            url,
                            roots: web.upstream_roots.map(resolve),
                        }
                    }
                    (_, None) if web.upstream_roots.is_some() => {
                        return Err(invalid(
                            "web.upstream-roots",
                            "is for an https:// web.upstream",
                        ))
                    }
                    (Some(root), None) => SiteContent::Files(resolve(root)),
                    (None, None) => SiteContent::Builtin,
                };
                Some(WebSection {
                    certs: web
                        .certs
                        .into_iter()
                        .map(|c| crate::camouflage::WebCertFiles {
                            cert: resolve(c.cert),
                            key: resolve(c.key),
                        })
                        .collect(),
                    content,
                    server_header: web.server_header,
                })
            }
        };

        let proxies = proxy::proxies(raw.proxies)?;
        let egress = raw.egress.map(proxy::egress).transpose()?;
        let masque = raw.masque.map(masque::masque).transpose()?;
        if let Some(m) = &masque {
            if web.is_none() {
                return Err(invalid(
                    "masque",
                    "MASQUE is served on the HTTP/3 front: it needs node.mode = \"camouflage\"",
                ));
            }
            if !m.addresses.is_empty() && tun.is_none() {
                return Err(invalid(
                    "masque.addresses",
                    "CONNECT-IP clients' packets enter the mesh as the TUN's do: it needs a [tun] section",
                ));
            }
        }
        Ok(Config {
            node,
            tun,
            tap,
            transport,
            peers,
            web,
            proxies,
            egress,
            masque,
        })
    }
}

/// Where the control socket of a node whose first interface is `interface` lives unless
/// configured otherwise.
pub fn default_control_socket(interface: &str) -> PathBuf {
    PathBuf::from(format!("/run/quicap/{interface}.sock"))
}

fn check_name(key: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty()
        || name.len() > 15
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(invalid(
            key,
            format!("{name:?} is not a valid interface name (1-15 letters, digits, '-', '_')"),
        ));
    }
    Ok(())
}

fn check_interface(section: &str, name: &str, mtu: u16) -> Result<(), ConfigError> {
    check_name(&format!("{section}.name"), name)?;
    if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
        return Err(invalid(
            format!("{section}.mtu"),
            format!("{mtu} is outside {MIN_MTU}..={MAX_MTU}"),
        ));
    }
    Ok(())
}

fn parse_nets(key: &str, list: &[String]) -> Result<Vec<IpNet>, ConfigError> {
    list.iter()
        .map(|s| {
            s.parse::<IpNet>().map_err(|_| {
                invalid(
                    key,
                    format!("{s:?} is not an address with prefix length (e.g. \"10.0.0.1/24\")"),
                )
            })
        })
        .collect()
}

/// The socket addresses of config field `field`.
fn parse_addresses(field: &str, list: &[String]) -> Result<Vec<SocketAddr>, ConfigError> {
    list.iter()
        .map(|s| {
            s.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    field,
                    format!("{s:?} is not an IP:port (e.g. \"0.0.0.0:4433\" or \"[::]:4433\")"),
                )
            })
        })
        .collect()
}

fn validate_endpoint(ep: &str) -> Result<(), String> {
    if ep.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    match ep.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(format!(
            "{ep:?} is not host:port (e.g. \"192.0.2.1:4433\" or \"vpn.example.com:4433\")"
        )),
    }
}

fn syntax_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let (line, column) = e
        .span()
        .map(|span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            (line, column)
        })
        .unwrap_or((0, 0));
    ConfigError::Syntax {
        line,
        column,
        message: e.message().trim().replace('\n', " "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[node]
cert = "a.crt"
key = "a.key"
ca = "ca.crt"

[tun]
addresses = ["10.10.0.1/24"]
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/quicap"))
    }

    #[test]
    fn minimal_config_gets_defaults_and_resolved_paths() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.node.cert, PathBuf::from("/etc/quicap/a.crt"));
        assert_eq!(c.node.listen, vec!["[::]:4433".parse().unwrap()]);
        let tun = c.tun.as_ref().unwrap();
        assert_eq!(tun.name, "quicap0");
        assert_eq!(tun.mtu, DEFAULT_MTU);
        assert!(c.tap.is_none());
        assert!(c.node.no_carrier);
        assert_eq!(c.node.realtime, Realtime::Auto);
        assert_eq!(
            c.node.control_socket,
            PathBuf::from("/run/quicap/quicap0.sock")
        );
        assert_eq!(c.transport.keepalive, None);
        assert_eq!(c.transport.idle_timeout, Duration::from_secs(3));
        assert!(c.peers.is_empty());
    }

    #[test]
    fn realtime_takes_a_mode_or_a_bool() {
        let with = |v: &str| parse(&MINIMAL.replace("[tun]", &format!("realtime = {v}\n[tun]")));
        assert_eq!(with("\"auto\"").unwrap().node.realtime, Realtime::Auto);
        assert_eq!(with("\"always\"").unwrap().node.realtime, Realtime::Always);
        assert_eq!(with("true").unwrap().node.realtime, Realtime::Always);
        assert_eq!(with("\"never\"").unwrap().node.realtime, Realtime::Never);
        assert_eq!(with("false").unwrap().node.realtime, Realtime::Never);
        let e = with("\"sometimes\"").unwrap_err().to_string();
        assert!(
            e.contains("node.realtime") && e.contains("\"always\""),
            "{e}"
        );
        let e = with("3").unwrap_err().to_string();
        assert!(e.contains("expected \"auto\""), "{e}");
    }

    #[test]
    fn example_config_parses() {
        let text = include_str!("../../../examples/node.toml");
        let c = parse(text).unwrap();
        assert_eq!(c.peers.len(), 2);
    }

    /// Any value in any place of the example config (the commented-out sections
    /// switched on too), or a few bytes changed: the parser answers Ok or a one-line
    /// error, never a panic.
    mod hostile {
        use super::*;
        use proptest::prelude::*;

        /// The example with its commented-out sections and keys switched on.
        fn example() -> String {
            include_str!("../../../examples/node.toml")
                .lines()
                .map(|l| match l.strip_prefix("# ") {
                    Some(rest)
                        if rest.starts_with('[')
                            || rest.split_once(" = ").is_some_and(|(k, _)| {
                                k.chars().all(|c| c.is_ascii_lowercase() || c == '-')
                            }) =>
                    {
                        rest
                    }
                    _ => l,
                })
                .collect::<Vec<_>>()
                .join("\n")
        }

        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<i64>().prop_map(|v| v.to_string()),
                Just("0".to_string()),
                Just("-1".to_string()),
                Just("18446744073709551615".to_string()),
                Just("1e308".to_string()),
                Just("nan".to_string()),
                any::<bool>().prop_map(|v| v.to_string()),
                "[^\"\\\\\n]{0,40}".prop_map(|v| format!("{v:?}")),
                "[ -~]{0,40}",
                prop::collection::vec("[0-9a-f:./\\[\\]]{0,24}", 0..4)
                    .prop_map(|v| format!("{v:?}")),
                Just("[]".to_string()),
                Just("{}".to_string()),
            ]
        }

        proptest! {
            #[test]
            fn any_value_anywhere_parses_or_errs(line in any::<prop::sample::Index>(), v in value()) {
                let text = example();
                let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
                let keys: Vec<usize> = lines
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| l.contains(" = ") && !l.starts_with('#'))
                    .map(|(i, _)| i)
                    .collect();
                let i = keys[line.index(keys.len())];
                let key = lines[i].split(" = ").next().unwrap_or_default().to_owned();
                lines[i] = format!("{key} = {v}");
                if let Err(e) = parse(&lines.join("\n")) {
                    let e = e.to_string();
                    prop_assert!(!e.is_empty() && !e.contains('\n'), "not one line: {e}");
                }
            }

            #[test]
            fn changed_bytes_parse_or_err(writes in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)) {
                let mut bytes = example().into_bytes();
                for (at, b) in &writes {
                    let i = at.index(bytes.len());
                    bytes[i] = *b;
                }
                if let Err(e) = parse(&String::from_utf8_lossy(&bytes)) {
                    let e = e.to_string();
                    prop_assert!(!e.is_empty() && !e.contains('\n'), "not one line: {e}");
                }
            }
        }

        #[test]
        fn the_example_with_every_section_on_parses() {
            // Without this the properties above would mostly test refusals.
            let c = parse(&example()).unwrap();
            assert!(c.tap.is_some());
        }
    }

    #[test]
    fn camouflage_needs_a_web_site_and_a_site_needs_camouflage() {
        let web = "\n[web]\ncerts = [{ cert = \"w.crt\", key = \"w.key\" }]\nroot = \"/srv/www\"\n";
        let camouflage = MINIMAL.replace("[tun]", "mode = \"camouflage\"\n[tun]");
        let c = parse(&format!("{camouflage}{web}")).unwrap();
        assert_eq!(c.node.mode, Mode::Camouflage);
        let site = c.web.unwrap();
        assert_eq!(site.certs[0].key, PathBuf::from("/etc/quicap/w.key"));
        assert_eq!(site.content, SiteContent::Files(PathBuf::from("/srv/www")));
        assert_eq!(parse(MINIMAL).unwrap().node.mode, Mode::Private);
        let e = parse(&camouflage).unwrap_err().to_string();
        assert!(e.starts_with("web:") && e.contains("web.certs"), "{e}");
        let e = parse(&format!("{MINIMAL}{web}")).unwrap_err().to_string();
        assert!(e.contains("camouflage"), "{e}");
        let e = parse(&format!("{camouflage}\n[web]\ncerts = []\n"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("web.certs:"), "{e}");
        let e = parse(&MINIMAL.replace("[tun]", "mode = \"stealth\"\n[tun]"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("node.mode:"), "{e}");
        let bad_header = format!("{camouflage}{web}server-header = \"a\\u0001b\"\n");
        let certs = "\n[web]\ncerts = [{ cert = \"w.crt\", key = \"w.key\" }]\n";
        let upstream = |lines: &str| parse(&format!("{camouflage}{certs}{lines}\n"));
        let c =
            upstream("upstream = \"https://www.example.org:8443\"\nupstream-roots = \"ca.pem\"")
                .unwrap();
        let SiteContent::Upstream { url, roots } = c.web.unwrap().content else {
            panic!("not an upstream site");
        };
        assert_eq!(url.authority().unwrap().as_str(), "www.example.org:8443");
        assert_eq!(roots, Some(PathBuf::from("/etc/quicap/ca.pem")));
        for (lines, key) in [
            ("upstream = \"ftp://example.org\"", "web.upstream:"),
            ("upstream = \"https://example.org/blog\"", "web.upstream:"),
            ("upstream = \"https://u@example.org\"", "web.upstream:"),
            ("upstream = \"example.org\"", "web.upstream:"),
            ("upstream = \"http://a\"\nroot = \"/srv\"", "web.upstream:"),
            (
                "upstream = \"http://a\"\nupstream-roots = \"ca.pem\"",
                "web.upstream-roots:",
            ),
            ("upstream-roots = \"ca.pem\"", "web.upstream-roots:"),
        ] {
            let e = upstream(lines).unwrap_err().to_string();
            assert!(e.starts_with(key), "{lines}: {e}");
        }
        let e = parse(&bad_header).unwrap_err().to_string();
        assert!(e.starts_with("web.server-header:"), "{e}");
    }

    #[test]
    fn the_masque_proxy_needs_the_http3_front_and_someone_to_admit() {
        let web = "\n[web]\ncerts = [{ cert = \"w.crt\", key = \"w.key\" }]\n";
        let camouflage = MINIMAL.replace("[tun]", "mode = \"camouflage\"\n[tun]");
        let masque = |lines: &str| parse(&format!("{camouflage}{web}\n[masque]\n{lines}\n"));
        let c = masque(
            "tokens = [\"0123456789abcdef\"]\nusers = [{ username = \"u\", password = \"p\" }]\nnodes = true\negress = [\"node-b\"]\naddresses = [\"10.10.0.128/25\", \"fd10::8000/113\"]",
        )
        .unwrap()
        .masque
        .unwrap();
        assert_eq!(c.users, [("u".to_string(), "p".to_string())]);
        assert!(c.nodes);
        assert_eq!(c.addresses[1], "fd10::8000/113".parse::<IpNet>().unwrap());
        assert!(parse(&format!("{camouflage}{web}"))
            .unwrap()
            .masque
            .is_none());
        for (lines, key) in [
            ("", "masque:"),
            ("tokens = [\"short\"]", "masque.tokens[0]:"),
            ("tokens = [\"0123456789abcdef 0\"]", "masque.tokens[0]:"),
            (
                "users = [{ username = \"a:b\", password = \"p\" }]",
                "masque.users[0]:",
            ),
            ("nodes = true\negress = [\"Bad Name\"]", "masque.egress:"),
            (
                "nodes = true\naddresses = [\"10.0.0.0/8\", \"10.1.0.0/16\"]",
                "masque.addresses:",
            ),
            (
                "nodes = true\naddresses = [\"10.0.0.0/31\"]",
                "masque.addresses:",
            ),
            (
                "nodes = true\naddresses = [\"nowhere\"]",
                "masque.addresses:",
            ),
        ] {
            let e = masque(lines).unwrap_err().to_string();
            assert!(e.starts_with(key), "{lines}: {e}");
        }
        let e = parse(&format!("{MINIMAL}\n[masque]\nnodes = true\n"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("masque:") && e.contains("camouflage"), "{e}");
        let no_tun = format!("{camouflage}{web}").replace(
            "[tun]\naddresses = [\"10.10.0.1/24\"]",
            "[tap]\naddresses = [\"10.10.0.1/24\"]",
        );
        let e = parse(&format!(
            "{no_tun}\n[masque]\nnodes = true\naddresses = [\"10.9.0.0/24\"]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("masque.addresses:"), "{e}");
    }

    #[test]
    fn proxy_listeners_and_the_egress_policy() {
        let c = parse(&format!(
            "{MINIMAL}\n[[proxy]]\nlisten = \"127.0.0.1:1080\"\nprotocol = \"socks5\"\negress = [\"node-b\", \"node-c\"]\n\n[[proxy]]\nlisten = \"[::]:3128\"\nprotocol = \"http\"\nusername = \"u\"\npassword = \"p\"\n\n[egress]\nallow = [\"0.0.0.0/0\"]\nports = [443, \"8000-8100\"]\n"
        ))
        .unwrap();
        assert_eq!(c.proxies.len(), 2);
        assert_eq!(c.proxies[0].protocol, ProxyProtocol::Socks5);
        assert_eq!(c.proxies[0].egress, ["node-b", "node-c"]);
        assert_eq!(c.proxies[1].credentials, Some(("u".into(), "p".into())));
        let egress = c.egress.unwrap();
        assert!(egress.allows("192.0.2.1:8050".parse().unwrap()));
        assert!(!egress.allows("192.0.2.1:80".parse().unwrap()));
        assert!(parse(MINIMAL).unwrap().egress.is_none());
        let proxy = |lines: &str| parse(&format!("{MINIMAL}\n[[proxy]]\n{lines}\n"));
        for (lines, key) in [
            (
                "listen = \"0.0.0.0:1080\"\nprotocol = \"socks5\"",
                "proxy[0].listen:",
            ),
            (
                "listen = \"127.0.0.1\"\nprotocol = \"socks5\"",
                "proxy[0].listen:",
            ),
            (
                "listen = \"127.0.0.1:1\"\nprotocol = \"socks4\"",
                "proxy[0].protocol:",
            ),
            (
                "listen = \"127.0.0.1:1\"\nprotocol = \"http\"\negress = [\"Bad Name\"]",
                "proxy[0].egress:",
            ),
            (
                "listen = \"127.0.0.1:1\"\nprotocol = \"http\"\nusername = \"u\"",
                "proxy[0].username:",
            ),
        ] {
            let e = proxy(lines).unwrap_err().to_string();
            assert!(e.starts_with(key), "{lines}: {e}");
        }
        let twice = format!("{MINIMAL}\n[[proxy]]\nlisten = \"127.0.0.1:1\"\nprotocol = \"http\"\n[[proxy]]\nlisten = \"127.0.0.1:1\"\nprotocol = \"socks5\"\n");
        assert!(parse(&twice)
            .unwrap_err()
            .to_string()
            .starts_with("proxy[1].listen:"));
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let text = MINIMAL.replace("[tun]", "[tun]\nmtuu = 1400");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("unknown field `mtuu`"), "{err}");
        assert!(err.starts_with("line 8,"), "{err}");
    }

    #[test]
    fn tap_alone_or_with_tun() {
        let tap_only = MINIMAL.replace(
            "[tun]\naddresses = [\"10.10.0.1/24\"]",
            "[tap]\nbridge = \"br0\"",
        );
        let c = parse(&tap_only).unwrap();
        assert!(c.tun.is_none());
        let tap = c.tap.as_ref().unwrap();
        assert_eq!(tap.name, "quicaptap0");
        assert_eq!(tap.bridge.as_deref(), Some("br0"));
        assert!(tap.addresses.is_empty());
        assert_eq!(
            c.node.control_socket,
            PathBuf::from("/run/quicap/quicaptap0.sock")
        );

        let both = format!("{MINIMAL}\n[tap]\naddresses = [\"10.20.0.1/24\"]\nmtu = 1300\n");
        let c = parse(&both).unwrap();
        assert_eq!(c.mtu(), 1300);
        assert_eq!(c.addresses().len(), 2);
    }

    #[test]
    fn needs_an_interface() {
        let none = MINIMAL.replace("[tun]\naddresses = [\"10.10.0.1/24\"]", "");
        let err = parse(&none).unwrap_err().to_string();
        assert!(err.starts_with("tun:"), "{err}");
    }

    #[test]
    fn control_socket_and_carrier_are_configurable() {
        let text = MINIMAL.replace(
            "[node]",
            "[node]\ncontrol-socket = \"run/a.sock\"\nno-carrier = false",
        );
        let c = parse(&text).unwrap();
        assert_eq!(
            c.node.control_socket,
            PathBuf::from("/etc/quicap/run/a.sock")
        );
        assert!(!c.node.no_carrier);
    }

    #[test]
    fn malformed_toml_reports_position() {
        let err = parse("[node\ncert = 1").unwrap_err().to_string();
        assert!(err.starts_with("line 1,"), "{err}");
    }

    #[test]
    fn missing_section_is_named() {
        let err = parse("[tun]\naddresses = []\n").unwrap_err().to_string();
        assert!(err.contains("missing field `node`"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (
                MINIMAL.replace("10.10.0.1/24", "10.10.0.1"),
                "tun.addresses",
            ),
            (MINIMAL.replace("[tun]", "[tun]\nmtu = 100"), "tun.mtu"),
            (
                MINIMAL.replace("[tun]", "[tun]\nname = \"way-too-long-name0\""),
                "tun.name",
            ),
            (
                MINIMAL.replace("[tun]", "[tun]\nroutes = [\"x\"]"),
                "tun.routes",
            ),
            (
                MINIMAL.replace("[node]", "[node]\nlisten = [\"4433\"]"),
                "node.listen",
            ),
            (
                MINIMAL.replace("[node]", "[node]\nname = \"Bad\""),
                "node.name",
            ),
            (
                format!("{MINIMAL}\n[[peer]]\nname = \"b\"\nendpoint = \"nope\""),
                "peer[0].endpoint",
            ),
            (
                format!("{MINIMAL}\n[[peer]]\nname = \"b\"\n[[peer]]\nname = \"b\""),
                "peer[1].name",
            ),
            (
                format!("{MINIMAL}\n[transport]\nkeepalive-ms = 5000"),
                "transport.idle-timeout-ms",
            ),
            (
                format!("{MINIMAL}\n[transport]\nidle-timeout-ms = 0"),
                "transport.idle-timeout-ms",
            ),
        ];
        for (text, key) in cases {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.starts_with(&format!("{key}:")), "{key}: {err}");
        }
    }

    #[test]
    fn endpoints_accept_names_and_addresses() {
        for ok in [
            "192.0.2.1:4433",
            "[2001:db8::1]:4433",
            "vpn.example.com:443",
        ] {
            assert!(validate_endpoint(ok).is_ok(), "{ok}");
        }
        for bad in ["192.0.2.1", ":4433", "host:99999"] {
            assert!(validate_endpoint(bad).is_err(), "{bad}");
        }
    }
}
