//! QUIC transport: endpoints, connection parameters and the TLS glue for quinn.
//!
//! A node has one quinn endpoint per listen address; each both accepts and dials. This
//! module only builds them; the daemon decides what runs over a connection. A TLS/TCP
//! fallback will sit next to it behind the same connection handling.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use socket2::{Domain, Protocol, Socket, Type};

use crate::config::TransportSection;
use crate::relay::{RelayCounters, RelaySocket, RelayTable};
use crate::tls::{Identity, Trust};

/// Bytes a QUIC short-header packet adds around one DATAGRAM frame, for quinn's
/// defaults: flags (1), connection id (8), packet number (up to 4), frame type (1),
/// length (up to 2) and AEAD tag (16), plus slack.
pub const QUIC_DATAGRAM_OVERHEAD: u16 = 40;
/// Socket buffer size requested for each UDP socket, in bytes.
const SOCKET_BUFFER: usize = 4 << 20;
/// Bound on datagrams queued for sending in quinn, in bytes.
const DATAGRAM_SEND_BUFFER: usize = 256 << 10;
/// Bound on received datagrams not yet read by the node, in bytes.
const DATAGRAM_RECEIVE_BUFFER: usize = 1 << 20;

/// Wait after a suspected MTU black hole before probing the path again. quinn's
/// default is a minute; its detector also fires on bursts of congestion loss, and the
/// tunnel should not stay shrunk for long after those.
pub const BLACK_HOLE_COOLDOWN: Duration = Duration::from_secs(2);

/// Largest UDP payload a QUIC packet starts at: what a 1500-byte IPv6 path carries.
const MAX_INITIAL_MTU: u16 = 1452;
/// RTT assumed for an end-to-end relayed connection until it has measured one.
const RELAYED_INITIAL_RTT: Duration = Duration::from_millis(100);
/// Largest UDP payload path MTU discovery looks for: what a 1500-byte IPv4 path
/// carries. It lets a relay frame (20 bytes) ride on a full-size QUIC packet over
/// IPv4; on IPv6 paths the probes above 1452 are lost and discovery
/// settles below.
const MAX_DISCOVERED_MTU: u16 = 1472;

/// What carries a connection's QUIC packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carried {
    /// UDP datagrams of their own.
    Direct,
    /// Relay frames through other nodes; `nested`: inside the QUIC datagrams of
    /// camouflaged (HTTP/3) links, not beside them as UDP datagrams of their own.
    Relayed { nested: bool },
}

impl Carried {
    /// Bytes the carrier adds to each QUIC packet: the relay frame's header, and for a
    /// nested one the outer QUIC packet and HTTP Datagram prefix around it.
    fn overhead(self) -> u16 {
        let relay = quicap_wire::relay::LEN as u16;
        match self {
            Carried::Direct => 0,
            Carried::Relayed { nested: false } => relay,
            Carried::Relayed { nested: true } => {
                relay + QUIC_DATAGRAM_OVERHEAD + crate::link::h3::RELAY_PREFIX_LEN
            }
        }
    }
}

/// Streams a peer may have open on a link at once: its control stream and its proxied
/// flows.
pub const MAX_FLOWS: u32 = 1100;

/// Bytes of stream data a link buffers unread, over all its flows.
pub const FLOW_RECEIVE_WINDOW: u32 = 16 * 1024 * 1024;

/// QUIC transport parameters shared by all connections of a node, or with `relayed`,
/// by its end-to-end connections through relays. Each relay frame adds
/// [`quicap_wire::relay::LEN`] bytes to the QUIC packet it carries (and more inside a
/// camouflaged link, see [`Carried`]), and a frame may cross a link of either address
/// family: relayed connections start that much smaller, so that their first full-size
/// packets fit a 1500-byte IPv6 link too, and path MTU discovery takes them up where
/// the whole path allows, to what a 1500-byte IPv4 link carries at most.
pub fn transport_config(
    t: &TransportSection,
    tunnel_mtu: u16,
    carried: Carried,
) -> Result<Arc<quinn::TransportConfig>> {
    let relayed = carried != Carried::Direct;
    let mut tc = quinn::TransportConfig::default();
    // Liveness probes are ack-eliciting and keep NAT mappings open; QUIC keepalives
    // only if asked for. QUIC's idle timeout leaves room for a dormant link's probes.
    tc.keep_alive_interval(t.keepalive);
    let quiet = u64::try_from(t.idle_timeout.as_millis())
        .ok()
        .map(quicap_mesh::liveness::longest_quiet)
        .and_then(|ms| quinn::VarInt::from_u64(ms).ok())
        .ok_or_else(|| anyhow!("transport.idle-timeout-ms is too large"))?;
    tc.max_idle_timeout(Some(quiet.into()));
    datagram_path(&mut tc, t, tunnel_mtu, carried);
    if relayed {
        // Tunnel packets wait for this handshake (see `daemon::held`), and its first
        // packets are often lost while routes converge (a failed link's traffic
        // moving to another path): retransmit after about 300 ms, not QUIC's
        // default second.
        tc.initial_rtt(RELAYED_INITIAL_RTT);
    }
    tc.max_concurrent_uni_streams(0u32.into());
    // The control stream and the proxied flows a peer opens (see `crate::proxy`).
    tc.max_concurrent_bidi_streams(MAX_FLOWS.into());
    // Flow data waiting to be read is bounded per link, not only per stream.
    tc.receive_window(FLOW_RECEIVE_WINDOW.into());
    Ok(Arc::new(tc))
}

/// QUIC transport parameters of connections to the web fronts of camouflage mode:
/// quinn's defaults, which are those of a common HTTP/3 server (30 s idle timeout,
/// 100 streams each way, no keep-alives from the server), since every client that
/// completes a handshake sees them; datagrams, buffers, MTU and GSO as on node links.
/// Nodes linked through a front find a dead link by their own probes, not by the idle
/// timeout.
pub fn web_transport_config(t: &TransportSection, tunnel_mtu: u16) -> Arc<quinn::TransportConfig> {
    let mut tc = quinn::TransportConfig::default();
    datagram_path(&mut tc, t, tunnel_mtu, Carried::Direct);
    Arc::new(tc)
}

/// What every connection that may carry tunnel packets needs: a start at the size the
/// tunnel needs (path MTU discovery moves it up, and black-hole detection down to 1200
/// if the path cannot carry it), bounded datagram queues, and GSO as configured.
fn datagram_path(
    tc: &mut quinn::TransportConfig,
    t: &TransportSection,
    tunnel_mtu: u16,
    carried: Carried,
) {
    let wanted = tunnel_mtu
        .saturating_add(quicap_wire::overlay::BASE_LEN as u16)
        .saturating_add(QUIC_DATAGRAM_OVERHEAD);
    let overhead = carried.overhead();
    tc.initial_mtu(wanted.clamp(1200, MAX_INITIAL_MTU - overhead));
    let mut mtud = quinn::MtuDiscoveryConfig::default();
    mtud.black_hole_cooldown(BLACK_HOLE_COOLDOWN);
    mtud.upper_bound((MAX_DISCOVERED_MTU - overhead).max(1200));
    tc.mtu_discovery_config(Some(mtud));
    tc.datagram_receive_buffer_size(Some(DATAGRAM_RECEIVE_BUFFER));
    tc.datagram_send_buffer_size(DATAGRAM_SEND_BUFFER);
    tc.enable_segmentation_offload(t.gso);
}

pub fn server_config(
    trust: &Trust,
    identity: &Identity,
    transport: Arc<quinn::TransportConfig>,
) -> Result<quinn::ServerConfig> {
    quic_server(trust.server_config(identity)?, transport, token_key())
}

pub fn client_config(
    trust: &Trust,
    identity: &Identity,
    transport: Arc<quinn::TransportConfig>,
) -> Result<quinn::ClientConfig> {
    quic_client(trust.client_config(identity)?, transport)
}

/// The key a node's Retry tokens are sealed with: one per node, shared by the configs
/// of all its connections, so that a token the endpoint issued checks out whichever
/// config answers the handshake it comes back with.
pub type TokenKey = Arc<dyn quinn::crypto::HandshakeTokenKey>;

/// A fresh random token key.
pub fn token_key() -> TokenKey {
    let mut secret = [0u8; 64];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut secret);
    Arc::new(ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, &[]).extract(&secret))
}

/// A QUIC server config around `tls`, sealing Retry tokens with `token_key`.
pub fn quic_server(
    tls: impl Into<Arc<rustls::ServerConfig>>,
    transport: Arc<quinn::TransportConfig>,
    token_key: TokenKey,
) -> Result<quinn::ServerConfig> {
    let quic =
        QuicServerConfig::try_from(tls.into()).map_err(|e| anyhow!("QUIC server TLS: {e}"))?;
    let mut config = quinn::ServerConfig::new(Arc::new(quic), token_key);
    config.transport_config(transport);
    config.migration(true);
    Ok(config)
}

/// A QUIC client config around `tls`.
pub fn quic_client(
    tls: rustls::ClientConfig,
    transport: Arc<quinn::TransportConfig>,
) -> Result<quinn::ClientConfig> {
    quic_client_arc(Arc::new(tls), transport)
}

/// [`quic_client`] of a shared TLS config.
pub fn quic_client_arc(
    tls: Arc<rustls::ClientConfig>,
    transport: Arc<quinn::TransportConfig>,
) -> Result<quinn::ClientConfig> {
    let quic = QuicClientConfig::try_from(tls).map_err(|e| anyhow!("QUIC client TLS: {e}"))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(transport);
    Ok(config)
}

/// Reads how many datagrams the kernel dropped at a node's UDP sockets because their
/// receive buffers were full: their lines in `/proc/net/udp` and `/proc/net/udp6`, found
/// by inode; each file is read once per count, however many sockets.
#[derive(Debug, Clone, Default)]
pub struct SocketDrops {
    inodes: Vec<u64>,
}

impl SocketDrops {
    /// Adds `socket` to the sockets counted.
    pub fn add(&mut self, socket: &impl std::os::fd::AsRawFd) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let fd = socket.as_raw_fd();
        let inode = std::fs::metadata(format!("/proc/self/fd/{fd}"))
            .context("reading the socket's inode")?
            .ino();
        self.inodes.push(inode);
        Ok(())
    }

    /// Datagrams dropped at these sockets so far.
    pub fn count(&self) -> u64 {
        if self.inodes.is_empty() {
            return 0;
        }
        ["/proc/net/udp", "/proc/net/udp6"]
            .iter()
            .filter_map(|path| std::fs::read_to_string(path).ok())
            .map(|text| socket_drops_in(&text, &self.inodes))
            .sum()
    }
}

/// The sum of the `drops` column over the lines of the sockets `inodes` in the text of
/// `/proc/net/udp` or `/proc/net/udp6` (`sl local rem st tx:rx tr:when retrnsmt uid
/// timeout inode ref pointer drops`).
fn socket_drops_in(text: &str, inodes: &[u64]) -> u64 {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let inode = fields.nth(9)?.parse::<u64>().ok()?;
            inodes
                .contains(&inode)
                .then(|| fields.last()?.parse::<u64>().ok())?
        })
        .sum()
}

/// Binds a UDP socket on `addr` (dual-stack for `[::]`) and makes a quinn endpoint of
/// it, on a [`RelaySocket`] that also carries relayed paths (see [`crate::relay`]).
/// The socket is added to `drops`.
pub fn endpoint(
    addr: SocketAddr,
    server: quinn::ServerConfig,
    relays: Arc<RelayTable>,
    drops: &mut SocketDrops,
) -> Result<(quinn::Endpoint, Arc<RelayCounters>)> {
    let socket = bound_socket(addr, Protocol::UDP, "node.listen", |socket| {
        // Best effort: the kernel caps these at net.core.{r,w}mem_max.
        let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
        Ok(())
    })?;
    drops.add(&socket)?;
    let runtime = quinn::default_runtime().ok_or_else(|| anyhow!("no async runtime for QUIC"))?;
    let socket = runtime
        .wrap_udp_socket(socket.into())
        .and_then(|inner| RelaySocket::new(inner, relays))
        .with_context(|| format!("starting QUIC on {addr}"))?;
    let counters = socket.counters();
    let mut config = quinn::EndpointConfig::default();
    // Relay frames are told from QUIC packets by the fixed bit (RFC 9287 would let
    // peers clear it).
    config.grease_quic_bit(false);
    let endpoint =
        quinn::Endpoint::new_with_abstract_socket(config, Some(server), Arc::new(socket), runtime)
            .with_context(|| format!("starting QUIC on {addr}"))?;
    Ok((endpoint, counters))
}

/// A UDP or TCP socket bound to `addr` (dual-stack for `[::]`), with `setup` applied
/// before the bind; a bind error names the config key `key` when the port is taken.
fn bound_socket(
    addr: SocketAddr,
    protocol: Protocol,
    key: &str,
    setup: impl FnOnce(&Socket) -> Result<()>,
) -> Result<Socket> {
    let (kind, name) = if protocol == Protocol::TCP {
        (Type::STREAM, "TCP")
    } else {
        (Type::DGRAM, "UDP")
    };
    let socket = Socket::new(Domain::for_address(addr), kind, Some(protocol))
        .with_context(|| format!("creating a {name} socket for {addr}"))?;
    if addr.is_ipv6() {
        socket
            .set_only_v6(false)
            .with_context(|| format!("making {addr} dual-stack"))?;
    }
    setup(&socket)?;
    socket.bind(&addr.into()).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            format!(" (is another quicap or service using this port? change {key})")
        } else {
            String::new()
        };
        anyhow!("listening on {name} {addr}: {e}{hint}")
    })?;
    Ok(socket)
}

/// Binds a TCP listener on `addr` (dual-stack for `[::]`) for links over TLS/TCP.
/// A TCP listener on `addr`, which the config names `key` (for the errors).
pub fn tcp_listener(addr: SocketAddr, key: &str) -> Result<tokio::net::TcpListener> {
    let socket = bound_socket(addr, Protocol::TCP, key, |socket| {
        // A restarted node binds again at once, past connections in TIME_WAIT.
        socket
            .set_reuse_address(true)
            .with_context(|| format!("setting SO_REUSEADDR on {addr}"))?;
        Ok(socket.set_nonblocking(true)?)
    })?;
    socket
        .listen(1024)
        .with_context(|| format!("listening on TCP {addr}"))?;
    tokio::net::TcpListener::from_std(socket.into())
        .with_context(|| format!("listening on TCP {addr}"))
}

/// `addr` with an IPv4-mapped IPv6 address (what a dual-stack socket reports for an
/// IPv4 peer) written as the IPv4 address it is.
pub fn unmapped(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => addr,
        },
        v4 => v4,
    }
}

/// How long a dial may take before it counts as failed.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_drops_are_read_from_the_sockets_line() {
        let text = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
 1151: 00000000:1151 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 17
 1152: 0100007F:14E5 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4243 2 0000000000000000 0
";
        assert_eq!(socket_drops_in(text, &[4242]), 17);
        assert_eq!(socket_drops_in(text, &[4243]), 0);
        assert_eq!(socket_drops_in(text, &[4242, 4243, 99]), 17);
        assert_eq!(socket_drops_in(text, &[99]), 0);
        assert_eq!(socket_drops_in("garbage\nx y z\n", &[1]), 0);
    }

    #[test]
    fn socket_drops_count_a_real_overflow() {
        // A socket with the smallest receive buffer, sent more than it can hold on
        // loopback and never read.
        let rx = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        rx.set_recv_buffer_size(1).unwrap();
        rx.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        let to = rx.local_addr().unwrap().as_socket().unwrap();
        let mut drops = SocketDrops::default();
        drops.add(&rx).unwrap();
        assert_eq!(drops.count(), 0);
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..200 {
            tx.send_to(&[0u8; 1200], to).unwrap();
        }
        assert!(drops.count() > 100, "{} drops", drops.count());
    }

    fn section() -> TransportSection {
        TransportSection {
            keepalive: None,
            idle_timeout: Duration::from_secs(30),
            gso: true,
            retry_above: 0,
        }
    }

    #[test]
    fn relayed_connections_start_a_relay_frame_smaller() {
        let config =
            |mtu, carried| format!("{:?}", transport_config(&section(), mtu, carried).unwrap());
        let direct = config(1400, Carried::Direct);
        let relayed = config(1400, Carried::Relayed { nested: false });
        let nested = config(1400, Carried::Relayed { nested: true });
        assert!(direct.contains("initial_mtu: 1444"), "{direct}");
        assert!(direct.contains("upper_bound: 1472"), "{direct}");
        assert!(relayed.contains("initial_mtu: 1432"), "{relayed}");
        assert!(relayed.contains("upper_bound: 1452"), "{relayed}");
        // Inside a camouflaged link's QUIC datagrams: 40 bytes more, and the 5 of the
        // HTTP Datagram prefix.
        assert!(nested.contains("initial_mtu: 1387"), "{nested}");
        assert!(nested.contains("upper_bound: 1407"), "{nested}");
        // A small tunnel MTU needs no cut.
        let small = config(1280, Carried::Relayed { nested: false });
        assert!(small.contains("initial_mtu: 1324"), "{small}");
    }
}
