//! CONNECT-IP (RFC 9484): a client gets an address of each prefix of
//! `masque.addresses` (ADDRESS_ASSIGN) and the routes it may use
//! (ROUTE_ADVERTISEMENT); its IP packets, in HTTP Datagrams of context 0, enter the
//! mesh as packets read from this node's TUN do (see
//! [`crate::daemon::datapath::send_from_client`]), and packets for its address, from
//! the TUN or from peers, come back to it. A packet that cannot go on is answered
//! with an ICMP error in a datagram.
//!
//! ```text
//!  client ──datagram: IP packet (source: its address)──> checks ──> another client here
//!                                                              ├──> the owner's link
//!                                                              └──> TUN (this node, or
//!                                                                   leaving the mesh
//!  client <──datagram: IP packet / ICMP error── Pool::deliver <── TUN, links
//! ```
//!
//! The prefixes are advertised in the mesh as this node's, so they must lie in its
//! certificate's subnets.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use bytes::Bytes;
use http::StatusCode;
use ipnet::IpNet;
use quicap_wire::ip::{self as packet, IcmpError};
use quicap_wire::masque::{self as wire, AssignedAddress, IpRange, IpScope};
use tokio::sync::mpsc;
use tracing::debug;

use super::{count, Active, In, Masque, Tunnel};
use crate::daemon::Node;

/// Packets queued for one client before more are dropped.
const QUEUE: usize = 1024;
/// The smallest IPv6 MTU (RFC 8200): an IPv6 session must carry packets this large.
const IPV6_MIN_MTU: usize = 1280;

/// The client addresses of `masque.addresses` and the sessions that hold them.
#[derive(Debug)]
pub struct Pool {
    prefixes: Vec<IpNet>,
    /// Addresses of this node inside the prefixes.
    reserved: Vec<IpAddr>,
    clients: Mutex<HashMap<IpAddr, mpsc::Sender<Bytes>>>,
}

impl Pool {
    pub fn new(prefixes: Vec<IpNet>, reserved: Vec<IpAddr>) -> Pool {
        Pool {
            prefixes,
            reserved,
            clients: Mutex::new(HashMap::new()),
        }
    }

    pub fn prefixes(&self) -> &[IpNet] {
        &self.prefixes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, mpsc::Sender<Bytes>>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a packet for `destination`, an address of the pool: to its client's queue,
    /// or dropped if it has none (false: not the pool's).
    pub fn deliver(&self, destination: IpAddr, ip_packet: &[u8]) -> bool {
        if !self.prefixes.iter().any(|p| p.contains(&destination)) {
            return false;
        }
        if let Some(tx) = self.lock().get(&destination) {
            let _ = tx.try_send(Bytes::copy_from_slice(ip_packet));
        }
        true
    }

    /// One free address of each prefix for a new client whose packets go to `tx`;
    /// `None` when a prefix has none left.
    fn assign(&self, tx: &mpsc::Sender<Bytes>) -> Option<Vec<IpAddr>> {
        let mut clients = self.lock();
        let mut out = Vec::new();
        for net in &self.prefixes {
            let addr = self.free(net, &clients)?;
            out.push(addr);
        }
        for a in &out {
            clients.insert(*a, tx.clone());
        }
        Some(out)
    }

    /// The first address of `net` that is neither its network or broadcast address,
    /// nor this node's, nor a client's.
    fn free(&self, net: &IpNet, clients: &HashMap<IpAddr, mpsc::Sender<Bytes>>) -> Option<IpAddr> {
        // Enough candidates to pass every taken one.
        let tries = clients.len() + self.reserved.len() + 2;
        let base = net.network();
        (1..=tries as u128)
            .filter_map(|i| offset(base, i))
            .take_while(|a| net.contains(a))
            .find(|a| {
                let broadcast = a.is_ipv4() && *a == net.broadcast();
                !(clients.contains_key(a) || self.reserved.contains(a) || broadcast)
            })
    }

    fn release(&self, addrs: &[IpAddr]) {
        let mut clients = self.lock();
        for a in addrs {
            clients.remove(a);
        }
    }
}

/// `base` plus `i`, if it does not overflow its family.
fn offset(base: IpAddr, i: u128) -> Option<IpAddr> {
    match base {
        IpAddr::V4(a) => {
            let n = u32::from(a).checked_add(u32::try_from(i).ok()?)?;
            Some(IpAddr::V4(n.into()))
        }
        IpAddr::V6(a) => Some(IpAddr::V6(u128::from(a).checked_add(i)?.into())),
    }
}

/// A client's addresses, returned to the pool on drop.
struct Lease<'a> {
    pool: &'a Pool,
    addrs: Vec<IpAddr>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        self.pool.release(&self.addrs);
    }
}

/// Serves one admitted CONNECT-IP request to `path` until either side ends it.
pub async fn serve(node: &Node, masque: &Masque, who: &str, path: &str, tunnel: Tunnel) {
    let Tunnel {
        mut out,
        mut incoming,
    } = tunnel;
    let counters = &masque.counters;
    let pool = &masque.pool;
    let scope = match wire::parse_ip_path(path) {
        Ok(s) if !pool.prefixes.is_empty() => s,
        Ok(_) => {
            out.refuse(
                (counters, who),
                StatusCode::NOT_IMPLEMENTED,
                "http_request_error",
                "this proxy serves no CONNECT-IP (masque.addresses)",
            )
            .await;
            return;
        }
        Err(e) => {
            out.refuse(
                (counters, who),
                StatusCode::BAD_REQUEST,
                "http_request_error",
                &e.to_string(),
            )
            .await;
            return;
        }
    };
    // RFC 9484 section 10.1: an IPv6 session needs a path for 1280-byte packets. A
    // client that takes QUIC datagrams gets its packets in them, so they must fit.
    let v6 = pool.prefixes.iter().any(|p| p.addr().is_ipv6());
    let room = out.datagram_room();
    if v6 && room > 0 && room < IPV6_MIN_MTU {
        out.refuse(
            (counters, who),
            StatusCode::BAD_GATEWAY,
            "http_protocol_error",
            "the connection's datagrams cannot carry 1280-byte IPv6 packets",
        )
        .await;
        return;
    }
    let (tx, mut rx) = mpsc::channel(QUEUE);
    let Some(addrs) = pool.assign(&tx) else {
        out.refuse(
            (counters, who),
            StatusCode::SERVICE_UNAVAILABLE,
            "proxy_internal_error",
            "no client address left",
        )
        .await;
        return;
    };
    let lease = Lease { pool, addrs };
    if !out.accept().await {
        return;
    }
    count(&counters.ip_sessions);
    let _active = Active::new(&counters.active);
    debug!(%who, addresses = ?lease.addrs, "CONNECT-IP session");
    let assigned: Vec<AssignedAddress> = lease
        .addrs
        .iter()
        .map(|a| AssignedAddress {
            request_id: 0,
            prefix: IpNet::from(*a),
        })
        .collect();
    if announce(&mut out, &assigned, &scope).await.is_err() {
        return;
    }
    let mut icmp = vec![0u8; IPV6_MIN_MTU];
    loop {
        tokio::select! {
            got = incoming.next() => match got {
                In::Payload(payload) => {
                    let Some((source, destination)) = packet::addresses(&payload) else {
                        continue;
                    };
                    if !lease.addrs.contains(&source) {
                        count(&counters.spoofed);
                        continue;
                    }
                    let verdict = match in_scope(&scope, &payload, destination) {
                        true => crate::daemon::datapath::send_from_client(node, &payload).await,
                        false => Err(IcmpError::Prohibited),
                    };
                    if let Err(error) = verdict {
                        if matches!(error, IcmpError::TooBig { .. }) {
                            count(&counters.oversized);
                        }
                        debug!(%who, %destination, ?error, "CONNECT-IP packet answered with an ICMP error");
                        if let Some(n) = packet::icmp_error(&payload, error, destination, &mut icmp) {
                            if out.payload(&icmp[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                In::Capsule(wire::ADDRESS_REQUEST, value) => {
                    // Every request gets the addresses this client holds (RFC 9484
                    // section 4.7.1 lets the proxy assign others than asked for).
                    let requests = match wire::parse_addresses(&value) {
                        Ok(r) => r,
                        Err(e) => {
                            out.abort(counters, who, &e);
                            return;
                        }
                    };
                    let answers: Vec<AssignedAddress> = requests
                        .iter()
                        .filter_map(|r| {
                            let a = lease.addrs.iter().find(|a| a.is_ipv4() == r.prefix.addr().is_ipv4())?;
                            Some(AssignedAddress { request_id: r.request_id, prefix: IpNet::from(*a) })
                        })
                        .chain(assigned.iter().copied())
                        .collect();
                    if answer_addresses(&mut out, &answers).await.is_err() {
                        break;
                    }
                }
                In::Capsule(kind @ (wire::ADDRESS_ASSIGN | wire::ROUTE_ADVERTISEMENT), value) => {
                    // The client's own addresses and routes: read, to refuse garbage.
                    let parsed = match kind {
                        wire::ADDRESS_ASSIGN => wire::parse_addresses(&value).map(drop),
                        _ => wire::parse_routes(&value).map(drop),
                    };
                    if let Err(e) = parsed {
                        out.abort(counters, who, &e);
                        return;
                    }
                }
                In::Capsule(..) => {}
                In::End => break,
                In::Malformed(e) => {
                    out.abort(counters, who, &e);
                    return;
                }
            },
            p = rx.recv() => {
                let Some(p) = p else { break };
                if out.payload(&p).await.is_err() {
                    break;
                }
            }
        }
    }
    out.finish().await;
}

/// Whether a packet to `destination` is one the request's scope covers.
fn in_scope(scope: &IpScope, ip_packet: &[u8], destination: IpAddr) -> bool {
    scope.target.is_none_or(|t| t.contains(&destination))
        && scope
            .protocol
            .is_none_or(|p| packet::protocol(ip_packet) == Some(p))
}

/// The client's addresses and its routes: the request's target, or all of each
/// family it has an address of.
async fn announce(
    out: &mut super::Outgoing,
    assigned: &[AssignedAddress],
    scope: &IpScope,
) -> Result<(), ()> {
    answer_addresses(out, assigned).await?;
    let protocol = scope.protocol.unwrap_or(0);
    let mut routes: Vec<IpRange> = Vec::new();
    for a in assigned {
        let all: IpNet = match a.prefix.addr() {
            IpAddr::V4(_) => "0.0.0.0/0".parse().map_err(|_| ())?,
            IpAddr::V6(_) => "::/0".parse().map_err(|_| ())?,
        };
        let net = match scope.target {
            Some(t) if t.addr().is_ipv4() == all.addr().is_ipv4() => t,
            Some(_) => continue,
            None => all,
        };
        routes.push(IpRange::of(net, protocol));
    }
    let mut value = Vec::new();
    wire::put_routes(&routes, &mut value).map_err(|_| ())?;
    out.capsule(wire::ROUTE_ADVERTISEMENT, &value).await
}

async fn answer_addresses(
    out: &mut super::Outgoing,
    addresses: &[AssignedAddress],
) -> Result<(), ()> {
    let mut value = Vec::new();
    wire::put_addresses(addresses, &mut value).map_err(|_| ())?;
    out.capsule(wire::ADDRESS_ASSIGN, &value).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_skips_its_own_and_taken_addresses_and_runs_out() {
        let pool = Pool::new(
            vec![
                "10.9.0.0/30".parse().unwrap(),
                "fd09::/126".parse().unwrap(),
            ],
            vec!["10.9.0.1".parse().unwrap()],
        );
        let (tx, _rx) = mpsc::channel(1);
        let first = pool.assign(&tx).unwrap();
        assert_eq!(
            first,
            [
                "10.9.0.2".parse::<IpAddr>().unwrap(),
                "fd09::1".parse().unwrap()
            ]
        );
        // 10.9.0.3 is the broadcast address: no IPv4 address is left.
        assert!(pool.assign(&tx).is_none());
        pool.release(&first);
        assert_eq!(pool.assign(&tx).unwrap(), first);
    }

    #[test]
    fn packets_for_the_pool_are_its_own_whether_or_not_a_client_holds_them() {
        let pool = Pool::new(vec!["10.9.0.0/24".parse().unwrap()], vec![]);
        let (tx, mut rx) = mpsc::channel(4);
        let addrs = pool.assign(&tx).unwrap();
        let mut p = vec![0u8; 20];
        p[0] = 0x45;
        p[16..20].copy_from_slice(&[10, 9, 0, 1]);
        assert_eq!(addrs, ["10.9.0.1".parse::<IpAddr>().unwrap()]);
        let to = |p: &[u8]| packet::addresses(p).unwrap().1;
        assert!(pool.deliver(to(&p), &p));
        assert_eq!(rx.try_recv().unwrap().len(), 20);
        p[19] = 7;
        assert!(pool.deliver(to(&p), &p));
        assert!(rx.try_recv().is_err());
        p[18] = 1;
        assert!(!pool.deliver(to(&p), &p));
    }
}
